"""Which cases a conformance test runs on, and how the default run stays small.

A test of the suite takes one of: `case` (a spec and one of its configs), `spec`, `order` (a spec and one of its
convergence orders) or `refusal` (a spec and one of its refusals). `SchedulerConformance.pytest_generate_tests`
parametrises it over the suite's specs: the first applicable entry of each spec in the default run (and, with
"representative", its first stochastic config too), the others marked `slow`, as the test's `@configs(...)` says.

A costly column (a whole loop compiled, exported or rerun in a fresh interpreter) says `per_base=True`: the default run
takes it on one class per machinery base (`machinery_base`: the first of the suite's specs on that base that the test
applies to), the slow run on every other class, so `-m slow` still proves every column for every class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from typing import Any

import attrs
import pytest

import functional_sched as fs
from functional_sched.adapters import drop_in

from .spec import Case, Spec

Predicate = Callable[[Case], bool]


@dataclasses.dataclass(frozen=True)
class Selection:
    # "first": the first applicable config of each spec; "every": all (the rest slow); "representative": all, the
    # first and the first stochastic one in the default run (a property that randomness could break)
    which: str = "first"
    where: Predicate | None = None
    slow: bool = False  # every generated case is slow (a long grid, a second compile)
    per_base: bool = False  # the default run takes one class per machinery base, the others only the slow run


_DEFAULT = Selection()
_ATTRIBUTE = "_conformance_selection"


def configs(
    which: str = "first", *, where: Predicate | None = None, slow: bool = False, per_base: bool = False
) -> Callable[[Any], Any]:
    """Mark a conformance test's selection of cases (see the module docstring)."""
    if which not in ("first", "every", "representative"):
        raise ValueError(f"configs: which must be 'first', 'every' or 'representative', got {which!r}")

    def mark(test: Any) -> Any:
        setattr(test, _ATTRIBUTE, Selection(which, where, slow, per_base))
        return test

    return mark


# --------------------------------------------------------------------------------------------------- predicates
def has_reference(case: Case) -> bool:
    return case.spec.reference is not None


def has_parity_reference(case: Case) -> bool:
    """A reference to hold every step to: a scheduler object (`Spec.reference`) or a whole loop (`reference_loop`)."""
    return case.spec.reference is not None or case.spec.reference_loop is not None


#: The reference libraries whose objects an adapter maps to ours (`from_diffusers`, `from_sglang`).
MAPPED_LIBRARIES = ("diffusers", "sglang")


def is_registered(case: Case) -> bool:
    """Listed in `functional_sched.SCHEDULERS` with a reference that `from_diffusers` or `from_sglang` maps to it (a
    third party's class is not, nor is one held to a reference no adapter maps, as Flow-GRPO's or k-diffusion's: their
    suites have no config-mapping or drop-in columns)."""
    scheduler = case.spec.scheduler
    return (
        scheduler in fs.SCHEDULERS
        and case.spec.reference is not None
        and scheduler.reference_library in MAPPED_LIBRARIES
    )


def has_drop_in(case: Case) -> bool:
    named = drop_in.drop_in_class(case.spec.scheduler) is not None
    return is_registered(case) and case.spec.drop_in_columns and named


def has_step_options(case: Case) -> bool:
    """Whether an option changes what `step` does (FlowMatchHeun has none: every state suits every config)."""
    return bool(case.scheduler()._step_options())


def drop_in_noises(case: Case) -> bool:
    """A drop-in whose reference noises samples (`add_noise` or `scale_noise`; IPNDM's and DDIM inversion's do not)."""
    if not has_drop_in(case):
        return False
    reference = case.reference()
    return hasattr(reference, "add_noise") or hasattr(reference, "scale_noise")


def is_stochastic(case: Case) -> bool:
    return case.stochastic


def keeps_history(case: Case) -> bool:
    """Multistep solvers keep a history of the sample's dtype in their state."""
    return "history" in attrs.fields_dict(case.spec.scheduler.state_type)


def keeps_outputs_as_given(case: Case) -> bool:
    """A multistep solver whose conversion of the model output is the identity (DPM-Solver++ with
    `prediction_type="sample"`, noise-prediction solvers with `"epsilon"`): its history must copy the output."""
    converts_by_identity = getattr(case.scheduler(), "_converts_by_identity", None)
    return converts_by_identity is not None and converts_by_identity()


# ------------------------------------------------------------------------------------------------ machinery bases
#: Where the machinery's bases live: a class's machinery base is its nearest ancestor defined under this package.
BASES_PACKAGE = "functional_sched.schedulers"


