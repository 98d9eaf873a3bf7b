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
import inspect
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
    """sglang's scheduler class `name` (a key of `MODULES` or `PIPELINE_CLASSES`), loaded from the installed package."""
    if name in PIPELINE_CLASSES:
        return _pipeline_class(name)
    if name not in MODULES:
        known = ", ".join([*MODULES, *PIPELINE_CLASSES])
        raise KeyError(f"sglang_class: sglang {SGLANG_VERSION} has no scheduler class {name!r}; known: {known}.")
    return getattr(sglang_module(MODULES[name]), name)


#: sglang's scheduler classes that a pipeline module defines (a module importing the whole runtime), by name: that
#: module, and the scheduler class (a key of `MODULES`) each subclasses.
PIPELINE_CLASSES = {
    "LTX2FlowMatchScheduler": (
        "sglang.multimodal_gen.runtime.pipelines.ltx_2_pipeline",
        "FlowMatchEulerDiscreteScheduler",
    ),
}
_PIPELINE_MADE: dict[str, type] = {}


def _pipeline_class(name: str) -> type:
    """sglang's class `name` of `PIPELINE_CLASSES`, made once: its `class` statement, read from the installed pipeline
    module's file with `ast`, executed over its base class (loaded as `sglang_class` loads it) and the modules its
    body names (math, numpy as np, torch): sglang's own code, without the pipeline module's imports."""
    import ast
    import math

    import numpy
    import torch

    module, base = PIPELINE_CLASSES[name]
    if module in sys.modules:  # sglang imported for real (its runtime running in this process)
        return getattr(sys.modules[module], name)
    if name not in _PIPELINE_MADE:
        path = _root().joinpath(*module.split(".")[1:]).with_suffix(".py")
        statements = [node for node in ast.parse(path.read_text()).body if getattr(node, "name", None) == name]
        namespace = {"__name__": module, "math": math, "np": numpy, "torch": torch, base: sglang_class(base)}
        exec(compile(ast.Module(body=statements, type_ignores=[]), str(path), "exec"), namespace)
        _PIPELINE_MADE.setdefault(name, namespace[name])
    return _PIPELINE_MADE[name]


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
    # MOVA's FlowMatchScheduler/Pair are no ConfigMixins: their options are attributes (`_linspace_flow`).
    options = _diffusers.options_for(ours, scheduler) if hasattr(getattr(scheduler, "config", None), "items") else {}
    for mapping in _MAPPINGS.get(name, ()):
        mapping(scheduler, options)
    return ours(**options)


def _flow_unipc(scheduler: Any, options: dict[str, Any]) -> None:
    """FlowUniPC's `set_shift(s)` writes `config.shift` as an attribute (its items keep the constructor's shift, which
    fixed `sigma_max`): our `shift` is the constructor's, `set_shift` the one in effect. `predict_x0` and
    `disable_corrector` are read from instance copies of the config."""
    constructed = dict(scheduler.config).get("shift", 1.0)
    if options.get("shift", 1.0) != constructed:
        options["set_shift"], options["shift"] = options["shift"], constructed
    options["predict_x0"] = bool(scheduler.predict_x0)
    options["disable_corrector"] = tuple(scheduler.disable_corrector)


_LINSPACE_OPTIONS = ("num_train_timesteps", "shift", "sigma_max", "sigma_min", "inverse_timesteps", "extra_one_step")
_LINSPACE_OPTIONS += ("reverse_sigmas", "exponential_shift", "exponential_shift_mu", "shift_terminal")


def _linspace_flow(scheduler: Any, options: dict[str, Any]) -> None:
    """SelfForcing's and MOVA's flow-match classes read their options from instance attributes (MOVA's have no
    config at all), and `set_shift(s)` or `set_timesteps(shift=s)` rewrites `self.shift`, which every later
    `set_timesteps` reads: the attributes are what we map."""
    options.update({name: value for name, value in vars(scheduler).items() if name in _LINSPACE_OPTIONS})


def _flow_pair(scheduler: Any, options: dict[str, Any]) -> None:
    """MOVA's pair: the post-processing sglang set (`dual_sigma_shift`'s arguments are its function's closure; the
    others, which no pipeline uses, refused by name), and a training grid built with the shift in effect (a later
    `set_timesteps(shift=...)` or `set_shift` moves the shift but not the grid its steps look sigmas up on)."""
    function = scheduler._pair_postprocess_fn
    if function is not None:
        closure = [cell.cell_contents for cell in function.__closure__ or ()]
        cells = dict(zip(function.__code__.co_freevars, closure, strict=True))
        if function.__name__ != "_dual_sigma_shift":
            named = "quadratic_perp_bulge_swap" if "amp" in cells else cells.get("name")  # v2a, a2v, *_sequential
            raise NotImplementedError(
                "functional_sched does not support FlowMatchPairScheduler's pair post-processing "
                f"{named or function.__qualname__!r} (no pipeline uses it); only 'dual_sigma_shift' or none maps to "
                "FlowMatchPair."
            )
        options["pair_postprocess"] = "dual_sigma_shift"
        for modality in ("visual", "audio"):
            options[f"{modality}_shift"] = cells[f"{modality}_shift"]
            options[f"{modality}_denoising_strength"] = cells[f"{modality}_denoising_strength"]
            options[f"{modality}_exponential_shift_mu"] = cells[f"{modality}_mu"]
    import functional_sched as fs

    grid = fs.FlowMatchPair(**options).training_grid()[0]
    if grid.tolist() != scheduler.train_timesteps.tolist():
        raise NotImplementedError(
            f"functional_sched does not support a FlowMatchPairScheduler whose shift ({scheduler.shift!r}) is not the "
            "one its training grid was built with (set_timesteps(shift=...) or set_shift after construction): build "
            "it with that shift."
        )


