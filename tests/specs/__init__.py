"""Each scheduler class's conformance table (one module per family, as the core has), by class; and the cases other
test modules (stages, handoff, load) run on."""

from __future__ import annotations

from functional_sched.testing import Case, Spec

from .cogvideox import COGVIDEOX_DDIM, COGVIDEOX_DPM
from .ddpm import DDIM_SPEC, DDPM_SPEC
from .deis import DEIS
from .dpm_adaptive import DPM_ADAPTIVE
from .dpm_sde import DPM_SDE
from .dpm_singlestep import DPM_SINGLESTEP
from .dpm_solver import DPM_SOLVER
from .edm import COSINE_DPM_SOLVER, EDM_DPM_SOLVER, EDM_EULER
from .er_sde import ER_SDE
from .euler import EULER, EULER_ANCESTRAL
from .flow_heun import FLOW_HEUN
from .flow_lcm import FLOW_LCM
from .flow_match import FLOW_MATCH
from .flow_pair import FLOW_PAIR
from .flow_sde import FLOW_SDE
from .flow_unipc import FLOW_UNIPC, SGLANG_UNIPC
from .helios import HELIOS, HELIOS_DMD, SGLANG_HELIOS
from .heun import HEUN
from .heunpp import HEUNPP
from .hunyuan3d import HUNYUAN3D_CONSISTENCY, HUNYUAN3D_FLOW_MATCH
from .inverse import DDIM_INVERSE, DPM_INVERSE
from .ipndm import IPNDM
from .k_dpm import DPM_FAST, DPMPP_2S_ANCESTRAL, DPMPP_3M_SDE
from .k_multistep import GRADIENT_ESTIMATION, IPNDM_VARIABLE_STEP
from .kdpm2 import KDPM2, KDPM2_ANCESTRAL
from .lcm import LCM_SPEC, TCD_SPEC
from .lms import LMS
from .ltx_rf import LTX_RF
from .passthrough import PASSTHROUGH
from .piflow import PIFLOW, SGLANG_PIFLOW
from .pndm import PNDM
from .res import RES_MULTISTEP, RES_MULTISTEP_ANCESTRAL
from .sa_solver import SA_SOLVER
from .seeds import SEEDS_2, SEEDS_3
from .self_forcing import SELF_FORCING, SGLANG_FLOW_MATCH
from .sglang_dpm import SGLANG_DPM_SOLVER
from .sglang_flow import MOSS_IMAGE, SGLANG_FLOW_MATCH_EULER, SGLANG_LTX2_FLOW_MATCH
from .unipc import UNIPC
from .wuerstchen import WUERSTCHEN

SPECS: dict[type, Spec] = {
    spec.scheduler: spec
    for spec in (
        FLOW_MATCH,
        FLOW_LCM,
        DPM_SOLVER,
        UNIPC,
        EULER,
        EULER_ANCESTRAL,
        LMS,
        DDIM_SPEC,
        DDPM_SPEC,
        PNDM,
        DEIS,
        DPM_SINGLESTEP,
        DPM_SDE,
        HEUN,
        KDPM2,
        KDPM2_ANCESTRAL,
        DDIM_INVERSE,
        DPM_INVERSE,
        FLOW_HEUN,
        LTX_RF,
        LCM_SPEC,
        TCD_SPEC,
        COGVIDEOX_DDIM,
        COGVIDEOX_DPM,
        EDM_EULER,
        EDM_DPM_SOLVER,
        COSINE_DPM_SOLVER,
        SA_SOLVER,
        IPNDM,
        WUERSTCHEN,
        HUNYUAN3D_FLOW_MATCH,
        HUNYUAN3D_CONSISTENCY,
        SELF_FORCING,
        SGLANG_FLOW_MATCH,
        FLOW_PAIR,
        SGLANG_DPM_SOLVER,
        PASSTHROUGH,
        FLOW_UNIPC,
        SGLANG_UNIPC,
        PIFLOW,
        SGLANG_PIFLOW,
        SGLANG_FLOW_MATCH_EULER,
        SGLANG_LTX2_FLOW_MATCH,
        MOSS_IMAGE,
        HELIOS,
        HELIOS_DMD,
        SGLANG_HELIOS,
        FLOW_SDE,
        DPMPP_2S_ANCESTRAL,
        DPMPP_3M_SDE,
        DPM_FAST,
        DPM_ADAPTIVE,
        ER_SDE,
        GRADIENT_ESTIMATION,
        IPNDM_VARIABLE_STEP,
        HEUNPP,
        RES_MULTISTEP,
        RES_MULTISTEP_ANCESTRAL,
        SEEDS_2,
        SEEDS_3,
    )
}
#: Every config of every table, by case id ("DPMSolverMultistep-sd1.5-dpm-2m").
CASES: dict[str, Case] = {case.id: case for spec in SPECS.values() for case in map(spec.case, spec.configs)}


def representative() -> list[Case]:
    """Per class: its first config, its first with a custom table (sigmas or timesteps a pipeline passes), and its
    first stochastic one: what code above the schedulers (stages, handoff) must carry through."""
    chosen: list[Case] = []
    for spec in SPECS.values():
        cases = [spec.case(config) for config in spec.configs]
        picks = [cases[0], *(case for case in cases if case.config.schedule.custom)][:2]
        picks += [case for case in cases if case.stochastic][:1]
        chosen += [case for index, case in enumerate(picks) if case not in picks[:index]]
    return chosen
