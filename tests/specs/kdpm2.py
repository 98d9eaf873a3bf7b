"""`KDPM2Discrete`'s and `KDPM2AncestralDiscrete`'s conformance tables: SD 1.5's, SDXL's and SD 2.1-v's DPM2 and DPM2 a
first, then "DPM2 Karras" and "DPM2 a Karras" (the SD sampler menus' picks), then the other sigma spacings and
spacings."""

from __future__ import annotations

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Spec

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
SD15 = {**SCALED_LINEAR, "steps_offset": 1}
# Interval counts of the order fits: DPM2 (the midpoint method) is second order per interval; the error is measured
# after N - 1 whole intervals of a Karras schedule with fixed ends (before the last call, an Euler step into 0).
STEPS = (10, 20, 40, 80)


def _configs() -> tuple[Config, ...]:
    return (
        Config("sd1.5", SD15),
        Config("sdxl", {**SD15, "timestep_spacing": "leading"}),
        Config("sd2.1-v", {**SD15, "prediction_type": "v_prediction"}),
        Config("sd1.5-karras", {**SD15, "use_karras_sigmas": True}),
        Config("sdxl-karras", {**SD15, "timestep_spacing": "leading", "use_karras_sigmas": True}),
        Config("exponential-sigmas", {"use_exponential_sigmas": True}),
        Config("beta-sigmas-v", {**SCALED_LINEAR, "use_beta_sigmas": True, "prediction_type": "v_prediction"}),
        Config("trailing", {"timestep_spacing": "trailing"}),
        Config(
            "trained-betas",
            {"num_train_timesteps": 100, "trained_betas": tuple(0.001 + 0.0002 * index for index in range(100))},
        ),
    )


#: diffusers' step raises NotImplementedError for a sample-predicting model.
_SAMPLE = Refusal("sample-prediction", {"prediction_type": "sample"}, "prediction_type")

KDPM2 = Spec(
    fs.KDPM2Discrete,
    configs=(
        *_configs(),
        # Cosine betas reach sigma 2e4 at t = 999 (half precision overflows there, in diffusers as here; DPM2 a's
        # sigma_down is NaN): spaced as SDXL's, up to t = 876.
        Config(
            "cosine-leading", {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "leading", "steps_offset": 1}
        ),
    ),
    refusals=(_SAMPLE,),
    orders=(
        Order("dpm2-karras", {"use_karras_sigmas": True}, 2, STEPS),
        Order("dpm2-v-karras", {**SD15, "use_karras_sigmas": True, "prediction_type": "v_prediction"}, 2, STEPS),
    ),
)

KDPM2_ANCESTRAL = Spec(
    fs.KDPM2AncestralDiscrete,
    configs=_configs(),
    refusals=(
        _SAMPLE,
        # Cosine betas' sigma_max (2e4) leaves sigma_up^2 ~ s'^2 in float32: the first sigma_down and the midpoint
        # are NaN at most step counts, in diffusers too.
        Refusal("cosine-betas", {"beta_schedule": "squaredcos_cap_v2"}, "computes NaN or inf", at="init"),
    ),
    noise_dtype=None,  # diffusers draws the noise in the model output's dtype
)
