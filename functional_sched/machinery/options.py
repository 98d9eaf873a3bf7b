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
import operator
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from .checks import as_integer, as_real, shown

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
        integer = as_integer(value)  # numpy integers and 0-d integer tensors too, as diffusers takes them
        if integer is None or integer < self.minimum:
            raise ValueError(f"{owner}: {name} must be an integer >= {self.minimum}, got {shown(value)}.")
        if self.maximum is not None and integer > self.maximum:
            raise ValueError(f"{owner}: {name}={integer} is not supported; the largest is {self.maximum}.")
        return integer


@attrs.frozen
class Real(Domain):
    """A finite number (infinities too with `allow_inf`, within the bounds), with optional bounds: > `above`,
    >= `at_least`, <= `at_most`, < `below`. Stored as a Python float (an int, a numpy scalar or a 0-d tensor
    converts)."""

    above: float | None = None
    at_least: float | None = None
    at_most: float | None = None
    below: float | None = None
    allow_inf: bool = False

    def check(self, owner: str, name: str, value: Any) -> Any:
        number = as_real(value)
        if number is None:
            raise TypeError(f"{owner}: {name} must be a number, got {shown(value)}.")
        if math.isnan(number) or (math.isinf(number) and not self.allow_inf):
            raise ValueError(f"{owner}: {name} must be finite, got {number!r}.")
        for relation, bound in self.bounds():
            if not _RELATIONS[relation](number, bound):
                raise ValueError(f"{owner}: {name} must be {relation} {bound:g}, got {number!r}.")
        return number

    def bounds(self) -> list[tuple[str, float]]:
        """The bounds that are set, as (relation, bound)."""
        pairs = (">", self.above), (">=", self.at_least), ("<=", self.at_most), ("<", self.below)
        return [(relation, bound) for relation, bound in pairs if bound is not None]


_RELATIONS = MappingProxyType({">": operator.gt, ">=": operator.ge, "<=": operator.le, "<": operator.lt})


@attrs.frozen
class Optional(Domain):
    """None, or a value of `inner` (None means diffusers' "not set")."""

    inner: Domain

    def check(self, owner: str, name: str, value: Any) -> Any:
        return None if value is None else self.inner.check(owner, name, value)


@attrs.frozen
class Numbers(Domain):
    """A non-empty sequence of numbers, each in the open interval (`above`, `below`) (finite in any case), stored as
    a hashable tuple of floats (lists, arrays and 1-D tensors convert)."""

    above: float = -math.inf
    below: float = math.inf

    def check(self, owner: str, name: str, value: Any) -> Any:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or getattr(value, "ndim", 1) != 1:
            raise TypeError(f"{owner}: {name} must be a 1-D sequence of numbers, got {shown(value)}.")
        numbers_ = [as_real(item) for item in value]
        if any(number is None for number in numbers_):
            raise TypeError(f"{owner}: {name} must be a sequence of numbers, got {shown(value)}.")
        if not numbers_:
            raise ValueError(f"{owner}: {name} must not be empty.")
        outside = [number for number in numbers_ if not self.above < number < self.below]  # NaN is outside too
        if outside:
            raise ValueError(
                f"{owner}: {name} must hold finite numbers in ({self.above:g}, {self.below:g}), got {outside[:3]}."
            )
        return tuple(numbers_)


@attrs.frozen
class Integers(Domain):
    """A sequence of ints >= `minimum` (possibly empty), stored as a tuple."""

    minimum: int = 0

    def check(self, owner: str, name: str, value: Any) -> Any:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError(f"{owner}: {name} must be a sequence of integers, got {shown(value)}.")
        result = tuple(as_integer(item) for item in value)
        if any(item is None for item in result):
            raise TypeError(f"{owner}: {name} must be a sequence of integers, got {shown(value)}.")
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
    `registered`: no parameter of diffusers' constructor, but a config key diffusers reads where a pipeline registers
    it (`scheduler.register_to_config(sigma_min=...)`, Cosmos 2); None means not registered.
    `set_by`: no config key at all: diffusers sets it by calling this method of a built scheduler with the value
    (FlowMatchEuler's `set_shift`, which sglang's loader calls on every pipeline); None (the option's value) means
    never called.
    """

    default: Any
    domain: Domain
    examples: tuple[Any, ...] = ()
    step_argument: bool = False
    exclusive: str | None = None
    registered: bool = False
    set_by: str | None = None

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
