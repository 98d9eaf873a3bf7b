"""What the conformance suite cannot express for CogVideoX's schedulers: the DPM variant's drop-in driven as the
CogVideoX pipeline drives it (the previous x0 and timestep from the caller), calls off that pattern, the noise
helper's draws, img2img starts, and the pipeline's own dtypes (bf16 latents, a float32 model output)."""

from __future__ import annotations

from typing import Any

import diffusers
import pytest
import torch
from specs.cogvideox import COGVIDEOX_DPM

import functional_sched as fs
from functional_sched.adapters import drop_in
from functional_sched.testing import parity

SHAPE = (2, 4, 6, 6)
CASES = [COGVIDEOX_DPM.case(config) for config in COGVIDEOX_DPM.configs]


def _pair(options: dict[str, Any]) -> tuple[Any, Any]:
    return diffusers.CogVideoXDPMScheduler(**options), drop_in.CogVideoXDPMScheduler(**options)


def _pipeline_loop(scheduler: Any, sample: torch.Tensor, seed: int, *, start: int = 0) -> list[tuple[Any, ...]]:
    """pipeline_cogvideox.py's loop from `timesteps[start]`: `step(noise_pred, old_pred_original_sample, t,
    timesteps[i - 1] if i > 0 else None, latents, generator=g, return_dict=False)`; every output, and the generator's
    state after each step."""
    generator, old, outputs = torch.Generator().manual_seed(seed), None, []
    timesteps = scheduler.timesteps[start:]
    for i, t in enumerate(timesteps):
        back = timesteps[i - 1] if i > 0 else None
        out = scheduler.step(parity.toy_model(sample, t), old, t, back, sample, generator=generator, return_dict=i % 2)
        sample, old = (out[0], out[1]) if isinstance(out, tuple) else (out.prev_sample, out.pred_original_sample)
        outputs.append((type(out), sample, old, generator.get_state()))
    return outputs


def _assert_same_runs(reference: list[tuple[Any, ...]], ours: list[tuple[Any, ...]]) -> None:
    assert len(ours) == len(reference)
    for index, (theirs, mine) in enumerate(zip(reference, ours, strict=True)):
        assert mine[0] is theirs[0], f"step {index}: output type {mine[0]} vs {theirs[0]}"
        for got, expected in zip(mine[1:], theirs[1:], strict=True):
            assert got.dtype == expected.dtype, f"step {index}"
            assert torch.equal(got, expected), f"step {index}: {(got.double() - expected.double()).abs().max()}"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_drop_in_steps_as_the_pipeline_calls_it(case: Any) -> None:
    """The CogVideoX pipeline's loop, twice on one object (set_timesteps again between): every sample, x0, output
    type (a tuple at first-order steps, whatever return_dict says) and generator state equal to diffusers'."""
    reference, ours = _pair(dict(case.options))
    sample = parity.latents(SHAPE, seed=3)
    for seed in (0, 1):
        for scheduler in (reference, ours):
            scheduler.set_timesteps(case.steps)
        assert torch.equal(ours.timesteps, reference.timesteps) and ours.timesteps.dtype == reference.timesteps.dtype
        _assert_same_runs(_pipeline_loop(reference, sample, seed), _pipeline_loop(ours, sample, seed))
        assert ours._state is not None  # the functional state stepped, not diffusers' own step


def test_drop_in_video2video_starts_first_order_at_its_index() -> None:
    """pipeline_cogvideox_video2video.py steps `timesteps[t_start:]` from i = 0: no x0, no back timestep at first."""
    options = dict(CASES[0].options)
    reference, ours = _pair(options)
    for scheduler in (reference, ours):
        scheduler.set_timesteps(10)
    sample = parity.latents(SHAPE, seed=4)
    _assert_same_runs(_pipeline_loop(reference, sample, 0, start=4), _pipeline_loop(ours, sample, 0, start=4))


def test_drop_in_takes_the_callers_values_off_the_pipelines_pattern() -> None:
    """A caller's own x0, a back timestep that is not the step before, no x0 mid-run, an x0 at a fresh object's first
    step: each step equals diffusers' given the same arguments."""
    options = dict(CASES[0].options)
    reference, ours = _pair(options)
    for scheduler in (reference, ours):
        scheduler.set_timesteps(8)
    timesteps = reference.timesteps
    sample = parity.latents(SHAPE, seed=5)
    other_x0 = parity.latents(SHAPE, seed=6)
    calls = [
        (None, None),  # the pipeline's first step
        (other_x0, timesteps[0]),  # a caller's own x0, the right back timestep
        (other_x0, timesteps[0]),  # a back timestep two steps back
        (None, None),  # first order mid-run
        (other_x0, timesteps[3]),
        (other_x0, timesteps[4]),
        (other_x0, timesteps[5]),
        (other_x0, timesteps[6]),  # the last step: first order whatever is passed
    ]
    g_ref, g_ours = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    x_ref = x_ours = sample
    for index, (t, (old, back)) in enumerate(zip(timesteps, calls, strict=True)):
        out_ref = reference.step(parity.toy_model(x_ref, t), old, t, back, x_ref, generator=g_ref)
        out_ours = ours.step(parity.toy_model(x_ours, t), old, t, back, x_ours, generator=g_ours)
        for got, expected in zip(out_ours, out_ref, strict=True):
            assert torch.equal(got, expected), f"step {index}"
        assert torch.equal(g_ours.get_state(), g_ref.get_state()), f"step {index}: generator streams differ"
        x_ref, x_ours = out_ref[0], out_ours[0]
    # A fresh object's first call with an x0 and a back timestep (a resumed pipeline): diffusers' step.
    fresh_ref, fresh_ours = _pair(options)
    for scheduler in (fresh_ref, fresh_ours):
        scheduler.set_timesteps(8)
    t, back = timesteps[2], timesteps[1]
    out_ref = fresh_ref.step(parity.toy_model(sample, t), other_x0, t, back, sample, generator=torch.manual_seed(0))
    out_ours = fresh_ours.step(parity.toy_model(sample, t), other_x0, t, back, sample, generator=torch.manual_seed(0))
    assert all(torch.equal(got, expected) for got, expected in zip(out_ours, out_ref, strict=True))


