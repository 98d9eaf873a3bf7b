"""The consistency samplers' conformance tables: `LCM` (LCM-LoRA on SD 1.5 and SDXL, LCM-Dreamshaper v7, at the
4 steps their model cards use, then `original_inference_steps`, `timestep_scaling`, the prediction types, clipping,
thresholding, zero SNR, custom timesteps) and `TCD` (TCD-SDXL-LoRA at its default eta 0.3, then eta 0 and 1, the
prediction types, custom timesteps).

Both draw noise at every step but the last (TCD only with eta > 0), in the dtype of their estimate, which a float32
draw on the CPU matches. Their `denoised=True` output is diffusers' second one (LCM's boundary-conditioned x0', TCD's
x_s), not the model's x0. Convergence: LCM is a sampler of a distilled consistency model, not a solver of the
diffusion model's probability-flow ODE (fed the exact denoiser of the Gaussian problem, its steps do not converge to
the ODE's solution), so it declares no order; nor does TCD with eta > 0 (each step redoes a fixed share of its
interval, however many steps). TCD with eta = 0 is DDIM on its grid: first order. `tests/test_lcm.py` checks instead
that both are exact in law when the model is the exact consistency function of the Gaussian problem."""

from __future__ import annotations

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec, pipelines

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
SD15 = {**SCALED_LINEAR, "steps_offset": 1}
# LCM-LoRA on SD 1.5 (`latent-consistency/lcm-lora-sdv1-5`): `LCMScheduler.from_config` of SD 1.5's PNDM config.
LCM_LORA_SD15 = {**SD15, "set_alpha_to_one": False, "clip_sample": False}
# `SimianLuo/LCM_Dreamshaper_v7`'s own config: LCM's defaults with SD's steps_offset.
DREAMSHAPER = SD15
# LCM-LoRA on SDXL (`latent-consistency/lcm-lora-sdxl`, and `latent-consistency/lcm-sdxl`): from SDXL's config.
SDXL = {**SD15, "timestep_spacing": "leading", "set_alpha_to_one": False, "clip_sample": False}
FOUR = Schedule(steps=4)  # what the LCM and TCD model cards run
STEPS = (20, 40, 80, 160)


def _on_the_grid(steps: int) -> dict[str, list[float]]:
    """Custom timesteps on LCM's default 50-point grid (each 20k - 1), unevenly: what LCM pipelines pass as
    `timesteps=` (the distilled model's own timesteps)."""
    return {"timesteps": [float(999 - 20 * ((index * 49) // steps)) for index in range(steps)]}


def _anywhere(steps: int) -> dict[str, list[float]]:
    """Custom timesteps off the grid (diffusers warns and takes them)."""
    return {"timesteps": [float(round(999 * (1 - index / steps) ** 1.3)) for index in range(steps)]}


LCM_SPEC = Spec(
    fs.LCM,
    configs=(
        Config("sd1.5-lcm-lora-4-steps", LCM_LORA_SD15, FOUR),
        Config("lcm-dreamshaper-v7-4-steps", DREAMSHAPER, FOUR),
        Config("sdxl-lcm-lora-4-steps", SDXL, FOUR),
        Config("sdxl-trailing", {**SDXL, "timestep_spacing": "trailing"}, Schedule(steps=6)),
        *pipelines(fs.LCM),
        Config("original-steps-1000-linear", {"original_inference_steps": 1000, "beta_schedule": "linear"}),
        Config("v-prediction-scaling-1", {**SCALED_LINEAR, "prediction_type": "v_prediction", "timestep_scaling": 1.0}),
        Config("v-zero-snr", {**SCALED_LINEAR, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True}),
        Config(
            "sample-clipped-cosine",
            {"prediction_type": "sample", "clip_sample": True, "beta_schedule": "squaredcos_cap_v2"},
        ),
        Config("thresholding", {"thresholding": True, "sample_max_value": 1.5, "dynamic_thresholding_ratio": 0.9}),
        Config("custom-timesteps-on-the-grid", DREAMSHAPER, Schedule(custom=_on_the_grid)),
        Config("custom-timesteps-anywhere", {"original_inference_steps": 4}, Schedule(custom=_anywhere)),
        Config(
            "trained-betas",
            {
                "num_train_timesteps": 100,
                "original_inference_steps": 20,
                "trained_betas": tuple(0.001 + 0.0002 * i for i in range(100)),
            },
        ),
    ),
    refusals=(
        Refusal(
            "more-steps-than-the-grid",
            {"original_inference_steps": 4},
            r"num_inference_steps=8 is more than the 4 timesteps of the grid",
            at="init",
        ),
        Refusal(
            "grid-past-the-training-timesteps",
            {"num_train_timesteps": 100, "original_inference_steps": 200},
            "original_inference_steps=200 cannot be more than num_train_timesteps=100",
        ),
        # alpha_bar is exactly 0 at timestep 999, the grid's first: x0 = (x - eps) / 0.
        Refusal("zero-snr-epsilon", {**SCALED_LINEAR, "rescale_betas_zero_snr": True}, "has alpha_bar = 0", at="init"),
    ),
    x0_is_models=lambda options: False,  # x0' = c_skip x + c_out x0
)

TCD_SPEC = Spec(
    fs.TCD,
    configs=(
        Config("sdxl-tcd-lora-4-steps", SDXL, FOUR),
        Config("sdxl-tcd-lora-eta-0-4-steps", {**SDXL, "eta": 0.0}, FOUR),
        Config("sdxl-tcd-lora-eta-1-4-steps", {**SDXL, "eta": 1.0}, FOUR),
        *pipelines(fs.TCD),
        Config("sd1.5-eta-0.5", {**LCM_LORA_SD15, "eta": 0.5}, Schedule(steps=8)),
        Config("original-steps-1000-v", {"original_inference_steps": 1000, "prediction_type": "v_prediction"}),
        Config("v-zero-snr", {**SCALED_LINEAR, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True}),
        # diffusers' TCD takes clip_sample and thresholding, and applies neither.
        Config(
            "sample-clip-and-threshold-ignored",
            {"prediction_type": "sample", "clip_sample": True, "thresholding": True},
        ),
        Config("custom-timesteps", {"eta": 0.7}, Schedule(custom=_anywhere)),
        Config("cosine-linear", {"beta_schedule": "squaredcos_cap_v2", "eta": 0.1}),
    ),
    refusals=(
        Refusal(
            "more-steps-than-the-grid",
            {"original_inference_steps": 4},
            r"num_inference_steps=8 is more than the 4 timesteps of the grid",
            at="init",
        ),
        # TCD clips nothing, so no clipping saves an epsilon prediction at alpha_bar = 0.
        Refusal(
            "zero-snr-epsilon-clipped",
            {**SCALED_LINEAR, "rescale_betas_zero_snr": True, "clip_sample": True},
            "has alpha_bar = 0",
            at="init",
        ),
    ),
    x0_is_models=lambda options: False,  # x_s = sqrt(a_s) x0 + sqrt(1 - a_s) eps
    orders=(
        # With eta = 0 every step is DDIM's (s is the next timestep): first order in the step size, on the grid of all
        # 1000 training timesteps (the default 50-point grid caps the step count at 50).
        Order("tcd-eta-0", {"eta": 0.0, "original_inference_steps": 1000}, 1, STEPS),
        Order(
            "tcd-eta-0-v", {"eta": 0.0, "original_inference_steps": 1000, "prediction_type": "v_prediction"}, 1, STEPS
        ),
    ),
)
