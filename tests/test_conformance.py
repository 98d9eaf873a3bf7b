"""The conformance suite (`functional_sched.testing`) over every class in `functional_sched.SCHEDULERS`.

One class: `pytest tests/test_conformance.py -k DPMSolverMultistep`; its full grids: add `-m slow`.
"""

from __future__ import annotations

from specs import SPECS

import functional_sched as fs
from functional_sched.testing import SchedulerConformance


def registry_specs() -> tuple:
    """The spec of each listed class, in the registry's order; a listed class without one fails collection."""
    missing = [cls.__name__ for cls in fs.SCHEDULERS if cls not in SPECS]
    if missing:
        raise LookupError(f"no conformance spec for {', '.join(missing)}: add one to tests/specs/")
    return tuple(SPECS[cls] for cls in fs.SCHEDULERS)


class TestConformance(SchedulerConformance):
    specs = registry_specs()


def test_every_spec_is_of_a_listed_class() -> None:
    assert set(SPECS) == set(fs.SCHEDULERS)
