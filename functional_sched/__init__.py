"""functional-sched: diffusion timestep schedulers as pure step functions over immutable state.

sched = functional_sched.DPMSolverMultistep(solver_order=2)
state = sched.init(25, sample=latents)
for _ in range(len(sched.timesteps(state))):
    model_output = model(sched.scale_model_input(state, latents), sched.timestep(state))
    latents, state = sched.step(state, model_output, latents)

or, the same loop as one function: `latents = functional_sched.denoise(sched, model, latents, num_inference_steps=25)`.
"""

from .machinery import batching, serialize
from .machinery.brownian import brownian_noise
from .machinery.checks import unchecked
from .machinery.denoise import Denoising, denoise
from .machinery.host import capturing, clear_caches
from .machinery.loop import SamplingLoop
from .machinery.noise import randn_tensor
from .machinery.plan import Plan
from .machinery.record import record
from .machinery.scheduler import Scheduler
from .schedulers.ddim import DDIM, DDIMState
from .schedulers.ddpm import DDPM, DDPMState
from .schedulers.deis import DEISMultistep, DEISState
from .schedulers.dpm_sde import DPMSolverSDE, DPMSolverSDEState
from .schedulers.dpm_singlestep import DPMSolverSinglestep, DPMSolverSinglestepState
from .schedulers.dpm_solver import DPMSolverMultistep, DPMSolverState
from .schedulers.euler import EulerAncestralDiscrete, EulerAncestralState, EulerDiscrete, EulerState
from .schedulers.flow_match import FlowMatchEulerDiscrete, FlowMatchEulerState
from .schedulers.heun import HeunDiscrete, HeunState
from .schedulers.kdpm2 import KDPM2AncestralDiscrete, KDPM2Discrete, KDPM2State
from .schedulers.lms import LMSDiscrete, LMSState
from .schedulers.pndm import PNDM, PNDMState
from .schedulers.unipc import UniPCMultistep, UniPCState

#: Every scheduler of the core, by diffusers class: `scheduler_cls.diffusers_name` names the class it reproduces.
SCHEDULERS = (
    FlowMatchEulerDiscrete,
    DPMSolverMultistep,
    UniPCMultistep,
    EulerDiscrete,
    EulerAncestralDiscrete,
    LMSDiscrete,
    DDIM,
    DDPM,
    PNDM,
    DEISMultistep,
    DPMSolverSinglestep,
    DPMSolverSDE,
    HeunDiscrete,
    KDPM2Discrete,
    KDPM2AncestralDiscrete,
)

__all__ = [
    "DDIM",
    "DDPM",
    "PNDM",
    "SCHEDULERS",
    "DDIMState",
    "DDPMState",
    "DEISMultistep",
    "DEISState",
    "DPMSolverMultistep",
    "DPMSolverSDE",
    "DPMSolverSDEState",
    "DPMSolverSinglestep",
    "DPMSolverSinglestepState",
    "DPMSolverState",
    "Denoising",
    "EulerAncestralDiscrete",
    "EulerAncestralState",
    "EulerDiscrete",
    "EulerState",
    "FlowMatchEulerDiscrete",
    "FlowMatchEulerState",
    "HeunDiscrete",
    "HeunState",
    "KDPM2AncestralDiscrete",
    "KDPM2Discrete",
    "KDPM2State",
    "LMSDiscrete",
    "LMSState",
    "PNDMState",
    "Plan",
    "SamplingLoop",
    "Scheduler",
    "UniPCMultistep",
    "UniPCState",
    "batching",
    "brownian_noise",
    "capturing",
    "clear_caches",
    "denoise",
    "randn_tensor",
    "record",
    "serialize",
    "unchecked",
]
__version__ = "0.1.0"