#: Config keys an sglang class takes and never reads (its `**kwargs` and `*args` land in its config, as keys a
#: pipeline registers do), with the value that asks for nothing; `options_for` skips them as no parameter of the class.
_DROPPED: dict[str, dict[str, Any]] = {
    # The DPM wrapper builds its inner diffusers scheduler without these (its own config gets them, the inner's not).
    "DPMSolverMultistepScheduler": {
        "use_dynamic_shifting": False,
        "time_shift_type": "exponential",
        "sigma_min": None,
        "sigma_max": None,
    },
    "ComfyUIPassThroughScheduler": {"args": inspect.Parameter.empty},
}


def refuse_dropped(
    scheduler: Any, options: dict[str, Any] | None = None, *, given: dict[str, Any] | None = None
) -> None:
    """Refuses by name a key of `_DROPPED` that `scheduler`'s config (or `given`, a drop-in's constructor arguments)
    sets to anything but the value that asks for nothing: sglang would silently run without it (so would we)."""
    name = type(scheduler).__name__
    for key, nothing in _DROPPED.get(name, {}).items():
        value = (given or {}).get(key, getattr(scheduler.config, key, nothing))  # config items are attributes too
        if value is not nothing and value != nothing:
            raise NotImplementedError(
                f"functional_sched does not support sglang's {name} option {key}={value!r}: sglang {SGLANG_VERSION} "
                "takes it and never reads it (its scheduler runs as if it were not set); leave it unset."
            )


def _helios(scheduler: Any, options: dict[str, Any]) -> None:
    """Helios keeps its config as plain attributes (`HeliosSchedulerConfig`, no ConfigMixin), which its pipeline
    rewrites after construction (`stages`, `scheduler_type`, `gamma`, then `init_sigmas_for_each_stage()`) and
    `set_shift` too: the attributes in effect are what we map, an undeclared one refused by name unless it holds
    sglang's default. The per-stage tables are made from the options of that last call: tables made from other
    options (a change without the call) are refused. `stage_index` and `is_amplify_first_chunk` are arguments of each
    `set_timesteps`, config of ours: set them on the result (`attrs.evolve(sched, stage_index=i)`)."""
    from . import diffusers as _diffusers

    ours = _classes()[type(scheduler).__name__]
    declared = set(_diffusers.config_options(ours))
    defaults = _diffusers._diffusers_defaults(type(scheduler))
    defaults.update(stage_range=(0, 1 / 3, 2 / 3, 1), disable_corrector=())  # what its None defaults stand for
    for key, value in vars(scheduler.config).items():
        value = _diffusers._plain(value)
        if key in declared:
            options[key] = value
        elif key in defaults and not _diffusers._same(value, defaults[key]):
            raise NotImplementedError(
                f"functional_sched does not support HeliosScheduler option {key}={value!r} yet; only its default "
                f"({defaults[key]!r}) maps to {ours.__name__}."
            )
    mapped = ours(**options)
    if mapped.stages > 1:
        import torch

        from functional_sched.schedulers.helios import _stage_timesteps

        built = [scheduler.timesteps_per_stage.get(index) for index in range(mapped.stages)]
        expected = _stage_timesteps(
            mapped.num_train_timesteps, mapped.shift, mapped.stages, mapped.stage_range, mapped.gamma
        )
        if any(table is None or not torch.equal(table, own) for table, own in zip(built, expected, strict=True)):
            raise NotImplementedError(
                "functional_sched does not support a HeliosScheduler whose per-stage tables were made with other "
                "options than its config holds (shift, stages, stage_range or gamma changed without "
                "init_sigmas_for_each_stage()): its steps would mix the two."
            )


#: What `options_for` (diffusers' mapping) does not read of sglang's classes, by class name: runtime state, options
#: kept as attributes, keys taken and never read.
_MAPPINGS: dict[str, tuple[Any, ...]] = {
    "HeliosScheduler": (_helios,),
    "DPMSolverMultistepScheduler": (refuse_dropped,),
    "ComfyUIPassThroughScheduler": (refuse_dropped,),
    "SelfForcingFlowMatchScheduler": (_linspace_flow,),
    "FlowMatchScheduler": (_linspace_flow,),
    "FlowMatchPairScheduler": (_linspace_flow, _flow_pair),
    "FlowUniPCMultistepScheduler": (_flow_unipc,),
}


def _classes() -> dict[str, type]:
    """sglang's class names -> ours: the listed classes whose reference is sglang's (each sglang class, its copies
    of diffusers' classes included, is a class of ours held to it by its own conformance spec)."""
    import functional_sched as fs

    return {cls.diffusers_name: cls for cls in fs.SCHEDULERS if cls.reference_library == "sglang"}
