"""A state as a flat dict of tensors plus JSON-able metadata, and back: what one worker hands another mid-loop.

    tensors, metadata = serialize.state_to_tensors(state)              # on the worker that took k steps
    state = serialize.state_from_tensors(tensors, metadata, scheduler)  # on another; step on from step k

Keys name the fields: "step_index", "lower_order_nums", "plan.timesteps", "plan.sigmas", "plan.num_steps",
"plan.coefficients", "history.0", ... The metadata holds the format's name and version, the state's class, the
fingerprint of the step options it was built for, and the layout of its fields ("history": 2 for a tuple of two).
Loading checks all of it against the scheduler that will step the state (class, step options, keys, dtypes,
shapes, step range) before it builds anything: a payload that does not fit raises an error that says what is
wrong, and never steps to a wrong result. No pickle: a payload from another worker cannot run code. To send the
tensors, write them as safetensors (`functional_sched.stages.handoff` does, with a checksum over the bytes).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from . import host
from .plan import Plan, working_dtype
from .record import fields
from .scheduler import Scheduler

__all__ = ["FORMAT", "VERSION", "state_from_tensors", "state_to_tensors"]

FORMAT = "functional_sched.state"
VERSION = 1
_READABLE = (1,)
_PLAN_TABLES = ("timesteps", "sigmas", "num_steps", "coefficients")
_FINGERPRINT = "fingerprint"  # carried in the metadata, rebuilt as the scheduler's shared tensor

Layout = dict[str, Any]  # field name -> "plan", "tensor", "fingerprint", or n (a tuple of n tensors)


def _layout(state: Any) -> Layout:
    layout: Layout = {}
    for name in fields(state):
        value = getattr(state, name)
        if isinstance(value, Plan):
            layout[name] = "plan"
        elif name == _FINGERPRINT:
            layout[name] = _FINGERPRINT
        elif isinstance(value, torch.Tensor):
            layout[name] = "tensor"
        elif isinstance(value, tuple) and all(isinstance(item, torch.Tensor) for item in value):
            layout[name] = len(value)
        else:
            raise TypeError(
                f"serialize: {type(state).__name__}.{name} is a {type(value).__name__}; a state holds a plan, "
                "tensors and tuples of tensors only."
            )
    return layout


def _keys(layout: Layout) -> list[str]:
    """The tensor keys of a layout, in field order."""
    keys: list[str] = []
    for name, kind in layout.items():
        if kind == "plan":
            keys += [f"{name}.{table}" for table in _PLAN_TABLES]
        elif kind == "tensor":
            keys.append(name)
        elif kind != _FINGERPRINT:
            keys += [f"{name}.{index}" for index in range(kind)]
    return keys


def _owned(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous copy with memory of its own (safetensors refuses views, expanded ones and shared storage)."""
    return tensor.detach().clone(memory_format=torch.contiguous_format)


def state_to_tensors(state: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state's tensors by key (contiguous copies, on the state's device) and its JSON-able metadata."""
    if not isinstance(getattr(state, "plan", None), Plan):
        raise TypeError(f"serialize: expected a scheduler state (from init() or step()), got {type(state).__name__}.")
    layout = _layout(state)
    tensors: dict[str, torch.Tensor] = {}
    for name, kind in layout.items():
        value = getattr(state, name)
        if kind == "plan":
            tensors.update({f"{name}.{table}": _owned(getattr(value, table)) for table in _PLAN_TABLES})
        elif kind == "tensor":
            tensors[name] = _owned(value)
        elif kind != _FINGERPRINT:
            tensors.update({f"{name}.{index}": _owned(item) for index, item in enumerate(value)})
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "state": type(state).__name__,
        "fingerprint": int(getattr(state, _FINGERPRINT)),
        "fields": layout,
    }
    return tensors, metadata


@functools.lru_cache(maxsize=64)
def _expected(scheduler: Scheduler) -> tuple[Layout, tuple[str, ...], tuple[str, ...]]:
    """The scheduler's state layout, its counters (int64 [R] fields) and its sample-like keys ([R, ...] floats),
    read off a template state built by the scheduler's own `_start`."""
    empty = Plan(
        timesteps=torch.zeros(1, 0),
        sigmas=torch.zeros(1, 1),
        num_steps=torch.zeros(1, dtype=torch.int64),
        coefficients=torch.zeros(1, 0, 1, 1),
    )
    template = scheduler._start(
        empty, torch.zeros(1), torch.zeros(1, dtype=torch.int64), scheduler._fingerprint_on(torch.device("cpu"))
    )
    layout = _layout(template)
    counters, samples = [], []
    for name, kind in layout.items():
        if kind in ("plan", _FINGERPRINT):
            continue
        if kind == "tensor":
            (counters if getattr(template, name).dtype == torch.int64 else samples).append(name)
        else:
            samples += [f"{name}.{index}" for index in range(kind)]
    return layout, tuple(counters), tuple(samples)


