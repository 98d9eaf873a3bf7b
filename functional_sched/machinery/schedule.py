"""A schedule: what `init` takes besides the sample (a step count, or custom timesteps/sigmas, and `mu`), checked
once, as a hashable record of Python values.

With a scheduler's config it determines the plan: it keys the host-plan cache, it travels with a plan (a
serialised state carries it, and the receiving worker rebuilds its own plan from it rather than trusting tables it
is sent), and it is what every check of a schedule's arguments reads, before anything is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch

from . import checks, host

#: The most steps a schedule may have. diffusers' samplers run tens to a thousand; the bound keeps every table made
#: from a step count (the plan, and a request's per-row step tables) small whatever a caller or a payload asks for.
MAX_INFERENCE_STEPS = 10_000

#: The largest |mu|: dynamic shifting scales by exp(mu), which overflows float64 near 710.
MAX_MU = 100.0

_TABLE_DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8")


@attrs.frozen
class Table:
    """Custom timesteps or sigmas: their values, and the dtype they came in (it decides diffusers' precision;
    anything but a tensor counts as float64, as numpy's default)."""

    values: tuple[float, ...]
    dtype: str

    def tensor(self) -> torch.Tensor:
        return torch.tensor(self.values, dtype=getattr(torch, self.dtype))


@attrs.frozen
class Schedule:
    """The arguments of one schedule, as `schedule()` checked them (`timesteps`/`sigmas` are `Table`s)."""

    num_inference_steps: int | None = None
    timesteps: Table | None = None
    sigmas: Table | None = None
    mu: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict that `from_json` reads back."""
        return {
            "num_inference_steps": self.num_inference_steps,
            "timesteps": None if self.timesteps is None else attrs.asdict(self.timesteps),
            "sigmas": None if self.sigmas is None else attrs.asdict(self.sigmas),
            "mu": self.mu,
        }

    @classmethod
    def from_json(cls, owner: str, value: Any) -> Schedule:
        """The schedule a `to_json` dict describes, checked as `schedule()` checks a caller's arguments."""
        if not isinstance(value, Mapping) or set(value) != {"num_inference_steps", "timesteps", "sigmas", "mu"}:
            raise ValueError(f"{owner}: a schedule must be a mapping of num_inference_steps, timesteps, sigmas, mu.")
        tables = {}
        for name in ("timesteps", "sigmas"):
            table = value[name]
            if table is not None:
                if (
                    not isinstance(table, Mapping)
                    or table.get("dtype") not in _TABLE_DTYPES
                    or not isinstance(table.get("values"), list)
                ):
                    raise ValueError(f"{owner}: the schedule's {name} must be a mapping of values and a dtype.")
                if len(table["values"]) > MAX_INFERENCE_STEPS:
                    raise ValueError(f"{owner}: the schedule's {name} has more than {MAX_INFERENCE_STEPS} values.")
                tensor = torch.tensor([checks.real(owner, name, item) for item in table["values"]], dtype=torch.float64)
                table = tensor.to(getattr(torch, table["dtype"]))
            tables[name] = table
        return schedule(owner, value["num_inference_steps"], tables["timesteps"], tables["sigmas"], value["mu"])


def schedule(owner: str, num_inference_steps: Any, timesteps: Any, sigmas: Any, mu: Any) -> Schedule:
    """The checked schedule of `init`'s arguments: the step count an integer in [1, MAX_INFERENCE_STEPS] (numpy and
    0-d tensor integers too), custom tables 1-D and finite (`_table`), mu a finite number. What each scheduler
    further needs of them (ranges, order) it checks itself (`Scheduler._check_schedule`)."""
    if num_inference_steps is not None:
        num_inference_steps = checks.integer(owner, "num_inference_steps", num_inference_steps, 1, MAX_INFERENCE_STEPS)
    if mu is not None:
        mu = checks.real(owner, "mu", mu)
        if abs(mu) > MAX_MU:
            raise ValueError(
                f"{owner}: mu={mu!r} is out of range: it shifts sigmas by exp(mu) (resolution shifts are about 0.5 "
                f"to 3); |mu| <= {MAX_MU:g}."
            )
    if timesteps is None and sigmas is None:
        return Schedule(num_inference_steps, None, None, mu)  # the common case, without `plain()`'s few microseconds
    with host.plain():  # host values, whatever mode (FakeTensorMode, a transform) the caller runs under
        tables = _table(owner, "timesteps", timesteps), _table(owner, "sigmas", sigmas)
    return Schedule(num_inference_steps, *tables, mu)


def _table(owner: str, name: str, values: Any) -> Table | None:
    """Custom timesteps or sigmas as a `Table`: a 1-D tensor, array or sequence of at most MAX_INFERENCE_STEPS finite
    real numbers (its length checked before anything is converted)."""
    if values is None:
        return None
    if isinstance(values, torch.Tensor):
        size = values.numel()
    elif hasattr(values, "__array__") and isinstance(getattr(values, "size", None), int):  # a numpy array
        size = values.size
    elif isinstance(values, Sequence) and not isinstance(values, (str, bytes)):
        size = len(values)
    else:
        raise TypeError(f"{owner}: {name} must be a 1-D sequence, array or tensor of numbers, got {values!r}.")
    if size > MAX_INFERENCE_STEPS:
        raise ValueError(f"{owner}: {name} has {size} values; a schedule has at most {MAX_INFERENCE_STEPS} steps.")
    if size == 0:
        raise ValueError(f"{owner}: {name} must not be empty.")
    dtype = "float64"
    if isinstance(values, torch.Tensor):
        if values.device.type == "meta" or values.is_complex() or values.dtype == torch.bool:
            raise TypeError(
                f"{owner}: {name} must hold real numbers with values, got a {values.dtype} tensor on {values.device}."
            )
        dtype = str(values.dtype).removeprefix("torch.")
        table = values.detach().to("cpu", torch.float64)
    else:
        try:
            table = torch.as_tensor(values if hasattr(values, "__array__") else list(values), dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{owner}: {name} must be a 1-D sequence of numbers, got {values!r}.") from None
    if table.dim() != 1:
        raise ValueError(
            f"{owner}: {name} must be 1-D (one value per step), got shape {tuple(table.shape)}; pass one schedule."
        )
    if dtype not in _TABLE_DTYPES:
        raise TypeError(f"{owner}: {name} has dtype {dtype}; give float or integer values.")
    if not bool(torch.isfinite(table).all()):
        bad = [value for value in table.tolist() if not math.isfinite(value)][:3]
        raise ValueError(f"{owner}: {name} must be finite, got {bad} among them.")
    return Table(tuple(table.tolist()), dtype)


def check_order(
    owner: str,
    name: str,
    table: Table,
    low: float,
    high: float,
    *,
    integral: bool = False,
    repeats: bool = False,
    ordered: bool = True,
) -> None:
    """Custom `table` values in [low, high], whole numbers if `integral`, decreasing (a schedule runs from noise to
    data) where `ordered`: strictly, unless `repeats` (a solver that never divides by a step's length takes a
    zero-length step)."""
    values = table.values
    outside = [value for value in values if not low <= value <= high]
    if outside:
        raise ValueError(
            f"{owner}: {name} must lie in [{low:g}, {high:g}] (this config's training range), got {outside[:3]}."
        )
    if integral and any(value != math.floor(value) for value in values):
        raise ValueError(
            f"{owner}: {name} must be whole numbers (training timestep indices), got "
            f"{[value for value in values if value != math.floor(value)][:3]}; diffusers would truncate them."
        )
    for index in range(1, len(values) if ordered else 0):
        previous, value = values[index - 1], values[index]
        if value > previous or (value == previous and not repeats):
            why = "strictly decreasing (a repeat is a step of zero length, which this solver divides by)"
            raise ValueError(
                f"{owner}: {name} must be {why if value == previous else 'decreasing (from noise to data)'}, but "
                f"value {index} ({value:g}) follows {previous:g}."
            )
