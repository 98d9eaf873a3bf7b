"""Stacking requests into one state and splitting them back: many requests, one model call, one step call.

    state = batching.stack([state_a, state_b])          # rows of a, then rows of b
    sample, state = sched.step(state, model_output=out, sample=torch.cat([sample_a, sample_b]))
    state_a, state_b = batching.split(state, [rows_a, rows_b])

The states must come from one scheduler class with the same step options (equal fingerprints). Their per-row
fields (step counters, solver history, UniPC's last sample) are concatenated along rows; the plan is one schedule
when every state's host knows it holds the same one (their cursors' host plans are equal), else one schedule per
row, each schedule's per-step tables padded to the longest by repeating their last entry. Padded entries lie past
that row's `num_steps`, so stepping a finished row is still refused. `split` undoes `stack`: each piece gets its
rows and its rows of the plan, trimmed back to its longest `num_steps` (one schedule when its rows all hold one).
What `stack` and `split` return owns its tensors: no request's state shares a writable tensor with another's.
`pad` grows a state to a number of rows (a serving engine's batch-size bucket) with copies of its first row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import checks, host
from .plan import Plan, copied, tables
from .record import fields

__all__ = ["pad", "split", "stack"]

_SHARED = ("plan", "fingerprint")  # every other field of a state is per row
_COUNTERS = ("step_index", "lower_order_nums")  # per row, and what a request's own tables hold by value (`host.Owned`)


def _rows(state: Any) -> int:
    return state.step_index.shape[0]


def _check_state(state: Any, what: str) -> None:
    if not isinstance(getattr(state, "plan", None), Plan) or not isinstance(
        getattr(state, "step_index", None), torch.Tensor
    ):
        raise TypeError(f"{what}: expected a scheduler state (from init() or step()), got {type(state).__name__}.")


def _per_row_fields(state: Any) -> tuple[str, ...]:
    return tuple(name for name in fields(state) if name not in _SHARED)


def _pad_steps(table: torch.Tensor, size: int) -> torch.Tensor:
    """Dim 1 (steps) padded to `size` by repeating the last entry."""
    if table.shape[1] == size:
        return table
    tail = table[:, -1:].expand(table.shape[0], size - table.shape[1], *table.shape[2:])
    return torch.cat([table, tail], dim=1)


def _per_row_plan(plan: Plan, rows: int) -> Plan:
    """The plan with one schedule per row (a shared schedule repeated for each of `rows` rows)."""
    if plan.num_steps.shape[0] == rows:
        return plan
    return Plan(
        timesteps=plan.timesteps.expand(rows, -1),
        sigmas=plan.sigmas.expand(rows, -1),
        num_steps=plan.num_steps.expand(rows),
        coefficients=plan.coefficients.expand(rows, -1, -1, -1),
        schedules=None if plan.schedules is None else plan.schedules * rows,
    )


def _schedule(cursors: tuple[host.Cursor, ...] | None) -> Any:
    """The host plan that a state of one request copies, from its cursors (`_cursors`), or None (the host does not
    know, or the state holds several requests' rows)."""
    return cursors[0].owned.host if cursors is not None and len(cursors) == 1 else None


def _cursors(state: Any) -> tuple[host.Cursor, ...] | None:
    """The cursors of the requests whose rows `state` holds, where the host knows them (`host.cursors`)."""
    return host.cursors(state, getattr(state, "lower_order_nums", None))


def _one_schedule(states: Sequence[Any], known: Sequence[tuple[host.Cursor, ...] | None]) -> bool:
    """Whether every state holds one schedule's plan: compared on the host where the states' cursors (`known`) know
    their host plans (no device read), else table by table (one device read)."""
    first, first_schedule = states[0].plan, _schedule(known[0])
    if first.num_steps.shape[0] != 1:
        return False
    for state, cursors in zip(states[1:], known[1:], strict=True):
        if state.plan.num_steps.shape[0] != 1 or state.plan.coefficients.device != first.coefficients.device:
            return False
        schedule = _schedule(cursors)
        if schedule is not None and first_schedule is not None:
            same = _same_tables(schedule.plan, first_schedule.plan)
        else:
            same = _same_tables(state.plan, first)
        if not same:
            return False
    return True


def _same_tables(a: Plan, b: Plan) -> bool:
    return a is b or all(
        x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
        for x, y in zip(tables(a), tables(b), strict=True)
    )


def _fingerprint(state: Any, cursors: tuple[host.Cursor, ...] | None) -> int:
    return cursors[0].owned.host.fingerprint if cursors is not None else int(state.fingerprint)


def _stack_plans(states: Sequence[Any], rows: Sequence[int], known: Sequence[tuple[host.Cursor, ...] | None]) -> Plan:
    if _one_schedule(states, known):
        return copied(states[0].plan)
    plans = [state.plan for state in states]
    # Each schedule padded once, its requests' rows views of it: the states of one host plan hold equal tables (a
    # serving round of 16 requests and 4 step counts pads 4 tables, not 16).
    steps = max(plan.timesteps.shape[1] for plan in plans)
    levels = max(plan.coefficients.shape[2] for plan in plans)
    padded: dict[Any, Plan] = {}
    parts = []
    for cursors, plan, count in zip(known, plans, rows, strict=True):
        key = _schedule(cursors) or plan
        found = padded.get(key)
        if found is None:
            _check_layout(plans[0], plan)
            found = padded[key] = _padded_plan(plan, steps, levels)
        parts.append(_per_row_plan(found, count))
    return _concatenated(parts)


def _check_layout(first: Plan, plan: Plan) -> None:
    for name in ("timesteps", "sigmas", "coefficients"):
        a, b = getattr(first, name), getattr(plan, name)
        layout = 3 if name == "coefficients" else 2  # entries per step may differ (`_padded_plan`)
        if a.dtype != b.dtype or a.shape[layout:] != b.shape[layout:]:
            raise ValueError(
                f"batching.stack: the plans' {name} differ in dtype or layout ({a.dtype} {tuple(a.shape)} vs "
                f"{b.dtype} {tuple(b.shape)}); stack requests whose samples have one dtype."
            )


def _padded_plan(plan: Plan, steps: int, levels: int | None = None) -> Plan:
    """`plan` with its tables padded to `steps` steps (`_pad_steps`), and its entries per step to `levels` by repeating
    the last (a warm-up's levels are the same for every plan of a class; pi-Flow's substeps per step differ by
    schedule, and its last entry of a step is never active)."""
    coefficients = _pad_steps(plan.coefficients, steps)
    if levels is not None and coefficients.shape[2] < levels:
        tail = coefficients[:, :, -1:].expand(*coefficients.shape[:2], levels - coefficients.shape[2], -1)
        coefficients = torch.cat([coefficients, tail], dim=2)
    return plan.replace(
        timesteps=_pad_steps(plan.timesteps, steps),
        sigmas=_pad_steps(plan.sigmas, steps + 1),
        coefficients=coefficients,
    )


def stack_plans(plans: Sequence[Plan]) -> Plan:
    """Plans of one schedule per row, in order, as one: each schedule's tables padded to the longest by repeating
    their last entry (the schedules known where every plan knows its own)."""
    steps = max(plan.timesteps.shape[1] for plan in plans)
    levels = max(plan.coefficients.shape[2] for plan in plans)
    return _concatenated([_padded_plan(plan, steps, levels) for plan in plans])


def _concatenated(plans: Sequence[Plan]) -> Plan:
    """Plans of one length, their schedules one after another (one `cat` per table)."""
    known = all(plan.schedules is not None for plan in plans)
    return Plan(
        timesteps=torch.cat([plan.timesteps for plan in plans]),
        sigmas=torch.cat([plan.sigmas for plan in plans]),
        num_steps=torch.cat([plan.num_steps for plan in plans]),
        coefficients=torch.cat([plan.coefficients for plan in plans]),
        schedules=tuple(schedule for plan in plans for schedule in plan.schedules) if known else None,
    )


def _cat_rows(values: Sequence[Any], name: str) -> Any:
    first = values[0]
    if isinstance(first, tuple):
        if any(not isinstance(value, tuple) or len(value) != len(first) for value in values):
            raise ValueError(f"batching.stack: the states' {name} differ in length.")
        return tuple(_cat_rows(column, f"{name}[{index}]") for index, column in enumerate(zip(*values, strict=True)))
    for value in values[1:]:
        if value.dtype != first.dtype or value.shape[1:] != first.shape[1:] or value.device != first.device:
            raise ValueError(
                f"batching.stack: the states' {name} differ beyond their rows ({first.dtype} "
                f"{tuple(first.shape)} on {first.device} vs {value.dtype} {tuple(value.shape)} on {value.device}); "
                "stack requests whose samples have one shape, dtype and device."
            )
    return torch.cat(list(values))


def stack(states: Sequence[Any]) -> Any:
    """One state holding the rows of `states`, in order; see the module's docstring."""
    if isinstance(states, (str, bytes)) or not isinstance(states, Sequence):
        raise TypeError(f"batching.stack: states must be a list of scheduler states, got {checks.shown(states)}.")
    states = list(states)
    if not states:
        raise ValueError("batching.stack: no states to stack.")
    for state in states:
        _check_state(state, "batching.stack")
    kind = type(states[0])
    if any(type(state) is not kind for state in states):
        names = sorted({type(state).__name__ for state in states})
        raise TypeError(f"batching.stack: states of one scheduler class only, got {', '.join(names)}.")
    known = [_cursors(state) for state in states]
    if len({_fingerprint(state, cursors) for state, cursors in zip(states, known, strict=True)}) > 1:
        raise ValueError(
            f"batching.stack: these {kind.__name__}s were built by schedulers with different step options "
            "(different fingerprints); stack only states of one scheduler config."
        )
    if len(states) == 1:
        return states[0]
    rows = [_rows(state) for state in states]
    values: dict[str, Any] = {
        name: _cat_rows([getattr(state, name) for state in states], name) for name in _per_row_fields(states[0])
    }
    values["plan"] = _stack_plans(states, rows, known)
    values["fingerprint"] = states[0].fingerprint.clone()
    if all(cursors is not None for cursors in known):  # the host keeps knowing where each request stands
        parts = tuple(cursor for cursors in known for cursor in cursors)  # type: ignore[union-attr]
        warmup = values.get("lower_order_nums")
        values["cursor"] = host.Rows(parts, values["plan"], values["step_index"], warmup)
    return kind(**values)


def _slice_rows(value: Any, start: int, stop: int) -> Any:
    if isinstance(value, tuple):
        return tuple(_slice_rows(item, start, stop) for item in value)
    return value[start:stop]


def _split_plan(plan: Plan, start: int, stop: int) -> Plan:
    if plan.num_steps.shape[0] == 1:
        return copied(plan)
    num_steps = plan.num_steps[start:stop]
    timesteps, sigmas, coefficients = (table[start:stop] for table in (plan.timesteps, plan.sigmas, plan.coefficients))
    steps = int(num_steps.max())
    timesteps, sigmas, coefficients = timesteps[:, :steps], sigmas[:, : steps + 1], coefficients[:, :steps]
    schedules = None if plan.schedules is None else plan.schedules[start:stop]
    if stop - start > 1 and not (
        bool((num_steps == num_steps[0]).all())
        and torch.equal(timesteps, timesteps[:1].expand_as(timesteps))
        and torch.equal(sigmas, sigmas[:1].expand_as(sigmas))
        and torch.equal(coefficients, coefficients[:1].expand_as(coefficients))
        and (schedules is None or len(set(schedules)) == 1)
    ):
        return Plan(
            timesteps=timesteps, sigmas=sigmas, num_steps=num_steps, coefficients=coefficients, schedules=schedules
        )
    return Plan(
        timesteps=timesteps[:1],
        sigmas=sigmas[:1],
        num_steps=num_steps[:1],
        coefficients=coefficients[:1],
        schedules=None if schedules is None else schedules[:1],
    )


def split(state: Any, sizes: Sequence[int]) -> list[Any]:
    """The states of consecutive row groups of `state`, `sizes[i]` rows each (they must add up to its rows)."""
    _check_state(state, "batching.split")
    total = _rows(state)
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise TypeError(
            f"batching.split: sizes must be a sequence of row counts adding up to the state's {total} rows, got "
            f"{checks.shown(sizes)}."
        )
    sizes = [checks.as_integer(size) for size in sizes]
    if any(size is None or size < 1 for size in sizes) or sum(sizes) != total:
        raise ValueError(
            f"batching.split: sizes must be positive integers adding up to the state's {total} rows, got {sizes}."
        )
    kind = type(state)
    per_row = _per_row_fields(state)
    cursors = _cursors(state)
    if cursors is not None and tuple(sizes) == tuple(cursor.owned.rows for cursor in cursors):
        return _split_requests(state, cursors, per_row)
    pieces = []
    start = 0
    for size in sizes:
        stop = start + size
        values = {name: _slice_rows(getattr(state, name), start, stop) for name in per_row}
        values["plan"] = _split_plan(state.plan, start, stop)
        values["fingerprint"] = state.fingerprint.clone()
        pieces.append(kind(**values))
        start = stop
    return pieces


def _split_requests(state: Any, cursors: tuple[host.Cursor, ...], per_row: tuple[str, ...]) -> list[Any]:
    """`split` of a stacked state along the requests the host knows it holds: each gets its rows of the per-row
    fields, and back its own plan, fingerprint and counters (views of its own tables at its step and level, as its
    own step would give them), with its cursor. No table is copied and nothing is read from the device."""
    pieces, start = [], 0
    for cursor in cursors:
        owned = cursor.owned
        stop = start + owned.rows
        values = {name: _slice_rows(getattr(state, name), start, stop) for name in per_row if name not in _COUNTERS}
        values["step_index"] = owned.step(cursor.step)
        if "lower_order_nums" in per_row:
            values["lower_order_nums"] = owned.level(cursor.level)
        pieces.append(type(state)(**values, plan=owned.plan, fingerprint=owned.fingerprint, cursor=cursor))
        start = stop
    return pieces


def pad(state: Any, rows: int, steps: int | None = None) -> Any:
    """`state` grown to `rows` rows: its own, then copies of its first row (a batch padded to a captured size: the
    copies step as that row does and are dropped after). Its plan has one schedule per row, with its tables padded
    to `steps` steps if given (by repeating their last entry, past every row's `num_steps`: one layout for any mix
    of step counts up to it)."""
    _check_state(state, "batching.pad")
    total = _rows(state)
    rows = checks.integer("batching.pad", "rows", rows, total)
    longest = state.plan.timesteps.shape[1]
    steps = longest if steps is None else checks.integer("batching.pad", "steps", steps, longest)
    extra = rows - total

    def grown(value: Any) -> Any:
        if isinstance(value, tuple):
            return tuple(grown(item) for item in value)
        return value if extra == 0 else torch.cat([value, value[:1].expand(extra, *value.shape[1:])])

    plan = _per_row_plan(state.plan, total)
    values = {name: grown(getattr(state, name)) for name in _per_row_fields(state)}
    values["plan"] = Plan(
        timesteps=grown(_pad_steps(plan.timesteps, steps)),
        sigmas=grown(_pad_steps(plan.sigmas, steps + 1)),
        num_steps=grown(plan.num_steps),
        coefficients=grown(_pad_steps(plan.coefficients, steps)),
        schedules=None if plan.schedules is None else plan.schedules + plan.schedules[:1] * extra,
    )
    values["fingerprint"] = state.fingerprint.clone()
    return type(state)(**values)
