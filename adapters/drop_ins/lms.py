"""The LMS drop-in: `LMSDiscreteScheduler` on `functional_sched.LMSDiscrete`."""

from __future__ import annotations

from typing import Any, ClassVar

import diffusers
import torch
from diffusers.schedulers.scheduling_lms_discrete import LMSDiscreteSchedulerOutput

import functional_sched as fs
from functional_sched.machinery.plan import as_dtype
from functional_sched.schedulers.lms import HISTORY

from .sigma_discrete import SigmaDiscreteDropIn


class LMSDiscreteScheduler(SigmaDiscreteDropIn, diffusers.LMSDiscreteScheduler):
    """diffusers' `LMSDiscreteScheduler` on `functional_sched.LMSDiscrete`. diffusers steps in the sample's dtype (no
    upcast) and returns it promoted with the model output's. Its `step(order=...)` argument is an option of ours: a
    call with another order re-plans the run, which goes on with the derivatives diffusers would hold
    (`derivatives`, read from the state)."""

    _functional_class: ClassVar[type] = fs.LMSDiscrete
    _output_class = LMSDiscreteSchedulerOutput

    #: How many derivatives diffusers' list holds after the steps so far: one more each step, until it holds `order`
    #: (it drops one per step beyond that, so after a lower order it holds fewer than a higher one then uses).
    _held: int = 0

    @property
    def num_inference_steps(self) -> int | None:
        if self._request is None:
            return self.config.num_train_timesteps  # diffusers' __init__ runs set_timesteps(num_train_timesteps)
        return int(self._plan.timesteps.shape[1])

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        return torch.promote_types(sample.dtype, model_output.dtype)

    def _core_sample(self, sample: torch.Tensor, state: Any, out_dtype: torch.dtype) -> torch.Tensor:
        return as_dtype(sample, out_dtype)  # diffusers' derivatives promote with the model output

    def _step(self, *args: Any, **kwargs: Any) -> Any:
        held = self._held if self._state is not None else 0
        result = super()._step(*args, **kwargs)
        self._held = held + 1 if held < self._functional.order else held
        return result

    def _take_step_arguments(self, arguments: dict[str, Any]) -> None:
        order = arguments.get("order", self._functional.order)
        if self._state is not None and order != self._functional.order:
            # The warm-up level the new plan reads is the derivatives diffusers holds, not the steps taken.
            level = torch.full_like(self._state.lower_order_nums, min(self._held, HISTORY - 1))
            self._state = self._state.replace(lower_order_nums=level)
        super()._take_step_arguments(arguments)

    @property
    def derivatives(self) -> list[torch.Tensor]:
        """The derivatives diffusers' `step` keeps, oldest first (the state's own tensors: read, do not write)."""
        if self._state is None:
            return []
        return list(self._state.history[HISTORY - self._held :]) if self._held else []

    @derivatives.setter
    def derivatives(self, value: list[torch.Tensor]) -> None:
        if isinstance(value, list) and not value and self._state_or_none() is None:
            return  # construction's empty list (diffusers' __init__ and set_timesteps)
        raise NotImplementedError(
            "LMSDiscreteScheduler (functional_sched drop-in): assigning `derivatives` is not supported; the history "
            "lives in the functional state (call set_timesteps to start a new run)."
        )

    def _state_or_none(self) -> Any:
        return self.__dict__.get("_state")
