"""The Euler family's conformance tables: `EulerDiscrete` (SDXL's, SD 1.5 with Karras sigmas, SD 2.1-v first, then
the options' corners: sigma spacings, churn, continuous timesteps, custom tables) and `EulerAncestralDiscrete` (SD
1.5's, SDXL's, SD 2.1-v first, then zero-SNR, the spacings and training schedules)."""

from __future__ import annotations

import numpy as np

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec, pipelines

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
SD15 = {**SCALED_LINEAR, "steps_offset": 1}
STEPS = (20, 40, 80, 160)


def _karras_like_sigmas(n: int) -> dict[str, np.ndarray]:
    """n + 1 custom sigmas with the final 0, as a pipeline passes Euler's (Karras' spacing from 14.6 to 0.03)."""
    ramp = np.linspace(0, 1, n)
    sigmas = (14.6 ** (1 / 7) + ramp * (0.03 ** (1 / 7) - 14.6 ** (1 / 7))) ** 7
    return {"sigmas": np.concatenate([sigmas, [0.0]])}


EULER = Spec(
    fs.EulerDiscrete,
    configs=(
        *pipelines(fs.EulerDiscrete),
        Config(
            "sd21-v-trailing-zero-snr",
            {
                **SCALED_LINEAR,
                "prediction_type": "v_prediction",
                "timestep_spacing": "trailing",
                "rescale_betas_zero_snr": True,
            },
        ),
        Config("churn", {**SCALED_LINEAR, "s_churn": 0.5}),
        Config(
            "churn-window", {"s_churn": 40.0, "s_tmin": 0.5, "s_tmax": 5.0, "s_noise": 1.003, "use_karras_sigmas": True}
        ),
        Config("exponential-sigmas", {"use_exponential_sigmas": True, "final_sigmas_type": "sigma_min"}),
        Config("beta-sigmas", {**SCALED_LINEAR, "use_beta_sigmas": True}),
        # The SD x4 upscaler's and Cosmos' continuous-time v-prediction: the model sees 0.25 log(sigma).
        Config("continuous-v", {"prediction_type": "v_prediction", "timestep_type": "continuous"}),
        Config("log-linear", {"interpolation_type": "log_linear"}),
        Config("sample-prediction", {"prediction_type": "sample", "timestep_spacing": "trailing"}),
        Config("custom-sigmas", {**SCALED_LINEAR}, Schedule(custom=_karras_like_sigmas)),
        Config(
            "custom-timesteps",
            {"steps_offset": 1},
            Schedule(custom=lambda n: {"timesteps": np.linspace(999.0, 20.5, n)}),
        ),
        Config("registered-range-karras", {"use_karras_sigmas": True, "sigma_min": 0.05, "sigma_max": 20.0}),
    ),
    refusals=(
        # diffusers then takes N + 1 steps for num_inference_steps=N (a timestep per log-linear sigma but the last).
        Refusal(
            "log-linear-continuous-v",
            {"interpolation_type": "log_linear", "prediction_type": "v_prediction", "timestep_type": "continuous"},
            "interpolation_type='log_linear' with timestep_type='continuous'",
        ),
        Refusal(
            "custom-timesteps-with-karras",
            {"use_karras_sigmas": True},
            "custom timesteps cannot be used with use_karras_sigmas=True",
            Schedule(custom=lambda n: {"timesteps": np.linspace(999.0, 1.0, n)}),
            at="init",
        ),
        Refusal(
            "custom-timesteps-continuous-v",
            {"prediction_type": "v_prediction", "timestep_type": "continuous"},
            "custom timesteps cannot be used with timestep_type='continuous'",
            Schedule(custom=lambda n: {"timesteps": np.linspace(999.0, 1.0, n)}),
            at="init",
        ),
    ),
    sigmas_include_final=True,
    noise_dtype=None,  # diffusers draws the churn noise in the model output's dtype
    x0_is_models=lambda options: not options.get("s_churn"),
    orders=(
        Order("euler-karras", {"use_karras_sigmas": True}, 1, STEPS),
        Order("euler-v-karras", {"use_karras_sigmas": True, "prediction_type": "v_prediction"}, 1, STEPS),
    ),
)

# Euler a is stochastic at every step, so the deterministic `Order` (final error against the probability-flow ODE)
# does not apply; `tests/test_euler.py` measures its weak order on the Gaussian problem instead.
EULER_ANCESTRAL = Spec(
    fs.EulerAncestralDiscrete,
    configs=(
        Config("sd1.5", SD15),
        Config("sdxl", {**SD15, "timestep_spacing": "leading"}),
        Config("sd2.1-v", {**SD15, "prediction_type": "v_prediction"}),
        Config(
            "sd2.1-v-trailing-zero-snr",
            {**SD15, "prediction_type": "v_prediction", "timestep_spacing": "trailing", "rescale_betas_zero_snr": True},
        ),
        Config("default", {}),
        Config("trailing", {"timestep_spacing": "trailing"}, Schedule(steps=7)),
        Config("cosine", {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "leading"}),
        Config(
            "trained-betas",
            {"num_train_timesteps": 100, "trained_betas": tuple(0.001 + 0.0002 * index for index in range(100))},
        ),
    ),
    refusals=(
        # diffusers' step raises NotImplementedError ("prediction_type not implemented yet: sample").
        Refusal("sample-prediction", {"prediction_type": "sample"}, "prediction_type"),
    ),
    noise_dtype=None,  # diffusers draws the noise in the model output's dtype
)
