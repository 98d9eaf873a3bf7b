"""A state as a flat dict of tensors plus JSON-able metadata, and back: what one worker hands another mid-loop.

    tensors, metadata = serialize.state_to_tensors(state)              # on the worker that took k steps
    state = serialize.state_from_tensors(tensors, metadata, scheduler)  # on another; step on from step k

Keys name the fields: "step_index", "lower_order_nums", "plan.timesteps", "plan.sigmas", "plan.num_steps",
"plan.coefficients", "history.0", ... The metadata holds the format's name and version, the state's class, the
fingerprint of the step options it was built for, the layout of its fields ("history": 2 for a tuple of two) and
the schedule of each plan row (`Schedule.to_json`: step count, custom tables, mu).

The receiver trusts nothing it can rebuild. Loading checks the metadata, keys, dtypes, shapes and step ranges
against the scheduler that will step the state, refuses NaN and inf in every floating tensor, then rebuilds the plan
from its own scheduler and the payload's schedules and compares: timesteps and step counts must be equal, sigmas
and coefficients equal within float rounding between hosts (`RTOL`, `ATOL`: BLAS, libm and CPUs may differ by an
ulp). The state then steps with the receiver's own tables, never the payload's. So resumption is bit-identical
between identical builds on identical machines, and within an ulp of the tables elsewhere. A payload that does not
fit raises a ValueError (or TypeError) that says what is wrong; it never steps to a wrong result. No pickle: a
payload from another worker cannot run code. To send the tensors, write them as safetensors
(`functional_sched.stages.handoff` does, with a checksum over the bytes and an optional MAC).

Format 1 carried no schedules: its payloads load only when the caller passes `schedules=` (the `Schedule` of each
plan row, from `scheduler.schedule(...)`), against which the plan is verified as format 2's is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from . import checks, host
from .batching import stack_plans
from .plan import Plan, copied, tables, working_dtype
from .record import fields
from .schedule import Schedule
from .scheduler import Scheduler

__all__ = ["ATOL", "FORMAT", "RTOL", "VERSION", "state_from_tensors", "state_to_tensors"]

FORMAT = "functional_sched.state"
VERSION = 2  # 2 added the plan's schedules, which the receiver rebuilds the plan from
_READABLE = (1, 2)  # 1 only with schedules= (it carries none)
#: How far a payload's sigmas and coefficients may lie from the receiver's own (`torch.isclose`): float rounding
#: between hosts, far below any difference between two schedules or configs. The receiver steps with its own tables.
RTOL, ATOL = 1e-5, 1e-6
_PLAN_TABLES = ("timesteps", "sigmas", "num_steps", "coefficients")
_FINGERPRINT = "fingerprint"  # carried in the metadata, rebuilt from the loading scheduler's own

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


def state_to_tensors(
    state: Any, *, schedules: Schedule | Sequence[Schedule] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state's tensors by key (contiguous copies, on the state's device) and its JSON-able metadata.

    The metadata carries the schedule of each plan row, which the receiver rebuilds the plan from: the plan's own
    (`Plan.schedules`), or, where the plan lost them (a state returned by torch.compile, a torch.func transform or
    a pytree round trip), `schedules`: the `Schedule` that `scheduler.schedule(...)` gives for `init`'s arguments,
    or a sequence of one per plan row."""
    if not isinstance(getattr(state, "plan", None), Plan):
        raise TypeError(f"serialize: expected a scheduler state (from init() or step()), got {type(state).__name__}.")
    layout = _layout(state)
    known = _sender_schedules(state.plan, schedules)
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
        "schedules": [schedule.to_json() for schedule in known],
    }
    return tensors, metadata


def _as_schedules(owner: str, schedules: Any, count: int) -> tuple[Schedule, ...]:
    """`schedules=` as one `Schedule` per plan row: one for all `count` rows, or a sequence of `count`."""
    if isinstance(schedules, Schedule):
        return (schedules,) * count
    if not isinstance(schedules, Sequence) or isinstance(schedules, (str, bytes)):
        raise TypeError(
            f"{owner}: schedules must be a Schedule (scheduler.schedule(...)) or a sequence of one per plan row, got "
            f"{checks.shown(schedules)}."
        )
    found = tuple(schedules)
    wrong = [checks.shown(item) for item in found if not isinstance(item, Schedule)]
    if wrong:
        raise TypeError(f"{owner}: schedules must hold Schedules (scheduler.schedule(...)), got {wrong[:3]}.")
    if len(found) != count:
        raise ValueError(
            f"{owner}: schedules holds {len(found)} schedules, but the plan has {count} rows; give one Schedule, or "
            "one per plan row."
        )
    return found


