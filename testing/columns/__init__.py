"""The conformance suite's columns: one mixin of tests per property. `SchedulerConformance` inherits them all; a new
property (the foundation's composability, the hardening's hostile inputs) is a new column here."""

from .accuracy import Accuracy
from .compile import Compile
from .composability import Composability
from .handoff import Handoff
from .hostile import HostileInputs
from .interop import Interop
from .parity import Parity
from .purity import Purity
from .rows import Rows

__all__ = ["Accuracy", "Compile", "Composability", "Handoff", "HostileInputs", "Interop", "Parity", "Purity", "Rows"]
