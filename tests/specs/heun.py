"""`HeunDiscrete`'s conformance table: SD 1.5's, SDXL's and SD 2.1-v's Heun first (the "Heun" and "Heun Karras" of the
SD sampler menus), then the options' corners: sigma spacings, clipping, sample prediction, the exp betas, custom
timesteps."""

from __future__ import annotations

import numpy as np

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
SD15 = {**SCALED_LINEAR, "steps_offset": 1}
# Cosine betas reach sigma 2e4 at t = 999 (half precision overflows there, in diffusers as here): their config spaces
# timesteps as SDXL does, up to t = 876. (Exp betas overflow half precision at any spacing: `tests/test_heun.py`.)
LEADING = {"timestep_spacing": "leading", "steps_offset": 1}
# Interval counts of the order fits: Heun's error is measured before its last call (the Euler step into sigma = 0),
# after N - 1 whole Heun intervals of a Karras schedule with fixed ends, so it falls like N^-2.
STEPS = (10, 20, 40, 80)

HEUN = Spec(
    fs.HeunDiscrete,
    configs=(
        Config("sd1.5", SD15),
        Config("sdxl", {**SD15, "timestep_spacing": "leading"}),
        Config("sd2.1-v", {**SD15, "prediction_type": "v_prediction"}),
        Config("sd1.5-karras", {**SD15, "use_karras_sigmas": True}),
        Config(
            "sdxl-karras-v",
            {**SD15, "timestep_spacing": "leading", "use_karras_sigmas": True, "prediction_type": "v_prediction"},
        ),
        Config("exponential-sigmas", {"use_exponential_sigmas": True, "timestep_spacing": "trailing"}),
        Config("beta-sigmas", {**SCALED_LINEAR, "use_beta_sigmas": True}),
        Config("clip-sample", {**SD15, "clip_sample": True, "clip_sample_range": 0.5}),
        Config(
            "sample-prediction",
            {"prediction_type": "sample", "clip_sample": True, "beta_schedule": "squaredcos_cap_v2", **LEADING},
        ),
        Config(
            "trained-betas",
            {"num_train_timesteps": 100, "trained_betas": tuple(0.001 + 0.0002 * index for index in range(100))},
        ),
        Config(
            "custom-timesteps",
            {"steps_offset": 1},
            Schedule(custom=lambda n: {"timesteps": np.linspace(999.0, 20.5, n)}),
        ),
    ),
    refusals=(
        Refusal(
            "custom-timesteps-with-karras",
            {"use_karras_sigmas": True},
            "custom timesteps cannot be used with use_karras_sigmas=True",
            Schedule(custom=lambda n: {"timesteps": np.linspace(999.0, 1.0, n)}),
            at="init",
        ),
        # diffusers' step raises ValueError for "original_sample" (Euler's old name of "sample").
        Refusal("original-sample", {"prediction_type": "original_sample"}, "prediction_type"),
    ),
    orders=(
        Order("heun-karras", {"use_karras_sigmas": True}, 2, STEPS),
        Order("heun-v-karras", {**SD15, "use_karras_sigmas": True, "prediction_type": "v_prediction"}, 2, STEPS),
    ),
)