def _sender_schedules(plan: Plan, schedules: Any) -> tuple[Schedule, ...]:
    owner = "serialize.state_to_tensors"
    count = plan.num_steps.shape[0]
    given = None if schedules is None else _as_schedules(owner, schedules, count)
    own = plan.schedules
    if own is not None and len(own) != count:
        raise ValueError(f"{owner}: the plan has {count} rows but knows {len(own)} schedules; it was edited by hand.")
    if own is not None and any(schedule is None for schedule in own):
        raise ValueError(
            f"{owner}: the state's plan was made from tables edited in place (a drop-in's, after a pipeline wrote "
            "into scheduler.sigmas or timesteps), which no schedule argument gives, so no receiver can rebuild it."
        )
    if own is not None and given is not None and given != own:
        raise ValueError(
            f"{owner}: schedules= differs from the schedules the state's plan was made from ({own}); leave it out."
        )
    if own is None and given is None:
        raise ValueError(
            f"{owner}: the state's plan does not know its schedule (it went through torch.compile, a torch.func "
            "transform or a pytree round trip, which drop it), and the receiver rebuilds the plan from it: pass "
            "schedules=scheduler.schedule(num_inference_steps, timesteps=..., sigmas=..., mu=...) with the arguments "
            "init got (a sequence of one per plan row for stacked states)."
        )
    return own if own is not None else given  # type: ignore[return-value]


def _expected(scheduler: Scheduler) -> tuple[Layout, tuple[str, ...], tuple[str, ...], dict[str, torch.Tensor]]:
    """The scheduler's state layout, its counters (int64 [R] fields), its sample-like keys ([R, ...] floats) and its
    other per-row fields (`Scheduler._row_fields`, each as the template holds it), read off a template state built by
    the scheduler's own `_start`."""
    empty = Plan(
        timesteps=torch.zeros(1, 0),
        sigmas=torch.zeros(1, 1),
        num_steps=torch.zeros(1, dtype=torch.int64),
        coefficients=torch.zeros(1, 0, 1, 1),
    )
    counter = torch.zeros(1, dtype=torch.int64)
    template = scheduler._start(empty, torch.zeros(1), counter, counter, torch.zeros((), dtype=torch.int64), None)
    layout = _layout(template)
    counters, samples = [], []
    rows = {name: getattr(template, name) for name in scheduler._row_fields}
    for name, kind in layout.items():
        if kind in ("plan", _FINGERPRINT) or name in rows:
            continue
        if kind == "tensor":
            (counters if getattr(template, name).dtype == torch.int64 else samples).append(name)
        else:
            samples += [f"{name}.{index}" for index in range(kind)]
    return layout, tuple(counters), tuple(samples), rows


def _check_metadata(metadata: Any, scheduler: Scheduler, layout: Layout) -> int:
    """The metadata's format, version (returned), state class, step options and layout against `scheduler`."""
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
    return version


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
    if timesteps.dtype not in (torch.float32, torch.float64, torch.int64):
        raise _fail(owner, f"{plan}.timesteps is {timesteps.dtype}, not float32, float64 (DPM-SDE's) or int64")
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
    row_fields: Mapping[str, torch.Tensor],
) -> None:
    """Dtypes, shapes and ranges: counters int64 [R], sample-like fields one float dtype and shape [R, ...], other
    per-row fields as a fresh state holds them, the plan's tables consistent, every row's step within its schedule."""
    for name in counters:
        value = tensors[name]
        if value.dtype != torch.int64 or value.dim() != 1 or value.shape[0] < 1:
            raise _fail(owner, f"{name} is {value.dtype} {_shape(value)}, not int64 [rows]")
    rows = tensors["step_index"].shape[0]
    for name in counters:
        if tensors[name].shape[0] != rows:
            raise _fail(owner, f"{name} has {tensors[name].shape[0]} rows, step_index {rows}")
    devices = {str(tensor.device) for tensor in tensors.values()}
    if len(devices) > 1 or "meta" in devices:
        raise ValueError(f"{owner}: the tensors are on devices {sorted(devices)}; put them on one, with values.")
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
    for name, template in row_fields.items():
        value = tensors[name]
        # A float field of the plan's dtype (a fresh state's plan is float32) follows the payload's plan.
        follows = template.is_floating_point() and template.dtype == torch.float32
        dtype = tensors[f"{plan}.sigmas"].dtype if follows else template.dtype
        if value.dtype != dtype or value.dim() != template.dim() or value.shape[1:] != template.shape[1:]:
            raise _fail(
                owner, f"{name} is {value.dtype} {_shape(value)}, not {dtype} [{rows}, *{_shape(template)[1:]}]"
            )
        if value.shape[0] != rows:
            raise _fail(owner, f"{name} has {value.shape[0]} rows, step_index {rows}")
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


