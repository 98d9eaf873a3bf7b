"""The conformance suite (`functional_sched.testing`) over every class in `functional_sched.SCHEDULERS`.

One class: `pytest tests/test_conformance.py -k DPMSolverMultistep`; its full grids: add `-m slow`.
"""

from __future__ import annotations

import re
from pathlib import Path

import diffusers
from specs import SPECS

import functional_sched as fs
from functional_sched.schedulers.flow_match import FlowMatchScheduler
from functional_sched.schedulers.heun import TwoCallScheduler
from functional_sched.schedulers.k_samplers import KDiffusionScheduler
from functional_sched.testing import SchedulerConformance
from functional_sched.testing.selection import machinery_base, representatives

README = Path(__file__).resolve().parents[1] / "README.md"


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


def test_costly_columns_take_one_class_per_machinery_base_by_default() -> None:
    """The default run's compiled, exported and fresh-process columns (`per_base`) take the first listed class of each
    machinery base: bases from the class hierarchy, so a newly listed class joins its base's group unnamed here."""
    specs = registry_specs()
    chosen = representatives(specs)
    bases = {machinery_base(spec.scheduler) for spec in specs}
    assert len(chosen) == len(bases) < len(specs)
    assert {machinery_base(spec.scheduler) for spec in specs if spec.name in chosen} == bases
    assert machinery_base(fs.HeunDiscrete) is machinery_base(fs.FlowMatchHeunDiscrete) is TwoCallScheduler
    assert machinery_base(fs.SglangFlowMatchEulerDiscrete) is FlowMatchScheduler
    assert machinery_base(fs.DPMSolverPlusPlus2SAncestral) is KDiffusionScheduler
    assert machinery_base(fs.SglangPiflow) is fs.Piflow  # a direct subclass of `Scheduler` runs on its own
    assert {"FlowMatchEulerDiscrete", "DPMSolverMultistep", "HeunDiscrete"} <= chosen


def test_readme_coverage_table_is_true() -> None:
    """The README's coverage table lists every scheduler class of diffusers (the ones its optional dependencies gate
    included), and says "supported" for exactly the classes in `functional_sched.SCHEDULERS`."""
    rows = re.findall(r"^\| `(\w+Scheduler)` \| ([^|]+) \|$", README.read_text(), flags=re.MULTILINE)
    table = {name: status.strip() for name, status in rows}
    assert len(table) == len(rows), "a class is listed twice"
    ours = {name for name in dir(diffusers) if name.endswith("Scheduler")}
    ours |= {
        name
        for names in diffusers.schedulers._import_structure.values()
        for name in names
        if name.endswith("Scheduler")
    }
    assert set(table) == ours, f"missing {sorted(ours - set(table))}, unknown {sorted(set(table) - ours)}"
    supported = {name for name, status in table.items() if status == "supported"}
    assert supported == {cls.diffusers_name for cls in fs.SCHEDULERS if cls.reference_library == "diffusers"}
