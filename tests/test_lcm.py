"""LCM and TCD beyond the conformance suite: `set_timesteps`' per-call `original_inference_steps` and `strength`
(img2img) through `spaced_timesteps` and the drop-in, the drop-in's second output, and exactness in law on the
Gaussian problem when the model is the exact consistency function (these samplers have no convergence order as
solvers of the diffusion model's ODE: `tests/specs/lcm.py`)."""

from __future__ import annotations

import math
from typing import Any

import diffusers
import pytest
import torch

import functional_sched as fs
from functional_sched.adapters import drop_in
from functional_sched.testing import gaussian
from functional_sched.testing.parity import toy_model

SD15 = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1}
CLASSES = ((fs.LCM, diffusers.LCMScheduler), (fs.TCD, diffusers.TCDScheduler))
# (num_inference_steps, per-call original_inference_steps, strength), as pipelines and img2img pipelines pass them.
SCHEDULES = [(4, None, 1.0), (4, None, 0.5), (8, 100, 1.0), (3, 20, 0.3), (50, None, 1.0), (6, 1000, 0.75), (1, 7, 1.0)]


def _outcome(call: Any) -> Any:
    try:
        return call()
    except ValueError:
        return ValueError


@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
@pytest.mark.parametrize(("steps", "original", "strength"), [*SCHEDULES, (8, 4, 1.0), (5, None, 0.08), (4, 2000, 1.0)])
def test_spaced_timesteps_are_diffusers_set_timesteps(
    ours: type, theirs: type, steps: int, original: int | None, strength: float
) -> None:
    """Equal tables (TCD's per-call original_inference_steps spaces every training timestep), or both refuse."""
    reference = theirs(**SD15)
    expected = _outcome(
        lambda: (
            reference.set_timesteps(steps, original_inference_steps=original, strength=strength) or reference.timesteps
        )
    )
    got = _outcome(lambda: ours(**SD15).spaced_timesteps(steps, original_inference_steps=original, strength=strength))
    if expected is ValueError or got is ValueError:
        assert got is expected
    else:
        assert got.dtype == expected.dtype and torch.equal(got, expected)


@pytest.mark.parametrize(("ours", "theirs"), CLASSES)
@pytest.mark.parametrize(("steps", "original", "strength"), SCHEDULES)
def test_drop_in_per_call_schedule_steps_as_diffusers(
    ours: type, theirs: type, steps: int, original: int | None, strength: float
) -> None:
    """The drop-in with `set_timesteps(n, original_inference_steps=..., strength=...)`: every step's outputs, both
    fields (LCM's `denoised`, TCD's `pred_noised_sample`), and the attributes diffusers sets, bit for bit."""
    reference, drop = theirs(**SD15), drop_in.DROP_INS[theirs.__name__](**SD15)
    for scheduler in (reference, drop):
        scheduler.set_timesteps(steps, original_inference_steps=original, strength=strength)
    assert torch.equal(drop.timesteps, reference.timesteps)
    assert (drop.num_inference_steps, drop.custom_timesteps) == (reference.num_inference_steps, False)
    x = gaussian_latents()
    y = x.clone()
    generators = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for index, t in enumerate(reference.timesteps):
        expected = reference.step(toy_model(x, t), t, x, generator=generators[0], return_dict=index % 2 == 0)
        got = drop.step(toy_model(y, t), t, y, generator=generators[1], return_dict=index % 2 == 0)
        assert type(got) is type(expected) and len(got) == len(expected) == 2
        assert all(torch.equal(got[i], expected[i]) for i in range(2)), f"step {index}"
        assert got[0] is not got[1]
        x, y = expected[0], got[0]
        assert drop.step_index == reference.step_index
    assert getattr(drop, "sigma_data", None) == getattr(reference, "sigma_data", None)