def _check_finite(owner: str, tensors: Mapping[str, torch.Tensor], keys: Sequence[str]) -> None:
    """No NaN or inf in any floating tensor: a step would carry it into every later sample."""
    for key in keys:
        value = tensors[key]
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            where = (~torch.isfinite(value)).nonzero()[0].tolist()
            raise _fail(owner, f"{key} holds NaN or inf (at index {where})")


def _payload_schedules(
    owner: str, scheduler: Scheduler, metadata: Mapping[str, Any], version: int, given: Any, count: int
) -> tuple[Schedule, ...]:
    """The schedule of each of the plan's `count` rows: the payload's (format 2), checked as `init` checks its
    arguments, and equal to `given` where the caller passes them; `given` for format 1, which carries none."""
    if version == 1:
        if given is None:
            raise ValueError(
                f"{owner}: a format 1 payload carries no schedule, so this worker cannot rebuild its plan to verify "
                "the one it is sent; pass schedules= (scheduler.schedule(...) with the arguments init got, one per "
                f"plan row for stacked states), or send it again from a functional-sched that writes format {VERSION}."
            )
        found = _as_schedules(owner, given, count)
    else:
        listed = metadata.get("schedules")
        if not isinstance(listed, list) or len(listed) != count:
            raise _fail(owner, f"its metadata's schedules are not a list of {count} (one per plan row)")
        try:
            found = tuple(Schedule.from_json(owner, value) for value in listed)
        except ArithmeticError as error:  # a number too large for a float
            raise _fail(owner, f"its metadata's schedules hold a number out of range ({error})") from error
        if given is not None and _as_schedules(owner, given, count) != found:
            raise ValueError(
                f"{owner}: schedules= differs from the schedules the payload carries ({found}); leave it out."
            )
    for schedule in found:
        scheduler._check_schedule(schedule)
    return found


def _own_plan(
    owner: str, scheduler: Scheduler, schedules: tuple[Schedule, ...], dtype: torch.dtype
) -> tuple[Plan, host.HostPlan | None]:
    """This worker's own plan of the schedules (CPU; per-row plans stacked and padded as `batching` stacks them),
    and the cached host plan where there is one schedule."""
    hosts: dict[Schedule, host.HostPlan] = {}
    for schedule in schedules:
        if schedule not in hosts:
            try:
                hosts[schedule] = scheduler._host_plan(schedule, dtype)
            except ArithmeticError as error:  # a schedule whose values overflow the config's math
                raise ValueError(f"{owner}: its schedule {schedule} cannot be planned: {error!r}.") from error
    if len(schedules) == 1:
        found = hosts[schedules[0]]
        return found.plan.replace(schedules=schedules), found
    return stack_plans([hosts[schedule].plan for schedule in schedules]).replace(schedules=schedules), None


def _compare(owner: str, tensors: Mapping[str, torch.Tensor], plan_name: str, own: Plan) -> None:
    """The payload's plan tables against this worker's own: timesteps and step counts equal, sigmas and
    coefficients within float rounding between hosts (`RTOL`, `ATOL`)."""
    for table, mine in zip(_PLAN_TABLES, tables(own), strict=True):
        sent = tensors[f"{plan_name}.{table}"].cpu()
        if sent.dtype != mine.dtype or sent.shape != mine.shape:
            raise ValueError(
                f"{owner}: {plan_name}.{table} is {sent.dtype} {_shape(sent)}, but this worker's plan of the payload's "
                f"schedules is {mine.dtype} {_shape(mine)}; the sender's config or functional-sched version builds "
                "another plan: load it with the sender's config and version."
            )
        close = sent == mine if table in ("timesteps", "num_steps") else torch.isclose(sent, mine, RTOL, ATOL)
        if not bool(close.all()):
            where = (~close).nonzero()[0].tolist()
            place = f"schedule row {where[0]}" + (f", step {where[1]}" if len(where) > 1 else "")
            raise ValueError(
                f"{owner}: {plan_name}.{table} differs from this worker's own plan of the payload's schedules at "
                f"{place} ({sent[tuple(where)].item()!r}, here {mine[tuple(where)].item()!r}), by more than float "
                "rounding between hosts: the payload was edited, or the sender's config or functional-sched version "
                "builds another plan; load it with the sender's config and version."
            )


