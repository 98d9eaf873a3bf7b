"""The eager fast path, and what each request owns.

A schedule's plan is computed once on the host (`HostPlan`): its CPU tables, and each (step, warm-up) entry's
coefficients as 0-d CPU scalars, what diffusers multiplies by. Host plans live in a process-wide cache of host
objects only: nothing in it is a device tensor or reachable by a caller (states hold copies), it is bounded in bytes,
safe under threads, built outside any active mode or transform, and emptied by `functional_sched.clear_caches()`.

`init` gives each request its own copy of the plan on its device and its own counter tables (`Owned`); the state's
step index and warm-up level are views of those tables by value, so an eager step allocates no counter. A state
from `init` or `step` also carries a `Cursor` (the host plan, its step and level) in a field that is no pytree
leaf: an eager step reads its coefficients and checks its range from the cursor, with no device read. Flattening
drops the cursor, so states that went through `torch.func`, `torch.compile`, export, stacking or serialisation take
the device path (one gather per step), which is also what compiled code runs.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import _disable_current_modes

from . import plan as plans  # (plan.py imports this module: attributes are read at call time)

#: What the host-plan cache may hold, in bytes: each plan's tables, its scalars and their casts (`SCALAR_BYTES` each)
#: and its templates, as they are made (a 50-step UniPC plan stepped through in float32 and bf16: about 1.7 MB).
MAX_HOST_PLAN_BYTES = 64 << 20
_CAST_CACHE = "_functional_sched_casts"  # a host scalar's casts to other dtypes, kept on the scalar itself

_CAPTURING: contextvars.ContextVar[bool] = contextvars.ContextVar("functional_sched_capturing", default=False)


def tracing() -> bool:
    """Whether steps must keep to the device: under `torch.compile`, inside `capturing()`, under a `torch.func`
    transform, or under a dispatch mode (FakeTensorMode, export's tracing). Then no host reads (a capture cannot
    sync, a fake tensor has no values), no 0-d host scalars (a graph would bake them in). A few cheap C calls, not
    a CUDA query: eager steps ask several times a step."""
    return (
        torch.compiler.is_compiling()  # first: under dynamo nothing after it is traced
        or _CAPTURING.get()
        or torch._C._functorch.peek_interpreter_stack() is not None
        or torch._C._len_torch_dispatch_stack() > 0
    )


@contextlib.contextmanager
def capturing() -> Iterator[None]:
    """Mark a CUDA graph capture of steps (`SamplingLoop` does; wrap your own `torch.cuda.graph` block of eager
    steps in it): states and steps inside then keep to the device, as compiled steps do."""
    token = _CAPTURING.set(True)
    try:
        yield
    finally:
        _CAPTURING.reset(token)


@contextlib.contextmanager
def plain() -> Iterator[None]:
    """Outside every mode and transform the caller may be in (inference mode, no_grad, torch.func, FakeTensorMode,
    export): what the host-plan cache holds must be plain CPU tensors whatever the request that built it ran under."""
    with torch.inference_mode(False), torch.no_grad(), torch._C._DisableFuncTorch(), _disable_current_modes():
        yield


# ------------------------------------------------------------------------------------------------ host plans
class HostPlan:
    """One schedule's plan on the host: its CPU tables, and each entry's coefficients as 0-d CPU scalars (made once
    per entry, with their casts cached on them). Shared by every request of the schedule, never handed to one.
    `nbytes` counts what it holds as it grows (tables, scalars, casts, templates), charged to the cache holding it."""

    __slots__ = ("__weakref__", "_cache", "_entries", "_key", "_owned", "fingerprint", "nbytes", "plan", "schedule")

    def __init__(self, plan: plans.Plan, fingerprint: int, schedule: Any) -> None:
        self.plan = plan
        self.fingerprint = fingerprint
        self.schedule = schedule  # the `Schedule` it was made from
        self.nbytes = sum(table.numel() * table.element_size() for table in plans.tables(plan))
        self._cache: _Cache | None = None  # the cache holding it, which its growth is charged to
        self._key: Hashable = None
        self._entries: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {}
        self._owned: collections.OrderedDict[int, Any] = collections.OrderedDict()  # rows -> a request's template

    @property
    def steps(self) -> int:
        return self.plan.timesteps.shape[1]

    def entry(self, step: int, level: int) -> tuple[torch.Tensor, ...]:
        """The 0-d CPU coefficients of (step, warm-up level). Copies, not views: each can carry its casts."""
        found = self._entries.get((step, level))
        if found is None:
            with plain():
                found = self.plan.coefficients[0, step, level].clone().unbind(0)
            for scalar in found:
                setattr(scalar, _CAST_CACHE, _Casts(self))
            self._entries[(step, level)] = found  # a race computes it twice, harmlessly
            self.grew(len(found) * SCALAR_BYTES)
        return found

    def template(self, rows: int) -> tuple[torch.Tensor, list[Any], dict[str, Any]]:
        """What `Owned` copies for a request of `rows` rows (`_template`), kept for the last few row counts."""
        found = self._owned.get(rows)
        if found is None:
            with plain():
                found = self._owned[rows] = _template(self.plan, rows, self.fingerprint)
            grown = found[0].numel()
            while len(self._owned) > _TEMPLATES:
                grown -= self._owned.popitem(last=False)[1][0].numel()
            self.grew(grown)
        return found

    def grew(self, nbytes: int) -> None:
        """It holds `nbytes` more (a new entry, cast or template): counted, and charged to its cache if any."""
        cache = self._cache
        if cache is None:
            self.nbytes += nbytes
        else:
            cache.charge(self, nbytes)


#: What one 0-d host scalar costs beyond its few bytes of data, as the cache counts it: measured on CPython 3.11 and
#: torch 2.13, about 650 bytes of tensor and Python object, and 400 for the dict of casts it carries.
SCALAR_BYTES = 1024


class _Casts(dict):
    """A host scalar's casts by dtype, and (weakly: no cycle keeps a dropped plan's memory) the plan they count to."""

    __slots__ = ("plan",)

    def __init__(self, plan: HostPlan) -> None:
        super().__init__()
        self.plan = weakref.ref(plan)


def cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`tensor.to(dtype)`, made once per host-plan scalar and dtype (a bf16 step on CUDA scales by bf16 scalars,
    and each cast of a 0-d CPU tensor is a dispatch an eager step would pay every time)."""
    casts = getattr(tensor, _CAST_CACHE, None)
    if casts is None or tracing():
        return tensor.to(dtype)
    converted = casts.get(dtype)
    if converted is None:
        with plain():
            converted = casts[dtype] = tensor.to(dtype)
        plan = casts.plan()
        if plan is not None:
            plan.grew(SCALAR_BYTES)
    return converted


