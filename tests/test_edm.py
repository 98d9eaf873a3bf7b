"""What the conformance suite cannot express for the EDM family: Cosmos 1.0's loop (x0 of the guided batch, the step
index set back, a step with `pred_original_sample`) through the drop-in and the core, and Stable Audio's per-row
Brownian trees (a list of generators) through the drop-in and `brownian_noise`; the SDE variants' weak order."""

from __future__ import annotations

import diffusers
import pytest
import torch

import functional_sched as fs
from functional_sched.adapters import drop_in
from functional_sched.testing import gaussian
from functional_sched.testing.parity import toy_model

COSMOS = {"sigma_max": 80.0, "sigma_data": 0.5, "sigma_schedule": "karras", "final_sigmas_type": "sigma_min"}
STEPS = 10
GUIDANCE = 7.0


def _latents(rows: int, scale: float) -> torch.Tensor:
    return torch.randn(rows, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * scale


def _cosmos_loop(scheduler: object, churn: dict[str, float]) -> torch.Tensor:
    """`pipelines/cosmos/pipeline_cosmos_text2world.py`'s loop with a toy transformer (bf16) and guidance."""
    scheduler.set_timesteps(STEPS)
    latents = _latents(1, scheduler.config.sigma_max)
    generator = torch.Generator().manual_seed(3)
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t).bfloat16()
        noise_pred = torch.cat([toy_model(model_input, t), toy_model(model_input * 0.9, t)])
        x0 = scheduler.step(
            noise_pred, t, torch.cat([latents, latents]), generator=generator, return_dict=False, **churn
        )
        scheduler._step_index -= 1
        uncond, cond = x0[1].chunk(2)
        guided = cond + GUIDANCE * (cond - uncond)
        latents = scheduler.step(
            guided, t, latents, generator=generator, return_dict=False, pred_original_sample=guided, **churn
        )[0]
    return latents


@pytest.mark.parametrize("churn", [{}, {"s_churn": 0.5}], ids=["ode", "churn"])
def test_cosmos_loop_through_the_drop_in_is_diffusers(churn: dict[str, float]) -> None:
    expected = _cosmos_loop(diffusers.EDMEulerScheduler(**COSMOS), churn)
    ours = drop_in.DROP_INS["EDMEulerScheduler"](**COSMOS)
    assert torch.equal(_cosmos_loop(ours, churn), expected)
    assert ours.step_index == STEPS


def test_cosmos_loop_in_the_core_is_diffusers() -> None:
    """The core needs no rewinding: x0 of the doubled batch from a state's step (its new state dropped), then the
    guided step with `pred_original_sample`."""
    expected = _cosmos_loop(diffusers.EDMEulerScheduler(**COSMOS), {})
    sched = fs.EDMEuler(**COSMOS)
    latents = _latents(1, sched.sigma_max)
    state = sched.init(STEPS, sample=latents)
    for _ in range(STEPS):
        t = sched.timestep(state)
        model_input = sched.scale_model_input(state, latents).bfloat16()
        noise_pred = torch.cat([toy_model(model_input, t), toy_model(model_input * 0.9, t)])
        doubled = torch.cat([latents, latents])
        _, _, x0 = sched.step(
            sched.init(STEPS, sample=doubled, begin_index=sched.steps_taken(state)), noise_pred, doubled, denoised=True
        )
        uncond, cond = x0.chunk(2)
        guided = cond + GUIDANCE * (cond - uncond)
        latents, state = sched.step(state, guided, latents, pred_original_sample=guided)
    assert torch.equal(latents, expected)


def test_pred_original_sample_must_match_the_sample() -> None:
    sched = fs.EDMEuler()
    sample = torch.zeros(2, 3)
    state = sched.init(4, sample=sample)
    with pytest.raises(ValueError, match="pred_original_sample has shape"):
        sched.step(state, sample, sample, pred_original_sample=torch.zeros(1, 3))


def test_stable_audio_per_row_trees_through_the_drop_in_and_the_core() -> None:
    """A list of generators: diffusers builds one tree per row, seeded by each generator's initial seed; the drop-in
    uses diffusers' own sampler, the core `brownian_noise` with one seed per row."""
    seeds = [11, 12]
    reference = diffusers.CosineDPMSolverMultistepScheduler()
    ours = drop_in.DROP_INS["CosineDPMSolverMultistepScheduler"]()
    sched = fs.CosineDPMSolverMultistep()
    reference.set_timesteps(STEPS)
    ours.set_timesteps(STEPS)
    expected = actual = core = _latents(2, reference.init_noise_sigma)
    state = sched.init(STEPS, sample=core)
    generators = [[torch.Generator().manual_seed(seed) for seed in seeds] for _ in range(2)]
    for t in reference.timesteps:
        expected = reference.step(
            toy_model(reference.scale_model_input(expected, t), t), t, expected, generator=generators[0]
        ).prev_sample
        actual = ours.step(
            toy_model(ours.scale_model_input(actual, t), t), t, actual, generator=generators[1]
        ).prev_sample
        noise = fs.brownian_noise(sched, state, core, seeds)
        core, state = sched.step(state, toy_model(sched.scale_model_input(state, core), t.expand(2)), core, noise=noise)
        assert torch.equal(actual, expected) and torch.equal(core, expected)


# The SDE variants are stochastic at every step: their `Order` is the weak order (`testing.gaussian.weak_error`, the
# error of the law of the samples). Measured slopes over 20-160 steps: 1.78 for Stable Audio's 2M, 1.75 for EDM's 2M
# SDE, 0.92 for first order.
WEAK_ORDERS = {
    "cosine-stable-audio-2m": (fs.CosineDPMSolverMultistep(), 2),
    "cosine-first-order": (fs.CosineDPMSolverMultistep(solver_order=1), 1),
    "edm-2m-sde": (fs.EDMDPMSolverMultistep(algorithm_type="sde-dpmsolver++", sigma_schedule="exponential"), 2),
}


@pytest.mark.parametrize("name", list(WEAK_ORDERS))
def test_weak_order(name: str) -> None:
    scheduler, order = WEAK_ORDERS[name]
    counts = (20, 40, 80, 160)
    errors = [gaussian.weak_error(scheduler, steps) for steps in counts]
    slope = gaussian.fitted_order(counts, errors)
    assert abs(slope - order) <= 0.3 and errors == sorted(errors, reverse=True), (slope, errors)
