"""Hypothesis strategies and bad values read off the declared options (`functional_sched.machinery.options`).

A class that declares its options gets, with no test code of its own: a strategy over its configs (each option its
default, one of its declared examples, any of its choices or either flag value, at most one flag of an exclusive
group; combinations the constructor refuses are rejected), a strategy over the schedule arguments `init` takes, and
for every option the values its domain refuses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from functional_sched.machinery import options as declarations
from functional_sched.machinery.options import Choice, Domain, Flag, Integer, Integers, Numbers, Optional, Real

from .spec import Schedule, Spec


def candidates(option: declarations.Option) -> tuple[Any, ...]:
    """The values worth trying for one option: every choice, both flag values, or its default and examples."""
    if isinstance(option.domain, Choice):
        return option.domain.values
    if isinstance(option.domain, Flag):
        return (False, True)
    return (option.default, *option.examples)


def option_values(option: declarations.Option) -> st.SearchStrategy[Any]:
    """An option's value for a drawn config: its default half the time (a drawn config changes a few options, as
    real ones do, and rarely combines options the constructor refuses together), else one of its `candidates`."""
    return st.one_of(st.just(option.default), st.sampled_from(candidates(option)))


@st.composite
def config_options(draw: st.DrawFn, spec: Spec) -> dict[str, Any]:
    """Options of `spec.scheduler` drawn from their declarations, as a dict of the non-default ones (the spec's
    `held` options keep their default)."""
    declared = declarations.declared(spec.scheduler)
    values: dict[str, Any] = {}
    groups: dict[str, list[str]] = {}
    for name, option in declared.items():
        if name in spec.held:
            continue
        if option.exclusive is not None:
            groups.setdefault(option.exclusive, []).append(name)
        else:
            values[name] = draw(option_values(option))
    for names in groups.values():
        chosen = draw(st.sampled_from((None, *names)))
        values.update({name: name == chosen for name in names})
    drawn = {name: value for name, value in values.items() if value != declared[name].default}
    try:
        spec.scheduler(**drawn)
    except ValueError:  # a combination the constructor's rules refuse (their errors have tests of their own)
        assume(False)
    return drawn


@st.composite
def schedules(draw: st.DrawFn, options: Mapping[str, Any], sigmas_include_final: bool = False) -> Schedule:
    """Schedule arguments for a config: a step count, or custom sigmas and/or timesteps (distinct, descending; the
    count follows them), and `mu` where the config shifts dynamically. Where custom sigmas include the final one
    (`Spec.sigmas_include_final`), they have at least two values."""
    steps = draw(st.integers(1, 40))
    mu = draw(st.floats(0.2, 2.0)) if options.get("use_dynamic_shifting") else None
    custom = draw(st.sampled_from((None, None, "sigmas", "timesteps", "both")))
    if custom is None:
        return Schedule(steps=steps, mu=mu)
    fewest = 2 if sigmas_include_final and custom != "timesteps" else 1
    points = sorted(draw(st.lists(st.integers(10, 1000), min_size=fewest, max_size=30, unique=True)), reverse=True)
    tables: dict[str, tuple[float, ...]] = {}
    if custom in ("sigmas", "both"):
        tables["sigmas"] = tuple(point / 1000 for point in points)  # distinct by 1e-3 (UniPC nudges a 1 by 1e-6)
    if custom in ("timesteps", "both"):
        tables["timesteps"] = tuple(float(point - 1) for point in points)
    return Schedule(steps=len(points), mu=mu, custom=lambda _steps, tables=tables: tables)


@st.composite
def cases(draw: st.DrawFn, spec: Spec) -> Any:
    """A case of `spec` with drawn options (`config_options`) and schedule (`schedules`). `init` may refuse its
    schedule: the parity column then checks that the reference breaks down there."""
    options = draw(config_options(spec))
    return spec.case(options, draw(schedules(options, spec.sigmas_include_final)))


def refused_values(domain: Domain) -> Iterator[tuple[Any, type[Exception], str]]:
    """Values `domain` refuses: (value, the exception, a regular expression of the message after the option's name)."""
    if isinstance(domain, Choice):
        yield "no-such-choice", ValueError, r"='no-such-choice' is not supported; choose one of"
    elif isinstance(domain, Flag):
        yield "yes", TypeError, " must be True or False"
        yield 1, TypeError, " must be True or False"
    elif isinstance(domain, Integer):
        yield domain.minimum - 1, ValueError, rf" must be an integer >= {domain.minimum}"
        yield 2.5, ValueError, " must be an integer"
        yield True, ValueError, " must be an integer"
        if domain.maximum is not None:
            yield domain.maximum + 1, ValueError, rf"={domain.maximum + 1} is not supported; the largest is"
    elif isinstance(domain, Real):
        yield "1.0", TypeError, " must be a number"
        yield math.nan, ValueError, " must be finite"
        if not domain.allow_inf:
            yield math.inf, ValueError, " must be finite"
        outside = {">": lambda bound: bound, ">=": lambda bound: bound - 1, "<=": lambda bound: bound + 1}
        for relation, bound in domain.bounds():
            yield outside.get(relation, lambda bound: bound)(bound), ValueError, f" must be {relation} "
    elif isinstance(domain, Optional):
        yield from refused_values(domain.inner)
    elif isinstance(domain, Numbers):
        yield 0.5, TypeError, " must be a 1-D sequence of numbers"
        yield ("a", "b"), TypeError, " must be a sequence of numbers"
        yield (), ValueError, " must not be empty"
        yield [[0.5]], TypeError, " must be a sequence of numbers"
        yield (0.5, math.nan), ValueError, " must hold finite numbers in"
        for bound in (domain.above, domain.below):
            if math.isfinite(bound):
                yield (0.5, bound), ValueError, " must hold finite numbers in"
    elif isinstance(domain, Integers):
        yield 3, TypeError, " must be a sequence of integers"
        yield (1.5,), TypeError, " must be a sequence of integers"
        yield (domain.minimum - 1,), ValueError, rf" must hold integers >= {domain.minimum}"
    else:
        raise TypeError(f"strategies.refused_values: no bad values known for a {type(domain).__name__} domain")
