"""`DPMSolverSDE` and `brownian_noise` beyond the conformance suite: each request's own Brownian tree (batch-invariant,
and diffusers' run for a batch of one, bit for bit), rows at different steps, a handed-over request resuming with no
replay of its tree, the optional dependency's error, and the weak order of convergence on the Gaussian problem.

The conformance table is `tests/specs/dpm_sde.py`."""

from __future__ import annotations

import builtins
import json
import math
from typing import Any

import diffusers
import pytest
import torch

import functional_sched as fs
from functional_sched import batching, serialize
from functional_sched.testing import gaussian
from functional_sched.testing.parity import latents, toy_model

SD15_KARRAS = {
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "steps_offset": 1,
    "use_karras_sigmas": True,
}
SDXL_KARRAS = {**SD15_KARRAS, "timestep_spacing": "leading"}
ROW = (1, 4, 8, 8)


def diffusers_run(options: dict[str, Any], steps: int, sample: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """diffusers' loop (`scale_model_input`, `toy_model`, `step`) with its tree seeded by `seed`: every sample."""
    reference = diffusers.DPMSolverSDEScheduler(**options, noise_sampler_seed=seed)
    reference.set_timesteps(steps)
    samples = []
    for t in reference.timesteps:
        output = toy_model(reference.scale_model_input(sample, t), t)
        sample = reference.step(output, t, sample).prev_sample
        samples.append(sample)
    return samples


def advance(sched: fs.DPMSolverSDE, state: Any, sample: torch.Tensor, seeds: Any) -> tuple[torch.Tensor, Any]:
    """One call of our loop: the model at the scaled input, the step with `brownian_noise` of `seeds`."""
    output = toy_model(sched.scale_model_input(state, sample), sched.timestep(state))
    return sched.step(state, output, sample, noise=fs.brownian_noise(sched, state, sample, seeds))


@pytest.mark.parametrize("options", [SD15_KARRAS, SDXL_KARRAS, {"prediction_type": "v_prediction"}])
def test_a_request_of_one_row_is_diffusers_run(options: dict[str, Any]) -> None:
    sched = fs.DPMSolverSDE(**options)
    sample = latents(ROW, seed=3) * 14.6
    expected = diffusers_run(options, 8, sample.clone(), seed=11)
    state = sched.init(8, sample=sample)
    for index, reference in enumerate(expected):
        sample, state = advance(sched, state, sample, [11])
        assert torch.equal(sample, reference), f"call {index}"


def test_per_request_trees_are_batch_invariant() -> None:
    """Requests stacked in any order, each with its own seed (one tree per row), step as each alone, and as diffusers
    steps each alone; one seed for the batch is diffusers' one tree for the batch instead (rows then correlate with
    their place)."""
    sched = fs.DPMSolverSDE(**SD15_KARRAS)
    seeds = [5, 6, 7]
    starts = [latents(ROW, seed=10 + i) * 14.6 for i in range(3)]
    alone = [diffusers_run(SD15_KARRAS, 8, start.clone(), seed) for start, seed in zip(starts, seeds, strict=True)]
    for order in ([0, 1, 2], [2, 0, 1]):
        sample = torch.cat([starts[i] for i in order])
        state = batching.stack([sched.init(8, sample=starts[i]) for i in order])
        for index in range(len(alone[0])):
            sample, state = advance(sched, state, sample, [seeds[i] for i in order])
            for row, i in enumerate(order):
                assert torch.equal(sample[row : row + 1], alone[i][index]), f"order {order}, call {index}, row {row}"
    batch = torch.cat(starts)
    expected = diffusers_run(SD15_KARRAS, 8, batch.clone(), seed=5)
    state = sched.init(8, sample=batch)
    for index, reference in enumerate(expected):
        batch, state = advance(sched, state, batch, 5)
        assert torch.equal(batch, reference), f"one tree for the batch, call {index}"


def test_rows_at_different_steps_and_schedules_step_as_each_alone() -> None:
    """Two requests of different step counts, one a few calls ahead (mid-interval), stepped together: each row's
    noise comes from its own tree at its own interval, and each finishes as it would alone."""
    sched = fs.DPMSolverSDE(**SDXL_KARRAS)
    counts, seeds, ahead = [8, 6], [21, 22], 3
    starts = [latents(ROW, seed=30 + i) * 14.6 for i in range(2)]
    runs = []
    for start, count, seed in zip(starts, counts, seeds, strict=True):
        state, sample, samples = sched.init(count, sample=start), start, []
        for _ in range(len(sched.timesteps(state))):
            sample, state = advance(sched, state, sample, [seed])
            samples.append(sample)
        runs.append(samples)
    states = [sched.init(count, sample=start) for start, count in zip(starts, counts, strict=True)]
    first = starts[0]
    for _ in range(ahead):
        first, states[0] = advance(sched, states[0], first, [seeds[0]])
    state, sample = batching.stack(states), torch.cat([first, starts[1]])
    assert state.step_index.tolist() == [ahead, 0]
    with pytest.raises(ValueError, match="different steps or schedules"):
        fs.brownian_noise(sched, state, sample, 21)
    for index in range(len(runs[1])):
        sample, state = advance(sched, state, sample, seeds)
        assert torch.equal(sample[:1], runs[0][ahead + index]), f"call {index}, row 0"
        assert torch.equal(sample[1:], runs[1][index]), f"call {index}, row 1"


@pytest.mark.parametrize("handed_over_at", [1, 2, 5, 14])
def test_a_handed_over_request_resumes_without_replay(handed_over_at: int) -> None:
    """The receiver has only the serialised state and the seed: its first query of a fresh tree gives the noise the
    sender's run would have had (no earlier interval is queried), mid-interval too, and it finishes bit for bit."""
    sched = fs.DPMSolverSDE(**SD15_KARRAS)
    start = latents((2, 4, 8, 8), seed=4) * 14.6
    state, sample, expected = sched.init(8, sample=start), start, []
    for _ in range(len(sched.timesteps(state))):
        sample, state = advance(sched, state, sample, [41, 42])
        expected.append(sample)
    state, sample = sched.init(8, sample=start), start
    for _ in range(handed_over_at):
        sample, state = advance(sched, state, sample, [41, 42])
    tensors, metadata = serialize.state_to_tensors(state)
    resumed = serialize.state_from_tensors(tensors, json.loads(json.dumps(metadata)), sched)
    for index in range(handed_over_at, len(expected)):
        sample, resumed = advance(sched, resumed, sample, [41, 42])
        assert torch.equal(sample, expected[index]), f"call {index}"


def test_noise_is_the_trees_whatever_was_queried_before() -> None:
    """The noise of a call equals diffusers' sampler's for that call after the whole run's queries before it."""
    from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

    sched = fs.DPMSolverSDE(**SD15_KARRAS)
    sample = torch.zeros(ROW)
    state = sched.init(10, sample=sample)
    sigmas = sched.sigmas(state)
    sampler = BrownianTreeNoiseSampler(sample, sigmas[sigmas > 0].min().item(), sigmas.max().item(), 99)
    noises = []
    for _ in range(len(sched.timesteps(state))):
        (query,) = sched._brownian_queries(state)
        noises.append(torch.zeros(ROW) if query is None else sampler(query.start, query.end))
        state = state.replace(step_index=state.step_index + 1)
    for index in reversed(range(len(noises))):  # queried last first, each from a fresh tree
        state = sched.init(10, sample=sample, begin_index=index)
        assert torch.equal(fs.brownian_noise(sched, state, sample, 99), noises[index]), f"call {index}"


def test_the_seed_comes_from_the_config_or_the_caller() -> None:
    sample = torch.zeros(ROW)
    state = fs.DPMSolverSDE(noise_sampler_seed=8).init(4, sample=sample)
    seeded = fs.brownian_noise(fs.DPMSolverSDE(noise_sampler_seed=8), state, sample)
    assert torch.equal(seeded, fs.brownian_noise(fs.DPMSolverSDE(), state, sample, 8))
    with pytest.raises(ValueError, match="give seed="):
        fs.brownian_noise(fs.DPMSolverSDE(), state, sample)
    with pytest.raises(ValueError, match="2 seeds for 1 rows"):
        fs.brownian_noise(fs.DPMSolverSDE(), state, sample, [1, 2])
    with pytest.raises(TypeError, match="no _brownian_queries"):
        fs.brownian_noise(fs.EulerDiscrete(), fs.EulerDiscrete().init(4, sample=sample), sample, 1)


def test_the_last_call_draws_nothing() -> None:
    sched = fs.DPMSolverSDE()
    sample = torch.ones(ROW)
    state = sched.init(3, sample=sample, begin_index=4)
    assert not sched._draws_noise(state)
    assert torch.equal(fs.brownian_noise(sched, state, sample, 1), torch.zeros(ROW))


def test_without_torchsde_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_torchsde(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "torchsde":
            raise ImportError("No module named 'torchsde'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchsde)
    sched = fs.DPMSolverSDE()
    sample = torch.zeros(ROW)
    with pytest.raises(ImportError, match=r"functional-sched\[sde\]"):
        fs.brownian_noise(sched, sched.init(4, sample=sample), sample, 1)


# ------------------------------------------------------------------------------------------------ weak order
def terminal_moments(sched: fs.DPMSolverSDE, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The exact mean and variance per dim of the sample before the last call (at sigma_{N-1}), and that sigma, on
    the Gaussian problem (`testing.gaussian`) with the exact denoiser and Brownian noise.

    Every call is affine in (sample, model output, noise) and the exact model output is affine in its input, per dim,
    so the sample is Gaussian: X = m + sum_j L_j xi_j over independent standard normals xi_j. Rows of one stacked
    state carry m (row 0, with the model's affine output and no noise) and each L_j (the model's linear part, and the
    noise's coefficient of xi_j). An interval's two noises are increments of one Brownian path over nested intervals,
    [mid, sigma_i] inside [sigma_{i+1}, sigma_i]: z1 = xi_a, z2 = rho xi_a + sqrt(1 - rho^2) xi_b with
    rho = sqrt((sigma_i - mid) / (sigma_i - sigma_{i+1})), their correlation.
    """
    dims, calls = gaussian.DIMS, 2 * steps - 1
    rows = 2 + 2 * steps  # the mean, the start's spread, two fresh normals per interval
    probe = torch.zeros(rows, dims, dtype=torch.float64)
    state = sched.init(steps, sample=probe)
    sigma_max = sched.sigmas(state)[0]
    x = torch.zeros(rows, dims, dtype=torch.float64)
    x[0] = gaussian.MU
    x[1] = gaussian.marginal_std(torch.ones((), dtype=torch.float64), sigma_max)
    origin = torch.zeros(rows, dims, dtype=torch.float64)
    for call in range(calls - 1):
        affine = gaussian.exact_output(sched, state, x)
        offset = gaussian.exact_output(sched, state, origin)
        output = affine - offset
        output[0] = affine[0]  # the mean row keeps the constant
        (query,) = sched._brownian_queries(state)[:1]
        noise = torch.zeros_like(x)
        interval = call // 2
        if call % 2 == 0:
            noise[2 + 2 * interval] = 1.0
            first = query
        else:
            rho = math.sqrt(float(first.start - first.end) / float(query.start - query.end))
            noise[2 + 2 * interval] = rho
            noise[3 + 2 * interval] = math.sqrt(1 - rho**2)
        x, state = sched.step(state, output, x, noise=noise)
    return x[0], (x[1:] ** 2).sum(0), sched.sigmas(state)[calls - 1]


def weak_error(options: dict[str, Any], steps: int) -> float:
    """The 2-Wasserstein distance (max over dims) between the sampled and the true marginal at sigma_{N-1}."""
    sched = fs.DPMSolverSDE(**options)
    mean, variance, sigma = terminal_moments(sched, steps)
    target = gaussian.marginal_std(torch.ones((), dtype=torch.float64), sigma)
    distance = ((mean - gaussian.MU) ** 2 + (variance.sqrt() - target) ** 2).sqrt()
    return distance.max().item()


def test_moment_propagation_matches_sampling() -> None:
    """The exact moments against 20000 sampled paths (Brownian increments drawn as nested Gaussian increments)."""
    sched = fs.DPMSolverSDE(**SD15_KARRAS)
    steps, paths = 4, 20000
    mean, variance, _ = terminal_moments(sched, steps)
    generator = torch.Generator().manual_seed(0)
    noise_of = lambda: torch.randn(paths, gaussian.DIMS, generator=generator, dtype=torch.float64)  # noqa: E731
    state = sched.init(steps, sample=torch.zeros(paths, gaussian.DIMS, dtype=torch.float64))
    sigma_max = sched.sigmas(state)[0]
    x = gaussian.MU + gaussian.marginal_std(torch.ones((), dtype=torch.float64), sigma_max) * noise_of()
    for call in range(2 * steps - 2):
        (query,) = sched._brownian_queries(state)[:1]
        if call % 2 == 0:
            first, xi_a = query, noise_of()
            noise = xi_a
        else:
            rho = math.sqrt(float(first.start - first.end) / float(query.start - query.end))
            noise = rho * xi_a + math.sqrt(1 - rho**2) * noise_of()
        x, state = sched.step(state, gaussian.exact_output(sched, state, x), x, noise=noise)
    assert (x.mean(0) - mean).abs().max().item() < 5 * (variance.max().item() / paths) ** 0.5
    assert ((x.var(0) / variance) - 1).abs().max().item() < 0.1


@pytest.mark.parametrize("options", [SD15_KARRAS, {**SD15_KARRAS, "prediction_type": "v_prediction"}])
def test_weak_order(options: dict[str, Any]) -> None:
    """DPM-Solver++(2S) SDE with the exact score, on Karras sigmas: the terminal law's 2-Wasserstein error falls like
    N^-2 (fitted 2.2 over 10 to 160 steps, for epsilon and v prediction; the second-order weak convergence of
    DPM-Solver++(2S) on this linear problem), and falls with every doubling of the steps. (On SD's linspace sigmas the
    fitted order is about 1: the schedule's coarse low-noise end dominates.)"""
    counts = (10, 20, 40, 80, 160)
    errors = [weak_error(options, steps) for steps in counts]
    slope = gaussian.fitted_order(counts, errors)
    assert errors == sorted(errors, reverse=True), errors
    assert abs(slope - 2.0) <= 0.3, (slope, errors)
