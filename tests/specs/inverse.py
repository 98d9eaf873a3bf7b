"""The inverse schedulers' conformance tables: `DDIMInverse` (DiffEdit's SD 2.1-base config and the SD 2.1-v one
first, then zero SNR, clipping, `set_alpha_to_one`, the spacings) and `DPMSolverMultistepInverse` (DiffEdit's DPM++ 2M
inversion first, then the orders, algorithms, sigma spacings and `lambda_min_clipped`). Round trips (invert, then
sample back with the forward class) are in `tests/test_inverse.py`."""

from __future__ import annotations

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec, pipelines

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
# Stable Diffusion's DDIM config, as DiffEdit builds its inverse scheduler from it.
SD = {**SCALED_LINEAR, "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False}
# The Gaussian problem's data spread past [-1, 1]; and alpha_bar = 1 before the table makes the first step start at
# sigma = 0, where the exact model's epsilon is undefined.
GAUSSIAN = {"clip_sample": False, "set_alpha_to_one": False}
STEPS = (20, 40, 80, 160)

DDIM_INVERSE = Spec(
    fs.DDIMInverse,
    configs=(
        *pipelines(fs.DDIMInverse),
        Config(
            "sd2.1-v-trailing-zero-snr",
            {**SD, "prediction_type": "v_prediction", "timestep_spacing": "trailing", "rescale_betas_zero_snr": True},
            Schedule(steps=7),
        ),
        # epsilon on a zero-SNR schedule: the inversion ends at alpha_bar = 0 but never forms x0 there.
        Config("trailing-zero-snr-epsilon", {**SD, "timestep_spacing": "trailing", "rescale_betas_zero_snr": True}),
        Config("default-clipped", {}),
        Config(
            "clip-range-v-cosine",
            {"prediction_type": "v_prediction", "beta_schedule": "squaredcos_cap_v2", "clip_sample_range": 1.5},
        ),
        Config("sample-prediction", {"prediction_type": "sample", "set_alpha_to_one": False}),
    ),
    refusals=(
        Refusal(
            "leading-offset-past-the-table",
            {"steps_offset": 200},
            "start at timestep 1075, past the training schedule's last",
            at="init",
        ),
        # alpha_bar = 1 where the first step starts: epsilon = (x - x0) / 0.
        Refusal("sample-prediction-from-alpha-one", {"prediction_type": "sample"}, "divides by 0", at="init"),
    ),
    orders=(
        # DDIM's step run forward in time: exact for x0 fixed over a step, first order in the step size.
        Order("ddim-inverse", GAUSSIAN, 1, STEPS),
        Order("ddim-inverse-v", {**GAUSSIAN, "prediction_type": "v_prediction"}, 1, STEPS),
        Order("ddim-inverse-sd", SD, 1, STEPS),
    ),
)

DPM_INVERSE = Spec(
    fs.DPMSolverMultistepInverse,
    configs=(
        *pipelines(fs.DPMSolverMultistepInverse),
        Config("sd-karras", {**SCALED_LINEAR, "use_karras_sigmas": True}),
        Config(
            "dpmsolver-heun-thresholding",
            {"algorithm_type": "dpmsolver", "solver_type": "heun", "thresholding": True, "sample_max_value": 1.5},
        ),
        Config("v-trailing", {**SCALED_LINEAR, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}),
        Config(
            "sample-prediction-leading", {"prediction_type": "sample", "timestep_spacing": "leading", "steps_offset": 1}
        ),
        Config("lambda-min-clipped-cosine", {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1}),
        Config("exponential-euler-at-final", {"use_exponential_sigmas": True, "euler_at_final": True}),
        Config("sd-3", {**SCALED_LINEAR, "solver_order": 3}),
    ),
    # (Beta sigmas have parity in the grid; as a config they would fail the float64-vs-float32 column: their first
    # step goes from sigma 0.01 to 11, x = 100 x - 99 x0 in effect, which amplifies float32 rounding past 1e-4.)
    # diffusers' inverse flow schedule is its forward one (sigmas from about 1 down): it denoises, so it is refused.
    unsupported={"use_flow_sigmas": True},
    # The toy model serves one output layout; and Karras sigmas on some schedules round to repeated timesteps at a
    # few steps (cosine: from 6), which diffusers drops while keeping their sigmas (its steps then read the sigmas of
    # other timesteps): ours refuses those, where diffusers runs on (tests/test_inverse.py), so the grid draws none.
    held=("variance_type", "use_karras_sigmas"),
    refusals=(
        # An SDE step's noise weight towards noise is the root of a negative number: NaN from the first step.
        Refusal("sde-dpmsolver++", {"algorithm_type": "sde-dpmsolver++"}, "cannot step towards noise"),
        Refusal("sde-dpmsolver", {"algorithm_type": "sde-dpmsolver"}, "cannot step towards noise"),
        # Karras sigmas end by repeating the last one: a zero-length last step, which a third-order update divides by
        # (lower_order_final acts only below 15 steps).
        Refusal(
            "zero-length-third-order-step",
            {**SCALED_LINEAR, "use_karras_sigmas": True, "solver_order": 3},
            r"step 19 of 20 .* has zero length",
            Schedule(steps=20),
            at="init",
        ),
        # The exponential spacing's fractional timesteps truncate to 0 twice: diffusers looks the first one up, skips
        # a step and runs off its sigma table.
        Refusal(
            "first-timestep-repeats",
            {"use_exponential_sigmas": True},
            "the schedule's first timestep 0 repeats",
            Schedule(steps=50),
            at="init",
        ),
    ),
    orders=(
        # diffusers' spacings keep the first step from timestep 0 long (its length in lambda shrinks like log N, and
        # exponential sigmas repeat timestep 0 from 26 steps): first order at best on its schedules. The update's own
        # second order, on sigmas uniform in lambda, is measured in tests/test_inverse.py.
        Order("dpm++2m-inverse-sd", SCALED_LINEAR, 1, STEPS, at_least=True),
        Order("dpm++1-inverse", {"solver_order": 1}, 1, STEPS),
    ),
)
