"""Construction-time checks of scheduler options: every error names the option and what it accepts."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def one_of(owner: str, option: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        choices = ", ".join(repr(choice) for choice in allowed)
        raise ValueError(f"{owner}: {option}={value!r} is not supported; choose one of {choices}.")


def flag(owner: str, option: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {option} must be True or False, got {value!r}.")


def integer(owner: str, option: str, value: Any, *, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {option} must be an integer >= {minimum}, got {value!r}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{owner}: {option}={value} is not supported; the largest is {maximum}.")


def real(owner: str, option: str, value: Any, *, positive: bool = False, allow_inf: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {option} must be a number, got {value!r}.")
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{owner}: {option} must be finite, got {value!r}.")
    if positive and value <= 0:
        raise ValueError(f"{owner}: {option} must be > 0, got {value!r}.")


def at_most_one(owner: str, **options: bool) -> None:
    chosen = [name for name, value in options.items() if value]
    if len(chosen) > 1:
        raise ValueError(f"{owner}: only one of {', '.join(options)} can be True, got {', '.join(chosen)}.")


def floats(owner: str, option: str, values: Sequence[float] | None) -> tuple[float, ...] | None:
    """A sequence option (trained betas) as a hashable tuple of floats."""
    if values is None:
        return None
    try:
        result = tuple(float(value) for value in values)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: {option} must be a sequence of numbers, got {values!r}.") from None
    if not result:
        raise ValueError(f"{owner}: {option} must not be empty.")
    return result
