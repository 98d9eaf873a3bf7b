"""`FlowMatchLCM`'s conformance table: SD3.5 (its config, and SwD's few-step sigmas) first, then the flow schedule's
options. Scale-wise configs (`scale_factors`) change the sample's resolution between steps, which the suite's columns
do not express; tests/test_flow_lcm.py covers them."""

from __future__ import annotations

from typing import Any

import numpy as np

from functional_sched.schedulers.flow_lcm import FlowMatchLCM
from functional_sched.testing import Config, Refusal, Schedule, Spec, pipelines

#: SwD's (Scale-wise Distillation, yandex-research/swd) SD3.5 six-step sigmas; the pipeline passes them with
#: `timesteps = sigmas * 1000`.
SWD_SIGMAS = (1.0, 0.9454, 0.8959, 0.7904, 0.7371, 0.6022)


def swd_schedule(steps: int) -> dict[str, Any]:
    """SwD's sigmas and timesteps for 6 steps; for another count (the suite's columns vary it), the same curve
    resampled."""
    sigmas = (
        np.array(SWD_SIGMAS)
        if steps == len(SWD_SIGMAS)
        else np.interp(np.linspace(0, 1, steps), np.linspace(0, 1, len(SWD_SIGMAS)), SWD_SIGMAS)
    )
    return {"sigmas": sigmas, "timesteps": sigmas * 1000}


FLOW_LCM = Spec(
    FlowMatchLCM,
    configs=(
        *pipelines(FlowMatchLCM),
        Config("swd-sd3.5-sigmas", {"shift": 1.0}, Schedule(steps=6, custom=swd_schedule)),
        Config("default", {}, Schedule(steps=4)),
        Config(
            "flux-dynamic",
            {
                "use_dynamic_shifting": True,
                "base_shift": 0.5,
                "max_shift": 1.15,
                "base_image_seq_len": 256,
                "max_image_seq_len": 4096,
            },
            Schedule(mu=1.15, custom=lambda n: {"sigmas": np.linspace(1.0, 1 / n, n)}),
        ),
        Config("karras-shift3", {"shift": 3.0, "use_karras_sigmas": True}),
        Config("beta-sigmas", {"shift": 3.0, "use_beta_sigmas": True}),
        Config("shift-terminal", {"shift": 3.0, "shift_terminal": 0.1}),
        Config("inverted", {"invert_sigmas": True}),
    ),
    refusals=(
        # A first sigma given twice: diffusers' loop looks its timestep up, starts at the second and runs off the end.
        Refusal(
            "first-timestep-repeats",
            {},
            "the schedule's first timestep 800 repeats",
            Schedule(custom=lambda steps: {"sigmas": (0.8, 0.8, 0.5, 0.2)}),
            at="init",
        ),
        # One step from sigma = 1: shift_terminal divides by 1 - 1; diffusers' timesteps are NaN.
        Refusal(
            "shift-terminal-one-step",
            {"shift": 3.0, "shift_terminal": 0.1},
            "shift_terminal cannot stretch a schedule whose last sigma is 1",
            Schedule(steps=1),
            at="init",
        ),
        # Scale factors for another step count: diffusers raises at its first step.
        Refusal(
            "scale-factors-step-count",
            {"scale_factors": (1.5, 2.0)},
            "so the schedule must have 3 steps, not 8",
            Schedule(steps=8),
            at="init",
        ),
    ),
    # The resolution-changing options: the columns' loops keep one sample shape (tests/test_flow_lcm.py has them).
    held=("scale_factors", "upscale_mode"),
)
