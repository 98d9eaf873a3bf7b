"""The ancestral and DDPM-type samplers' weak order on the Gaussian problem (`testing.gaussian.weak_error`).

These samplers are stochastic at every step, so the suite's `Order` (a float64 loop's final error against the
probability-flow ODE) does not apply: with the noise set to zero Euler a is not an ODE solver at all (the step to
sigma_down drops the variance the noise would restore, and the error against the ODE stays O(1)). What they
approximate is the law of the reverse SDE. On the Gaussian problem each step is affine in the sample and the noise,
so the law of the samples stays Gaussian and its mean and variance follow exactly; their error (the weak error) falls
like N^-1 (Euler-Maruyama's weak order 1).
"""

from __future__ import annotations

import pytest

import functional_sched as fs
from functional_sched.testing import gaussian

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
STEPS = (20, 40, 80, 160)

# Measured slopes over 20-160 steps: 0.87-0.90 for Euler a, DDPM and DDIM with eta = 1, 1.00 for DDPM's fixed_large.
WEAK_ORDER_ONE = {
    "euler-a-linear": fs.EulerAncestralDiscrete(),
    "euler-a-scaled-linear": fs.EulerAncestralDiscrete(**SCALED_LINEAR),
    "euler-a-scaled-linear-v": fs.EulerAncestralDiscrete(**SCALED_LINEAR, prediction_type="v_prediction"),
    "euler-a-trailing": fs.EulerAncestralDiscrete(timestep_spacing="trailing"),
    # clip_sample off: clipping x0 to [-1, 1] is no affine map (the data's means reach +-1.5)
    "ddpm": fs.DDPM(clip_sample=False),
    "ddpm-scaled-linear": fs.DDPM(**SCALED_LINEAR, clip_sample=False),
    "ddpm-fixed-large": fs.DDPM(variance_type="fixed_large", clip_sample=False),
    "ddim-eta-1": fs.DDIM(eta=1.0, clip_sample=False),
}


@pytest.mark.parametrize("name", list(WEAK_ORDER_ONE))
def test_weak_order_one(name: str) -> None:
    errors = [gaussian.weak_error(WEAK_ORDER_ONE[name], steps) for steps in STEPS]
    slope = gaussian.fitted_order(STEPS, errors)
    assert abs(slope - 1) <= 0.2 and errors == sorted(errors, reverse=True), (slope, errors)