def _check_metadata(metadata: Any, scheduler: Scheduler, layout: Layout) -> None:
    owner = f"{scheduler.name}: state payload"
    if not isinstance(metadata, Mapping) or metadata.get("format") != FORMAT:
        raise ValueError(f"{owner}: the metadata is not a {FORMAT} header; pass the metadata state_to_tensors made.")
    version = metadata.get("version")
    if type(version) is not int or version not in _READABLE:
        raise ValueError(
            f"{owner}: format version {version!r}, but this functional-sched reads version(s) {list(_READABLE)}; "
            "run the same functional-sched version on the sending and the receiving worker."
        )
    expected = scheduler.state_type.__name__
    if metadata.get("state") != expected:
        raise ValueError(
            f"{owner}: it holds a {metadata.get('state')!r}, but a {scheduler.name} steps a {expected}; the payload "
            "was made by another scheduler class: load it with the scheduler class (and config) that made it."
        )
    found = metadata.get("fingerprint")
    if found != scheduler.fingerprint:
        raise ValueError(
            f"{owner}: it was made by a {scheduler.name} with other step options (fingerprint {found!r}, this "
            f"scheduler's is {scheduler.fingerprint}); load it with a scheduler of the sender's config."
        )
    if metadata.get("fields") != layout:
        raise ValueError(
            f"{owner}: its fields are laid out as {metadata.get('fields')!r}, but this scheduler's states as "
            f"{layout!r}; load it with the scheduler config that made it."
        )


def _check_keys(owner: str, tensors: Mapping[str, Any], keys: Sequence[str]) -> None:
    missing = [key for key in keys if key not in tensors]
    extra = sorted(set(tensors) - set(keys))
    if missing or extra:
        raise ValueError(
            f"{owner}: the tensors do not match the state's layout (missing {missing}, unexpected {extra}); the "
            "payload is incomplete or was edited: send it again from the worker that made it."
        )
    for key in keys:
        if not isinstance(tensors[key], torch.Tensor):
            raise TypeError(f"{owner}: {key!r} is a {type(tensors[key]).__name__}, not a torch.Tensor.")


def _fail(owner: str, problem: str) -> ValueError:
    return ValueError(f"{owner}: {problem}; the payload is corrupt or was edited: send it again from its worker.")


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _check_tables(
    owner: str, tensors: Mapping[str, torch.Tensor], plan: str, rows: int, columns: int
) -> tuple[int, int]:
    """The plan's tables against each other, the rows and the scheduler's column layout; returns (S, W)."""
    timesteps, sigmas, num_steps, coefficients = (tensors[f"{plan}.{table}"] for table in _PLAN_TABLES)
    if timesteps.dim() != 2 or timesteps.shape[1] < 1:
        raise _fail(owner, f"{plan}.timesteps has shape {_shape(timesteps)}, not [S, N] with N >= 1")
    schedules, steps = timesteps.shape
    expected = {
        "sigmas": (sigmas, (schedules, steps + 1)),
        "num_steps": (num_steps, (schedules,)),
        "coefficients": (coefficients, (schedules, steps, *coefficients.shape[2:])),
    }
    for table, (value, shape) in expected.items():
        if _shape(value) != shape or (table == "coefficients" and (value.dim() != 4 or 0 in value.shape)):
            raise _fail(
                owner, f"{plan}.{table} has shape {_shape(value)}, but timesteps {_shape(timesteps)} needs {shape}"
            )
    if schedules not in (1, rows):
        raise _fail(owner, f"the plan has {schedules} schedules for {rows} rows (it needs 1, or one per row)")
    if coefficients.shape[3] != columns:
        raise ValueError(
            f"{owner}: its plan holds {coefficients.shape[3]} coefficients per step, this scheduler's plans {columns} "
            "(it was made by another functional-sched version); run the same version on both workers."
        )
    if timesteps.dtype not in (torch.float32, torch.int64):
        raise _fail(owner, f"{plan}.timesteps is {timesteps.dtype}, not float32 (flow matching) or int64")
    if sigmas.dtype not in (torch.float32, torch.float64) or coefficients.dtype != sigmas.dtype:
        raise _fail(
            owner, f"{plan}.sigmas and coefficients are {sigmas.dtype} and {coefficients.dtype}, not one of float32/64"
        )
    if num_steps.dtype != torch.int64:
        raise _fail(owner, f"{plan}.num_steps is {num_steps.dtype}, not int64")
    if bool(((num_steps < 1) | (num_steps > steps)).any()):
        raise _fail(owner, f"{plan}.num_steps {num_steps.tolist()} lie outside [1, {steps}]")
    return schedules, coefficients.shape[2]


