"""`SchedulerConformance`: every property a scheduler class must have, written once, run on each class's table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from .columns import Accuracy, Compile, Composability, Handoff, HostileInputs, Interop, Parity, Purity, Rows
from .selection import parametrize
from .spec import Spec


class SchedulerConformance(Parity, Compile, Composability, Purity, Rows, Handoff, Interop, HostileInputs, Accuracy):
    """The conformance suite. Subclass it in a test module, named `Test...`, with the specs to check:

        class TestMyScheduler(SchedulerConformance):
            specs = (Spec(MyScheduler, configs=(Config("default"), ...)),)

    pytest then runs every column on every spec: parity with its reference on every step, compile and the loop
    driver, composability (torch.func, grad modes, fake tensors, export), purity and structure, rows at different
    steps, handoff, diffusers interop and the drop-in (where the class has one), hostile inputs, accuracy. The
    default run checks each property on a spec's first config; the rest are marked `slow` (`pytest -m slow`).
    Select one class with `-k ClassName`.
    """

    specs: ClassVar[Sequence[Spec]] = ()

    def pytest_generate_tests(self, metafunc: Any) -> None:
        parametrize(metafunc, self.specs)
