"""IPNDM beyond the conformance suite: trained noise levels (`trained_betas`, which make the schedule whatever the step
count says), their order on the Gaussian problem, and the drop-in as Dance Diffusion drives it (it assigns
`scheduler.timesteps = scheduler.timesteps.to(dtype)`)."""

from __future__ import annotations

import math

import diffusers
import pytest
import torch

import functional_sched as fs
from functional_sched.adapters import drop_in
from functional_sched.testing import gaussian
from functional_sched.testing.parity import latents, toy_model

#: sin(pi t / 2)^2 on t = linspace(0.9, 0, 9): diffusers' levels, started below t = 1 (8 steps).
FROM_09 = tuple(math.sin(math.pi / 2 * 0.9 * (1 - index / 8)) ** 2 for index in range(9))


@pytest.mark.parametrize("steps", [8, 3, 20])  # diffusers steps len(trained_betas) - 1 times, whatever it is told
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_trained_betas_step_as_diffusers(steps: int, dtype: torch.dtype) -> None:
    reference = diffusers.IPNDMScheduler(trained_betas=list(FROM_09))
    reference.set_timesteps(steps)
    sched = fs.IPNDM(trained_betas=FROM_09)
    ours = theirs = latents((2, 4, 8, 8), dtype)
    state = sched.init(steps, sample=ours)
    assert torch.equal(sched.timesteps(state), reference.timesteps)
    assert torch.equal(sched.sigmas(state), reference.betas)
    for t in reference.timesteps:
        theirs = reference.step(toy_model(theirs, t), t, theirs).prev_sample
        ours, state = sched.step(state, toy_model(ours, sched.timestep(state)), ours)
        assert torch.equal(ours, theirs)
    assert sched.steps_left(state) == 0


def test_trained_betas_below_one_are_second_order() -> None:
    """Started below t = 1 (alpha > 0 at the first step, where the default schedule's x0 = 0 costs first order), the
    Adams-Bashforth combination of epsilon, uniform in t and integrated against the non-uniform sigma / alpha, is
    second order (measured 2.02 over 20..320 steps)."""
    counts = (20, 40, 80, 160)
    errors = []
    for steps in counts:
        t = torch.linspace(0.9, 0, steps + 1, dtype=torch.float64)
        sched = fs.IPNDM(trained_betas=tuple((torch.sin(t * math.pi / 2) ** 2).tolist()))
        errors.append(gaussian.final_error(sched, steps))
    assert abs(gaussian.fitted_order(counts, errors) - 2.0) <= 0.3, errors


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_dance_diffusion_loop_with_the_drop_in(dtype: torch.dtype) -> None:
    """`pipelines/deprecated/dance_diffusion`: audio [B, C, L], timesteps cast to the UNet's dtype and assigned back."""
    reference, ours = diffusers.IPNDMScheduler(), drop_in.DROP_INS["IPNDMScheduler"]()
    for scheduler in (reference, ours):
        scheduler.set_timesteps(10)
        scheduler.timesteps = scheduler.timesteps.to(dtype)
    assert torch.equal(ours.timesteps, reference.timesteps) and ours.timesteps.dtype == dtype
    audio = theirs = latents((2, 2, 64), dtype)
    for t in reference.timesteps:
        theirs = reference.step(toy_model(theirs, t), t, theirs).prev_sample
        audio = ours.step(toy_model(audio, t), t, audio).prev_sample
        assert torch.equal(audio, theirs)
    assert (
        len(ours.ets) == 3 and torch.equal(ours.betas, reference.betas) and torch.equal(ours.alphas, reference.alphas)
    )
    with pytest.raises(NotImplementedError, match="ets is read from the functional state"):
        ours.ets = []


def test_drop_in_steps_before_set_timesteps_as_diffusers() -> None:
    """diffusers' constructor sets num_train_timesteps steps; its step works before any set_timesteps."""
    reference, ours = (
        diffusers.IPNDMScheduler(num_train_timesteps=50),
        drop_in.DROP_INS["IPNDMScheduler"](num_train_timesteps=50),
    )
    assert torch.equal(ours.timesteps, reference.timesteps) and ours.num_inference_steps == 50
    theirs = sample = latents((1, 3, 4, 4))
    for t in reference.timesteps[:6]:
        theirs = reference.step(toy_model(theirs, t), t, theirs).prev_sample
        sample = ours.step(toy_model(sample, t), t, sample).prev_sample
        assert torch.equal(sample, theirs)
    assert not hasattr(ours, "sigmas") and not hasattr(ours, "add_noise")
