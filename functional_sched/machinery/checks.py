"""Eager-mode checks of what a step is given; skipped while compiling, where they would break the graph.

Each error says what was wrong and what to do instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import zlib
from collections.abc import Iterator
from typing import Any

import torch

from . import host


def fingerprint(owner: str, behaviour: tuple[Any, ...]) -> int:
    """A stable id of the options a step branches on; states remember the one they were built for."""
    return zlib.crc32(repr((owner, behaviour)).encode())


def _number_tensor(value: Any) -> bool:
    """A 0-d real tensor with a value to read (not meta, not bool)."""
    return (
        isinstance(value, torch.Tensor)
        and value.dim() == 0
        and value.dtype != torch.bool
        and not value.is_complex()
        and value.device.type != "meta"
    )


def as_integer(value: Any) -> int | None:
    """`value` as a Python int if it is an integer as diffusers takes one (a Python or numpy integer, a 0-d integer
    tensor; not a bool, not a float), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if _number_tensor(value) and not value.is_floating_point():
        return int(value)
    return None


def as_real(value: Any) -> float | None:
    """`value` as a Python float if it is a real number (a Python or numpy number, a 0-d real tensor; not a bool),
    else None. NaN and infinities come back as they are: the caller decides."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real) or _number_tensor(value):
        try:
            return float(value)
        except OverflowError:  # an int beyond float's range
            return math.inf if value > 0 else -math.inf
    return None


def integer(owner: str, name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as an int in [minimum, maximum], or a TypeError/ValueError naming `name` and what it takes."""
    result = as_integer(value)
    if result is None:
        raise TypeError(f"{owner}: {name} must be an integer, got {shown(value)}.")
    if (minimum is not None and result < minimum) or (maximum is not None and result > maximum):
        low = "" if minimum is None else f">= {minimum}"
        high = "" if maximum is None else f"<= {maximum}"
        raise ValueError(f"{owner}: {name} must be {' and '.join(filter(None, (low, high)))}, got {result}.")
    return result


def real(owner: str, name: str, value: Any) -> float:
    """`value` as a finite float, or a TypeError/ValueError naming `name`."""
    result = as_real(value)
    if result is None:
        raise TypeError(f"{owner}: {name} must be a number, got {shown(value)}.")
    if not math.isfinite(result):
        raise ValueError(f"{owner}: {name} must be finite, got {result!r}.")
    return result


