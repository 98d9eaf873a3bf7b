"""The beta distribution's quantile function, without scipy.

diffusers draws "beta sigmas" from `scipy.stats.beta.ppf(q, 0.6, 0.6)`; the core depends on torch alone, so the
regularised incomplete beta function is evaluated with Lentz's continued fraction and inverted by bisection
followed by Newton steps, in float64 host arithmetic, to well below float32 resolution.
"""

from __future__ import annotations

import math

_TINY = 1e-300


def _continued_fraction(x: float, a: float, b: float) -> float:
    """Continued fraction for I_x(a, b) (Numerical Recipes, `betacf`), modified Lentz's method."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    result = d
    for m in range(1, 1000):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            delta = c * d
            result *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return result


def _log_front(x: float, a: float, b: float) -> float:
    return math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the beta distribution's CDF."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(_log_front(x, a, b))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _continued_fraction(x, a, b) / a
    return 1.0 - front * _continued_fraction(1.0 - x, b, a) / b


def beta_quantile(q: float, a: float, b: float) -> float:
    """The x with I_x(a, b) = q (scipy.stats.beta.ppf)."""
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(40):  # bisection to ~1e-12, then Newton converges quadratically
        middle = 0.5 * (low + high)
        if regularized_incomplete_beta(middle, a, b) < q:
            low = middle
        else:
            high = middle
    x = 0.5 * (low + high)
    for _ in range(8):  # the bracket is only ~1e-12 wide, so Newton may step just outside it: allow (0, 1)
        density = math.exp(_log_front(x, a, b) - math.log(x) - math.log1p(-x))
        step = (regularized_incomplete_beta(x, a, b) - q) / density
        candidate = x - step
        if not 0.0 < candidate < 1.0:
            break
        x = candidate
        if abs(step) <= 1e-17 * x:
            break
    return x