def test_noise_draws_as_diffusers_consumes_its_generator() -> None:
    """`CogVideoXDPM.draws`: once at a run's first step and where the schedule's last goes below timestep 0, twice
    elsewhere (6 'trailing' steps end at timestep 166 -> 0, second order); a state begun mid-schedule starts with one.
    (That `noise` leaves the generator where diffusers leaves its own: the pipeline-loop tests above.)"""
    sched = fs.CogVideoXDPM(**CASES[0].options)
    sample = parity.latents(SHAPE, seed=1)
    state = sched.init(6, sample=sample)
    draws = []
    for _ in range(6):
        draws.append(sched.draws(state))
        sample, state = sched.step(state, parity.toy_model(sample, sched.timestep(state)), sample, noise=sample)
    goes_on = [int(t) - 1000 // 6 >= 0 for t in sched.timesteps(state)]  # 'trailing': the last too, at 6 steps
    assert draws == [1] + [1 + int(more) for more in goes_on[1:]] == [1, 2, 2, 2, 2, 2]
    assert sched.draws(sched.init(6, sample=sample, begin_index=3)) == 1


def test_stacked_rows_at_different_levels_step_as_each_alone() -> None:
    """Rows at a run's first step (first order) and mid-run (second order) stack into one state and step in one
    call, each as it would alone; `draws` refuses to answer for rows that draw differently."""
    sched = fs.CogVideoXDPM(**CASES[0].options)
    sample = parity.latents((1, 4, 6, 6), seed=2)
    noise = parity.latents((1, 4, 6, 6), seed=7)
    fresh = sched.init(8, sample=sample, begin_index=2)
    running = sched.init(8, sample=sample)
    x = sample
    for _ in range(2):
        x, running = sched.step(running, parity.toy_model(x, sched.timestep(running)), x, noise=noise)
    alone = [
        sched.step(fresh, parity.toy_model(sample, sched.timestep(fresh)), sample, noise=noise)[0],
        sched.step(running, parity.toy_model(x, sched.timestep(running)), x, noise=noise)[0],
    ]
    stacked = fs.batching.stack([fresh, running])
    both = torch.cat([sample, x])
    together, _ = sched.step(
        stacked, parity.toy_model(both, sched.timestep(stacked)), both, noise=noise.expand(2, -1, -1, -1)
    )
    assert torch.equal(together, torch.cat(alone))
    with pytest.raises(ValueError, match="draw different numbers"):
        sched.draws(stacked)


@pytest.mark.parametrize("functional", [fs.CogVideoXDDIM, fs.CogVideoXDPM])
def test_pipeline_dtypes_bf16_latents_float32_model_output(functional: type) -> None:
    """The CogVideoX pipeline steps bf16 latents with a float32 model output (`noise_pred.float()`) and casts the
    result back to bf16: our step (its result in the sample's dtype, the previous x0 kept in float32) equals that."""
    options = dict(CASES[0].options)
    reference = getattr(diffusers, functional.diffusers_name)(**options)
    reference.set_timesteps(8)
    sched = functional(**options)
    latents = parity.latents(SHAPE, seed=8).to(torch.bfloat16)
    state = sched.init(8, sample=latents)
    g_ref, g_ours = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    x_ref = x_ours = latents
    old = None
    for i, t in enumerate(reference.timesteps):
        output = parity.toy_model(x_ref.float(), t)
        if functional is fs.CogVideoXDPM:
            back = reference.timesteps[i - 1] if i > 0 else None
            prev, old = reference.step(output, old, t, back, x_ref, generator=g_ref, return_dict=False)
            noise = sched.noise(state, x_ours, g_ours)
        else:
            prev, noise = reference.step(output, t, x_ref, return_dict=False)[0], None
        x_ref = prev.to(torch.bfloat16)
        x_ours, state = sched.step(state, parity.toy_model(x_ours.float(), sched.timestep(state)), x_ours, noise=noise)
        assert x_ours.dtype == torch.bfloat16
        assert torch.equal(x_ours, x_ref), f"step {i}: {(x_ours.double() - x_ref.double()).abs().max()}"
