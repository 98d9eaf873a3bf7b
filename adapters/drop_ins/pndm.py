"""The drop-in of PNDM (`functional_sched.PNDM`).

diffusers' PNDM counts its calls and steps from the timestep each call passes (and, in its Runge-Kutta warm-up, from
its PRK table): it has no step index, no begin index and no sigma table, and neither has this drop-in (a pipeline's
`hasattr(scheduler, "set_begin_index")` answers as with diffusers'). The plan's coefficients at a place of the
schedule depend only on the timestep there and the calls taken, so a call at a timestep of the planned table steps
the state from that timestep's place (its first, wherever the state stands elsewhere): any run of planned timesteps
(img2img's tail, a repeat picked at either place) steps as diffusers does. A first call at a timestep off the table is
planned on the table with that timestep in the last place. `counter`, `ets`, `cur_model_output` and `cur_sample` are
read from the state, as diffusers exposes them; they cannot be assigned (diffusers' own tests do, with a history no
count of calls gives).
"""

from __future__ import annotations

from typing import Any, NoReturn

import diffusers
import numpy as np
import torch

import functional_sched as fs
from functional_sched.adapters.drop_in import _DropIn
from functional_sched.schedulers.pndm import PNDM_ORDER, PRK_CALLS


def _absent(name: str) -> property:
    """An attribute diffusers' class does not have: reading it raises AttributeError, so `hasattr` is False."""

    def missing(self: Any) -> NoReturn:
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    return property(missing)


def _read_only(name: str, read: Any) -> property:
    """A run value diffusers keeps as an attribute, read from the state; assigning it is refused by name."""

    def assign(self: Any, value: Any) -> None:
        if getattr(self, "_state", None) is None and value in ([], 0, None):
            return  # diffusers' value before any call (its constructor sets it): what the state gives already
        raise NotImplementedError(
            f"{type(self).__name__}: {name} is read from the functional state and cannot be assigned (the drop-in's "
            "warm-up follows the count of calls since set_timesteps)."
        )

    return property(read, assign)


