"""Interop with diffusers schedulers: map a configured diffusers scheduler to the functional one, and back.

Only configuration crosses over. Per-run state (diffusers' `_step_index`, `model_outputs`, ...) does not: call
`init` on the result, as you would call `set_timesteps`. diffusers itself is never imported here; the mapping reads
the scheduler object it is given (diffusers 0.42.1, `diffusers/configuration_utils.py` and `schedulers/`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import functional_sched as fs
from functional_sched.machinery import options
from functional_sched.machinery.scheduler import Scheduler


def from_diffusers(scheduler: Any) -> Scheduler:
    """The functional scheduler with the same algorithm and options as the diffusers `scheduler` object.

    Each key of `scheduler.config` maps to the declared option of the same name (`config_options`). A key that is
    no option of ours raises `NotImplementedError` unless its value is diffusers' default for that class (then it
    changes nothing).
    Private keys (`_class_name`, `_use_default_values`, ...) and keys that are no parameter of the diffusers class
    (left over by `from_config` of another class's config, e.g. PNDM's `skip_prk_steps` in an SD 1.5 config) are
    ignored, as diffusers ignores them. Values that our constructors reject raise their `ValueError`/`TypeError`.

    Runtime state that diffusers keeps outside `config.items()` and that changes the schedule is honoured, or
    refused where no config of ours can express it:
    - `DPMSolverMultistepScheduler.set_timesteps(mu=...)` assigns `config.flow_shift = exp(mu)`. That lands on an
      attribute of the `FrozenDict`, not on its items, so `dict(scheduler.config)` still shows the old value while
      the next `set_timesteps()` without `mu` reads the new one; the attribute is what we map.
    - UniPC reads `scheduler.predict_x0`, `disable_corrector` and `solver_p` from instance attributes (copies of
      the config made in `__init__`); those are what we map.
    - FlowMatchEuler's `set_shift(s)` changes the shift applied in `set_timesteps` but not the sigma range, which
      `__init__` fixed from `config.shift`: our option `set_shift` is that mix (read from `scheduler.shift`, diffusers'
      and sglang's `_shift`); a class without the option (FlowMatchLCM) refuses it (see `_flow_shift`).
    """
    if any(cls.__module__.startswith("sglang.") for cls in type(scheduler).__mro__):
        raise TypeError(
            f"from_diffusers: {type(scheduler).__name__} is sglang's class ({type(scheduler).__module__}), whose "
            "numbers may differ from diffusers' class of that name; map it with functional_sched.adapters.from_sglang."
        )
    ours = _scheduler_class(type(scheduler).__name__)
    return ours(**options_for(ours, scheduler))


def options_for(ours: type[Scheduler], scheduler: Any) -> dict[str, Any]:
    """The options of `ours` that the diffusers `scheduler` object has in effect (`from_diffusers`' mapping; a
    drop-in builds its own functional class with them)."""
    diffusers_name = type(scheduler).__name__
    fields = set(config_options(ours))
    defaults = _diffusers_defaults(type(scheduler))
    options: dict[str, Any] = {}
    for key, value in _config_in_effect(scheduler).items():
        if key.startswith("_"):
            continue
        if key in fields:
            options[key] = value
        elif key in defaults and not _same(value, defaults[key]):
            raise NotImplementedError(
                f"functional_sched does not support {diffusers_name} option {key}={_short_repr(value)} yet; "
                f"only its default ({_short_repr(defaults[key])}) maps to {ours.__name__}."
            )
    for check in _RUNTIME_CHECKS.get(diffusers_name, ()):
        check(scheduler, options)
    return options


def to_diffusers_config(scheduler: Scheduler) -> dict[str, Any]:
    """The config dict of the diffusers class `type(scheduler).diffusers_name` with the same options.

    Our fields carry diffusers' option names, so `getattr(diffusers, sched.diffusers_name).from_config(result)`
    builds the equivalent diffusers scheduler; tuples become lists, as diffusers stores them. Registered options
    (`Option.registered`, no constructor takes them) are in it only where set: register them on the built scheduler
    (`registered_config`), as the pipeline that set them does.
    """
    declared = options.declared(type(scheduler))
    config = {name: _as_lists(getattr(scheduler, name)) for name in config_options(type(scheduler))}
    return {name: value for name, value in config.items() if not declared[name].registered or value is not None}


def registered_config(scheduler: Scheduler) -> dict[str, Any]:
    """The registered options (`Option.registered`) `scheduler` sets: what `register_to_config` must add to a
    diffusers scheduler built from `to_diffusers_config`, whose constructor drops them."""
    return {
        name: getattr(scheduler, name)
        for name, option in options.declared(type(scheduler)).items()
        if option.registered and getattr(scheduler, name) is not None
    }


def config_options(scheduler_class: type[Scheduler]) -> tuple[str, ...]:
    """The declared options of `scheduler_class` that diffusers keeps in its config: all but its `step()` arguments
    (`Option.step_argument`), which a diffusers user passes to every `step` call instead."""
    return tuple(
        name
        for name, option in options.declared(scheduler_class).items()
        if not option.step_argument and option.set_by is None
    )


def set_by_calls(scheduler: Scheduler) -> dict[str, Any]:
    """The options `scheduler` sets that diffusers takes through a method of a built scheduler (`Option.set_by`), as
    {method: value}: what a diffusers scheduler built from `to_diffusers_config` must be called with
    (`getattr(built, method)(value)`), as the pipeline that set them does."""
    return {
        option.set_by: getattr(scheduler, name)
        for name, option in options.declared(type(scheduler)).items()
        if option.set_by is not None and getattr(scheduler, name) is not None
    }


# ------------------------------------------------------------------------------------------------ helpers
def _scheduler_class(diffusers_name: str) -> type[Scheduler]:
    ours = [scheduler_class for scheduler_class in fs.SCHEDULERS if scheduler_class.reference_library == "diffusers"]
    for scheduler_class in ours:
        if scheduler_class.diffusers_name == diffusers_name:
            return scheduler_class
    supported = ", ".join(scheduler_class.diffusers_name for scheduler_class in ours)
    raise NotImplementedError(
        f"functional_sched has no scheduler for diffusers' {diffusers_name}; supported: {supported}."
    )


def _diffusers_defaults(diffusers_class: type) -> dict[str, Any]:
    """Default of each `__init__` parameter; `register_to_config` wraps `__init__` with `functools.wraps`."""
    parameters = inspect.signature(diffusers_class.__init__).parameters
    return {
        name: _plain(parameter.default)
        for name, parameter in parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def _config_in_effect(scheduler: Any) -> dict[str, Any]:
    """`scheduler.config` as the scheduler reads it: `config.<key>` attributes win over the dict's items, and
    instance copies of options (`_INSTANCE_COPIES`) over both."""
    config: Mapping[str, Any] = scheduler.config
    attributes = getattr(config, "__dict__", {})
    in_effect = {key: attributes.get(key, value) for key, value in config.items()}
    for name in _INSTANCE_COPIES.get(type(scheduler).__name__, ()):
        if name in vars(scheduler):
            in_effect[name] = vars(scheduler)[name]
    return {key: _plain(value) for key, value in in_effect.items()}


def _plain(value: Any) -> Any:
    """numpy/torch scalars and arrays as Python numbers and tuples; lists as tuples (hashable, like our fields)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(_plain(item) for item in value)
    return value


def _as_lists(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_as_lists(item) for item in value]
    return value


def _same(value: Any, default: Any) -> bool:
    try:
        return bool(value == default)
    except (TypeError, ValueError, RuntimeError):  # arrays, tensors, objects without a usable ==
        return False


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"<{type(value).__name__}>"


# ------------------------------------------------------------------------------------------------ runtime state
#: Options a diffusers class reads from instance attributes that its `__init__` copied from the config.
_INSTANCE_COPIES: dict[str, tuple[str, ...]] = {
    "UniPCMultistepScheduler": ("predict_x0", "disable_corrector", "solver_p"),
}


def _flow_shift(scheduler: Any, options: dict[str, Any]) -> None:
    """FlowMatchEuler's `set_shift`: diffusers 0.42.1 (and sglang's copy) keep `sigma_min/max` from `config.shift`,
    and shift by `_shift` (the `shift` property): our option `set_shift`, or refused by a class without it."""
    shift = _plain(scheduler.shift)
    if options.get("use_dynamic_shifting") or shift == options.get("shift", 1.0):
        return  # dynamic shifting never reads the shift; otherwise nothing changed
    name = type(scheduler).__name__
    if _takes_set_shift(name, scheduler):
        options["set_shift"] = shift
        return
    raise NotImplementedError(
        f"functional_sched does not support {name}.set_shift({shift!r}) on a scheduler "
        f"built with shift={options.get('shift')!r}: diffusers then shifts by {shift!r} within the sigma range of "
        f"shift={options.get('shift')!r}. Build the scheduler with shift={shift!r} instead "
        f"({name}.from_config(config, shift=...))."
    )


def _takes_set_shift(name: str, scheduler: Any) -> bool:
    """Whether our class for `scheduler` (diffusers' or sglang's) declares the `set_shift` option."""
    from . import sglang

    sglangs = any(cls.__module__.startswith("sglang.") for cls in type(scheduler).__mro__)
    classes = (
        sglang._classes()
        if sglangs
        else {cls.diffusers_name: cls for cls in fs.SCHEDULERS if cls.reference_library == "diffusers"}
    )
    ours = classes.get(name)
    return ours is not None and "set_shift" in options.declared(ours)


def _scale_factors(scheduler: Any, options: dict[str, Any]) -> None:
    """FlowMatchLCM's `set_scale_factors`: diffusers steps with `_scale_factors` and `_upscale_mode`, not the config's
    (None or [] factors, or no mode, for none)."""
    factors, mode = _plain(scheduler._scale_factors), scheduler._upscale_mode
    options["scale_factors"] = factors if factors and mode else None
    if factors and mode:
        options["upscale_mode"] = mode


def _initial_alpha(scheduler: Any, options: dict[str, Any]) -> None:
    """DDIMInverse's deprecated `set_alpha_to_zero=x` sets the alpha_bar its first step starts from as
    `set_alpha_to_one=x` does, while its config keeps `set_alpha_to_one`'s default: it steps by the attribute."""
    options["set_alpha_to_one"] = bool(_plain(scheduler.initial_alpha_cumprod) == 1.0)  # alpha_bar[0] < 1 otherwise


def _registered_range(scheduler: Any, options: dict[str, Any]) -> None:
    """DPMSolverMultistepInverse's Karras, exponential and beta sigmas read a `sigma_min`/`sigma_max` a pipeline
    registered (Cosmos 2 registers 0.002 and 80 on the forward class) as the ends of a ramp that then runs from
    sigma_max down: the forward schedule, which denoises. No config of ours expresses it."""
    registered = {name: getattr(scheduler.config, name, None) for name in ("sigma_min", "sigma_max")}
    spaced = any(options.get(f"use_{kind}_sigmas") for kind in ("karras", "exponential", "beta"))
    if spaced and any(value is not None for value in registered.values()):
        raise NotImplementedError(
            f"functional_sched does not support a registered sigma range ({registered}) on "
            "DPMSolverMultistepInverseScheduler: diffusers then spaces sigmas from sigma_max down, which denoises."
        )


#: Runtime state, per diffusers class, that changes the schedule and that no config of ours can express.
_RUNTIME_CHECKS: dict[str, tuple[Callable[[Any, dict[str, Any]], None], ...]] = {
    "FlowMatchEulerDiscreteScheduler": (_flow_shift,),
    "LTX2FlowMatchScheduler": (_flow_shift,),  # sglang's LTX-2 subclass of its FlowMatchEulerDiscreteScheduler
    "FlowMatchLCMScheduler": (_flow_shift, _scale_factors),
    "DDIMInverseScheduler": (_initial_alpha,),
    "DPMSolverMultistepInverseScheduler": (_registered_range,),
}