def value(scalar: torch.Tensor) -> float:
    """A host-plan scalar's Python float, read once (a foreach kernel takes its scalars as numbers)."""
    casts = getattr(scalar, _CAST_CACHE, None)
    if casts is None:
        return scalar.item()
    found = casts.get(float)
    if found is None:
        found = casts[float] = scalar.item()
    return found


class _Cache:
    """The host plans by key, least recently used first; bounded in bytes; a lock around every change."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._plans: collections.OrderedDict[Hashable, HostPlan] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], HostPlan]) -> HostPlan:
        with self._lock:
            found = self._plans.get(key)
            if found is not None:
                self._plans.move_to_end(key)
                return found
        with plain():
            made = build()  # outside the lock: builds may take a while; a race builds twice
        with self._lock:
            found = self._plans.setdefault(key, made)
            if found is made:
                made._cache, made._key = self, key
                self._bytes += made.nbytes
                self._evict()
            return found

    def charge(self, plan: HostPlan, nbytes: int) -> None:
        """`plan` grew by `nbytes` (an entry, a cast, a template): counted if the cache still holds it."""
        with self._lock:
            plan.nbytes += nbytes
            if self._plans.get(plan._key) is plan:
                self._bytes += nbytes
                self._evict()

    def _evict(self) -> None:
        """Least recently used first, down to the limit: a plan larger than it alone is not kept (its requests still
        hold it while they live)."""
        while self._bytes > self.limit and self._plans:
            _, dropped = self._plans.popitem(last=False)
            self._bytes -= dropped.nbytes
            dropped._cache = None

    def clear(self) -> None:
        with self._lock:
            for plan in self._plans.values():
                plan._cache = None
            self._plans.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._plans)


HOST_PLANS = _Cache(MAX_HOST_PLAN_BYTES)


def clear_caches() -> None:
    """Empty every process-wide cache of the library: the host plans (each request's tensors are its own, so this
    changes no state, only the time the next `init` of a schedule takes) and the Brownian trees of the SDE samplers'
    noise (`brownian.TREES`: the noise they give is the same rebuilt). Nothing else lives in them."""
    from . import brownian  # (brownian imports checks, which imports this module)

    HOST_PLANS.clear()
    brownian.TREES.clear()


# ------------------------------------------------------------------------------------------------ what a request owns
class Owned:
    """A request's own tensors on its device: its copy of the plan, its fingerprint, and per-row tables that its
    states and queries view into (`step(k)`, `level(w)`: [rows] int64 holding k and w; `timestep(k)`: [rows], step
    k's timestep), all in one buffer made by one copy from a host template (pinned, and copied without a sync, where
    CUDA is). Shared by the states of one request, never by two requests."""

    __slots__ = ("_level_views", "_step_views", "_tables", "_timestep_views", "device", "fingerprint", "host", "plan")
    __slots__ += ("rows",)

    def __init__(self, host: HostPlan, like: torch.Tensor) -> None:
        rows = like.shape[0]
        buffer, layout, per_row = host.template(rows)
        copy = _copy_to(buffer, like)
        # One reinterpretation of the copy per dtype, then a strided view per table: the cheapest way to unpack
        # (slicing then viewing each table is three ops, and this runs once per request).
        as_dtype = {dtype: copy.view(dtype) for dtype in {entry[0] for entry in (*layout, *per_row.values())}}
        timesteps, sigmas, num_steps, coefficients, fingerprint = (
            as_dtype[dtype].as_strided(shape, strides, offset) for dtype, shape, strides, offset in layout
        )
        self.host = host
        self.plan = plans.Plan(
            timesteps=timesteps,
            sigmas=sigmas,
            num_steps=num_steps,
            coefficients=coefficients,
            schedules=(host.schedule,),
        )
        self.fingerprint = fingerprint
        self.rows, self.device = rows, copy.device  # what every step checks its inputs against
        self._tables = {name: (as_dtype[dtype], at) for name, (dtype, at) in per_row.items()}
        self._step_views: list[torch.Tensor | None] = [None] * (host.steps + 1)
        self._level_views: list[torch.Tensor | None] = [None] * host.plan.coefficients.shape[2]
        self._timestep_views: list[torch.Tensor | None] = [None] * host.steps

    def step(self, value: int) -> torch.Tensor:
        """[rows] int64, every row `value`: a view of this request's step table."""
        view = self._step_views[value]
        return view if view is not None else self._view("steps", self._step_views, value)

    def level(self, value: int) -> torch.Tensor:
        """[rows] int64, every row `value`: a view of this request's warm-up table."""
        view = self._level_views[value]
        return view if view is not None else self._view("levels", self._level_views, value)

    def timestep(self, step: int) -> torch.Tensor:
        """[rows]: the timestep of `step` on every row, a view of this request's per-row timestep table."""
        view = self._timestep_views[step]
        return view if view is not None else self._view("timesteps", self._timestep_views, step)

    def _view(self, table: str, views: list[torch.Tensor | None], index: int) -> torch.Tensor:
        """Row `index` of a per-row table: the first asked alone (what `init` needs), then all the others at once
        (one `unbind` costs half as much per view as a view each, and a loop takes every one)."""
        flat, at = self._tables[table]
        rows = self.rows
        if all(view is None for view in views):
            views[index] = flat.as_strided((rows,), (1,), at + index * rows)
        else:
            for position, view in enumerate(flat.as_strided((len(views), rows), (rows, 1), at).unbind(0)):
                if views[position] is None:
                    views[position] = view
        return views[index]  # type: ignore[return-value]