def tensor(owner: str, name: str, value: Any, *, floating: bool = True) -> torch.Tensor:
    """`value` if it is a tensor (a floating-point one with `floating`), else a TypeError naming `name`."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor, got {shown(value)}.")
    if floating and not value.is_floating_point():
        raise TypeError(f"{owner}: {name} must be a floating-point tensor, got {value.dtype}.")
    return value


def device(owner: str, name: str, value: Any) -> torch.device:
    """`value` (a torch.device, or a string or index naming one) as a torch.device, or an error naming `name`."""
    if isinstance(value, torch.device):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"{owner}: {name} must be a torch.device or a string such as 'cuda:0', got {shown(value)}.")
    try:
        return torch.device(value)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"{owner}: {name}={value!r} is not a device ({error}).") from None


def shown(value: Any) -> str:
    """A value as an error message shows it: its repr if short, else its type."""
    text = repr(value)
    return f"{text} ({type(value).__name__})" if len(text) <= 60 else f"a {type(value).__name__}"


_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("functional_sched_checks", default=True)


def checking(*, eager: bool = False) -> bool:
    """Whether to check inputs now: in eager mode, outside `unchecked()`. (Under compile or a CUDA graph capture:
    never, and the context variable is not even read, so it costs the graph nothing.) `eager`: the caller knows it
    is not tracing (a step holding its state's cursor), which spares asking again."""
    return (eager or not host.tracing()) and _ENABLED.get()


@contextlib.contextmanager
def unchecked() -> Iterator[None]:
    """Skip the eager input checks of `step`, `timestep` and `add_noise` inside the block (this thread or task).

    They cost a few microseconds per step, and for a state the host cannot read for free (rows stacked from several
    requests, on CUDA) a device sync; a loop known to be right can drop them. Compiled steps never check. Without
    the checks a finished row still fails loudly for a single schedule (states from `init`/`step`, or any state on
    the CPU); a state of stacked, padded schedules stepped past a row's end is not checked.
    """
    token = _ENABLED.set(False)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def check_state(
    owner: str,
    state: Any,
    state_type: type,
    fingerprint: int,
    cursor: host.Cursor | None,
    rows: host.Rows | None = None,
) -> None:
    """The state's type, the step options it was built for, and that no row is past its last step.

    A state with a cursor (from `init`/`step`) is checked on the host, with no device read: its cursor knows the
    step options its plan was made for, and a finished row fails the coefficient lookup, which reports it clearly.
    A stacked state whose `rows` the host knows is checked on the host too. Any other state (deserialised,
    transformed) has its fingerprint and, for stacked schedules, its step index read back here.
    """
    if not isinstance(state, state_type):
        raise TypeError(
            f"{owner} got a {type(state).__name__}, not a {state_type.__name__}: "
            f"pass the state returned by this scheduler's init() or step()."
        )
    if cursor is not None:
        found = cursor.owned.host.fingerprint
    else:
        found = rows.fingerprint if rows is not None else int(state.fingerprint)
    if found != fingerprint:
        raise ValueError(
            f"{owner}: this state was built by a {owner} with different step options "
            f"(fingerprint {found}, this scheduler's is {fingerprint}); "
            "step a state with the scheduler object (or an equal config) that created it."
        )
    if rows is not None:
        if rows.finished():
            raise_finished(owner, state)
        return
    num_steps = state.plan.num_steps
    if num_steps.shape[0] == 1 and (cursor is not None or state.step_index.is_cpu):
        return  # one schedule: an index past its end fails the lookup, and that failure is reported clearly
    if bool((state.step_index >= (num_steps[0] if num_steps.shape[0] == 1 else num_steps)).any()):
        raise_finished(owner, state)


def raise_finished(owner: str, state: Any) -> None:
    num_steps = state.plan.num_steps
    finished = state.step_index >= (num_steps[0] if num_steps.shape[0] == 1 else num_steps)
    rows = finished.nonzero().flatten().tolist()
    total = int(num_steps[0] if num_steps.shape[0] == 1 else num_steps[rows[0]])
    raise IndexError(
        f"{owner}: row(s) {rows} already took all {total} steps of their schedule; "
        "stop the loop when sched.steps_left(state) is 0, or init a new state."
    )


def check_rows(owner: str, what: str, value: torch.Tensor, rows: int, device: torch.device) -> None:
    """`value` is a floating-point tensor of the state's `rows` rows, on its device."""
    tensor(owner, what, value)
    if value.dim() == 0 or value.shape[0] != rows:
        raise ValueError(
            f"{owner}: {what} has shape {tuple(value.shape)}, but the state has {rows} rows (leading dim); "
            "init the state with a sample of the same batch size."
        )
    if value.device != device:
        raise ValueError(
            f"{owner}: {what} is on {value.device}, but the state is on {device}; "
            "move the tensor, or init the state with a sample on that device."
        )


def check_step_inputs(
    owner: str,
    sample: torch.Tensor,
    model_output: torch.Tensor,
    rows: int,
    device: torch.device,
    output_like_sample: bool = True,
) -> None:
    """A step's sample and model output: floating-point tensors with the state's rows, on its device, the model
    output shaped like the sample unless the scheduler says otherwise. The common case is one expression (every
    eager step pays for it); the detailed checks then name what is wrong."""
    if (
        isinstance(sample, torch.Tensor)
        and isinstance(model_output, torch.Tensor)
        and sample.is_floating_point()
        and model_output.is_floating_point()
        and sample.dim()
        and sample.shape[0] == rows
        and (model_output.shape == sample.shape if output_like_sample else model_output.shape[:1] == sample.shape[:1])
        and sample.device == device
        and model_output.device == device
    ):
        return
    check_rows(owner, "sample", sample, rows, device)
    check_rows(owner, "model_output", model_output, rows, device)
    if output_like_sample:
        check_like(owner, "model_output", model_output, sample, "sample")


def check_like(owner: str, what: str, value: torch.Tensor, like: torch.Tensor, like_name: str) -> None:
    """`value` is a floating-point tensor shaped like `like`, on its device."""
    tensor(owner, what, value)
    if value.shape != like.shape:
        raise ValueError(
            f"{owner}: {what} has shape {tuple(value.shape)}, but {like_name} has {tuple(like.shape)}; they must match."
        )
    if value.device != like.device:
        raise ValueError(f"{owner}: {what} is on {value.device}, but {like_name} on {like.device}; move it there.")


def check_noise(owner: str, reason: str, noise: torch.Tensor | None, sample: torch.Tensor) -> None:
    """A stochastic step's noise: present (`reason` says why it is needed) and shaped like the sample."""
    if noise is None:
        raise ValueError(
            f"{owner}: {reason} needs noise=...: draw it with "
            "functional_sched.randn_tensor(sample.shape, generator=..., dtype=torch.float32) as diffusers does."
        )
    check_like(owner, "noise", noise, sample, "sample")


def check_sample_matches_state(owner: str, sample: torch.Tensor, shape: torch.Size, dtype: torch.dtype) -> None:
    if sample.shape != shape or sample.dtype != dtype:
        raise ValueError(
            f"{owner}: the sample is {tuple(sample.shape)} {sample.dtype}, but this state was built for "
            f"{tuple(shape)} {dtype}; init a new state for this sample (or cast it back)."
        )
