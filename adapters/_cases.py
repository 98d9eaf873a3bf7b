"""Real-pipeline scheduler configs: the grid the report and the benchmarks run, keyed by diffusers class name.

Configs are the published `scheduler_config.json` of each model (Hugging Face hub, as of diffusers 0.42.1), and the
`set_timesteps` arguments its diffusers pipeline passes (`pipelines/flux/pipeline_flux.py`,
`pipelines/qwenimage/pipeline_qwenimage.py`, `pipelines/sana/pipeline_sana.py`, `pipelines/wan/pipeline_wan.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import functional_sched as fs

# Stable Diffusion 1.5's betas (`runwayml/stable-diffusion-v1-5`, scheduler/scheduler_config.json).
_SD15_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
_SD15 = {**_SD15_BETAS, "steps_offset": 1}
# SDXL's (`stabilityai/stable-diffusion-xl-base-1.0`): SD 1.5's betas, leading spacing.
_SDXL = {**_SD15, "timestep_spacing": "leading"}
# Stable Diffusion 2.1 at 768px (`stabilityai/stable-diffusion-2-1`): a v-prediction model.
_SD21_V = {**_SD15, "prediction_type": "v_prediction"}
# CogVideoX's (`THUDM/CogVideoX-2b`, `-5b`; scripts/convert_cogvideox_to_diffusers.py): v-prediction, zero terminal
# SNR, 'trailing'; the SNR shift is 3 for the 2B model, 1 for the 5B one, 4 for CogView3-Plus (its conversion script).
_COGVIDEOX = {
    **_SD15_BETAS,
    "clip_sample": False,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "set_alpha_to_one": True,
    "timestep_spacing": "trailing",
}


@dataclass(frozen=True)
class Case:
    """One scheduler config of a real pipeline, and how that pipeline sets its timesteps."""

    label: str
    diffusers_name: str
    config: Mapping[str, Any] = field(default_factory=dict)
    #: Packed latent tokens of the pipeline's default resolution; set for dynamically shifted schedules (mu).
    image_seq_len: int | None = None
    #: Flux and Qwen-Image pass `sigmas=np.linspace(1, 1 / n, n)` rather than a step count.
    pipeline_sigmas: bool = False
    #: SDE samplers: both sides draw the step noise from equally seeded generators.
    stochastic: bool = False

    @property
    def mu(self) -> float | None:
        """The resolution shift the pipeline passes: `calculate_shift` of `pipelines/flux/pipeline_flux.py`."""
        if self.image_seq_len is None:
            return None
        base_len, max_len = self.config["base_image_seq_len"], self.config["max_image_seq_len"]
        base_shift, max_shift = self.config["base_shift"], self.config["max_shift"]
        slope = (max_shift - base_shift) / (max_len - base_len)
        return self.image_seq_len * slope + base_shift - slope * base_len


#: The grid, one row per (diffusers class, pipeline); a class that `functional_sched` lacks is skipped.
GRID: tuple[Case, ...] = (
    Case("SD3", "FlowMatchEulerDiscreteScheduler", {"shift": 3.0}),
    Case(
        "Flux.1-dev 1024px",
        "FlowMatchEulerDiscreteScheduler",
        {
            "shift": 3.0,
            "use_dynamic_shifting": True,
            "base_shift": 0.5,
            "max_shift": 1.15,
            "base_image_seq_len": 256,
            "max_image_seq_len": 4096,
        },
        image_seq_len=4096,
        pipeline_sigmas=True,
    ),
    Case(
        "Qwen-Image 1328px",
        "FlowMatchEulerDiscreteScheduler",
        {
            "shift": 1.0,
            "use_dynamic_shifting": True,
            "base_shift": 0.5,
            "max_shift": 0.9,
            "base_image_seq_len": 256,
            "max_image_seq_len": 8192,
            "shift_terminal": 0.02,
        },
        image_seq_len=(1328 // 16) ** 2,
        pipeline_sigmas=True,
    ),
    # SwD's scheduler (FlowMatchLCMScheduler) on SD3.5's config; its scale-wise runs are in tests/test_flow_lcm.py.
    Case("SD3.5 LCM", "FlowMatchLCMScheduler", {"shift": 3.0}, stochastic=True),
    Case("SD1.5 DPM++ 2M", "DPMSolverMultistepScheduler", _SD15),
    Case("SD1.5 DPM++ 2M Karras", "DPMSolverMultistepScheduler", {**_SD15, "use_karras_sigmas": True}),
    Case(
        "SD1.5 DPM++ 2M SDE",
        "DPMSolverMultistepScheduler",
        {**_SD15, "algorithm_type": "sde-dpmsolver++"},
        stochastic=True,
    ),
    Case(
        "Sana (flow)",
        "DPMSolverMultistepScheduler",
        {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0},
    ),
    Case("SD1.5 UniPC bh2", "UniPCMultistepScheduler", {**_SD15, "solver_type": "bh2"}),
    Case(
        "Wan2.1 (flow)",
        "UniPCMultistepScheduler",
        {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0},
    ),
    Case("SDXL Euler", "EulerDiscreteScheduler", _SDXL),
    Case("SD1.5 Euler Karras", "EulerDiscreteScheduler", {**_SD15, "use_karras_sigmas": True}),
    Case("SD2.1-v Euler", "EulerDiscreteScheduler", _SD21_V),
    Case("SD1.5 Euler a", "EulerAncestralDiscreteScheduler", _SD15, stochastic=True),
    Case("SDXL Euler a", "EulerAncestralDiscreteScheduler", _SDXL, stochastic=True),
    Case("SD1.5 Heun", "HeunDiscreteScheduler", _SD15),
    Case("SD2.1-v Heun", "HeunDiscreteScheduler", _SD21_V),
    Case("SD3 Heun", "FlowMatchHeunDiscreteScheduler", {"shift": 3.0}),
    # LTX-2's DFR temporal refine (`pipelines/ltx2/pipeline_ltx2_dfr_temporal_refine.py`) builds it with eta=0.5.
    Case("LTX-2 Euler a RF (eta 0.5)", "LTXEulerAncestralRFScheduler", {"eta": 0.5}, stochastic=True),
    Case("SD1.5 DPM2 Karras", "KDPM2DiscreteScheduler", {**_SD15, "use_karras_sigmas": True}),
    Case("SDXL DPM2 a", "KDPM2AncestralDiscreteScheduler", _SDXL, stochastic=True),
    Case(
        "SD1.5 DPM++ SDE Karras",
        "DPMSolverSDEScheduler",
        {**_SD15, "use_karras_sigmas": True, "noise_sampler_seed": 0},
        stochastic=True,
    ),
    Case("SD1.5 LMS", "LMSDiscreteScheduler", _SD15),
    Case("SDXL LMS Karras", "LMSDiscreteScheduler", {**_SDXL, "use_karras_sigmas": True}),
    Case("SD1.5 PNDM (PLMS)", "PNDMScheduler", {**_SD15, "skip_prk_steps": True}),
    Case("SD2.1-v PNDM (PLMS)", "PNDMScheduler", {**_SD21_V, "skip_prk_steps": True}),
    Case("SD1.5 DDIM", "DDIMScheduler", {**_SD15, "set_alpha_to_one": False, "clip_sample": False}),
    Case("SD2.1-v DDIM", "DDIMScheduler", {**_SD21_V, "set_alpha_to_one": False, "clip_sample": False}),
    # DiffEdit and pix2pix-zero: `DDIMInverseScheduler.from_config(pipe.scheduler.config)` of SD 1.5 / 2.1-base (keys
    # the inverse classes lack, as skip_prk_steps, dropped); DiffEdit's docs swap in DPM++ 2M and its inverse.
    Case(
        "SD2.1 DiffEdit DDIM inversion",
        "DDIMInverseScheduler",
        {**_SD15, "set_alpha_to_one": False, "clip_sample": False},
    ),
    Case(
        "SD2.1-v DDIM inversion", "DDIMInverseScheduler", {**_SD21_V, "set_alpha_to_one": False, "clip_sample": False}
    ),
    Case("SD2.1 DiffEdit DPM++ 2M inversion", "DPMSolverMultistepInverseScheduler", _SD15),
    Case("DDPM (CIFAR-10)", "DDPMScheduler", {}, stochastic=True),  # diffusers' defaults: google/ddpm-cifar10-32's
    Case("CogVideoX-2b DDIM", "CogVideoXDDIMScheduler", {**_COGVIDEOX, "snr_shift_scale": 3.0}),
    Case("CogVideoX-5b DDIM", "CogVideoXDDIMScheduler", {**_COGVIDEOX, "snr_shift_scale": 1.0}),
    Case("CogView3-Plus DDIM", "CogVideoXDDIMScheduler", {**_COGVIDEOX, "snr_shift_scale": 4.0}),
    # The CogVideoX docs' swap for the 5B model: `CogVideoXDPMScheduler.from_config(pipe.scheduler.config)`.
    Case("CogVideoX-5b DPM", "CogVideoXDPMScheduler", {**_COGVIDEOX, "snr_shift_scale": 1.0}, stochastic=True),
    Case("CogVideoX-2b DPM", "CogVideoXDPMScheduler", {**_COGVIDEOX, "snr_shift_scale": 3.0}, stochastic=True),
    # LCM-LoRA (`latent-consistency/lcm-lora-sdv1-5`, `lcm-lora-sdxl`) and TCD-SDXL-LoRA (`h1t/TCD-SDXL-LoRA`): their
    # model cards' `LCMScheduler.from_config(pipe.scheduler.config)` / `TCDScheduler.from_config(...)` of SD 1.5's and
    # SDXL's configs (TCD's eta is its step default, 0.3); `SimianLuo/LCM_Dreamshaper_v7` ships its own LCM config.
    Case("SD1.5 LCM-LoRA", "LCMScheduler", {**_SD15, "set_alpha_to_one": False, "clip_sample": False}, stochastic=True),
    Case("LCM-Dreamshaper v7", "LCMScheduler", _SD15, stochastic=True),
    Case("SDXL LCM-LoRA", "LCMScheduler", {**_SDXL, "set_alpha_to_one": False, "clip_sample": False}, stochastic=True),
    Case("SDXL TCD-LoRA", "TCDScheduler", {**_SDXL, "set_alpha_to_one": False, "clip_sample": False}, stochastic=True),
    Case("SD1.5 DEIS 2", "DEISMultistepScheduler", _SD15),
    Case("SDXL DEIS 3", "DEISMultistepScheduler", {**_SDXL, "solver_order": 3}),
    # PixArt-alpha/-Sigma ship a DPM++ config of diffusers' default betas (linear 0.0001-0.02, epsilon): SA-Solver's
    # defaults (`SASolverScheduler.from_config(config, algorithm_type="data_prediction")`), tau on [200, 800].
    Case("PixArt SA-Solver", "SASolverScheduler", {}, stochastic=True),
    Case("SD1.5 SA-Solver", "SASolverScheduler", _SD15, stochastic=True),
    # DPMSolverSinglestepScheduler has no steps_offset (from_config drops it from an SD config).
    Case("SD1.5 DPM++ 2S", "DPMSolverSinglestepScheduler", _SD15_BETAS),
    Case(
        "SD1.5 DPM++ 3S Karras",
        "DPMSolverSinglestepScheduler",
        {**_SD15_BETAS, "solver_order": 3, "use_karras_sigmas": True},
    ),
    # Cosmos 1.0 (`nvidia/Cosmos-1.0-Diffusion-*`, scripts/convert_cosmos_to_diffusers.py).
    Case(
        "Cosmos 1.0 EDM Euler",
        "EDMEulerScheduler",
        {"sigma_max": 80.0, "sigma_data": 0.5, "sigma_schedule": "karras", "final_sigmas_type": "sigma_min"},
    ),
    # Dance Diffusion (`harmonai/maestro-150k`, the pipeline's only scheduler): IPNDMScheduler's defaults.
    Case("Dance Diffusion IPNDM", "IPNDMScheduler", {}),
    # Stable Cascade's prior and decoder (`stabilityai/stable-cascade-prior`, `stable-cascade`;
    # scripts/convert_stable_cascade.py): DDPMWuerstchenScheduler's defaults, noise at every step.
    Case("Stable Cascade DDPM-Wuerstchen", "DDPMWuerstchenScheduler", {}, stochastic=True),
    # Playground v2.5 (`playgroundai/playground-v2.5-1024px-aesthetic`): EDM's DPM++ 2M with diffusers' defaults.
    Case("Playground v2.5 EDM DPM++ 2M", "EDMDPMSolverMultistepScheduler", {"sigma_max": 80.0, "sigma_data": 0.5}),
    # Stable Audio Open (`stabilityai/stable-audio-open-1.0`, scripts/convert_stable_audio.py).
    Case(
        "Stable Audio Open Cosine DPM++ 2M SDE",
        "CosineDPMSolverMultistepScheduler",
        {"sigma_min": 0.3, "sigma_max": 500.0, "sigma_data": 1.0, "prediction_type": "v_prediction"},
        stochastic=True,
    ),
)


def cases(schedulers: Sequence[type] | None = None) -> tuple[Case, ...]:
    """The grid's cases whose diffusers class `functional_sched` reproduces (all of `fs.SCHEDULERS` by default)."""
    available = _names(schedulers)
    return tuple(case for case in GRID if case.diffusers_name in available)


def pending(schedulers: Sequence[type] | None = None) -> tuple[str, ...]:
    """The grid's diffusers classes that `functional_sched` does not reproduce yet."""
    available = _names(schedulers)
    return tuple(dict.fromkeys(case.diffusers_name for case in GRID if case.diffusers_name not in available))


def _names(schedulers: Sequence[type] | None) -> set[str]:
    return {scheduler.diffusers_name for scheduler in (fs.SCHEDULERS if schedulers is None else schedulers)}
