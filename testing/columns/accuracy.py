"""Accuracy beyond parity: each declared convergence order (`Spec.orders`) is measured on the closed-form Gaussian
problem (`testing.gaussian`), in float64, as the fitted slope of the final error over step counts; and each step's
x0 estimate (`step(..., denoised=True)`) is the exact model's x0 on that problem."""

from __future__ import annotations

import math
from typing import Any

import torch

from functional_sched.math import predictions

from .. import gaussian
from ..parity import calls
from ..requests import same_state
from ..selection import configs
from ..spec import Case, Order, Spec

#: How far a fitted slope may lie from the declared order.
BAND = 0.3


class Accuracy:
    """Convergence orders on a problem with a closed-form solution."""

    @configs("every")
    def test_convergence_order(self, order: tuple[Spec, Order]) -> None:
        spec, entry = order
        scheduler = spec.scheduler(**entry.options)
        errors = [gaussian.final_error(scheduler, steps) for steps in entry.counts]
        assert all(math.isfinite(error) and error > 0 for error in errors), errors
        slope = gaussian.fitted_order(entry.counts, errors)
        message: Any = f"{entry.id}: slope {slope:.2f}, errors {errors}"
        if entry.at_least:
            assert slope >= entry.order - BAND, message
        else:
            assert abs(slope - entry.order) <= BAND, message
            assert errors == sorted(errors, reverse=True), message  # more steps, smaller error, every time

    @configs("every", where=lambda case: case.spec.x0_is_models(case.options))
    def test_denoised_is_the_models_x0(self, case: Case) -> None:
        """Fed the exact denoiser of the Gaussian problem in whatever parametrisation the config predicts, every
        step's x0 estimate is that denoiser's x0 (the posterior mean at the sample the model saw; thresholded where
        configured), to float64 rounding; asking for it changes neither the sample nor the state."""
        sched = case.scheduler()
        state = sched.init(sample=gaussian.NOISE, **case.init_kwargs())
        first = sched.sigmas(state)[0] if sched.timestep_table else sched._model_sigma(state)[0]
        x = gaussian.start_sample(*sched._alpha_sigma(first))
        noise = torch.zeros_like(x) if sched.stochastic else None
        for index in range(calls(sched, state)):
            if sched._model_sigma(state)[0] == 0:  # the exact model's epsilon is undefined at sigma = 0
                break
            output = gaussian.exact_output(sched, state, x)
            alpha, sigma = sched._alpha_sigma(sched._model_sigma(state)[:, None].to(x.dtype))
            expected = gaussian.model_output("sample", x, alpha, sigma)
            if getattr(sched, "thresholding", False):
                expected = predictions.threshold(expected, sched.dynamic_thresholding_ratio, sched.sample_max_value)
            elif getattr(sched, "_clips", False):  # DDIM's, DDPM's, Heun's (not CogVideoX's)
                expected = expected.clamp(-sched.clip_sample_range, sched.clip_sample_range)
            plain = sched.step(state, output, x, noise=noise)
            x_next, state, x0 = sched.step(state, output, x, noise=noise, denoised=True)
            assert torch.equal(x_next, plain[0]) and same_state(state, plain[1])
            assert x0.dtype == x.dtype and x0.shape == x.shape
            error = (x0 - expected).abs().max().item() / expected.abs().max().item()
            assert error < 1e-9, f"step {index}: x0 estimate off by {error:.2e} (relative)"
            x = x_next
