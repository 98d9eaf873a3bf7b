"""What an eager step can know on the host without reading the device.

States built by `init` and `step` carry their counters (step index, warm-up) as shared, uniform tensors from a
cache that remembers each one's value, and every device plan remembers the CPU plan it was copied from. An eager
step of such a state knows its step on the host: it multiplies by the plan's 0-d CPU scalars, as diffusers does
(no lookup kernel, no increment kernel), and checks its range without a device sync. Any other state (rows
stacked from several requests, one rebuilt by hand) takes the device path, which is also what compiled steps run.

The zeros a multistep solver's history starts from are shared the same way (`zeros`). Shared tensors are never
written (states are immutable); one written in place anyway (its `_version` moves) is simply no longer trusted or
handed out.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Iterator

import torch

_MAX_COUNTERS = 1 << 16
_COUNTERS: dict[tuple[str, int, int, str], torch.Tensor] = {}
_VALUES: dict[int, tuple[torch.Tensor, int, int]] = {}  # id -> (tensor, value, its _version when made)
_MAX_ZEROS = 64
_ZEROS: dict[tuple[str, tuple[int, ...], torch.dtype, str], tuple[torch.Tensor, int]] = {}  # -> (it, its _version)
_HOST_TABLES: dict[int, torch.Tensor] = {}  # id of a device plan's coefficients -> the CPU plan's
_ENTRIES: dict[int, dict[tuple[int, int], tuple[torch.Tensor, ...]]] = {}  # per host table: 0-d scalars by entry
_CASTS: dict[int, dict[torch.dtype, torch.Tensor]] = {}  # id of an entry scalar -> its casts to other dtypes


_CAPTURING: contextvars.ContextVar[bool] = contextvars.ContextVar("functional_sched_capturing", default=False)


def tracing() -> bool:
    """Whether the code runs under `torch.compile` or inside `capturing()`: then no host reads (a capture cannot
    sync), no 0-d host scalars (a graph would bake them in) and no new shared tensors (they would live in the
    graph's private memory pool). A context variable, not a CUDA query: eager steps ask several times a step."""
    return torch.compiler.is_compiling() or _CAPTURING.get()


@contextlib.contextmanager
def capturing() -> Iterator[None]:
    """Mark a CUDA graph capture of steps (`SamplingLoop` does; wrap your own `torch.cuda.graph` block of eager
    steps in it): states and steps inside then keep to the device, as compiled steps do."""
    token = _CAPTURING.set(True)
    try:
        yield
    finally:
        _CAPTURING.reset(token)


def counter(role: str, value: int, rows: int, device: torch.device) -> torch.Tensor:
    """A [rows] int64 tensor filled with `value`, shared by every state that needs one, its value remembered.

    `role` names the state field: two fields never share a tensor (compiled steps guard on which inputs alias).
    """
    if tracing():  # a graph capture: a plain device tensor, neither cached nor remembered
        return torch.full((rows,), value, dtype=torch.int64, device=device)
    key = (role, value, rows, str(device))
    tensor = _COUNTERS.get(key)
    if tensor is None or tensor._version != _VALUES[id(tensor)][2]:  # new, or written in place by someone
        tensor = torch.full((rows,), value, dtype=torch.int64, device=device)
        if len(_COUNTERS) < _MAX_COUNTERS:
            _COUNTERS[key] = tensor
            _VALUES[id(tensor)] = (tensor, value, tensor._version)
    return tensor


def zeros(role: str, like: torch.Tensor) -> torch.Tensor:
    """Zeros like a contiguous `like`, shared by every fresh state that starts from them (a multistep solver's empty
    history): `init` then allocates and clears nothing. `role` names the state field (one tensor per field, as
    compiled steps guard on which inputs alias). Anything else (a capture, strided samples) gets fresh zeros."""
    if tracing() or not like.is_contiguous():
        return torch.zeros_like(like)
    key = (role, tuple(like.shape), like.dtype, str(like.device))
    entry = _ZEROS.get(key)
    if entry is not None and entry[0]._version == entry[1]:
        return entry[0]
    tensor = torch.zeros_like(like)
    if len(_ZEROS) < _MAX_ZEROS or entry is not None:
        _ZEROS[key] = (tensor, tensor._version)
    return tensor


def read(tensor: torch.Tensor) -> int | None:
    """A counter's value when all its rows agree and it is known (or on the CPU, where reading is free)."""
    entry = _VALUES.get(id(tensor))
    if entry is not None and entry[0] is tensor and tensor._version == entry[2]:
        return entry[1]
    if tensor.is_cpu and tensor.numel():
        values = tensor.tolist()
        if values.count(values[0]) == len(values):
            return values[0]
    return None


def remember_host_table(device_table: torch.Tensor, host_table: torch.Tensor) -> None:
    """Record the CPU original of a plan table moved to a device (forgotten when the device copy is freed)."""
    if device_table is not host_table:
        _HOST_TABLES[id(device_table)] = host_table
        weakref.finalize(device_table, _HOST_TABLES.pop, id(device_table), None)


def host_table(table: torch.Tensor) -> torch.Tensor | None:
    return table if table.is_cpu else _HOST_TABLES.get(id(table))


def entry_scalars(table: torch.Tensor, step: int, level: int) -> tuple[torch.Tensor, ...]:
    """The 0-d CPU coefficients of a host table's (step, warm-up) entry, made once per table and entry.

    They are copies, not views, so a table that is dropped is freed, and its entries with it.
    """
    entries = _ENTRIES.get(id(table))
    if entries is None:
        entries = _ENTRIES[id(table)] = {}
        weakref.finalize(table, _forget_entries, id(table))
    entry = entries.get((step, level))
    if entry is None:
        entry = entries[(step, level)] = table[0, step, level].clone().unbind(0)
        for scalar in entry:
            _CASTS[id(scalar)] = {}
    return entry


def cast(scalar: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`scalar.to(dtype)`, made once per entry scalar and dtype (a bf16 step scales by bf16 coefficients, and each
    cast of a 0-d CPU tensor is a dispatch an eager step would pay every time)."""
    casts = _CASTS.get(id(scalar))
    if casts is None:
        return scalar.to(dtype)
    converted = casts.get(dtype)
    if converted is None:
        converted = casts[dtype] = scalar.to(dtype)
    return converted


def _forget_entries(table_id: int) -> None:
    for entry in _ENTRIES.pop(table_id, {}).values():
        for scalar in entry:
            _CASTS.pop(id(scalar), None)