_TEMPLATES = 4  # row counts whose templates a host plan keeps
_ALIGN = 8  # bytes: every table starts where its dtype may be viewed


def _copy_to(buffer: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The host `buffer`, copied to `like`'s device; as a fake tensor where `like` is one or a FakeTensorMode runs
    (shape inference, export), which cannot take real tensors."""
    if torch._C._len_torch_dispatch_stack() > 0 or isinstance(like, torch._subclasses.FakeTensor):
        fake_mode = torch._guards.detect_fake_mode([like])
        if fake_mode is not None:
            return fake_mode.from_tensor(buffer).to(like.device)
    # Without a sync where the target is a GPU: the template is pinned there (`_template`), never written again, and
    # the pinned allocator keeps it until the copy is done even if the template is dropped.
    return buffer.to(like.device, copy=True, non_blocking=not like.is_cpu)


def _template(plan: plans.Plan, rows: int, fingerprint: int) -> tuple[torch.Tensor, list[Any], dict[str, Any]]:
    """A request's tensors packed into one host byte buffer (pinned where CUDA is); where the plan tables and the
    fingerprint lie, (dtype, shape, contiguous strides, offset in elements of its dtype) in the order `Owned` unpacks
    them; and where each per-row table starts, (dtype, offset): the timesteps [steps, rows], the step indices
    [steps + 1, rows] and the warm-up levels [levels, rows]."""
    steps, levels = plan.timesteps.shape[1], plan.coefficients.shape[2]
    per_row = {
        "timesteps": plan.timesteps[0][:, None].expand(steps, rows),
        "steps": torch.arange(steps + 1)[:, None].expand(steps + 1, rows),
        "levels": torch.arange(levels)[:, None].expand(levels, rows),
    }
    parts = (
        plan.timesteps,
        plan.sigmas,
        plan.num_steps,
        plan.coefficients,
        torch.tensor(fingerprint, dtype=torch.int64),
        *per_row.values(),
    )
    layout, pieces, size = [], [], 0
    for table in parts:
        table = table.contiguous()
        raw = table.reshape(-1).view(torch.uint8)
        padding = -raw.numel() % _ALIGN
        layout.append((table.dtype, tuple(table.shape), table.stride(), size // table.element_size()))
        pieces += [raw, torch.zeros(padding, dtype=torch.uint8)]
        size += raw.numel() + padding
    buffer = torch.cat(pieces)  # its length a multiple of _ALIGN, so it views as any dtype the tables have
    tables, rows_tables = layout[: -len(per_row)], layout[-len(per_row) :]
    starts = {name: (dtype, offset) for name, (dtype, _, _, offset) in zip(per_row, rows_tables, strict=True)}
    return (buffer.pin_memory() if torch.cuda.is_available() else buffer), tables, starts


class Cursor:
    """Where a state built by `init` or `step` stands, known on the host: its request's tensors, its step and
    warm-up level (the value its step index and warm-up counter hold on every row)."""

    __slots__ = ("level", "owned", "step")

    def __init__(self, owned: Owned, step: int, level: int) -> None:
        self.owned, self.step, self.level = owned, step, level

    def __repr__(self) -> str:
        return f"Cursor(step={self.step}, level={self.level})"

    def describes(self, plan: Any, step_index: torch.Tensor, warmup: torch.Tensor | None) -> bool:
        """Whether a state of this `plan`, step index and warm-up counter is the one the cursor speaks for (a state
        rebuilt with `replace` keeps a cursor that no longer does): the request's own tensors, by identity."""
        owned = self.owned
        return (
            plan is owned.plan
            and step_index is owned.step(self.step)
            and (warmup is None or warmup is owned.level(self.level))
        )


class Rows:
    """Where the rows of a stacked state stand, known on the host: the cursors of the requests it holds, in row order
    (`parts`), and the tensors of the state it speaks for (its plan, step index and warm-up counter, by identity).
    `batching.stack` makes it from the states' cursors, an eager step advances it, and `batching.split` gives each
    request back its own plan and counters with it: a serving loop steps many requests with no device read."""

    __slots__ = ("parts", "plan", "step_index", "warmup")

    def __init__(self, parts: tuple[Cursor, ...], plan: Any, step_index: torch.Tensor, warmup: Any) -> None:
        self.parts, self.plan, self.step_index, self.warmup = parts, plan, step_index, warmup

    def __repr__(self) -> str:
        return f"Rows({', '.join(f'{part.step}x{part.owned.rows}' for part in self.parts)})"

    def describes(self, plan: Any, step_index: torch.Tensor, warmup: torch.Tensor | None) -> bool:
        return plan is self.plan and step_index is self.step_index and warmup is self.warmup

    @property
    def fingerprint(self) -> int:
        """The step options the requests' plans were made for (`stack` refuses states of different ones)."""
        return self.parts[0].owned.host.fingerprint

    def finished(self) -> bool:
        """Whether a row has taken every step of its schedule."""
        return any(part.step >= part.owned.host.steps for part in self.parts)

    def advanced(self, step_index: torch.Tensor, warmup: torch.Tensor | None, last_level: int) -> Rows:
        """The rows after one step each, describing the stepped state's new counters."""
        parts = tuple(Cursor(part.owned, part.step + 1, min(part.level + 1, last_level)) for part in self.parts)
        return Rows(parts, self.plan, step_index, warmup)


def cursors(state: Any, warmup: torch.Tensor | None) -> tuple[Cursor, ...] | None:
    """The cursors the host holds for `state`'s rows, in order (its own, or its stacked requests'), if they still
    speak for it; else None. Never while tracing: compiled and transformed code takes the device path."""
    if tracing():  # first: compiled code never reads a host field
        return None
    known = state.cursor
    if known is None or not known.describes(state.plan, state.step_index, warmup):
        return None
    return (known,) if isinstance(known, Cursor) else known.parts
