"""pytest plugin of the conformance kit (entry point `pytest11`, loaded wherever functional-sched is installed): it
registers the `slow` marker that the suite puts on everything past the default run, and deselects the placeholders
of tests that apply to none of a suite's specs, so a project using the suite needs no setup of its own."""

from __future__ import annotations

from typing import Any

from .selection import NOT_APPLICABLE


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "slow: long grids and compile runs (deselect with -m 'not slow')")
    config.addinivalue_line("markers", f"{NOT_APPLICABLE}: a conformance test no spec of the suite takes (deselected)")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    placeholders = [item for item in items if item.get_closest_marker(NOT_APPLICABLE) is not None]
    if placeholders:
        config.hook.pytest_deselected(items=placeholders)
        items[:] = [item for item in items if item.get_closest_marker(NOT_APPLICABLE) is None]
