"""Declared config options: each scheduler field states its domain once, next to the field.

    @options.config
    class UniPCMultistep(MultistepScheduler):
        solver_type: str = Option("bh2", Choice("bh1", "bh2"))
        flow_shift: float = common.FLOW_SHIFT  # a declaration several families share

`config` turns the declarations into the fields of a frozen attrs class, with diffusers' names and defaults. One
`Option` serves everything that needs to know an option: validation at construction (`validate`, with errors that
name the option and what it accepts), the conformance suite's hypothesis strategies (`functional_sched.testing`
draws from the domain and the `examples`), and the diffusers mapping (`functional_sched.adapters`: which keys are
config, which are `step()` arguments that the drop-in turns into config).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs

ClassT = TypeVar("ClassT", bound=type)
_METADATA = "functional_sched.option"


class Domain:
    """The values an option accepts. `check` returns the value as the config stores it, or raises naming it."""

    def check(self, owner: str, name: str, value: Any) -> Any:
        raise NotImplementedError


@attrs.frozen(init=False)
class Choice(Domain):
    """One of a few values (strings, or None)."""

    values: tuple[Any, ...]

    def __init__(self, *values: Any) -> None:
        self.__attrs_init__(values)

    def check(self, owner: str, name: str, value: Any) -> Any:
        # `value in values` would take True for 1 and 1.0 for 1: compare types too.
        if not any(type(value) is type(allowed) and value == allowed for allowed in self.values):
            choices = ", ".join(repr(choice) for choice in self.values)
            raise ValueError(f"{owner}: {name}={value!r} is not supported; choose one of {choices}.")
        return value


@attrs.frozen
class Flag(Domain):
    """True or False (not 0, 1 or "yes")."""

    def check(self, owner: str, name: str, value: Any) -> Any:
        if not isinstance(value, bool):
            raise TypeError(f"{owner}: {name} must be True or False, got {value!r}.")
        return value


@attrs.frozen
class Integer(Domain):
    """An integer in [minimum, maximum], stored as a Python int (bools refused)."""

    minimum: int
    maximum: int | None = None

    def check(self, owner: str, name: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < self.minimum:
            raise ValueError(f"{owner}: {name} must be an integer >= {self.minimum}, got {value!r}.")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{owner}: {name}={value} is not supported; the largest is {self.maximum}.")
        return int(value)


@attrs.frozen
class Real(Domain):
    """A finite number (infinities too with `allow_inf`), with optional bounds: > `above`, <= `at_most`, < `below`.

    Stored as a Python float (an int or a numpy scalar converts)."""

    above: float | None = None
    at_most: float | None = None
    below: float | None = None
    allow_inf: bool = False

    def check(self, owner: str, name: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{owner}: {name} must be a number, got {value!r}.")
        value = float(value)
        if math.isnan(value) or (math.isinf(value) and not self.allow_inf):
            raise ValueError(f"{owner}: {name} must be finite, got {value!r}.")
        for bound, holds, relation in (
            (self.above, lambda b: value > b, ">"),
            (self.at_most, lambda b: value <= b, "<="),
            (self.below, lambda b: value < b, "<"),
        ):
            if bound is not None and not holds(bound):
                raise ValueError(f"{owner}: {name} must be {relation} {bound:g}, got {value!r}.")
        return value


@attrs.frozen
class Optional(Domain):
    """None, or a value of `inner` (None means diffusers' "not set")."""

    inner: Domain

    def check(self, owner: str, name: str, value: Any) -> Any:
        return None if value is None else self.inner.check(owner, name, value)


@attrs.frozen
class Numbers(Domain):
    """A non-empty sequence of numbers, stored as a hashable tuple of floats (lists and arrays convert)."""

    def check(self, owner: str, name: str, value: Any) -> Any:
        try:
            result = tuple(float(item) for item in value)
        except (TypeError, ValueError):
            raise TypeError(f"{owner}: {name} must be a sequence of numbers, got {value!r}.") from None
        if not result:
            raise ValueError(f"{owner}: {name} must not be empty.")
        return result


@attrs.frozen
class Integers(Domain):
    """A sequence of ints >= `minimum` (possibly empty), stored as a tuple."""

    minimum: int = 0

    def check(self, owner: str, name: str, value: Any) -> Any:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError(f"{owner}: {name} must be a sequence of integers, got {value!r}.")
        items = tuple(value)
        if any(isinstance(item, bool) or not isinstance(item, numbers.Integral) for item in items):
            raise TypeError(f"{owner}: {name} must be a sequence of integers, got {value!r}.")
        result = tuple(int(item) for item in items)
        if any(item < self.minimum for item in result):
            raise ValueError(f"{owner}: {name} must hold integers >= {self.minimum}, got {value!r}.")
        return result


@attrs.frozen
class Option:
    """One config option: diffusers' default, its domain, and what else code that reads options needs to know.

    `examples`: values besides the default that tests should draw (realistic ones, e.g. a real model's shift).
    `step_argument`: diffusers takes it as an argument of `step()`, not as config; here it is config (so `step`
    stays branch-free), and the drop-in re-plans when a caller passes another value.
    `exclusive`: a group name; at most one flag of a group may be True (e.g. the sigma spacings).
    """

    default: Any
    domain: Domain
    examples: tuple[Any, ...] = ()
    step_argument: bool = False
    exclusive: str | None = None

    def but(self, **changes: Any) -> Option:
        """This declaration with some attributes changed (a family's own default for a shared option)."""
        return attrs.evolve(self, **changes)


def config(cls: ClassT) -> ClassT:
    """Make `cls` a frozen attrs class whose `Option`-valued attributes become its fields, in declaration order.

    Construction then calls `validate` (through `Scheduler.__attrs_post_init__`)."""
    for name in inspect.get_annotations(cls):
        declared = cls.__dict__.get(name)
        if isinstance(declared, Option):
            setattr(cls, name, attrs.field(default=declared.default, metadata={_METADATA: declared}))
    return attrs.frozen(cls)


def declared(cls: type) -> Mapping[str, Option]:
    """The options of a `config` class, by name, in declaration order."""
    return {field.name: field.metadata[_METADATA] for field in attrs.fields(cls) if _METADATA in field.metadata}


def validate(instance: Any) -> None:
    """Check every declared option of `instance` and store it as its domain converts it; then the exclusive groups."""
    owner = type(instance).__name__
    groups: dict[str, list[str]] = {}
    for name, option in declared(type(instance)).items():
        value = option.domain.check(owner, name, getattr(instance, name))
        object.__setattr__(instance, name, value)  # frozen: the converted value (a tuple, a float) is what is kept
        if option.exclusive is not None:
            groups.setdefault(option.exclusive, []).append(name)
    for names in groups.values():
        chosen = [name for name in names if getattr(instance, name)]
        if len(chosen) > 1:
            raise ValueError(f"{owner}: only one of {', '.join(names)} can be True, got {', '.join(chosen)}.")
