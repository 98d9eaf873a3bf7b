"""The standard stage chain against real diffusers pipelines: same tiny components, same seed, bit-equal latents.

Each test runs a diffusers pipeline with diffusers' own scheduler, then the same request through
`Pipeline((PrepareTimesteps, PrepareLatents, Denoise or TwoExperts, Decode))` with the functional scheduler built
`from_diffusers`, the model a thin callable around the same module. Then many such requests (other seeds, guidance
and step counts) run together through `forward_many`, each equal to its own run alone.
"""

from __future__ import annotations

from typing import Any

import _tiny_pipelines as tiny
import diffusers
import numpy as np
import pytest
import torch

from functional_sched.adapters import from_diffusers
from functional_sched.stages import (
    Decode,
    Denoise,
    Pipeline,
    PrepareLatents,
    PrepareTimesteps,
    Req,
    calculate_shift,
)
from functional_sched.stages.experts import TwoExperts

diffusers.utils.logging.set_verbosity_error()

SEED = 3
SD_KWARGS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}


def _assert_equal(reference: torch.Tensor, ours: torch.Tensor) -> None:
    assert reference.dtype == ours.dtype and reference.shape == ours.shape
    assert torch.equal(reference, ours), f"max |diff| {(reference - ours).abs().max().item()}"


@pytest.fixture(autouse=True)
def _no_grad() -> Any:
    with torch.no_grad():  # as diffusers' pipelines run
        yield


def _row_by_row(call: Any, sample: torch.Tensor) -> torch.Tensor:
    """A model call per row: the tiny modules' kernels are not batch-invariant (a batch of 6 rounds otherwise than
    one of 2), so comparing requests batched with requests alone takes a model whose rows do not interact."""
    return torch.cat([call(slice(i, i + 1)) for i in range(sample.shape[0])])


def _forward_many_equals_alone(pipeline: Pipeline, reqs: list[Req]) -> None:
    together = pipeline.forward_many(reqs)
    for req, ours in zip(reqs, together, strict=True):
        _assert_equal(pipeline.forward(req).output, ours.output)
    assert not torch.equal(together[0].output, together[1].output)


# ------------------------------------------------------------------------------------------------ Stable Diffusion
SD_CASES = {
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}, 0.0),
    "DPM++ 2M Karras, guidance rescale": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, 0.7),
    "UniPC bh2": ("UniPCMultistepScheduler", {}, 0.0),
}


