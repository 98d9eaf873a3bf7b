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
    Case("DDPM (CIFAR-10)", "DDPMScheduler", {}, stochastic=True),  # diffusers' defaults: google/ddpm-cifar10-32's
    Case("SD1.5 DEIS 2", "DEISMultistepScheduler", _SD15),
    Case("SDXL DEIS 3", "DEISMultistepScheduler", {**_SDXL, "solver_order": 3}),
    # DPMSolverSinglestepScheduler has no steps_offset (from_config drops it from an SD config).
    Case("SD1.5 DPM++ 2S", "DPMSolverSinglestepScheduler", _SD15_BETAS),
    Case(
        "SD1.5 DPM++ 3S Karras",
        "DPMSolverSinglestepScheduler",
        {**_SD15_BETAS, "solver_order": 3, "use_karras_sigmas": True},
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
