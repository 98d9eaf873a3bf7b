"""LMS beyond its conformance table (`tests/specs/lms.py`): its weights against diffusers' `get_lms_coefficient` and
the exact integrals, and `step(order=...)` changing between the calls of one run (the suite passes one order per run).
"""

from __future__ import annotations

import fractions
import warnings

import diffusers
import numpy as np
import pytest
import torch

from functional_sched.adapters import drop_in
from functional_sched.schedulers.lms import lagrange_weights
from functional_sched.testing import toy_model

SD15 = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1}
SCHEDULES = [
    SD15,
    {**SD15, "timestep_spacing": "leading"},
    {**SD15, "use_karras_sigmas": True},
    {"use_exponential_sigmas": True},
    {"use_beta_sigmas": True},
    {"timestep_spacing": "trailing"},
]


@pytest.mark.parametrize("options", SCHEDULES, ids=lambda options: "-".join(map(str, options.values()))[:40])
@pytest.mark.parametrize("steps", [5, 25, 100])
def test_weights_are_diffusers_and_the_exact_integrals(options: dict, steps: int) -> None:
    """float32 tables get diffusers' weights bit for bit (its quadrature of its float32 polynomial; beyond about 100
    steps `quad` subdivides some intervals and its weights drift from ours, and from the integrals, by up to 2e-4 at
    1000 steps); float64 ones the exact integrals, within 1e-5 of diffusers' (which integrate a float32 polynomial:
    4e-7 apart at 25 steps, 4e-6 at 100)."""
    reference = diffusers.LMSDiscreteScheduler(**options)
    reference.set_timesteps(steps)
    weights32, used = lagrange_weights(reference.sigmas, 4)
    weights64, _ = lagrange_weights(reference.sigmas.double(), 4)
    for step in range(steps):
        order = min(step + 1, 4)
        assert used[step].tolist() == [min(level + 1, order) for level in range(4)]
        expected = [reference.get_lms_coefficient(order, step, j) for j in range(order)]
        assert weights32[step, 3, :order].tolist() == expected, step
        np.testing.assert_allclose(weights64[step, 3, :order], expected, rtol=1e-5)
        assert not weights32[step, 3, order:].any()


def test_exact_integrals_are_exact() -> None:
    """The closed form against the integrals in rational arithmetic (of the same float64 sigmas)."""
    reference = diffusers.LMSDiscreteScheduler(**SD15, use_karras_sigmas=True)
    reference.set_timesteps(12)
    sigmas = reference.sigmas.double()
    weights, _ = lagrange_weights(sigmas, 4)
    nodes = [fractions.Fraction(value) for value in sigmas.tolist()]
    for step in range(3, 12):
        for j in range(4):
            others = [nodes[step - m] for m in range(4) if m != j]
            coefficients = [fractions.Fraction(1)]  # prod (s - r) / (s_j - r), highest power first
            for root in others:
                scale = nodes[step - j] - root
                shifted = [*coefficients, fractions.Fraction(0)]
                coefficients = [(a - root * b) / scale for a, b in zip(shifted, [0, *coefficients], strict=True)]
            antiderivative = [c / (len(coefficients) - k) for k, c in enumerate(coefficients)]

            def value(s: fractions.Fraction, terms: list = antiderivative) -> fractions.Fraction:
                return sum(c * s ** (len(terms) - k) for k, c in enumerate(terms))

            exact = value(nodes[step + 1]) - value(nodes[step])
            assert abs(weights[step, 3, j] - float(exact)) <= 1e-13 * max(1.0, abs(float(exact))), (step, j)


def test_drop_in_follows_order_changes_within_a_run() -> None:
    """`step(order=...)` may change from call to call: diffusers' derivative list then holds fewer derivatives than a
    higher order uses (it drops one per step beyond the order); the drop-in re-plans and steps as it does."""
    reference = diffusers.LMSDiscreteScheduler(**SD15)
    ours = drop_in.DROP_INS["LMSDiscreteScheduler"](**SD15)
    orders = [4, 4, 4, 4, 2, 2, 3, 4, 1, 1, 4, 4, 2, 4]
    for scheduler in (reference, ours):
        scheduler.set_timesteps(len(orders))
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0)) * reference.init_noise_sigma
    y = x.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffusers' warning: scale_model_input was not called
        for t, order in zip(reference.timesteps, orders, strict=True):
            x = reference.step(toy_model(x, t), t, x, order=order).prev_sample
            y = ours.step(toy_model(y, t), t, y, order=order).prev_sample
            assert torch.equal(y, x), (t, order)
            assert len(ours.derivatives) == len(reference.derivatives)
            for mine, theirs in zip(ours.derivatives, reference.derivatives, strict=True):
                assert torch.equal(mine, theirs)
