"""Real-pipeline scheduler configs: the grid the report and the benchmarks run, keyed by reference library and class.

`GRID`: diffusers' classes. Configs are the published `scheduler_config.json` of each model (Hugging Face hub, as of
diffusers 0.42.1), and the `set_timesteps` arguments its diffusers pipeline passes (`pipelines/flux/pipeline_flux.py`,
`pipelines/qwenimage/pipeline_qwenimage.py`, `pipelines/sana/pipeline_sana.py`, `pipelines/wan/pipeline_wan.py`).
`SGLANG_GRID`: sglang 0.5.23's own classes (and diffusers' classes first added for sglang's pipelines: pi-Flow,
Helios) on the configs and `set_timesteps` calls of sglang's pipelines (`sglang/multimodal_gen/runtime/pipelines*`;
the conformance specs, tests/specs/, list them with their sources). `BEYOND_GRID`: samplers of no diffusers or sglang
class, held to their own reference: k-diffusion 0.1.1.post1's whole loops (`sample_dpmpp_2s_ancestral`, ...; the
configs A1111's and ComfyUI's menus run on SD 1.5) and Flow-GRPO's SDE step (`adapters/flow_grpo.py`). `ALL` is the
three. Classes whose reference cannot run here (ComfyUI's samplers: GPL, no package; `no_runnable_reference`) are
held to their convergence order on the analytic model by the conformance suite and listed by the report without a
row.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import functional_sched as fs

from . import k_diffusion, sglang

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
    #: Whose class is the reference: "diffusers", "sglang" (loaded by `adapters.sglang.sglang_class`), "k-diffusion"
    #: (a whole-loop sampler of `adapters.k_diffusion`, named by `diffusers_name`) or "flow_grpo"
    #: (`adapters.flow_grpo.FlowGRPOReference`): our class's `reference_library`.
    library: str = "diffusers"
    #: The custom table the pipeline passes to `set_timesteps` for a step count (`{"sigmas": ...}`).
    custom: Callable[[int], Mapping[str, Any]] | None = None
    #: The `mu` the pipeline passes where it is a constant of the pipeline (Helios' 384x640), not Flux's shift.
    fixed_mu: float | None = None
    #: A distilled pipeline's own step count (TurboWan's 4), or the run's where that is smaller (a smoke run).
    steps: int | None = None
    #: What the pipeline passes at `set_timesteps` or `step` time rather than to the constructor (Helios' stage,
    #: self-forcing's denoising strength, MOVA's pair post-processing and column): options of ours.
    pipeline: Mapping[str, Any] = field(default_factory=dict)

    @property
    def mu(self) -> float | None:
        """The resolution shift the pipeline passes: `calculate_shift` of `pipelines/flux/pipeline_flux.py`."""
        if self.fixed_mu is not None:
            return self.fixed_mu
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


def wan_sigmas(steps: int, shift: float = 5.0) -> dict[str, Any]:
    """wan_animate_2's `set_timesteps(sigmas=...)`: Wan's `get_sampling_sigmas(n, 5)`, `linspace(1, 0, n + 1)[:n]`
    shifted."""
    sigmas = np.linspace(1, 0, steps + 1)[:steps]
    return {"sigmas": shift * sigmas / (1 + (shift - 1) * sigmas)}


def flux_sigmas(steps: int) -> dict[str, Any]:
    """sglang's timestep stage for Flux, Qwen-Image, Z-Image (`prepare_sigmas`): `np.linspace(1, 1/n, n)`."""
    return {"sigmas": np.linspace(1.0, 1 / steps, steps)}


def hunyuan3d_sigmas(steps: int) -> dict[str, Any]:
    """sglang's Hunyuan3D shape stage: `sigmas=np.linspace(0, 1, n)` (from noise to data)."""
    return {"sigmas": np.linspace(0.0, 1.0, steps)}


def helios_sigmas(steps: int) -> dict[str, Any]:
    """Helios' base pipeline: `sigmas=np.linspace(0.999, 0.0, n + 1)[:-1]`."""
    return {"sigmas": np.linspace(0.999, 0.0, steps + 1)[:-1]}


def comfyui_timesteps(steps: int) -> dict[str, Any]:
    """What ComfyUI's samplers hand sglang's pass-through for a flow model (sigma * 1000, not whole numbers)."""
    return {"timesteps": [999.7 - 950.0 * i / max(steps - 1, 1) for i in range(steps)]}


def ltx2_sigmas(steps: int) -> dict[str, Any]:
    """LTX-2's `prepare_sigmas` (sglang's configs/pipeline_configs/ltx_2.py): `[1.0 - i / n for i in range(n)]`."""
    return {"sigmas": [1.0 - i / steps for i in range(steps)]}


