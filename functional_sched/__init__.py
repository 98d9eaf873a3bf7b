"""functional-sched: diffusion timestep schedulers as pure step functions over immutable state.

sched = functional_sched.DPMSolverMultistep(solver_order=2)
state = sched.init(25, sample=latents)
for _ in range(len(sched.timesteps(state))):
    model_output = model(sched.scale_model_input(state, latents), sched.timestep(state))
    latents, state = sched.step(state, model_output, latents)
"""

from . import batching, serialize
from ._checks import unchecked
from ._host import capturing
from ._plan import Plan
from ._record import record
from .dpm_solver import DPMSolverMultistep, DPMSolverState
from .flow_match import FlowMatchEulerDiscrete, FlowMatchEulerState
from .loop import SamplingLoop
from .noise import randn_tensor
from .unipc import UniPCMultistep, UniPCState

#: Every scheduler of the core, by diffusers class: `scheduler_cls.diffusers_name` names the class it reproduces.
SCHEDULERS = (FlowMatchEulerDiscrete, DPMSolverMultistep, UniPCMultistep)

__all__ = [
    "SCHEDULERS",
    "DPMSolverMultistep",
    "DPMSolverState",
    "FlowMatchEulerDiscrete",
    "FlowMatchEulerState",
    "Plan",
    "SamplingLoop",
    "UniPCMultistep",
    "UniPCState",
    "batching",
    "capturing",
    "randn_tensor",
    "record",
    "serialize",
    "unchecked",
]
__version__ = "0.1.0"