def machinery_base(scheduler: type, listed: Collection[type] = ()) -> type:
    """The base whose machinery (state record, step, plan) `scheduler` runs on: its nearest ancestor defined in
    `functional_sched.schedulers` that is not itself a listed class (of `fs.SCHEDULERS` or `listed`), as
    `FlowMatchScheduler` for FlowMatchEulerDiscrete and SglangFlowMatchEulerDiscrete, `TwoCallScheduler` for Heun,
    `KDiffusionScheduler` for k-diffusion's samplers. A class with no such base (a direct subclass of the machinery's
    `Scheduler`, or a third party's class) runs on its own, or on that of the listed class it extends (SglangPiflow:
    Piflow)."""
    concrete = {*fs.SCHEDULERS, *listed}
    for base in scheduler.__mro__[1:]:
        if base.__module__.startswith(BASES_PACKAGE + ".") and base not in concrete:
            return base
    return [cls for cls in scheduler.__mro__ if cls is scheduler or cls in concrete][-1]


def representatives(specs: Sequence[Spec]) -> set[str]:
    """The names of the specs that run a `per_base` column in the default run: the first of `specs` on each
    machinery base (the registry's order puts a base's most used class first)."""
    listed = [spec.scheduler for spec in specs]
    seen: set[type] = set()
    names = set()
    for spec in specs:
        base = machinery_base(spec.scheduler, listed)
        if base not in seen:
            seen.add(base)
            names.add(spec.name)
    return names


# --------------------------------------------------------------------------------------------------- generation
def parametrize(metafunc: Any, specs: Sequence[Spec]) -> None:
    """Parametrise one test of the suite over `specs` (called from `pytest_generate_tests`)."""
    selection: Selection = getattr(metafunc.function, _ATTRIBUTE, _DEFAULT)
    names = metafunc.fixturenames
    if "case" in names:
        cases = [[case for case in map(spec.case, spec.configs) if _applies(selection, case)] for spec in specs]
        applicable = [spec for spec, entries in zip(specs, cases, strict=True) if entries]
        fast = _fast_specs(selection, applicable)
        metafunc.parametrize("case", _params(cases, selection, lambda case: case.id, fast))
        return
    # A test of a whole spec (or of its orders or refusals) applies where the spec's first config does.
    specs = [spec for spec in specs if _applies(selection, spec.case(spec.configs[0]))]
    fast = _fast_specs(selection, specs)
    if "spec" in names:
        metafunc.parametrize("spec", _params([[spec] for spec in specs], selection, lambda spec: spec.name, fast))
    elif "order" in names:
        entries = [[(spec, order) for order in spec.orders] for spec in specs]
        metafunc.parametrize("order", _params(entries, selection, lambda pair: f"{pair[0].name}-{pair[1].id}", fast))
    elif "refusal" in names:
        entries = [[(spec, refusal) for refusal in spec.refusals] for spec in specs]
        params = _params(entries, selection, lambda pair: f"{pair[0].name}-{pair[1].id}", fast)
        metafunc.parametrize("refusal", params)


def _applies(selection: Selection, case: Case) -> bool:
    return selection.where is None or selection.where(case)


def _fast_specs(selection: Selection, applicable: Sequence[Spec]) -> set[str] | None:
    """The names of the specs whose entries may run in the default run (None: every spec's), among the specs the test
    applies to: with `per_base`, one per machinery base, so a base whose first class the test skips still has one."""
    return representatives(applicable) if selection.per_base else None


#: Marks the one placeholder of a test that applies to none of the suite's specs (no stochastic config, no drop-in):
#: the kit's pytest plugin deselects it, so it is neither run nor reported as a skip.
NOT_APPLICABLE = "conformance_not_applicable"


def _params(
    entries: Sequence[Sequence[Any]], selection: Selection, name: Callable[[Any], str], fast_specs: set[str] | None
) -> list[Any]:
    if not any(entries):
        return [pytest.param(None, id="not-applicable", marks=getattr(pytest.mark, NOT_APPLICABLE))]
    params = []
    for per_spec in entries:
        chosen = per_spec[:1] if selection.which == "first" else per_spec
        fast = chosen[:1]
        if selection.which == "representative":
            fast += [entry for entry in chosen if isinstance(entry, Case) and entry.stochastic][:1]
        if fast_specs is not None and chosen and _spec_of(chosen[0]).name not in fast_specs:
            fast = []  # a per_base column on a class its base's representative stands for: the slow run only
        for entry in chosen:
            slow = selection.slow or not any(entry is kept for kept in fast)
            params.append(pytest.param(entry, id=name(entry), marks=(pytest.mark.slow,) if slow else ()))
    return params


def _spec_of(entry: Any) -> Spec:
    """The spec of one entry of `_params`: a case's, a spec, or the spec of a (spec, order or refusal) pair."""
    if isinstance(entry, Case):
        return entry.spec
    return entry if isinstance(entry, Spec) else entry[0]
