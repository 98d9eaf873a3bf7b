"""The drop-ins inside real diffusers pipelines: tiny random components, same seed, bit-equal latents and images.

Every pipeline is built offline from config (no hub download, no tokenizer or text encoder: the prompt embeddings
are passed in), once with diffusers' scheduler and once with `as_diffusers(...)` or a drop-in class built
`from_config`, from the same generator seed. On the CPU the drop-ins step bit for bit like diffusers, so the final
latents (and decoded images) must be equal, not merely close. The pipelines need `transformers` to import.
"""

from __future__ import annotations

import functools
from typing import Any

import _tiny_pipelines as tiny
import diffusers
import numpy as np
import pytest
import torch
import transformers  # noqa: F401  (diffusers' pipeline classes are import-time dummies without it)

from functional_sched.adapters import drop_in
from functional_sched.adapters.drop_in import as_diffusers

diffusers.utils.logging.set_verbosity_error()

SEED = 0
STEPS = 5
SD_KWARGS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}


# ------------------------------------------------------------------------------------------------ components
@pytest.fixture(scope="module")
def sd_parts() -> dict[str, Any]:
    return tiny.sd_parts()


def _sd_call(parts: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return {
        "prompt_embeds": parts["prompt_embeds"],
        "negative_prompt_embeds": parts["negative_prompt_embeds"],
        "num_inference_steps": STEPS,
        "guidance_scale": 3.0,
        "generator": torch.Generator().manual_seed(SEED),
        "output_type": "latent",
        **kwargs,
    }


def _txt2img(parts: dict[str, Any], scheduler: Any, **kwargs: Any) -> Any:
    return tiny.sd_pipeline(scheduler)(height=32, width=32, **_sd_call(parts, **kwargs)).images


def _is_drop_in(scheduler: Any) -> bool:
    return drop_in.is_drop_in(scheduler)


def _assert_same(reference: Any, ours: Any) -> None:
    if isinstance(reference, np.ndarray):
        assert reference.dtype == ours.dtype and reference.shape == ours.shape
        assert np.array_equal(reference, ours), f"max |diff| {np.abs(reference - ours).max()}"
    else:
        assert reference.dtype == ours.dtype and reference.shape == ours.shape
        assert torch.equal(reference, ours), f"max |diff| {(reference - ours).abs().max().item()}"


# ------------------------------------------------------------------------------------------------ Stable Diffusion
SD_CASES = {
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 3M v": ("DPMSolverMultistepScheduler", {"solver_order": 3, "prediction_type": "v_prediction"}),
    "UniPC bh2": ("UniPCMultistepScheduler", {}),
    "UniPC bh1 Karras": (
        "UniPCMultistepScheduler",
        {"solver_type": "bh1", "use_karras_sigmas": True, "final_sigmas_type": "sigma_min"},
    ),
    # The SD sampler menu (issue 15): each in SD 1.5's pipeline, as users pick them from its config.
    "PNDM (SD 1.5's own)": ("PNDMScheduler", {"skip_prk_steps": True, "set_alpha_to_one": False}),
    "PNDM PRK": ("PNDMScheduler", {}),
    "Euler (SDXL's spacing)": ("EulerDiscreteScheduler", {"timestep_spacing": "leading"}),
    "Euler Karras": ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "DPM2 Karras": ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "DPM++ SDE Karras": ("DPMSolverSDEScheduler", {"use_karras_sigmas": True, "noise_sampler_seed": 0}),
    "DDIM": ("DDIMScheduler", {"set_alpha_to_one": False, "clip_sample": False}),
    "DDIM eta v trailing": (
        "DDIMScheduler",
        {"prediction_type": "v_prediction", "timestep_spacing": "trailing", "rescale_betas_zero_snr": True},
    ),
    "DDPM": ("DDPMScheduler", {}),
    "DEIS 3": ("DEISMultistepScheduler", {"solver_order": 3}),
    "DPM++ 2S": ("DPMSolverSinglestepScheduler", {}),
}
#: Options of SD_CASES' configs that are no constructor argument of the class (diffusers ignores them there).
_CLASS_KEYS = {"DPMSolverSinglestepScheduler": {"steps_offset"}}


def _sd_scheduler(name: str, options: dict[str, Any]) -> Any:
    ignored = _CLASS_KEYS.get(name, set())
    return getattr(diffusers, name)(**{k: v for k, v in {**SD_KWARGS, **options}.items() if k not in ignored})


#: The menu's cases the default run takes (SD 1.5's own, SDXL's, DDIM); the rest run with `-m slow`.
_MENU_FAST = {"PNDM (SD 1.5's own)", "Euler (SDXL's spacing)", "DDIM"}


def _sd_case(case: str) -> Any:
    menu = list(SD_CASES).index(case) >= list(SD_CASES).index("PNDM (SD 1.5's own)")
    return pytest.param(case, marks=[pytest.mark.slow] if menu and case not in _MENU_FAST else [], id=case)


@pytest.mark.parametrize("case", [_sd_case(case) for case, (name, _) in SD_CASES.items() if name in drop_in.DROP_INS])
def test_stable_diffusion_latents_equal(sd_parts: dict[str, Any], case: str) -> None:
    name, options = SD_CASES[case]
    reference = _txt2img(sd_parts, _sd_scheduler(name, options))
    ours_scheduler = as_diffusers(_sd_scheduler(name, options))
    assert _is_drop_in(ours_scheduler) and type(ours_scheduler).__name__ == name
    ours = _txt2img(sd_parts, ours_scheduler)
    # the pipeline really stepped the drop-in, through its whole table (repeated timesteps included)
    assert ours_scheduler._functional.steps_taken(ours_scheduler._state) == len(ours_scheduler.timesteps)
    _assert_same(reference, ours)


def test_stable_diffusion_images_equal(sd_parts: dict[str, Any]) -> None:
    reference = _txt2img(sd_parts, diffusers.DPMSolverMultistepScheduler(**SD_KWARGS), output_type="np")
    ours = _txt2img(sd_parts, drop_in.DPMSolverMultistepScheduler(**SD_KWARGS), output_type="np")
    assert reference.shape == (1, 32, 32, 3)
    _assert_same(reference, ours)


def test_comparison_is_sensitive(sd_parts: dict[str, Any]) -> None:
    """The equalities above are not vacuous: another solver, or another SDE seed, moves the latents."""
    dpm = _txt2img(sd_parts, drop_in.DPMSolverMultistepScheduler(**SD_KWARGS))
    unipc = _txt2img(sd_parts, drop_in.UniPCMultistepScheduler(**SD_KWARGS))
    assert not torch.equal(dpm, unipc)
    sde = drop_in.DPMSolverMultistepScheduler(**SD_KWARGS, algorithm_type="sde-dpmsolver++")
    pipe = tiny.sd_pipeline(sde)
    first = pipe(height=32, width=32, **_sd_call(sd_parts)).images
    latents = torch.randn(first.shape, generator=torch.Generator().manual_seed(SEED))
    # The same initial latents, but the step noise drawn from a different generator state.
    again = pipe(height=32, width=32, **_sd_call(sd_parts, latents=latents)).images
    assert not torch.equal(first, again)


# ------------------------------------------------------------------------------------------------ class switches
SWITCHES = [
    ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler"),
    ("UniPCMultistepScheduler", "DPMSolverMultistepScheduler"),
    ("DPMSolverMultistepScheduler", "DPMSolverMultistepScheduler"),
]


@pytest.mark.parametrize(("start", "target"), SWITCHES)
def test_from_config_switch(sd_parts: dict[str, Any], start: str, target: str) -> None:
    """`pipe.scheduler = X.from_config(pipe.scheduler.config)`, from a diffusers and from a drop-in scheduler."""
    reference_pipe = tiny.sd_pipeline(getattr(diffusers, start)(**SD_KWARGS))
    reference_pipe.scheduler = getattr(diffusers, target).from_config(reference_pipe.scheduler.config)
    reference = reference_pipe(height=32, width=32, **_sd_call(sd_parts)).images

    # diffusers scheduler -> drop-in class
    pipe = tiny.sd_pipeline(getattr(diffusers, start)(**SD_KWARGS))
    pipe.scheduler = getattr(drop_in, target).from_config(pipe.scheduler.config)
    assert _is_drop_in(pipe.scheduler)
    _assert_same(reference, pipe(height=32, width=32, **_sd_call(sd_parts)).images)

    # drop-in -> drop-in class, and the drop-in's config feeds diffusers' class too
    pipe = tiny.sd_pipeline(getattr(drop_in, start)(**SD_KWARGS))
    assert target in {cls.__name__ for cls in pipe.scheduler.compatibles}
    switched = getattr(drop_in, target).from_config(pipe.scheduler.config)
    back = getattr(diffusers, target).from_config(pipe.scheduler.config)
    pipe.scheduler = switched
    assert _is_drop_in(pipe.scheduler) and type(pipe.scheduler).__name__ == target
    _assert_same(reference, pipe(height=32, width=32, **_sd_call(sd_parts)).images)
    pipe.scheduler = back
    _assert_same(reference, pipe(height=32, width=32, **_sd_call(sd_parts)).images)


# ------------------------------------------------------------------------------------------------ callbacks
def _recorded(pipe: Any, parts: dict[str, Any]) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []

    def callback(pipeline: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        scheduler = pipeline.scheduler
        seen.append((i, scheduler.step_index, scheduler.begin_index, scheduler.timesteps.clone(), t, kwargs["latents"]))
        return kwargs

    pipe(height=32, width=32, callback_on_step_end=callback, **_sd_call(parts))
    return seen


@pytest.mark.parametrize("name", ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler"])
def test_callback_reads_scheduler_mid_run(sd_parts: dict[str, Any], name: str) -> None:
    reference = _recorded(tiny.sd_pipeline(getattr(diffusers, name)(**SD_KWARGS)), sd_parts)
    ours = _recorded(tiny.sd_pipeline(getattr(drop_in, name)(**SD_KWARGS)), sd_parts)
    assert [row[1] for row in reference] == list(range(1, STEPS + 1))
    assert len(ours) == len(reference) == STEPS
    for (i, index, begin, timesteps, t, latents), (i_, index_, begin_, timesteps_, t_, latents_) in zip(
        reference, ours, strict=True
    ):
        assert (i, index, begin) == (i_, index_, begin_)
        _assert_same(timesteps, timesteps_)
        _assert_same(torch.as_tensor(t), torch.as_tensor(t_))
        _assert_same(latents, latents_)


# ------------------------------------------------------------------------------------------------ img2img strength
@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("DPMSolverMultistepScheduler", {}),
        ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
        ("UniPCMultistepScheduler", {}),
    ],
)
@pytest.mark.parametrize("strength", [0.6, 1.0])
def test_img2img_strength(sd_parts: dict[str, Any], name: str, options: dict[str, Any], strength: float) -> None:
    image = np.random.default_rng(7).random((1, 32, 32, 3), dtype=np.float32)

    def run(scheduler: Any) -> tuple[Any, Any]:
        pipe = tiny.sd_pipeline(scheduler, diffusers.StableDiffusionImg2ImgPipeline)
        call = _sd_call(sd_parts, num_inference_steps=6)
        latents = pipe(image=image, strength=strength, **call).images
        return latents, (scheduler.begin_index, scheduler.step_index, scheduler.timesteps.clone())

    reference, (begin, index, timesteps) = run(getattr(diffusers, name)(**SD_KWARGS, **options))
    ours, (begin_, index_, timesteps_) = run(as_diffusers(getattr(diffusers, name)(**SD_KWARGS, **options)))
    assert begin == begin_ == 6 - int(6 * strength)
    assert index == index_ == 6
    _assert_same(timesteps, timesteps_)
    _assert_same(reference, ours)


# ------------------------------------------------------------------------------------------------ Flux (flow match)
@pytest.fixture(scope="module")
def flux_parts() -> dict[str, Any]:
    return tiny.flux_parts()


FLUX_SCHEDULER = {
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


def _flux(
    parts: dict[str, Any], scheduler: Any, output_type: str = "latent", seed: int = SEED
) -> tuple[Any, list[torch.Tensor]]:
    pipe = tiny.flux_pipeline(scheduler)
    requests: list[dict[str, Any]] = []
    set_timesteps = scheduler.set_timesteps

    @functools.wraps(set_timesteps)  # keeps the signature the pipeline inspects for `sigmas`
    def spy(*args: Any, **kwargs: Any) -> Any:
        requests.append(kwargs)
        return set_timesteps(*args, **kwargs)

    scheduler.set_timesteps = spy  # the pipeline calls it with `sigmas=` and `mu=`; seen, then passed on
    torch.manual_seed(seed)  # FluxPipeline passes no generator to `step`: stochastic sampling draws from the global RNG
    images = pipe(
        prompt_embeds=parts["prompt_embeds"],
        pooled_prompt_embeds=parts["pooled_prompt_embeds"],
        num_inference_steps=4,
        height=16,
        width=16,
        generator=torch.Generator().manual_seed(SEED),
        output_type=output_type,
    ).images
    assert len(requests) == 1 and requests[0].get("mu") is not None and requests[0].get("sigmas") is not None
    return images, [scheduler.timesteps.clone(), scheduler.sigmas.clone()]


@pytest.mark.parametrize("output_type", ["latent", "np"])
@pytest.mark.parametrize("stochastic", [False, True])
def test_flux_flow_match(flux_parts: dict[str, Any], output_type: str, stochastic: bool) -> None:
    config = {**FLUX_SCHEDULER, "stochastic_sampling": stochastic}
    reference, tables = _flux(flux_parts, diffusers.FlowMatchEulerDiscreteScheduler(**config), output_type)
    ours_scheduler = as_diffusers(diffusers.FlowMatchEulerDiscreteScheduler(**config))
    ours, tables_ = _flux(flux_parts, ours_scheduler, output_type)
    assert _is_drop_in(ours_scheduler) and ours_scheduler.step_index == 4
    for table, table_ in zip(tables, tables_, strict=True):
        _assert_same(table, table_)
    _assert_same(reference, ours)


def test_flux_comparison_is_sensitive(flux_parts: dict[str, Any]) -> None:
    """Stochastic sampling reads the global RNG (reseeded above); another seed there moves the latents."""
    config = {**FLUX_SCHEDULER, "stochastic_sampling": True}
    first, _ = _flux(flux_parts, as_diffusers(diffusers.FlowMatchEulerDiscreteScheduler(**config)))
    other, _ = _flux(flux_parts, as_diffusers(diffusers.FlowMatchEulerDiscreteScheduler(**config)), seed=SEED + 1)
    assert not torch.equal(first, other)


# ------------------------------------------------------------------------------------------------ Wan (UniPC flow)
@pytest.fixture(scope="module")
def wan_parts() -> dict[str, Any]:
    return tiny.wan_parts()


WAN_SCHEDULERS = {
    "UniPC flow": ("UniPCMultistepScheduler", {"prediction_type": "flow_prediction", "use_flow_sigmas": True}),
    "DPM++ flow": (
        "DPMSolverMultistepScheduler",
        {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "algorithm_type": "dpmsolver++"},
    ),
}


def _wan(parts: dict[str, Any], scheduler: Any, output_type: str) -> Any:
    return tiny.wan_pipeline(scheduler)(
        prompt_embeds=parts["prompt_embeds"],
        negative_prompt_embeds=parts["negative_prompt_embeds"],
        num_inference_steps=4,
        height=16,
        width=16,
        num_frames=9,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(SEED),
        output_type=output_type,
    ).frames


@pytest.mark.parametrize("output_type", ["latent", "np"])
@pytest.mark.parametrize("case", list(WAN_SCHEDULERS))
def test_wan(wan_parts: dict[str, Any], case: str, output_type: str) -> None:
    name, options = WAN_SCHEDULERS[case]
    config = {"flow_shift": 3.0, **options}
    reference = _wan(wan_parts, getattr(diffusers, name)(**config), output_type)
    ours_scheduler = as_diffusers(getattr(diffusers, name)(**config))
    ours = _wan(wan_parts, ours_scheduler, output_type)
    assert _is_drop_in(ours_scheduler) and ours_scheduler.step_index == 4
    _assert_same(reference, ours)


# ------------------------------------------------------------------------------------------------ SD3 (flow match)
@pytest.fixture(scope="module")
def sd3_parts() -> dict[str, Any]:
    return tiny.sd3_parts()


SD3_CASES = {
    "shift": ({"shift": 3.0}, {}),
    "dynamic shifting (mu)": (
        {"shift": 3.0, "use_dynamic_shifting": True, "base_image_seq_len": 16, "max_image_seq_len": 4096},
        {},
    ),
    "custom sigmas": ({"shift": 3.0}, {"sigmas": [1.0, 0.8, 0.5, 0.2]}),
}


@pytest.mark.parametrize("case", list(SD3_CASES))
def test_sd3_flow_match(sd3_parts: dict[str, Any], case: str) -> None:
    config, call = SD3_CASES[case]

    def run(scheduler: Any) -> tuple[Any, torch.Tensor]:
        pipe = diffusers.StableDiffusion3Pipeline(
            scheduler=scheduler,
            text_encoder=None,
            tokenizer=None,
            text_encoder_2=None,
            tokenizer_2=None,
            text_encoder_3=None,
            tokenizer_3=None,
            transformer=sd3_parts["transformer"],
            vae=sd3_parts["vae"],
        )
        pipe.set_progress_bar_config(disable=True)
        embeds = {key: value for key, value in sd3_parts.items() if key.endswith("embeds")}
        latents = pipe(
            **embeds,
            **call,
            num_inference_steps=4,
            height=16,
            width=16,
            guidance_scale=3.0,
            generator=torch.Generator().manual_seed(SEED),
            output_type="latent",
        ).images
        return latents, scheduler.timesteps.clone()

    reference, timesteps = run(diffusers.FlowMatchEulerDiscreteScheduler(**config))
    ours_scheduler = as_diffusers(diffusers.FlowMatchEulerDiscreteScheduler(**config))
    ours, timesteps_ = run(ours_scheduler)
    assert _is_drop_in(ours_scheduler) and ours_scheduler.step_index == 4
    _assert_same(timesteps, timesteps_)
    _assert_same(reference, ours)