def state_from_tensors(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any],
    scheduler: Scheduler,
    *,
    device: torch.device | str | None = None,
    schedules: Schedule | Sequence[Schedule] | None = None,
) -> Any:
    """The state that `state_to_tensors` took apart, checked against `scheduler` first, its tensors on `device`
    (default: where they are): copies, the new state's own, its plan this worker's own plan of the payload's
    schedules (see the module's docstring). `schedules` (one `Schedule`, or one per plan row) is required for a
    format 1 payload, which carries none; for format 2 it must equal the payload's, if given. A state whose rows all
    stand at one step of one schedule goes on with the eager fast path, as a state from `init` does (`host`).
    """
    owner = f"{scheduler.name}: state payload"
    if not isinstance(tensors, Mapping):
        raise TypeError(f"{owner}: tensors must be a mapping of key to tensor, got {type(tensors).__name__}.")
    layout, counters, samples, row_fields = _expected(scheduler)
    version = _check_metadata(metadata, scheduler, layout)
    keys = _keys(layout)
    _check_keys(owner, tensors, keys)
    _check_values(owner, tensors, layout, counters, samples, scheduler.plan_columns, row_fields)
    _check_finite(owner, tensors, keys)
    problem = scheduler._payload_problem(tensors)
    if problem is not None:
        raise _fail(owner, problem)
    plan_name = next(name for name, kind in layout.items() if kind == "plan")
    count = tensors[f"{plan_name}.num_steps"].shape[0]
    found = _payload_schedules(owner, scheduler, metadata, version, schedules, count)
    own, host_plan = _own_plan(owner, scheduler, found, tensors[f"{plan_name}.sigmas"].dtype)
    _compare(owner, tensors, plan_name, own)
    device = torch.empty(0, device=device or tensors["step_index"].device).device  # "cuda" -> "cuda:0"
    moved = {key: tensors[key].to(device, copy=True) for key in keys if not key.startswith(f"{plan_name}.")}
    values: dict[str, Any] = {"cursor": None}
    for name, kind in layout.items():
        if kind == "plan":
            values[name] = own  # the host's tables until the state gets its own copy (a request's, or a plain one)
        elif kind == _FINGERPRINT:
            values[name] = torch.tensor(scheduler.fingerprint, dtype=torch.int64, device=device)
        elif kind == "tensor":
            values[name] = moved[name]
        else:
            values[name] = tuple(moved[f"{name}.{index}"] for index in range(kind))
    state = scheduler.state_type(**values)
    resumed = None if host_plan is None or host.tracing() else _with_cursor(scheduler, state, host_plan)
    return resumed if resumed is not None else state.replace(**{plan_name: copied(own, device)})


def _with_cursor(scheduler: Scheduler, state: Any, host_plan: host.HostPlan) -> Any:
    """`state` with its counters and plan those of a request of `host_plan` (the receiver's cached plan of its one
    schedule) and a cursor, when its rows all stand at one step and warm-up level (one host read of two small
    counters); else None (it takes the device path)."""
    warmup = scheduler._warmup(state)
    steps = state.step_index.tolist()
    levels = warmup.tolist() if warmup is not None else [0]
    if len(set(steps)) != 1 or len(set(levels)) != 1:
        return None
    owned = host.Owned(host_plan, state.step_index)
    cursor = host.Cursor(owned, steps[0], levels[0])
    counters = {"step_index": owned.step(steps[0]), "plan": owned.plan, "fingerprint": owned.fingerprint}
    if warmup is not None:
        counters["lower_order_nums"] = owned.level(levels[0])
    return state.replace(**counters, cursor=cursor)
