"""`FlowMatchSDE`'s conformance table, held to Flow-GRPO's `sde_step_with_logprob`.

Flow-GRPO is no installable package: its SDE step is a function patched onto diffusers' FlowMatchEulerDiscreteScheduler
(`flow_grpo/diffusers_patch/sd3_sde_with_logprob.py` of github.com/yifan123/flow_grpo at commit
ac4c86e8cae021841f1fde853d340e0db67690dd, MIT licence). `functional_sched.adapters.flow_grpo` holds that function
transcribed line for line (`sde_step_with_logprob`) and `FlowGRPOReference`, the scheduler Flow-GRPO's SD3 pipeline
steps with (a real diffusers 0.42.1 FlowMatchEulerDiscreteScheduler for the schedule, the function for `step`, called
as `pipeline_with_logprob` calls it); the report's Flow-GRPO rows use the same reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import functional_sched as fs
from functional_sched.adapters.flow_grpo import FlowGRPOReference, sde_step_with_logprob
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec
from functional_sched.testing.spec import built_as_diffusers

__all__ = ["FLOW_SDE", "FlowGRPOReference", "flux_sigmas", "sde_step_with_logprob"]


def flux_sigmas(steps: int) -> dict[str, Any]:
    """What Flux's pipeline passes: `sigmas=np.linspace(1.0, 1 / n, n)`."""
    return {"sigmas": np.linspace(1.0, 1 / steps, steps)}


FLOW_SDE = Spec(
    fs.FlowMatchSDE,
    configs=(
        # Flow-GRPO's SD3.5-Medium runs: the model's scheduler config (shift 3), noise_level 0.7 (config/base.py).
        Config("sd3.5-flow-grpo", {"shift": 3.0, "noise_level": 0.7}),
        Config(
            "flux-dynamic",
            {"use_dynamic_shifting": True, "base_image_seq_len": 256, "max_image_seq_len": 4096, "noise_level": 0.7},
            Schedule(mu=1.15, custom=flux_sigmas),
        ),
        # Flow-GRPO's evaluation: noise_level 0, the deterministic Euler step of the ODE.
        Config("sd3.5-eval-ode", {"shift": 3.0, "noise_level": 0.0}),
        Config("noise-level-1-karras", {"shift": 3.0, "noise_level": 1.0, "use_karras_sigmas": True}),
        # A schedule that does not start at sigma 1: the sigma_max substitution never applies.
        Config("img2img-sigmas", {"noise_level": 0.5}, Schedule(custom=lambda n: {"sigmas": np.linspace(0.8, 0.1, n)})),
        Config("shift-terminal", {"shift": 3.0, "shift_terminal": 0.1, "noise_level": 0.8}),
    ),
    reference=lambda options: built_as_diffusers(FlowGRPOReference, fs.FlowMatchSDE, options),
    # diffusers' option that the SDE step replaces.
    unsupported={"stochastic_sampling": True},
    refusals=(
        # The inverted schedule starts at sigma 0: Flow-GRPO's step divides by it (NaN).
        Refusal("inverted", {"invert_sigmas": True}, "invert_sigmas=True is not supported"),
    ),
    orders=(Order("ode-euler", {"shift": 3.0, "noise_level": 0.0}, 1, (20, 40, 80, 160)),),
)