def _check_values(
    owner: str,
    tensors: Mapping[str, torch.Tensor],
    layout: Layout,
    counters: Sequence[str],
    samples: Sequence[str],
    columns: int,
) -> None:
    """Dtypes, shapes and ranges: counters int64 [R], sample-like fields one float dtype and shape [R, ...], the
    plan's tables consistent, every row's step within its schedule."""
    for name in counters:
        value = tensors[name]
        if value.dtype != torch.int64 or value.dim() != 1 or value.shape[0] < 1:
            raise _fail(owner, f"{name} is {value.dtype} {_shape(value)}, not int64 [rows]")
    rows = tensors["step_index"].shape[0]
    for name in counters:
        if tensors[name].shape[0] != rows:
            raise _fail(owner, f"{name} has {tensors[name].shape[0]} rows, step_index {rows}")
    devices = {str(tensor.device) for tensor in tensors.values()}
    if len(devices) > 1:
        raise ValueError(f"{owner}: the tensors are on several devices {sorted(devices)}; put them on one.")
    plan = next(name for name, kind in layout.items() if kind == "plan")
    schedules, warmups = _check_tables(owner, tensors, plan, rows, columns)
    if samples:
        first = tensors[samples[0]]
        for key in samples:
            value = tensors[key]
            if not value.is_floating_point() or value.dim() < 1 or value.shape[0] != rows:
                raise _fail(owner, f"{key} is {value.dtype} {_shape(value)}, not a float tensor of {rows} rows")
            if value.dtype != first.dtype or value.shape != first.shape:
                raise _fail(
                    owner,
                    f"{key} is {value.dtype} {_shape(value)}, unlike {samples[0]} ({first.dtype} {_shape(first)})",
                )
        if working_dtype(first) != tensors[f"{plan}.sigmas"].dtype:
            raise _fail(
                owner,
                f"a {first.dtype} state needs a {working_dtype(first)} plan, not {tensors[f'{plan}.sigmas'].dtype}",
            )
    step_index = tensors["step_index"]
    num_steps = tensors[f"{plan}.num_steps"]
    limit = num_steps if schedules == rows else num_steps.expand(rows)
    if bool(((step_index < 0) | (step_index > limit)).any()):
        raise _fail(owner, f"step_index {step_index.tolist()} lies outside [0, num_steps {limit.tolist()}]")
    for name in counters:
        if name == "step_index":
            continue
        # the other counters (multistep warm-up) count steps taken, capped: they index the plan's warm-up levels
        value = tensors[name]
        if bool(((value < 0) | (value > step_index) | (value >= warmups)).any()):
            raise _fail(
                owner, f"{name} {value.tolist()} lies outside [0, min(step_index {step_index.tolist()}, {warmups - 1})]"
            )


def _same_plan(plan: Plan, tables: Mapping[str, torch.Tensor]) -> bool:
    return all(
        getattr(plan, table).dtype == tables[table].dtype
        and getattr(plan, table).device == tables[table].device
        and torch.equal(getattr(plan, table), tables[table])
        for table in _PLAN_TABLES
    )


def _counter(name: str, value: torch.Tensor) -> torch.Tensor:
    """The host-known shared counter when every row agrees (eager steps then skip device reads), else `value`."""
    values = value.tolist()
    if values.count(values[0]) != len(values):
        return value
    return host.counter(name, values[0], len(values), value.device)


def state_from_tensors(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any],
    scheduler: Scheduler,
    *,
    device: torch.device | str | None = None,
    plans: Sequence[Plan] = (),
) -> Any:
    """The state that `state_to_tensors` took apart, checked against `scheduler` first, its tensors on `device`
    (default: where they are).

    `plans` are cached plans (`scheduler.plan(...)`) on `device` to share: if the payload's plan equals one bit for
    bit, the state holds that plan object, as a state from `init` would (requests then stack without copying it);
    otherwise it holds the payload's tables, which step the same. The fingerprint is the scheduler's shared one.
    """
    owner = f"{scheduler.name}: state payload"
    layout, counters, samples = _expected(scheduler)
    _check_metadata(metadata, scheduler, layout)
    _check_keys(owner, tensors, _keys(layout))
    _check_values(owner, tensors, layout, counters, samples, scheduler.plan_columns)
    device = torch.empty(0, device=device or tensors["step_index"].device).device  # "cuda" -> "cuda:0"
    moved = {key: tensors[key].to(device) for key in _keys(layout)}
    values: dict[str, Any] = {}
    for name, kind in layout.items():
        if kind == "plan":
            tables = {table: moved[f"{name}.{table}"] for table in _PLAN_TABLES}
            shared = next((plan for plan in plans if _same_plan(plan, tables)), None)
            values[name] = shared if shared is not None else Plan(**tables)
            if shared is None and device.type != "cpu":
                host.remember_host_table(values[name].coefficients, tensors[f"{name}.coefficients"].cpu())
        elif kind == _FINGERPRINT:
            values[name] = scheduler._fingerprint_on(device)
        elif kind == "tensor":
            values[name] = _counter(name, moved[name]) if name in counters else moved[name]
        else:
            values[name] = tuple(moved[f"{name}.{index}"] for index in range(kind))
    return scheduler.state_type(**values)
