"""The drop-in of Heun (`functional_sched.HeunDiscrete`), and what KDPM2's share with it: two calls per interval.

diffusers' two-call schedulers keep their phase in mutable attributes (Heun: `prev_derivative`, `dt`, `sample`;
KDPM2: `sample`, and the ancestral one's `dt`), which a pipeline may read (`state_in_first_order` is a property of
them). Here they are read from the state and the plan: the buffers as the state holds them, `dt` from the plan entry
of the interval's first call, None (or absent, where diffusers has not set them yet) at an interval's start. They
cannot be assigned: the phase follows the calls since `set_timesteps`. diffusers does not upcast these steps: the
sample's and the model output's dtypes promote.
"""

from __future__ import annotations

from typing import Any, ClassVar, NoReturn

import diffusers
import torch
from diffusers.schedulers.scheduling_heun_discrete import HeunDiscreteSchedulerOutput

import functional_sched as fs
from functional_sched.machinery.plan import as_dtype
from functional_sched.schedulers.heun import DT, FIRST, INPUT_SCALE

from .sigma_discrete import SigmaDiscreteDropIn


def run_value(name: str, read: Any) -> property:
    """A run attribute diffusers keeps and a pipeline may read, read from the state; assigning it is refused by name
    (but for the value diffusers' constructor gives it, and a construction table copied in, which it keeps)."""

    def assign(self: Any, value: Any) -> None:
        if getattr(self, "_state", None) is None and value is None:
            return
        if (
            isinstance(value, torch.Tensor)
            and getattr(self, "_plan", None) is None
            and "_constructed" not in vars(self)
        ):
            vars(self).setdefault("_construction", {})[name] = value  # diffusers' table of the constructor's schedule
            return
        raise NotImplementedError(
            f"{type(self).__name__}: {name} is read from the functional state and cannot be assigned (the phase of "
            "each call follows the calls since set_timesteps)."
        )

    return property(read, assign)


def absent(owner: Any, name: str) -> NoReturn:
    """diffusers has not set the attribute yet: reading it raises AttributeError (so `hasattr` is False)."""
    raise AttributeError(f"'{type(owner).__name__}' object has no attribute '{name}'")


class TwoCallDropIn(SigmaDiscreteDropIn):
    """What the two-call drop-ins share: the phase read from the state, no upcast, `num_inference_steps` counting
    intervals, `set_timesteps`' `num_train_timesteps`."""

    def _configure(self, **options: Any) -> None:
        super()._configure(**options)
        self._constructed = True

    def _set_timesteps(  # type: ignore[override]
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        num_train_timesteps: int | None = None,
        **arguments: Any,
    ) -> None:
        if num_train_timesteps is not None and num_train_timesteps != self.config.num_train_timesteps:
            raise NotImplementedError(
                f"{type(self).__name__}.set_timesteps: num_train_timesteps={num_train_timesteps} other than the "
                f"config's ({self.config.num_train_timesteps}) is not supported; set it in the config."
            )
        super()._set_timesteps(num_inference_steps, device, **arguments)

    @property
    def num_inference_steps(self) -> int:  # type: ignore[override]
        return (len(self.timesteps) + 1) // 2  # intervals: two calls each but the last

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        return torch.promote_types(sample.dtype, model_output.dtype)  # diffusers does not upcast: types promote

    def _core_sample(self, sample: torch.Tensor, state: Any, out_dtype: torch.dtype) -> torch.Tensor:
        return as_dtype(sample, out_dtype if state is None else state.sample.dtype)

    def _entry(self, step: int) -> tuple[torch.Tensor, ...]:
        """The host plan entry (0-d CPU coefficients) of call `step` of the state's plan."""
        cursor = self._functional._cursor(self._state)
        if cursor is not None:
            return cursor.owned.host.entry(step, 0)
        return self._state.plan.coefficients[0, step, 0].cpu().unbind(0)

    def _mid_interval(self) -> bool:
        """Whether the last call was an interval's first (diffusers then holds its sample: second order next)."""
        taken = self.step_index if self._state is not None else 0
        return bool(taken) and bool(self._entry(taken - 1)[FIRST])

    def _stepped_once(self) -> bool:
        """Whether a first call has been taken since `set_timesteps` (diffusers sets `dt` then, and keeps it)."""
        return self._state is not None and self.step_index > 0

    def _on_edited_tables(self, state: Any, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Any:
        return self._functional._on_kept_tables(state, timesteps, sigmas, self._kept())

    def _kept(self) -> dict[str, Any]:
        """What diffusers keeps through an edit of its tables (`TwoCallScheduler._on_kept_tables`)."""
        return {}

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None) -> torch.Tensor:
        index = self._model_sigma_index(timestep)
        if self._state is None:  # diffusers' first call of a run is a first-order one, at the table's sigma
            return super().scale_model_input(sample, timestep)
        self.is_scale_input_called = True
        self._state = self._with_table_edits(self._state)  # diffusers reads the sigma table as it is now
        return sample / self._entry(index)[INPUT_SCALE]


class HeunDiscreteScheduler(TwoCallDropIn, diffusers.HeunDiscreteScheduler):
    """diffusers' `HeunDiscreteScheduler` on `functional_sched.HeunDiscrete`."""

    _functional_class: ClassVar[type] = fs.HeunDiscrete
    _output_class = HeunDiscreteSchedulerOutput

    def _dt(self) -> torch.Tensor | None:
        return self._entry(self.step_index - 1)[DT].clone() if self._mid_interval() else None

    def _kept(self) -> dict[str, Any]:
        # A pending second call steps by the `dt` its first call stored, whatever the table says since.
        return {"dt": (self.step_index, self._entry(self.step_index - 1)[DT])} if self._mid_interval() else {}

    def _prev_derivative(self) -> torch.Tensor | None:
        return self._state.prev_derivative if self._mid_interval() else None

    def _sample(self) -> torch.Tensor | None:
        if not self._stepped_once():
            absent(self, "sample")
        return self._state.sample if self._mid_interval() else None

    dt = run_value("dt", _dt)
    prev_derivative = run_value("prev_derivative", _prev_derivative)
    sample = run_value("sample", _sample)
