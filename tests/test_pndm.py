"""PNDM beyond the conformance suite: Stable Diffusion 1.5's pipelines with the drop-in (txt2img, and img2img, whose
tail of the table starts the warm-up again at any place), and the drop-in's run values and diffusers' phase methods."""

from __future__ import annotations

from typing import Any

import _tiny_pipelines as tiny
import diffusers
import numpy as np
import pytest
import torch
import transformers  # noqa: F401  (diffusers' pipeline classes are import-time dummies without it)

import functional_sched as fs
from functional_sched.adapters import drop_in
from functional_sched.adapters.drop_in import as_diffusers
from functional_sched.testing.parity import toy_model

diffusers.utils.logging.set_verbosity_error()

SD15 = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "skip_prk_steps": True,
}
CONFIGS = {"plms": SD15, "prk": {**SD15, "skip_prk_steps": False}}


@pytest.fixture(scope="module")
def sd_parts() -> dict[str, Any]:
    return tiny.sd_parts()


def _call(parts: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return {
        "prompt_embeds": parts["prompt_embeds"],
        "negative_prompt_embeds": parts["negative_prompt_embeds"],
        "guidance_scale": 3.0,
        "generator": torch.Generator().manual_seed(0),
        "output_type": "latent",
        **kwargs,
    }


@pytest.mark.parametrize("config", list(CONFIGS))
def test_stable_diffusion_latents_equal(sd_parts: dict[str, Any], config: str) -> None:
    """SD 1.5's txt2img loop (no `set_begin_index`: diffusers' PNDM has none) with the drop-in: bit-equal latents."""
    latents = []
    for scheduler in (diffusers.PNDMScheduler(**CONFIGS[config]), as_diffusers(diffusers.PNDMScheduler(**SD15))):
        if config == "prk":
            scheduler = type(scheduler).from_config({**scheduler.config, "skip_prk_steps": False})
        pipe = tiny.sd_pipeline(scheduler)
        latents.append(pipe(height=32, width=32, **_call(sd_parts, num_inference_steps=6)).images)
        assert not hasattr(scheduler, "set_begin_index")
    assert torch.equal(latents[1], latents[0])


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("strength", [0.5, 0.6, 1.0])
def test_img2img_latents_equal(sd_parts: dict[str, Any], config: str, strength: float) -> None:
    """img2img passes the table's tail from `t_start` (a repeated timestep at either of its places, with PLMS) and
    noises with diffusers' `add_noise` at its first timestep; diffusers' PNDM counts its calls from there."""
    image = np.random.default_rng(7).random((1, 32, 32, 3), dtype=np.float32)
    latents = []
    for scheduler in (diffusers.PNDMScheduler(**CONFIGS[config]), drop_in.PNDMScheduler(**CONFIGS[config])):
        pipe = tiny.sd_pipeline(scheduler, diffusers.StableDiffusionImg2ImgPipeline)
        latents.append(pipe(image=image, strength=strength, **_call(sd_parts, num_inference_steps=6)).images)
        assert scheduler.counter == len(scheduler.timesteps) - (6 - int(6 * strength))
    assert torch.equal(latents[1], latents[0])


def test_a_repeated_timestep_steps_from_either_place() -> None:
    """A loop that starts at the second place of a repeated timestep (img2img's tail) steps as diffusers does: the
    plan's coefficients depend on the timestep and the calls taken, not on the place."""
    for start in (1, 2):
        reference, ours = diffusers.PNDMScheduler(**SD15), drop_in.PNDMScheduler(**SD15)
        x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(start))
        y = x.clone()
        for scheduler in (reference, ours):
            scheduler.set_timesteps(8)
        for t in reference.timesteps[start:]:
            x = reference.step(toy_model(x, t), t, x).prev_sample
            y = ours.step(toy_model(y, t), t, y).prev_sample
            assert torch.equal(y, x)
            assert ours.counter == reference.counter and len(ours.ets) == len(reference.ets)


def test_phase_methods_forward_in_turn_and_refuse_out_of_turn() -> None:
    ours = drop_in.PNDMScheduler(**CONFIGS["prk"])
    ours.set_timesteps(5)
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(NotImplementedError, match="step_plms: call step"):
        ours.step_plms(x, ours.timesteps[0], x)
    for t in ours.timesteps[:12]:
        x = ours.step_prk(toy_model(x, t), t, x).prev_sample
    with pytest.raises(NotImplementedError, match="step_prk: call step"):
        ours.step_prk(x, ours.timesteps[12], x)
    ours.step_plms(toy_model(x, ours.timesteps[12]), ours.timesteps[12], x)
    with pytest.raises(NotImplementedError, match="ets is read from the functional state"):
        ours.ets = [x]


def test_rows_at_different_warm_up_levels_step_as_alone() -> None:
    """The phase is per row: rows one, two and five calls in (Euler, the averaged call, fourth order) in one call."""
    sched = fs.PNDM(**SD15)
    samples = [torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(seed)) for seed in range(3)]
    states = []
    for sample, taken in zip(samples, (1, 2, 5), strict=True):
        state = sched.init(10, sample=sample)
        for _ in range(taken):
            sample, state = sched.step(state, toy_model(sample, sched.timestep(state)), sample)
        states.append((state, sample))
    batch = fs.batching.stack([state for state, _ in states])
    joined = torch.cat([sample for _, sample in states])
    together, _ = sched.step(batch, toy_model(joined, sched.timestep(batch)), joined)
    alone = [sched.step(state, toy_model(sample, sched.timestep(state)), sample)[0] for state, sample in states]
    assert torch.equal(together, torch.cat(alone))