def test_drop_in_custom_timesteps_flag_and_cut_by_strength() -> None:
    reference, drop = diffusers.LCMScheduler(**SD15), drop_in.LCMScheduler(**SD15)
    for scheduler in (reference, drop):
        scheduler.set_timesteps(timesteps=[999, 759, 499, 259])
        scheduler.set_timesteps(4)  # diffusers never clears the flag
    assert drop.custom_timesteps is reference.custom_timesteps is True
    assert torch.equal(drop.timesteps, reference.timesteps)
    with pytest.raises(NotImplementedError, match=r"custom timesteps with strength=0\.5 are not supported"):
        drop.set_timesteps(timesteps=[999, 759, 499, 259], strength=0.5)
    with pytest.raises(ValueError, match="exactly one of"):
        drop.set_timesteps()


def gaussian_latents() -> torch.Tensor:
    return torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------------- exactness in law
def _consistency_output(sched: Any, state: Any, x: torch.Tensor) -> torch.Tensor:
    """The epsilon prediction of the exact consistency function of the Gaussian problem at this call: the output
    whose step estimate (LCM's x0' = c_skip x + c_out x0, TCD's DDIM step to s) is the probability-flow ODE's own
    point (at the data, or at s)."""
    t = int(sched.timestep(state)[0])
    alpha_bar = sched._training_cumprod().to(torch.float64)
    alpha_t, sigma_t = alpha_bar[t].sqrt(), (1 - alpha_bar[t]).sqrt()
    if isinstance(sched, fs.LCM):
        scaled = t * sched.timestep_scaling
        c_skip, c_out = 0.25 / (scaled**2 + 0.25), scaled / math.sqrt(scaled**2 + 0.25)
        target = gaussian.exact_solution(x, (alpha_t, sigma_t), (1.0, 0.0))
        x0 = (target - c_skip * x) / c_out
        return (x - alpha_t * x0) / sigma_t
    table = sched.timesteps(state)
    step = sched.steps_taken(state)
    following = int(table[step + 1]) if step + 1 < len(table) else 0
    s = int(torch.floor((1 - sched.eta) * torch.tensor(following)))  # in float32, as diffusers forms it
    alpha_s, sigma_s = alpha_bar[s].sqrt(), (1 - alpha_bar[s]).sqrt()
    target = gaussian.exact_solution(x, (alpha_t, sigma_t), (alpha_s, sigma_s))
    ratio = alpha_s / alpha_t
    return (target - ratio * x) / (sigma_s - ratio * sigma_t)


@pytest.mark.parametrize(
    "sched",
    [
        fs.LCM(**SD15),
        fs.LCM(original_inference_steps=1000),
        fs.TCD(**SD15),
        fs.TCD(eta=1.0),
        fs.TCD(eta=0.0, original_inference_steps=1000),
    ],
    ids=["lcm-sd1.5", "lcm-grid-1000", "tcd-eta-0.3", "tcd-eta-1", "tcd-eta-0"],
)
@pytest.mark.parametrize("steps", [1, 2, 4, 8, 25])
def test_exact_consistency_function_samples_the_marginals(sched: Any, steps: int) -> None:
    """Fed the exact consistency function (float64), every step lands on the data's marginal at its level: the mean
    and variance of the samples (propagated exactly through each affine step, as `gaussian.weak_error`) equal it to
    rounding, whatever the step count. The sampler is exact in law; its error is the model's alone."""
    rows = torch.zeros(3, gaussian.DIMS, dtype=torch.float64)
    state = sched.init(steps, sample=rows)
    levels = [sched._alpha_sigma(sigma) for sigma in sched.sigmas(state)]
    mean = levels[0][0] * gaussian.MU
    variance = gaussian.marginal_std(*levels[0]) ** 2
    noise = torch.zeros_like(rows)
    noise[2] = 1.0
    for index in range(steps):
        x = torch.stack([mean, mean + 1, mean])
        out, state = sched.step(
            state, _consistency_output(sched, state, x), x, noise=noise if sched.stochastic else None
        )
        a, c = out[1] - out[0], out[2] - out[0]
        mean, variance = out[0], a**2 * variance + c**2
        alpha, sigma = levels[index + 1]
        assert (mean - alpha * gaussian.MU).abs().max() < 1e-9, f"step {index}: mean"
        assert (variance - gaussian.marginal_std(alpha, sigma) ** 2).abs().max() < 1e-9, f"step {index}: variance"