def ltx2_mu(video_sequence_length: int) -> float:
    """sglang's `calculate_ltx2_shift` (runtime/pipelines/ltx_2_pipeline.py), its operations in its order: mu from
    0.95 at 1024 latent tokens to 2.05 at 4096 (Flux's `calculate_shift` rounds apart in the last place)."""
    slope = (2.05 - 0.95) / (4096 - 1024)
    return video_sequence_length * slope + (0.95 - slope * 1024)


_WAN_FLOW = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
_HELIOS_DYNAMIC = {"use_dynamic_shifting": True, "time_shift_type": "exponential"}
_HELIOS_DISTILLED = {"scheduler_type": "dmd", "stages": 3, "time_shift_type": "linear"}
_HELIOS_MU = 1.919  # sglang's helios_denoising.py for 384x640: calculate_shift(9 * 48 * 80 / 4)
_MOVA = {"pair_postprocess": "dual_sigma_shift", "visual_shift": 5.0, "audio_shift": 5.0}
_LINGBOT = {"num_inference_steps": 1000, "sigma_min": 0.0, "extra_one_step": True}


#: sglang's pipelines, one row per (class, pipeline): sglang 0.5.23's own classes (`library="sglang"`), then the
#: diffusers classes added with them for the same pipelines (pi-Flow, Helios; diffusers' own objects the reference).
SGLANG_GRID: tuple[Case, ...] = (
    # Wan 2.1 T2V 480p, Wan 2.2 T2V-A14B, TurboWan (runtime/configs/pipeline_configs/wan.py: flow_shift; 50/40/4 steps).
    Case("Wan2.1 T2V 480p", "FlowUniPCMultistepScheduler", {"shift": 3.0}, library="sglang"),
    Case("Wan2.2 T2V-A14B", "FlowUniPCMultistepScheduler", {"shift": 12.0}, library="sglang"),
    Case("TurboWan", "FlowUniPCMultistepScheduler", {"shift": 8.0}, library="sglang", steps=4),
    Case("Cosmos3 set_shift(10)", "FlowUniPCMultistepScheduler", {"set_shift": 10.0}, library="sglang"),
    Case("Wan2.1 (flow), sglang's copy", "UniPCMultistepScheduler", {**_WAN_FLOW, "flow_shift": 3.0}, library="sglang"),
    Case("SD3, sglang's copy", "FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, library="sglang"),
    Case(
        "Flux.1-dev 1024px, sglang's copy",
        "FlowMatchEulerDiscreteScheduler",
        next(case.config for case in GRID if case.label == "Flux.1-dev 1024px"),
        image_seq_len=4096,
        custom=flux_sigmas,
        library="sglang",
    ),
    # LTX-2 dev (ltx_2_pipeline.py): `LTX2FlowMatchScheduler.from_config(checkpoint, use_dynamic_shifting=True,
    # shift_terminal=0.1)` over LTX-Video's keys; 121 frames of 512x768 are 16 x 16 x 24 = 6144 latent tokens, whose
    # mu `prepare_ltx2_mu` passes with `prepare_sigmas`' table.
    Case(
        "LTX-2 dev 121x512x768",
        "LTX2FlowMatchScheduler",
        {
            "use_dynamic_shifting": True,
            "base_shift": 0.95,
            "max_shift": 2.05,
            "base_image_seq_len": 1024,
            "max_image_seq_len": 4096,
            "shift_terminal": 0.1,
        },
        custom=ltx2_sigmas,
        fixed_mu=ltx2_mu(6144),
        library="sglang",
    ),
    # The loader's set_shift(flow_shift) on a checkpoint of shift 1 (HunyuanVideo's flow_shift 7).
    Case("HunyuanVideo set_shift(7)", "FlowMatchEulerDiscreteScheduler", {"set_shift": 7.0}, library="sglang"),
    Case("MOSS-Image", "MOSSImageScheduler", {}, library="sglang"),
    Case(
        "SANA DPM++ 2M, sglang's wrapper",
        "DPMSolverMultistepScheduler",
        {**_WAN_FLOW, "flow_shift": 3.0},
        library="sglang",
    ),
    Case(
        "Wan-Animate 2 DPM++ 2M",
        "DPMSolverMultistepScheduler",
        {**_WAN_FLOW, "flow_shift": 5.0, "num_train_timesteps": 1000},
        custom=wan_sigmas,
        library="sglang",
    ),
    # LingBot-World's causal DMD (lingbot_world_causal_dmd_pipeline.py) and Self-Forcing Wan 1.3B's 4 steps.
    Case("LingBot-World causal DMD", "SelfForcingFlowMatchScheduler", {**_LINGBOT, "shift": 10.0}, library="sglang"),
    Case(
        "Self-Forcing Wan 1.3B",
        "SelfForcingFlowMatchScheduler",
        {"shift": 5.0, "sigma_min": 0.0, "extra_one_step": True},
        library="sglang",
        steps=4,
    ),
    Case("MOVA flow match (shift 5)", "FlowMatchScheduler", {"shift": 5.0}, library="sglang"),
    # MOVA's stage: FlowMatchPairScheduler(shift=5), set_pair_postprocess_by_name("dual_sigma_shift", 5, 5), 50 steps.
    Case("MOVA video", "FlowMatchPairScheduler", {"shift": 5.0}, library="sglang", pipeline=_MOVA),
    Case(
        "MOVA audio",
        "FlowMatchPairScheduler",
        {"shift": 5.0},
        library="sglang",
        pipeline={**_MOVA, "modality": "audio"},
    ),
    Case(
        "Hunyuan3D-2 shape",
        "Hunyuan3DFlowMatchEulerDiscreteScheduler",
        {"num_train_timesteps": 1000},
        custom=hunyuan3d_sigmas,
        library="sglang",
    ),
    Case(
        "Hunyuan3D-2 turbo shape",
        "Hunyuan3DConsistencyFlowMatchEulerDiscreteScheduler",
        {"num_train_timesteps": 1000, "pcm_timesteps": 100},
        custom=hunyuan3d_sigmas,
        library="sglang",
        steps=5,
    ),
    # Kandinsky-6.0-Pro-distill (Kandinsky6TI2VADistilledSamplingParams): the checkpoint's defaults, 10 steps.
    Case("Kandinsky 6 distill", "PiflowScheduler", {}, library="sglang", steps=10),
    Case(
        "Helios base", "HeliosScheduler", _HELIOS_DYNAMIC, custom=helios_sigmas, fixed_mu=_HELIOS_MU, library="sglang"
    ),
    Case(
        "Helios-Mid stage 0",
        "HeliosScheduler",
        {"stages": 3, "gamma": 1 / 3, **_HELIOS_DYNAMIC},
        fixed_mu=_HELIOS_MU,
        library="sglang",
        pipeline={"stage_index": 0},
    ),
    Case(
        "Helios-Distilled, amplified chunk",
        "HeliosScheduler",
        _HELIOS_DISTILLED,
        library="sglang",
        steps=3,
        stochastic=True,
        pipeline={"is_amplify_first_chunk": True},
    ),
    Case("ComfyUI pass-through", "ComfyUIPassThroughScheduler", {}, custom=comfyui_timesteps, library="sglang"),
    # diffusers 0.42.1's classes for the same pipelines.
    Case("Kandinsky 6 distill", "PiflowScheduler", {}, steps=10),
    Case("Helios base", "HeliosScheduler", {"stages": 1}, custom=helios_sigmas, fixed_mu=_HELIOS_MU),
    Case(
        "Helios-Distilled, amplified chunk",
        "HeliosDMDScheduler",
        {},
        steps=3,
        stochastic=True,
        pipeline={"is_amplify_first_chunk": True},
    ),
)
#: Samplers beyond diffusers and sglang, each held to its own reference (`library`): k-diffusion's whole loops (one
#: `step` of ours per model call) and Flow-GRPO's SDE step (on SD3.5's and Flux's flow-match schedules, noise level 0.7
#: as Flow-GRPO samples). The k-diffusion classes' defaults are Stable Diffusion 1.5's sigma range as k-diffusion's
#: `CompVisDenoiser` gives it and Karras' spacing (rho 7): what A1111's and ComfyUI's "DPM++ 2S a Karras" and "DPM++ 3M
#: SDE Karras" run (3M SDE's Brownian tree seeded, as a user seeds it); "DPM fast" spaces its own calls over that range.
BEYOND_GRID: tuple[Case, ...] = (
    Case("SD1.5 DPM++ 2S a Karras", "sample_dpmpp_2s_ancestral", {}, stochastic=True, library="k-diffusion"),
    Case(
        "SD1.5 DPM++ 3M SDE Karras",
        "sample_dpmpp_3m_sde",
        {"noise_sampler_seed": 0},
        stochastic=True,
        library="k-diffusion",
    ),
    Case("SD1.5 DPM fast", "sample_dpm_fast", {}, stochastic=True, library="k-diffusion"),
    Case("SD1.5 DPM adaptive", "sample_dpm_adaptive", {}, library="k-diffusion"),
    Case(
        "SD3.5-M Flow-GRPO (noise 0.7)",
        "sde_step_with_logprob",
        {"shift": 3.0, "noise_level": 0.7},
        stochastic=True,
        library="flow_grpo",
    ),
    Case(
        "Flux.1-dev 1024px Flow-GRPO (noise 0.7)",
        "sde_step_with_logprob",
        {**next(case.config for case in GRID if case.label == "Flux.1-dev 1024px"), "noise_level": 0.7},
        image_seq_len=4096,
        pipeline_sigmas=True,
        stochastic=True,
        library="flow_grpo",
    ),
)
#: The grids: what the report and the eager benchmark run.
ALL: tuple[Case, ...] = GRID + SGLANG_GRID + BEYOND_GRID

#: Reference libraries that may be absent, with how to install them: their rows are skipped, with a line, without.
OPTIONAL_LIBRARIES: dict[str, str] = {
    "sglang": f"pip install --no-deps sglang=={sglang.SGLANG_VERSION}",
    "k-diffusion": f"pip install --no-deps k-diffusion=={k_diffusion.K_DIFFUSION_VERSION} (its sampling module also "
    "imports scipy, torchsde, torchdiffeq and tqdm)",
}
#: Reference libraries whose references the report runs (the others' classes have none it can run).
RUNNABLE_LIBRARIES = ("diffusers", "sglang", "k-diffusion", "flow_grpo")


def library_available(library: str) -> bool:
    """Whether the reference library's rows can run here: sglang's wheel; k-diffusion's wheel and what its sampling
    module imports; diffusers (a dependency of the report) and Flow-GRPO (transcribed here) always."""
    if library == "sglang":
        return sglang.available()
    if library == "k-diffusion":
        return k_diffusion.available() and all(
            importlib.util.find_spec(name) is not None for name in ("scipy", "torchsde", "torchdiffeq", "tqdm")
        )
    return True


def cases(schedulers: Sequence[type] | None = None) -> tuple[Case, ...]:
    """The grids' cases whose reference class `functional_sched` reproduces (all of `fs.SCHEDULERS` by default) and
    whose reference library is installed (sglang's and k-diffusion's rows need their wheels: `skipped()` lists them
    where they are not)."""
    available = _names(schedulers)
    return tuple(
        case for case in ALL if (case.library, case.diffusers_name) in available and library_available(case.library)
    )


def skipped(schedulers: Sequence[type] | None = None, library: str | None = None) -> tuple[Case, ...]:
    """The rows of classes we reproduce whose reference library is not installed (of `library`, or any)."""
    available = _names(schedulers)
    return tuple(
        case
        for case in ALL
        if (case.library, case.diffusers_name) in available
        and not library_available(case.library)
        and library in (None, case.library)
    )


def no_runnable_reference(schedulers: Sequence[type] | None = None) -> dict[str, tuple[type, ...]]:
    """Our classes whose reference library the report cannot run (ComfyUI's samplers: GPL-3.0, no package), by
    library: the conformance suite holds them to their order on the analytic model (and their tests to recorded
    trajectories), and the report lists them without a row."""
    listed: dict[str, tuple[type, ...]] = {}
    for scheduler in fs.SCHEDULERS if schedulers is None else schedulers:
        if scheduler.reference_library not in RUNNABLE_LIBRARIES:
            listed[scheduler.reference_library] = (*listed.get(scheduler.reference_library, ()), scheduler)
    return listed


def pending(schedulers: Sequence[type] | None = None) -> tuple[str, ...]:
    """The grids' reference classes that `functional_sched` does not reproduce yet (others' prefixed by library)."""
    available = _names(schedulers)
    return tuple(
        dict.fromkeys(reference_name(case) for case in ALL if (case.library, case.diffusers_name) not in available)
    )


def scheduler_class(case: Case, schedulers: Sequence[type] | None = None) -> type:
    """Our class whose reference is the case's: same library, same class name."""
    return next(
        scheduler
        for scheduler in (fs.SCHEDULERS if schedulers is None else schedulers)
        if (scheduler.reference_library, scheduler.diffusers_name) == (case.library, case.diffusers_name)
    )


def reference_name(case: Case) -> str:
    """The reference class's name as the report prints it: another library's prefixed by its name (`sglang `)."""
    return case.diffusers_name if case.library == "diffusers" else f"{case.library} {case.diffusers_name}"


def _names(schedulers: Sequence[type] | None) -> set[tuple[str, str]]:
    return {
        (scheduler.reference_library, scheduler.diffusers_name)
        for scheduler in (fs.SCHEDULERS if schedulers is None else schedulers)
    }
