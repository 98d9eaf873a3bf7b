"""`FlowMatchEulerDiscrete`'s conformance table: SD3, Flux, Qwen-Image first, then the options real pipelines use."""

from __future__ import annotations

import numpy as np

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec, pipelines

STEPS = (20, 40, 80, 160)

FLOW_MATCH = Spec(
    fs.FlowMatchEulerDiscrete,
    configs=(
        *pipelines(fs.FlowMatchEulerDiscrete),
        Config("stochastic-karras", {"shift": 2.0, "stochastic_sampling": True, "use_karras_sigmas": True}),
        Config(
            "ltx-video-linear-shift",
            {
                "use_dynamic_shifting": True,
                "base_shift": 0.95,
                "max_shift": 2.05,
                "base_image_seq_len": 1024,
                "max_image_seq_len": 4096,
                "shift_terminal": 0.1,
                "time_shift_type": "linear",
            },
            Schedule(mu=1.5),
        ),
        # HunyuanVideoPipeline: static shift 7, sigmas = np.linspace(1, 0, n + 1)[:-1].
        Config(
            "hunyuan-video", {"shift": 7.0}, Schedule(custom=lambda n: {"sigmas": np.linspace(1.0, 0.0, n + 1)[:-1]})
        ),
        Config("inverted", {"invert_sigmas": True}),
        Config("exponential-sigmas", {"shift": 3.0, "use_exponential_sigmas": True}),
        Config("beta-sigmas-stochastic", {"shift": 3.0, "use_beta_sigmas": True, "stochastic_sampling": True}),
        Config(
            "custom-timesteps",
            {"shift": 2.5},
            Schedule(custom=lambda n: {"timesteps": np.linspace(1000.0, 1000.0 / n, n) ** 0.9}),
        ),
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
        Refusal(
            "dynamic-shift-terminal-one-step",
            {"use_dynamic_shifting": True, "shift_terminal": 0.02},
            "shift_terminal cannot stretch a schedule whose last sigma is 1",
            Schedule(steps=1, mu=0.8),
            at="init",
        ),
    ),
    orders=(
        Order("euler", {}, 1, STEPS),
        Order("euler-shift3", {"shift": 3.0}, 1, STEPS),
    ),
)
