"""Euler ancestral beyond its conformance table (`tests/specs/euler.py`): its weak order on the Gaussian problem.

Euler a is stochastic at every step, so the suite's `Order` (a float64 loop's final error against the
probability-flow ODE) does not apply: with the noise set to zero it is not an ODE solver at all (the step to
sigma_down drops the variance the noise would restore, and the error against the ODE stays O(1)). What it approximates
is the law of the reverse SDE. On the Gaussian problem each step is affine in the sample and the noise, per dimension
x' = a x + b + c z, so the law of the samples stays Gaussian and its mean and variance follow exactly
(m' = a m + b, v' = a^2 v + c^2): read a, b and c off the scheduler's own steps, propagate the moments, and compare them
with the data's marginal at the last sigma before the final step (N(mu, s^2 + sigma^2)). The error of the moments
(the weak error) falls like N^-1 (Euler-Maruyama's weak order 1).
"""

from __future__ import annotations

import pytest
import torch

import functional_sched as fs
from functional_sched.testing import gaussian

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
STEPS = (20, 40, 80, 160)


def weak_error(scheduler: fs.EulerAncestralDiscrete, steps: int) -> float:
    """Max error of the mean and variance of the samples before the last step, propagated exactly (see above)."""
    rows = torch.zeros(3, gaussian.DIMS, dtype=torch.float64)
    state = scheduler.init(steps, sample=rows)
    sigmas = scheduler.sigmas(state)
    mean, variance = gaussian.MU.clone(), gaussian.SPREAD**2 + sigmas[0] ** 2
    noise = torch.zeros_like(rows)
    noise[2] = 1.0  # row 0: the mean's step; row 1 the mean + 1 (a); row 2 the mean with unit noise (c)
    for _ in range(steps - 1):
        x = torch.stack([mean, mean + 1, mean])
        out, state = scheduler.step(state, gaussian.exact_output(scheduler, state, x), x, noise=noise)
        a, c = out[1] - out[0], out[2] - out[0]
        mean, variance = out[0], a**2 * variance + c**2
    target = gaussian.SPREAD**2 + sigmas[steps - 1] ** 2
    return max((variance - target).abs().max().item(), (mean - gaussian.MU).abs().max().item())


@pytest.mark.parametrize(
    "options",
    [{}, SCALED_LINEAR, {**SCALED_LINEAR, "prediction_type": "v_prediction"}, {"timestep_spacing": "trailing"}],
    ids=["linear", "scaled-linear", "scaled-linear-v", "trailing"],
)
def test_euler_ancestral_has_weak_order_one(options: dict) -> None:
    errors = [weak_error(fs.EulerAncestralDiscrete(**options), steps) for steps in STEPS]
    slope = gaussian.fitted_order(STEPS, errors)
    # Measured: 0.87 to 0.90 over 20-160 steps (0.94 between the last two), every error smaller than the one before.
    assert abs(slope - 1) <= 0.2 and errors == sorted(errors, reverse=True), (slope, errors)
