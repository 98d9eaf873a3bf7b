"""sglang's own schedulers: the loader (`functional_sched.adapters.sglang`) and `from_sglang`'s refusals.

Their parity is the conformance suite's (`tests/specs/`, reference sglang's class); these need sglang's wheel
installed alone (`pip install --no-deps sglang==0.5.23`, as `.ci/run` does).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import diffusers
import pytest

from functional_sched.adapters import from_diffusers, from_sglang
from functional_sched.adapters import sglang as sglang_adapter

pytestmark = pytest.mark.skipif(
    not sglang_adapter.available(), reason="sglang's wheel is not installed: pip install --no-deps sglang==0.5.23"
)


def _sglang_modules() -> set[str]:
    return {name for name in sys.modules if name == "sglang" or name.startswith("sglang.")}


@pytest.mark.parametrize("name", sorted([*sglang_adapter.MODULES, *sglang_adapter.PIPELINE_CLASSES]))
def test_each_class_loads_without_sglangs_package(name: str) -> None:
    before = _sglang_modules()
    loaded = sglang_adapter.sglang_class(name)
    assert loaded.__name__ == name
    if name in sglang_adapter.PIPELINE_CLASSES:  # its class statement alone, over sglang's own base class
        module, base = sglang_adapter.PIPELINE_CLASSES[name]
        assert loaded.__module__ == module and loaded.__bases__ == (sglang_adapter.sglang_class(base),)
    else:
        assert loaded.__module__ == f"{sglang_adapter._SCHEDULERS}.{sglang_adapter.MODULES[name]}"
    assert _sglang_modules() == before  # nothing left in sys.modules: a later `import sglang` is sglang's own
    assert sglang_adapter.sglang_class(name) is loaded  # loaded once


def test_modules_share_their_imports() -> None:
    """Kandinsky's pi-flow subclasses sglang's own flow-match Euler: the class `sglang_class` gives, not a copy."""
    piflow = sglang_adapter.sglang_class("PiflowScheduler")
    assert issubclass(piflow, sglang_adapter.sglang_class("FlowMatchEulerDiscreteScheduler"))


def test_unknown_class_is_named() -> None:
    with pytest.raises(KeyError, match=r"no scheduler class 'FlowUniPC'.*FlowUniPCMultistepScheduler"):
        sglang_adapter.sglang_class("FlowUniPC")


def test_from_diffusers_refuses_sglangs_classes() -> None:
    """sglang's copy of a diffusers class keeps diffusers' name but not always its numbers."""
    sglangs = sglang_adapter.sglang_class("FlowMatchEulerDiscreteScheduler")()
    with pytest.raises(TypeError, match="from_sglang"):
        from_diffusers(sglangs)


def test_from_sglang_refuses_what_it_cannot_map() -> None:
    with pytest.raises(NotImplementedError, match="no scheduler for sglang's EulerDiscreteScheduler"):
        from_sglang(diffusers.EulerDiscreteScheduler())


def test_readme_sglang_table_is_true() -> None:
    """README's table of sglang's classes lists each class the adapter loads, "supported" exactly where `from_sglang`
    maps it (to the class the row names)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = re.findall(r"^\| sglang `(\w+)` \|([^|]+)\|([^|]*)\|[^|]*\|$", readme, flags=re.MULTILINE)
    table = {name: (status.strip(), ours.strip().strip("`")) for name, status, ours in rows}
    assert len(table) == len(rows), "a class is listed twice"
    assert set(table) == {*sglang_adapter.MODULES, *sglang_adapter.PIPELINE_CLASSES}
    mapped = {name: cls.__name__ for name, cls in sglang_adapter._classes().items()}
    assert {name: ours for name, (status, ours) in table.items() if status == "supported"} == mapped
