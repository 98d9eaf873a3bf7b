"""The alpha_bar schedulers' conformance tables: `DDIM` (SD 1.5's and SD 2.1-v's configs first, the zero-SNR
'trailing' variant, then eta, clipping and thresholding) and `DDPM` (diffusers' default, every fixed variance type,
the spacings, custom timesteps). Learned variances need a model output with extra channels: `tests/test_ddpm.py`."""

from __future__ import annotations

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec, pipelines

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
# Stable Diffusion 1.5's DDIM config (the report's grid, `functional_sched.adapters._cases`, has it and SD 2.1-v's).
SD15 = {**SCALED_LINEAR, "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False}
# Stable Diffusion 2.1 (768 px, `stabilityai/stable-diffusion-2-1`): the same, predicting v.
SD21_V = {**SD15, "prediction_type": "v_prediction"}
# Lin et al. (2023)'s fix, as diffusers documents it for SD 2.x v-prediction models fine-tuned to zero terminal SNR.
ZERO_SNR = {"timestep_spacing": "trailing", "rescale_betas_zero_snr": True}
# The Gaussian problem's data spread past [-1, 1]: clipping x0 would change the solution the order is measured on.
UNCLIPPED = {"clip_sample": False}
# The SD x4 upscaler (`stabilityai/stable-diffusion-x4-upscaler`): DDIM predicting v, and its low-res noise DDPM.
X4_UPSCALER = {"beta_schedule": "scaled_linear", "beta_start": 0.0001, "beta_end": 0.02, "clip_sample": False}
STEPS = (20, 40, 80, 160)


def _descending(n: int) -> dict[str, list[float]]:
    """n distinct integer timesteps from 999 down (unevenly: DeepFloyd IF's pipelines pass tables like these)."""
    return {"timesteps": [float(round(999 * (1 - i / n) ** 1.5)) for i in range(n)]}


DDIM_SPEC = Spec(
    fs.DDIM,
    configs=(
        *pipelines(fs.DDIM),
        Config("sd2.1-v-trailing-zero-snr", {**SD21_V, **ZERO_SNR}, Schedule(steps=7)),
        Config(
            "sd-x4-upscaler",
            {**X4_UPSCALER, "prediction_type": "v_prediction", "set_alpha_to_one": False, "steps_offset": 1},
        ),
        Config("default-clipped", {}),
        Config("eta-1", {**SD15, "eta": 1.0}),
        Config(
            "eta-linspace-clipped-output",
            {"timestep_spacing": "linspace", "eta": 0.5, "use_clipped_model_output": True},
        ),
        Config("thresholding", {"thresholding": True, "sample_max_value": 1.5, "dynamic_thresholding_ratio": 0.9}),
        Config("sample-prediction-cosine", {"prediction_type": "sample", "beta_schedule": "squaredcos_cap_v2"}),
        Config(
            "v-trailing-range",
            {"prediction_type": "v_prediction", "timestep_spacing": "trailing", "clip_sample_range": 1.5},
        ),
    ),
    refusals=(
        # alpha_bar is exactly 0 at the last training timestep: x0 = (x - eps) / 0.
        Refusal(
            "zero-snr-epsilon",
            {**SCALED_LINEAR, **ZERO_SNR, **UNCLIPPED},
            "has alpha_bar = 0",
            Schedule(steps=7),
            at="init",
        ),
        Refusal(
            "leading-offset-past-the-table",
            {"steps_offset": 200},
            "start at timestep 1075, past the training schedule's last",
            at="init",
        ),
        # eta so large that 1 - alpha_bar_prev - std^2 < 0: diffusers takes its square root.
        Refusal("eta-past-the-variance", {"eta": 3.0}, "computes NaN or inf", at="init"),
    ),
    orders=(
        # The DDIM step is exact for x0 fixed over a step: first order in the step size (Song et al., 2021, sec. 4.3).
        Order("ddim", UNCLIPPED, 1, STEPS),
        Order("ddim-v", {**UNCLIPPED, "prediction_type": "v_prediction"}, 1, STEPS),
        Order("ddim-sd1.5", SD15, 1, STEPS),
    ),
)

DDPM_SPEC = Spec(
    fs.DDPM,
    configs=(
        *pipelines(fs.DDPM),
        Config("sd-x4-upscaler-low-res", X4_UPSCALER),
        Config(
            "fixed-small-log-sd",
            {**SCALED_LINEAR, "steps_offset": 1, "clip_sample": False, "variance_type": "fixed_small_log"},
        ),
        Config("fixed-large-linspace", {"variance_type": "fixed_large", "timestep_spacing": "linspace"}),
        Config(
            "v-trailing-zero-snr",
            {**SCALED_LINEAR, **ZERO_SNR, "prediction_type": "v_prediction", "clip_sample": False},
            Schedule(steps=7),
        ),
        Config("custom-timesteps", {"beta_schedule": "squaredcos_cap_v2"}, Schedule(custom=_descending)),
        Config("thresholding-sigmoid", {"beta_schedule": "sigmoid", "thresholding": True, "sample_max_value": 1.5}),
        Config("sample-prediction-laplace", {"prediction_type": "sample", "beta_schedule": "laplace"}),
    ),
    # The toy model serves one output layout: a learned variance's extra channels have tests of their own.
    held=("variance_type",),
    refusals=(
        Refusal("fixed-large-log", {"variance_type": "fixed_large_log"}, "variance_type='fixed_large_log'"),
        Refusal(
            "zero-snr-epsilon",
            {**SCALED_LINEAR, **ZERO_SNR, **UNCLIPPED},
            "has alpha_bar = 0",
            Schedule(steps=7),
            at="init",
        ),
    ),
)
