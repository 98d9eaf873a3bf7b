"""The drop-ins of each scheduler family, one module per family as the core has (`functional_sched.schedulers`).

Each module defines subclasses of `functional_sched.adapters.drop_in._DropIn`; defining one registers it
(`drop_in.DROP_INS`, and `drop_in.<ClassName>`). Importing this package imports every module in it, so a family's
drop-ins exist wherever `functional_sched.adapters.drop_in` is imported.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
