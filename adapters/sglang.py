"""Interop with sglang's own schedulers (`sglang.multimodal_gen`, sglang 0.5.23): load them, map them to ours.

sglang's multimodal runtime ships schedulers beside diffusers' in `sglang/multimodal_gen/runtime/models/schedulers/`
(Wan's flow UniPC, self-forcing's flow match, MOVA's pair scheduler, Hunyuan3D's, Kandinsky 6's pi-flow, ...). Those
modules import torch, numpy, diffusers and a few small runtime modules; the runtime's package `__init__`s import the
whole server (CUDA kernels, its HTTP stack). `sglang_module` loads one scheduler module from the installed package's
files without running those `__init__`s: the parent packages are bare module objects whose `__path__` is the
package's folder, present in `sys.modules` only while the module loads, so a later `import sglang` is untouched.
Two runtime modules are not loaded: Helios's platform query (`runtime.platforms.current_platform`) is answered for
CPU and CUDA (`is_npu()` is False), the only question its scheduler asks. Where sglang is imported already, its own
modules are used.

    pip install --no-deps sglang==0.5.23      # the wheel alone; none of its dependencies
    from functional_sched.adapters.sglang import from_sglang, sglang_class
    sched = from_sglang(sglang_class("FlowUniPCMultistepScheduler")(shift=3.0))
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from pathlib import Path
from typing import Any

#: The sglang release whose schedulers the adapters and the conformance suite were checked against.
SGLANG_VERSION = "0.5.23"
_SCHEDULERS = "sglang.multimodal_gen.runtime.models.schedulers"
#: Each sglang scheduler class, by name: the module of `_SCHEDULERS` that defines it.
MODULES = {
    "FlowUniPCMultistepScheduler": "scheduling_flow_unipc_multistep",
    "UniPCMultistepScheduler": "scheduling_unipc_multistep",
    "FlowMatchEulerDiscreteScheduler": "scheduling_flow_match_euler_discrete",
    "DPMSolverMultistepScheduler": "scheduling_dpm_solver_multistep",
    "SelfForcingFlowMatchScheduler": "scheduling_self_forcing_flow_match",
    "FlowMatchScheduler": "flow_match_pair",
    "FlowMatchPairScheduler": "flow_match_pair",
    "Hunyuan3DFlowMatchEulerDiscreteScheduler": "hunyuan3d_scheduler",
    "Hunyuan3DConsistencyFlowMatchEulerDiscreteScheduler": "hunyuan3d_scheduler",
    "PiflowScheduler": "kandinsky6_piflow",
    "MOSSImageScheduler": "moss_image",
    "HeliosScheduler": "scheduling_helios",
    "ComfyUIPassThroughScheduler": "scheduling_comfyui_passthrough",
}
_LOCK = threading.Lock()
#: Every sglang module a load made (the schedulers, their base and helper modules, the bare packages), by name: each
#: later load sees them again, so two scheduler modules share their imports (Kandinsky's pi-flow subclasses sglang's
#: own flow-match Euler: the class `sglang_class` gives, not a second copy).
_MADE: dict[str, types.ModuleType] = {}


def available() -> bool:
    """Whether sglang's package is installed (its files; nothing of it is imported to ask)."""
    return importlib.util.find_spec("sglang") is not None


def sglang_class(name: str) -> type:
    """sglang's scheduler class `name` (a key of `MODULES`), loaded from the installed package."""
    if name not in MODULES:
        raise KeyError(
            f"sglang_class: sglang {SGLANG_VERSION} has no scheduler class {name!r}; known: {', '.join(MODULES)}."
        )
    return getattr(sglang_module(MODULES[name]), name)


def sglang_module(name: str) -> types.ModuleType:
    """The module `sglang.multimodal_gen.runtime.models.schedulers.<name>`, loaded once per process."""
    qualified = f"{_SCHEDULERS}.{name}"
    if qualified in sys.modules:  # sglang imported for real (its runtime running in this process)
        return sys.modules[qualified]
    with _LOCK:
        return _MADE.get(qualified) or _load(qualified)


def _root() -> Path:
    spec = importlib.util.find_spec("sglang")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "sglang is not installed; its schedulers need the wheel alone: "
            f"pip install --no-deps sglang=={SGLANG_VERSION}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _load(qualified: str) -> types.ModuleType:
    """Loads `qualified` from sglang's files with bare parent packages, then takes every sglang module it made out of
    `sys.modules` again (they stay alive through the loaded module's references)."""
    root = _root()
    before = {key for key in sys.modules if key == "sglang" or key.startswith("sglang.")}
    sys.modules.update({key: module for key, module in _MADE.items() if key not in before})
    try:
        parts = qualified.split(".")
        for depth in range(1, len(parts)):
            package = ".".join(parts[:depth])
            if package not in sys.modules:
                module = types.ModuleType(package)
                module.__path__ = [str(root.joinpath(*parts[1:depth]))]
                sys.modules[package] = module
        platforms = "sglang.multimodal_gen.runtime.platforms"
        if platforms not in sys.modules:
            sys.modules[platforms] = _platforms(platforms)
        return importlib.import_module(qualified)
    finally:
        for key in [key for key in sys.modules if key == "sglang" or key.startswith("sglang.")]:
            if key not in before:
                _MADE[key] = sys.modules.pop(key)


class _Platform:
    """What Helios' scheduler asks of sglang's platform: whether it runs on Ascend NPUs (never here)."""

    def is_npu(self) -> bool:
        return False


def _platforms(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.current_platform = _Platform()  # type: ignore[attr-defined]
    return module


def from_sglang(scheduler: Any) -> Any:
    """The functional scheduler with the same algorithm and options as sglang's `scheduler` object (as
    `from_diffusers` for diffusers' classes): its config mapped option by option, an option we do not declare
    refused by name unless it holds sglang's default."""
    from . import diffusers as _diffusers  # the mapping is diffusers' (sglang's classes are diffusers ConfigMixins)

    name = type(scheduler).__name__
    ours = _classes().get(name)
    if ours is None:
        raise NotImplementedError(
            f"functional_sched has no scheduler for sglang's {name}; supported: {', '.join(sorted(_classes()))}."
        )
    return ours(**_diffusers.options_for(ours, scheduler))


def _classes() -> dict[str, type]:
    """sglang's class names -> ours: the listed classes whose reference is sglang's (each sglang class, its copies
    of diffusers' classes included, is a class of ours held to it by its own conformance spec)."""
    import functional_sched as fs

    return {cls.diffusers_name: cls for cls in fs.SCHEDULERS if cls.reference_library == "sglang"}
