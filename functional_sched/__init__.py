"""functional-sched: diffusion timestep schedulers as pure step functions over immutable state.

sched = functional_sched.DPMSolverMultistep(solver_order=2)
state = sched.init(25, sample=latents)
for _ in range(len(sched.timesteps(state))):
    model_output = model(sched.scale_model_input(state, latents), sched.timestep(state))
    latents, state = sched.step(state, model_output, latents)
"""

from ._plan import Plan
from ._record import record
from .flow_match import FlowMatchEulerDiscrete, FlowMatchEulerState
from .noise import randn_tensor

__all__ = [
    "FlowMatchEulerDiscrete",
    "FlowMatchEulerState",
    "Plan",
    "randn_tensor",
    "record",
]
__version__ = "0.1.0"
