"""Accuracy beyond parity: each declared convergence order (`Spec.orders`) is measured on the closed-form Gaussian
problem (`testing.gaussian`), in float64, as the fitted slope of the final error over step counts."""

from __future__ import annotations

import math
from typing import Any

from .. import gaussian
from ..selection import configs
from ..spec import Order, Spec

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