def _sd_pipeline(scheduler: Any, row_by_row: bool = False) -> Pipeline:
    """`row_by_row=False` calls the UNet on the whole batch, unconditional and conditional halves together, as
    StableDiffusionPipeline does."""
    unet = tiny.sd_parts()["unet"]

    def model(sample: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        if not row_by_row:
            return unet(sample, timestep, encoder_hidden_states=embeds, return_dict=False)[0]
        return _row_by_row(
            lambda i: unet(sample[i], timestep[i], encoder_hidden_states=embeds[i], return_dict=False)[0], sample
        )

    return Pipeline([PrepareTimesteps(scheduler), PrepareLatents(scheduler), Denoise(model, scheduler), Decode()])


def _sd_req(steps: int, seed: int = SEED, guidance_scale: float = 3.0, guidance_rescale: float = 0.0) -> Req:
    parts = tiny.sd_parts()
    return Req(
        prompt_embeds=parts["prompt_embeds"],
        negative_prompt_embeds=parts["negative_prompt_embeds"],
        guidance_scale=guidance_scale,
        guidance_rescale=guidance_rescale,
        seed=seed,
        num_inference_steps=steps,
        latent_shape=(1, 4, 16, 16),
    )


@pytest.mark.parametrize("case", list(SD_CASES))
def test_stable_diffusion_chain_equals_pipeline(case: str) -> None:
    name, options, rescale = SD_CASES[case]
    reference_scheduler = getattr(diffusers, name)(**SD_KWARGS, **options)
    parts = tiny.sd_parts()
    pipe = tiny.sd_pipeline(reference_scheduler)
    reference = pipe(
        height=32,
        width=32,
        prompt_embeds=parts["prompt_embeds"],
        negative_prompt_embeds=parts["negative_prompt_embeds"],
        num_inference_steps=5,
        guidance_scale=3.0,
        guidance_rescale=rescale,
        generator=torch.Generator().manual_seed(SEED),
        output_type="latent",
    ).images
    scheduler = from_diffusers(reference_scheduler)
    _assert_equal(reference, _sd_pipeline(scheduler).forward(_sd_req(5, guidance_rescale=rescale)).output)
    _forward_many_equals_alone(
        _sd_pipeline(scheduler, row_by_row=True),
        [
            _sd_req(5, guidance_rescale=rescale),
            _sd_req(7, seed=SEED + 1, guidance_scale=5.0),
            _sd_req(3, seed=SEED + 2, guidance_rescale=0.5),
        ],
    )


# ------------------------------------------------------------------------------------------------ Flux
FLUX_SCHEDULER = {"shift": 3.0, "use_dynamic_shifting": True, "base_image_seq_len": 16, "max_image_seq_len": 4096}


def _flux_pipeline(scheduler: Any) -> Pipeline:
    parts = tiny.flux_parts()
    transformer = parts["transformer"]
    image_ids = diffusers.FluxPipeline._prepare_latent_image_ids(1, 8, 8, "cpu", torch.float32)
    text_ids = torch.zeros(parts["prompt_embeds"].shape[1], 3)

    def pack(noise: torch.Tensor) -> torch.Tensor:
        return diffusers.FluxPipeline._pack_latents(noise, noise.shape[0], noise.shape[1], 16, 16)

    def model(sample: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        return _row_by_row(  # FluxPipeline calls its transformer on one row (no classifier-free guidance)
            lambda i: transformer(
                hidden_states=sample[i],
                timestep=timestep[i].to(sample.dtype) / 1000,
                guidance=None,
                pooled_projections=parts["pooled_prompt_embeds"],
                encoder_hidden_states=embeds[i],
                txt_ids=text_ids,
                img_ids=image_ids,
                return_dict=False,
            )[0],
            sample,
        )

    # Flux draws the noise first and derives mu from the packed sequence length, so latents come before timesteps.
    return Pipeline(
        [
            PrepareLatents(scheduler, pack=pack),
            PrepareTimesteps(scheduler, flux_sigmas=True),
            Denoise(model, scheduler),
            Decode(),
        ]
    )


def _flux_req(steps: int, seed: int = SEED) -> Req:
    return Req(
        prompt_embeds=tiny.flux_parts()["prompt_embeds"],
        seed=seed,
        num_inference_steps=steps,
        latent_shape=(1, 1, 16, 16),
    )


def test_flux_chain_equals_pipeline() -> None:
    """mu from the packed image sequence length (64 tokens) and Flux's linspace sigmas, as FluxPipeline does."""
    parts = tiny.flux_parts()
    reference_scheduler = diffusers.FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER)
    pipe = tiny.flux_pipeline(reference_scheduler)
    reference = pipe(
        prompt_embeds=parts["prompt_embeds"],
        pooled_prompt_embeds=parts["pooled_prompt_embeds"],
        num_inference_steps=4,
        height=16,
        width=16,
        generator=torch.Generator().manual_seed(SEED),
        output_type="latent",
    ).images
    scheduler = from_diffusers(reference_scheduler)
    pipeline = _flux_pipeline(scheduler)
    done = pipeline.forward(_flux_req(4))
    assert done.mu == calculate_shift(64, 16, 4096, 0.5, 1.15)
    assert done.num_inference_steps == 4 and done.sigmas == tuple(np.linspace(1.0, 1 / 4, 4).tolist())
    again = PrepareTimesteps(scheduler, flux_sigmas=True).forward(done)  # the recorded schedule rebuilds the plan
    assert torch.equal(again.state.plan.sigmas, done.state.plan.sigmas) and again.mu == done.mu
    torch.testing.assert_close(scheduler.timesteps(done.state), reference_scheduler.timesteps, rtol=0, atol=0)
    _assert_equal(reference, done.output)
    _forward_many_equals_alone(pipeline, [_flux_req(4), _flux_req(6, seed=SEED + 1), _flux_req(2, seed=SEED + 2)])


# ------------------------------------------------------------------------------------------------ Wan 2.2
WAN_SCHEDULERS = {
    "UniPC flow": ("UniPCMultistepScheduler", {"prediction_type": "flow_prediction", "use_flow_sigmas": True}),
    "DPM++ flow": ("DPMSolverMultistepScheduler", {"prediction_type": "flow_prediction", "use_flow_sigmas": True}),
}
BOUNDARY = 0.8  # with flow_shift 3 and 6 steps: the first three timesteps (999, 937, 857) go to the high-noise expert


calls: list[Any] = []  # the transformers the stage called, in order


def _wan_model(transformer: Any) -> Any:
    def model(sample: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        calls.append(transformer)
        rows = range(sample.shape[0])  # one row a call, as WanPipeline calls cond and uncond apart
        return torch.cat(
            [
                transformer(
                    hidden_states=sample[i : i + 1],
                    timestep=timestep[i : i + 1],
                    encoder_hidden_states=embeds[i : i + 1],
                    return_dict=False,
                )[0]
                for i in rows
            ]
        )

    return model


def _wan_req(steps: int, seed: int = SEED, guidance_scale: float = 5.0, guidance_scale_2: float = 2.0) -> Req:
    parts = tiny.wan_parts()
    return Req(
        prompt_embeds=parts["prompt_embeds"],
        negative_prompt_embeds=parts["negative_prompt_embeds"],
        guidance_scale=guidance_scale,
        seed=seed,
        num_inference_steps=steps,
        latent_shape=(1, 16, 3, 2, 2),
        extras={"guidance_scale_2": guidance_scale_2},
    )


@pytest.mark.parametrize("case", list(WAN_SCHEDULERS))
def test_wan22_two_experts_equal_pipeline(case: str) -> None:
    """Two experts at `boundary_ratio` with two guidance scales and one solver history across the switch."""
    name, options = WAN_SCHEDULERS[case]
    parts = tiny.wan_parts()
    reference_scheduler = getattr(diffusers, name)(flow_shift=3.0, **options)
    pipe = tiny.wan_pipeline(reference_scheduler, transformer_2=parts["transformer_2"], boundary_ratio=BOUNDARY)
    reference = pipe(
        prompt_embeds=parts["prompt_embeds"],
        negative_prompt_embeds=parts["negative_prompt_embeds"],
        num_inference_steps=6,
        height=16,
        width=16,
        num_frames=9,
        guidance_scale=5.0,
        guidance_scale_2=2.0,
        generator=torch.Generator().manual_seed(SEED),
        output_type="latent",
    ).frames
    scheduler = from_diffusers(reference_scheduler)
    experts = TwoExperts(
        _wan_model(parts["transformer"]),
        scheduler,
        low_noise_model=_wan_model(parts["transformer_2"]),
        boundary_ratio=BOUNDARY,
    )
    pipeline = Pipeline([PrepareTimesteps(scheduler), PrepareLatents(scheduler), experts, Decode()])
    calls.clear()
    _assert_equal(reference, pipeline.forward(_wan_req(6)).output)
    experts_called = ["high" if model is parts["transformer"] else "low" for model in calls]
    assert experts_called == ["high"] * 3 + ["low"] * 3
    # Requests on both sides of the boundary at once: each expert sees its own requests in one call.
    _forward_many_equals_alone(
        pipeline,
        [_wan_req(6), _wan_req(9, seed=SEED + 1, guidance_scale_2=3.0), _wan_req(4, seed=SEED + 2, guidance_scale=4.0)],
    )


def test_two_experts_refuses_a_bad_boundary() -> None:
    scheduler = from_diffusers(diffusers.UniPCMultistepScheduler())
    for ratio in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="boundary_ratio must be"):
            TwoExperts(lambda *a: a[0], scheduler, low_noise_model=lambda *a: a[0], boundary_ratio=ratio)
    for ratio in (True, "0.9", None):
        with pytest.raises(TypeError, match="boundary_ratio must be a number"):
            TwoExperts(lambda *a: a[0], scheduler, low_noise_model=lambda *a: a[0], boundary_ratio=ratio)
