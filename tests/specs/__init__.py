"""Each scheduler class's conformance table (one module per family, as the core has), by class; and the cases other
test modules (stages, handoff, load) run on."""

from __future__ import annotations

from functional_sched.testing import Case, Spec

from .ddpm import DDIM_SPEC, DDPM_SPEC
from .deis import DEIS
from .dpm_sde import DPM_SDE
from .dpm_singlestep import DPM_SINGLESTEP
from .dpm_solver import DPM_SOLVER
from .euler import EULER, EULER_ANCESTRAL
from .flow_match import FLOW_MATCH
from .heun import HEUN
from .kdpm2 import KDPM2, KDPM2_ANCESTRAL
from .lms import LMS
from .pndm import PNDM
from .unipc import UNIPC

SPECS: dict[type, Spec] = {
    spec.scheduler: spec
    for spec in (
        FLOW_MATCH,
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
