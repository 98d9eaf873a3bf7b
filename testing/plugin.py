"""pytest plugin (entry point `pytest11`, loaded wherever functional-sched is installed): registers the `slow` marker
that the conformance suite puts on everything past the default run, so a project using the suite needs no setup."""

from __future__ import annotations

from typing import Any


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "slow: long grids and compile runs (deselect with -m 'not slow')")
