"""Heun and KDPM2 beyond the conformance suite: Stable Diffusion 1.5's pipelines with the drop-ins (txt2img, and
img2img, whose begin index is `t_start * order`), Heun's exp betas (half precision overflows them, in diffusers too, so
the suite's tables hold none), and a pipeline's edit of the sigma table between an interval's two calls."""

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
from functional_sched.testing.parity import toy_model

diffusers.utils.logging.set_verbosity_error()

SD15 = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}
CLASSES = ("HeunDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler")


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


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize("karras", [False, True])
def test_stable_diffusion_latents_equal(sd_parts: dict[str, Any], name: str, karras: bool) -> None:
    """SD 1.5's txt2img loop (scale_model_input at each call's sigma, CFG's doubled batch) with the drop-in, and
    "DPM2 Karras" and the like: bit-equal latents (DPM2 a's noise from the pipeline's generator)."""
    config = {**SD15, "use_karras_sigmas": karras}
    latents = []
    for scheduler in (getattr(diffusers, name)(**config), drop_in.DROP_INS[name](**config)):
        latents.append(
            tiny.sd_pipeline(scheduler)(height=32, width=32, **_call(sd_parts, num_inference_steps=5)).images
        )
    assert torch.equal(latents[1], latents[0])


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize("strength", [0.4, 0.75])
def test_img2img_latents_equal(sd_parts: dict[str, Any], name: str, strength: float) -> None:
    """img2img begins at `t_start * order` (an interval's first call) and noises with `add_noise` there."""
    image = np.random.default_rng(7).random((1, 32, 32, 3), dtype=np.float32)
    latents = []
    for scheduler in (getattr(diffusers, name)(**SD15), drop_in.DROP_INS[name](**SD15)):
        pipe = tiny.sd_pipeline(scheduler, diffusers.StableDiffusionImg2ImgPipeline)
        latents.append(pipe(image=image, strength=strength, **_call(sd_parts, num_inference_steps=6)).images)
    assert torch.equal(latents[1], latents[0])


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_exp_betas_step_as_diffusers(spacing: str) -> None:
    """Heun's `beta_schedule="exp"` (alpha_bar = exp(-12 t)): tables and every float32 call bit-equal to diffusers'."""
    config = {"beta_schedule": "exp", "timestep_spacing": spacing}
    reference, sched = diffusers.HeunDiscreteScheduler(**config), fs.HeunDiscrete(**config)
    reference.set_timesteps(8)
    reference.set_begin_index(0)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * reference.init_noise_sigma
    state = sched.init(8, sample=x)
    assert torch.equal(sched.timesteps(state), reference.timesteps)
    assert torch.equal(sched.sigmas(state), reference.sigmas)
    ours = x.clone()
    for t in reference.timesteps:
        x = reference.step(toy_model(reference.scale_model_input(x, t), t), t, x).prev_sample
        ours, state = sched.step(state, toy_model(sched.scale_model_input(state, ours), t), ours)
        assert torch.equal(ours, x)


@pytest.mark.parametrize("name", CLASSES)
def test_sigmas_edited_between_an_intervals_calls(name: str) -> None:
    """A pipeline scales the sigma table between an interval's two calls: diffusers reads the edited table at the
    second call but keeps what it stored at the first (Heun's `dt`) and its midpoint tables (KDPM2's
    `sigmas_interpol`, `sigmas_up`, `sigmas_down`); the drop-in steps as it does, to the end of the loop."""
    reference, ours = getattr(diffusers, name)(**SD15), drop_in.DROP_INS[name](**SD15)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)) * 14.6
    y = x.clone()
    generators = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for scheduler in (reference, ours):
        scheduler.set_timesteps(6)
        scheduler.set_begin_index(0)
    for index, t in enumerate(reference.timesteps):
        if index in (1, 5):
            reference.sigmas.mul_(0.99)
            ours.sigmas.mul_(0.99)
        kwargs = [{"generator": generator} if "Ancestral" in name else {} for generator in generators]
        x = reference.step(toy_model(reference.scale_model_input(x, t), t), t, x, **kwargs[0]).prev_sample
        y = ours.step(toy_model(ours.scale_model_input(y, t), t), t, y, **kwargs[1]).prev_sample
        assert torch.allclose(y, x, rtol=0, atol=1e-5 * x.abs().max().item()), f"call {index}"
