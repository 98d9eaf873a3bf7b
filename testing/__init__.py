"""The conformance kit: prove a scheduler class has every property functional-sched promises, as diffusers'
`SchedulerCommonTest` lets a scheduler author prove theirs. Needs the `test` extra.

    # tests/test_my_scheduler.py
    from functional_sched.testing import Config, Schedule, SchedulerConformance, Spec

    class TestMyScheduler(SchedulerConformance):
        specs = (Spec(MyScheduler, configs=(Config("sd15", {"beta_schedule": "scaled_linear"}), ...)),)

`MyScheduler` subclasses `functional_sched.Scheduler` and declares its options (`functional_sched.machinery.options`);
its reference is diffusers' class named by its `diffusers_name` unless `Spec(reference=...)` gives another (or None).
"""

from .gaussian import final_error, fitted_order
from .parity import (
    ParityResult,
    conditioned_model,
    latents,
    loop_parity_run,
    parity_run,
    relative_error,
    step_noise,
    toy_model,
    ulp,
)
from .selection import configs
from .spec import Case, Config, Order, Refusal, Schedule, Spec, pipelines
from .strategies import cases, config_options, refused_values, schedules
from .suite import SchedulerConformance

__all__ = [
    "Case",
    "Config",
    "Order",
    "ParityResult",
    "Refusal",
    "Schedule",
    "SchedulerConformance",
    "Spec",
    "cases",
    "conditioned_model",
    "config_options",
    "configs",
    "final_error",
    "fitted_order",
    "latents",
    "loop_parity_run",
    "parity_run",
    "pipelines",
    "refused_values",
    "relative_error",
    "schedules",
    "step_noise",
    "toy_model",
    "ulp",
]
