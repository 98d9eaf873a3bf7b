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
from .machinery.logprob import step_log_prob, step_transition
from .machinery.loop import SamplingLoop
from .machinery.noise import randn_tensor
from .machinery.plan import Plan
from .machinery.record import record
from .machinery.scheduler import Scheduler
from .math import named_schedules as schedules
from .schedulers.cogvideox import CogVideoXDDIM, CogVideoXDDIMState, CogVideoXDPM, CogVideoXDPMState
from .schedulers.ddim import DDIM, DDIMState
from .schedulers.ddpm import DDPM, DDPMState
from .schedulers.deis import DEISMultistep, DEISState
from .schedulers.dpm_adaptive import DPMSolverAdaptive, DPMSolverAdaptiveState
from .schedulers.dpm_sde import DPMSolverSDE, DPMSolverSDEState
from .schedulers.dpm_singlestep import DPMSolverSinglestep, DPMSolverSinglestepState
from .schedulers.dpm_solver import DPMSolverMultistep, DPMSolverState
from .schedulers.edm import EDMEuler, EDMEulerState
from .schedulers.edm_dpm import CosineDPMSolverMultistep, EDMDPMSolverMultistep, EDMDPMSolverState
from .schedulers.er_sde import ERSDE
from .schedulers.euler import EulerAncestralDiscrete, EulerAncestralState, EulerDiscrete, EulerState
from .schedulers.flow_heun import FlowMatchHeunDiscrete, FlowMatchHeunState
from .schedulers.flow_lcm import FlowMatchLCM, FlowMatchLCMState
from .schedulers.flow_match import FlowMatchEulerDiscrete, FlowMatchEulerState
from .schedulers.flow_pair import FlowMatchPair
from .schedulers.flow_sde import FlowMatchSDE, FlowMatchSDEState
from .schedulers.flow_unipc import FlowUniPCMultistep, SglangUniPCMultistep
from .schedulers.helios import Helios, HeliosDMD, SglangHelios
from .schedulers.heun import HeunDiscrete, HeunState
from .schedulers.heunpp import HeunPlusPlus, HeunPlusPlusState
from .schedulers.hunyuan3d import Hunyuan3DConsistencyFlowMatchEulerDiscrete, Hunyuan3DFlowMatchEulerDiscrete
from .schedulers.inverse import (
    DDIMInverse,
    DDIMInverseState,
    DPMSolverMultistepInverse,
    DPMSolverMultistepInverseState,
)
from .schedulers.ipndm import IPNDM, IPNDMState
from .schedulers.k_dpm import (
    DPMSolverFast,
    DPMSolverFastState,
    DPMSolverPlusPlus2SAncestral,
    DPMSolverPlusPlus2SAncestralState,
    DPMSolverPlusPlus3MSDE,
)
from .schedulers.k_multistep import GradientEstimation, IPNDMVariableStep
from .schedulers.k_samplers import KDiffusionHistoryState
from .schedulers.kdpm2 import KDPM2AncestralDiscrete, KDPM2Discrete, KDPM2State
from .schedulers.lcm import LCM, TCD, LCMState, TCDState
from .schedulers.lms import LMSDiscrete, LMSState
from .schedulers.ltx_rf import LTXEulerAncestralRF, LTXEulerAncestralRFState
from .schedulers.passthrough import ComfyUIPassThrough, PassThroughState
from .schedulers.piflow import Piflow, PiflowState, SglangPiflow
from .schedulers.pndm import PNDM, PNDMState
from .schedulers.res import RESMultistep, RESMultistepAncestral
from .schedulers.sa_solver import SASolver, SASolverState
from .schedulers.seeds import SEEDS2, SEEDS3, SEEDSState
from .schedulers.self_forcing import SelfForcingFlowMatch, SglangFlowMatch
from .schedulers.sglang_dpm import SglangDPMSolverMultistep
from .schedulers.sglang_flow import MOSSImage, SglangFlowMatchEulerDiscrete, SglangLTX2FlowMatch
from .schedulers.unipc import UniPCMultistep, UniPCState
from .schedulers.wuerstchen import DDPMWuerstchen, DDPMWuerstchenState