class PNDMScheduler(_DropIn, diffusers.PNDMScheduler):
    """diffusers' `PNDMScheduler` on `functional_sched.PNDM`."""

    _functional_class = fs.PNDM
    sigmas = _absent("sigmas")  # type: ignore[assignment]
    step_index = _absent("step_index")  # type: ignore[assignment]
    begin_index = _absent("begin_index")  # type: ignore[assignment]
    set_begin_index = _absent("set_begin_index")  # type: ignore[assignment]

    # ------------------------------------------------------------------------------------------------ schedule
    def _set_timesteps(self, num_inference_steps: int | None = None, device: Any = None, **arguments: Any) -> None:
        super()._set_timesteps(num_inference_steps, device, **arguments)
        self._calls = 0
        # diffusers' tables of the schedule's parts, as numpy arrays (`_timesteps` ascending).
        functional = self._functional
        spaced = functional._spaced(num_inference_steps).numpy()
        timesteps = self._tables["timesteps"].cpu().numpy()
        self._timesteps = spaced
        if functional.skip_prk_steps:
            self.prk_timesteps = np.array([])
            self.plms_timesteps = timesteps.copy()
        else:
            self.prk_timesteps, self.plms_timesteps = timesteps[:PRK_CALLS].copy(), timesteps[PRK_CALLS:].copy()

    @property
    def num_inference_steps(self) -> int | None:  # type: ignore[override]
        return None if self._request is None else self._request.num_inference_steps

    # ------------------------------------------------------------------------------------------------ step
    def _step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, **arguments: Any) -> Any:
        if self._plan is None and not self.config.skip_prk_steps:
            raise TypeError("object of type 'NoneType' has no len()")  # diffusers' `len(self.prk_timesteps)`
        if self._plan is not None:
            self._place(timestep)
        result = super()._step(model_output, timestep, sample, **arguments)
        self._calls += 1
        return result

    def _place(self, timestep: Any) -> None:
        """Set the place of the step from its timestep (`_begin_index` for a first call; the state moved, at its
        count of calls, where a later call passes another planned timestep than the next one)."""
        table, state, functional = self._tables["timesteps"], self._state, self._functional
        known = getattr(self, "_values_of", None)
        if known is None or known[0] is not table or known[1] != table._version:  # planned or edited since
            self._values, self._values_of = table.tolist(), (table, table._version)
        values = self._values
        given = int(timestep) if isinstance(timestep, (int, torch.Tensor)) else timestep
        if state is not None:
            taken = functional.steps_taken(state)
            if taken < len(values) and values[taken] == given:
                return  # the next planned timestep: the common call
        if given not in values:
            if self._state is not None:
                raise NotImplementedError(
                    f"{type(self).__name__}.step: timestep {given} is not in the schedule; the drop-in steps planned "
                    "timesteps after its first call."
                )
            self._begin_index, self._off_table = len(values) - 1, given
            return
        index = values.index(given)
        if state is None:
            self._begin_index, self._off_table = index, None
            return
        request = self._request
        assert request is not None
        moved = state.replace(step_index=torch.full_like(state.step_index, index))
        self._state = functional._replanned(moved, request.num_inference_steps, **request.custom)

    def _started(self, work: torch.Tensor, begin_index: int) -> Any:
        state = super()._started(work, begin_index)
        if getattr(self, "_off_table", None) is None:
            return state
        # diffusers steps from the timestep it is given: plan the table with it in the place the state starts at.
        timesteps = self._tables["timesteps"].clone()
        timesteps[begin_index] = self._off_table
        return self._functional._on_tables(state, timesteps, self._tables["sigmas"])

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        return torch.promote_types(sample.dtype, model_output.dtype)  # diffusers does not upcast: types promote

    def _core_sample(self, sample: torch.Tensor, state: Any, out_dtype: torch.dtype) -> torch.Tensor:
        if state is None:
            return sample.to(out_dtype)
        return sample.to(state.history[0].dtype)

    def step_prk(
        self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor, return_dict: bool = True
    ) -> Any:
        """diffusers' Runge-Kutta call: `step` where it is the warm-up's turn, refused elsewhere."""
        if self.config.skip_prk_steps or self.counter >= PRK_CALLS:
            raise NotImplementedError(f"{type(self).__name__}.step_prk: call step(); it takes the PRK phase in turn.")
        return self.step(model_output, timestep, sample, return_dict)

    def step_plms(
        self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor, return_dict: bool = True
    ) -> Any:
        """diffusers' linear multistep call: `step` where it is PLMS's turn, refused elsewhere."""
        if not self.config.skip_prk_steps and self.counter < PRK_CALLS:
            raise NotImplementedError(f"{type(self).__name__}.step_plms: call step(); it takes the PLMS phase in turn.")
        return self.step(model_output, timestep, sample, return_dict)

    # ------------------------------------------------------------------------------------------------ run values
    def _counter(self) -> int:
        return getattr(self, "_calls", 0) if self._state is not None else 0

    def _ets(self) -> list[torch.Tensor]:
        calls, state = self._counter(), self._state
        if state is None:
            return []
        if self.config.skip_prk_steps:  # the second call appends nothing; PLMS keeps the newest four
            kept = min(calls - (calls >= 2), PNDM_ORDER)
        else:  # one per Runge-Kutta interval, then four
            kept = (calls + 3) // 4 if calls <= PRK_CALLS else PNDM_ORDER
        return list(state.history[PNDM_ORDER - kept :])

    def _cur_model_output(self) -> torch.Tensor | int:
        calls = self._counter()
        within = not self.config.skip_prk_steps and calls <= PRK_CALLS and calls % 4 != 0
        return self._state.cur_model_output if within else 0

    def _cur_sample(self) -> torch.Tensor | None:
        calls = self._counter()
        kept = calls == 1 if self.config.skip_prk_steps else calls >= 1
        return self._state.cur_sample if kept else None

    counter = _read_only("counter", _counter)
    ets = _read_only("ets", _ets)
    cur_model_output = _read_only("cur_model_output", _cur_model_output)
    cur_sample = _read_only("cur_sample", _cur_sample)
