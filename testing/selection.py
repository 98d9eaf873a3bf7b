"""Which cases a conformance test runs on, and how the default run stays small.

A test of the suite takes one of: `case` (a spec and one of its configs), `spec`, `order` (a spec and one of its
convergence orders) or `refusal` (a spec and one of its refusals). `SchedulerConformance.pytest_generate_tests`
parametrises it over the suite's specs: the first applicable entry of each spec in the default run, the others
marked `slow`, as the test's `@configs(...)` says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import pytest

from functional_sched.adapters import drop_in

from .spec import Case, Spec

Predicate = Callable[[Case], bool]


@dataclasses.dataclass(frozen=True)
class Selection:
    which: str = "first"  # "first": the first applicable config of each spec; "every": all (the rest slow)
    where: Predicate | None = None
    slow: bool = False  # every generated case is slow (a long grid, a second compile)


_DEFAULT = Selection()
_ATTRIBUTE = "_conformance_selection"


def configs(which: str = "first", *, where: Predicate | None = None, slow: bool = False) -> Callable[[Any], Any]:
    """Mark a conformance test's selection of cases (see the module docstring)."""
    if which not in ("first", "every"):
        raise ValueError(f"configs: which must be 'first' or 'every', got {which!r}")

    def mark(test: Any) -> Any:
        setattr(test, _ATTRIBUTE, Selection(which, where, slow))
        return test

    return mark


# --------------------------------------------------------------------------------------------------- predicates
def has_reference(case: Case) -> bool:
    return case.spec.reference is not None


def has_drop_in(case: Case) -> bool:
    return case.spec.reference is not None and case.spec.scheduler.diffusers_name in drop_in.DROP_INS


def is_stochastic(case: Case) -> bool:
    return case.stochastic


def keeps_history(case: Case) -> bool:
    """Multistep solvers keep a history of the sample's dtype in their state."""
    return "history" in attrs.fields_dict(case.spec.scheduler.state_type)


# --------------------------------------------------------------------------------------------------- generation
def parametrize(metafunc: Any, specs: Sequence[Spec]) -> None:
    """Parametrise one test of the suite over `specs` (called from `pytest_generate_tests`)."""
    selection: Selection = getattr(metafunc.function, _ATTRIBUTE, _DEFAULT)
    names = metafunc.fixturenames
    if "case" in names:
        entries = [
            [case for case in map(spec.case, spec.configs) if selection.where is None or selection.where(case)]
            for spec in specs
        ]
        metafunc.parametrize("case", _params(entries, selection, lambda case: case.id))
    elif "spec" in names:
        metafunc.parametrize("spec", _params([[spec] for spec in specs], selection, lambda spec: spec.name))
    elif "order" in names:
        entries = [[(spec, order) for order in spec.orders] for spec in specs]
        metafunc.parametrize("order", _params(entries, selection, lambda pair: f"{pair[0].name}-{pair[1].id}"))
    elif "refusal" in names:
        entries = [[(spec, refusal) for refusal in spec.refusals] for spec in specs]
        metafunc.parametrize("refusal", _params(entries, selection, lambda pair: f"{pair[0].name}-{pair[1].id}"))


def _params(entries: Sequence[Sequence[Any]], selection: Selection, name: Callable[[Any], str]) -> list[Any]:
    params = []
    for per_spec in entries:
        chosen = per_spec if selection.which == "every" else per_spec[:1]
        for index, entry in enumerate(chosen):
            slow = selection.slow or index > 0
            params.append(pytest.param(entry, id=name(entry), marks=(pytest.mark.slow,) if slow else ()))
    return params