#: Every scheduler of the core, by diffusers class: `scheduler_cls.diffusers_name` names the class it reproduces.
SCHEDULERS = (
    FlowMatchEulerDiscrete,
    FlowMatchLCM,
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
    DDIMInverse,
    DPMSolverMultistepInverse,
    FlowMatchHeunDiscrete,
    LTXEulerAncestralRF,
    LCM,
    TCD,
    CogVideoXDDIM,
    CogVideoXDPM,
    EDMEuler,
    EDMDPMSolverMultistep,
    CosineDPMSolverMultistep,
    SASolver,
    IPNDM,
    DDPMWuerstchen,
    Hunyuan3DFlowMatchEulerDiscrete,
    Hunyuan3DConsistencyFlowMatchEulerDiscrete,
    SelfForcingFlowMatch,
    SglangFlowMatch,
    FlowMatchPair,
    SglangDPMSolverMultistep,
    ComfyUIPassThrough,
    FlowUniPCMultistep,
    SglangUniPCMultistep,
    Piflow,
    SglangPiflow,
    SglangFlowMatchEulerDiscrete,
    SglangLTX2FlowMatch,
    MOSSImage,
    Helios,
    HeliosDMD,
    SglangHelios,
    FlowMatchSDE,
    DPMSolverPlusPlus2SAncestral,
    DPMSolverPlusPlus3MSDE,
    DPMSolverFast,
    DPMSolverAdaptive,
    ERSDE,
    GradientEstimation,
    IPNDMVariableStep,
    HeunPlusPlus,
    RESMultistep,
    RESMultistepAncestral,
    SEEDS2,
    SEEDS3,
)

__all__ = [
    "DDIM",
    "DDPM",
    "ERSDE",
    "IPNDM",
    "LCM",
    "PNDM",
    "SCHEDULERS",
    "SEEDS2",
    "SEEDS3",
    "TCD",
    "CogVideoXDDIM",
    "CogVideoXDDIMState",
    "CogVideoXDPM",
    "CogVideoXDPMState",
    "ComfyUIPassThrough",
    "CosineDPMSolverMultistep",
    "DDIMInverse",
    "DDIMInverseState",
    "DDIMState",
    "DDPMState",
    "DDPMWuerstchen",
    "DDPMWuerstchenState",
    "DEISMultistep",
    "DEISState",
    "DPMSolverAdaptive",
    "DPMSolverAdaptiveState",
    "DPMSolverFast",
    "DPMSolverFastState",
    "DPMSolverMultistep",
    "DPMSolverMultistepInverse",
    "DPMSolverMultistepInverseState",
    "DPMSolverPlusPlus2SAncestral",
    "DPMSolverPlusPlus2SAncestralState",
    "DPMSolverPlusPlus3MSDE",
    "DPMSolverSDE",
    "DPMSolverSDEState",
    "DPMSolverSinglestep",
    "DPMSolverSinglestepState",
    "DPMSolverState",
    "Denoising",
    "EDMDPMSolverMultistep",
    "EDMDPMSolverState",
    "EDMEuler",
    "EDMEulerState",
    "EulerAncestralDiscrete",
    "EulerAncestralState",
    "EulerDiscrete",
    "EulerState",
    "FlowMatchEulerDiscrete",
    "FlowMatchEulerState",
    "FlowMatchHeunDiscrete",
    "FlowMatchHeunState",
    "FlowMatchLCM",
    "FlowMatchLCMState",
    "FlowMatchPair",
    "FlowMatchSDE",
    "FlowMatchSDEState",
    "FlowUniPCMultistep",
    "GradientEstimation",
    "Helios",
    "HeliosDMD",
    "HeunDiscrete",
    "HeunPlusPlus",
    "HeunPlusPlusState",
    "HeunState",
    "Hunyuan3DConsistencyFlowMatchEulerDiscrete",
    "Hunyuan3DFlowMatchEulerDiscrete",
    "IPNDMState",
    "IPNDMVariableStep",
    "KDPM2AncestralDiscrete",
    "KDPM2Discrete",
    "KDPM2State",
    "KDiffusionHistoryState",
    "LCMState",
    "LMSDiscrete",
    "LMSState",
    "LTXEulerAncestralRF",
    "LTXEulerAncestralRFState",
    "MOSSImage",
    "PNDMState",
    "PassThroughState",
    "Piflow",
    "PiflowState",
    "Plan",
    "RESMultistep",
    "RESMultistepAncestral",
    "SASolver",
    "SASolverState",
    "SEEDSState",
    "SamplingLoop",
    "Scheduler",
    "SelfForcingFlowMatch",
    "SglangDPMSolverMultistep",
    "SglangFlowMatch",
    "SglangFlowMatchEulerDiscrete",
    "SglangHelios",
    "SglangLTX2FlowMatch",
    "SglangPiflow",
    "SglangUniPCMultistep",
    "TCDState",
    "UniPCMultistep",
    "UniPCState",
    "batching",
    "brownian_noise",
    "capturing",
    "clear_caches",
    "denoise",
    "randn_tensor",
    "record",
    "schedules",
    "serialize",
    "step_log_prob",
    "step_transition",
    "unchecked",
]
__version__ = "0.1.0"
