"""The drop-in of IPNDM (`functional_sched.IPNDM`).

diffusers' `IPNDMScheduler` keeps no sigma table (its noise levels are `betas`, its alphas `alphas`, both reset by
`set_timesteps`), steps before any `set_timesteps` on the table its constructor made (`num_train_timesteps` steps),
and has no `add_noise`: neither has this drop-in. `ets` is read from the state: the newest e it keeps (up to three,
what the next step reads; diffusers' list keeps every call's), and cannot be assigned.
"""

from __future__ import annotations

from typing import Any, NoReturn

import diffusers
import torch

from functional_sched.adapters.drop_in import _DropIn
from functional_sched.schedulers.ipndm import IPNDM


def _absent(name: str) -> property:
    """An attribute diffusers' class does not have: reading it raises AttributeError, so `hasattr` is False."""

    def missing(self: Any) -> NoReturn:
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    return property(missing)


class IPNDMScheduler(_DropIn, diffusers.IPNDMScheduler):
    """diffusers' `IPNDMScheduler` on `functional_sched.IPNDM`."""

    _functional_class = IPNDM
    _steps_on_default_tables = True
    _missing_timestep_is_last = False  # diffusers' IPNDM raises IndexError for a timestep off its table
    sigmas = _absent("sigmas")  # type: ignore[assignment]

    def _configure(self, **options: Any) -> None:
        super()._configure(**options)
        # The construction table's noise levels (diffusers' `betas`) stand where the others keep sigmas.
        self._default_tables = (self._default_tables[0], self.betas.clone())

    def _set_timesteps(self, num_inference_steps: int | None = None, device: Any = None, **arguments: Any) -> None:
        super()._set_timesteps(num_inference_steps, device, **arguments)
        self._levels_exposed()

    def _on_default_tables(self) -> None:
        super()._on_default_tables()
        self._levels_exposed()

    @property
    def timesteps(self) -> torch.Tensor:  # type: ignore[override]
        assigned = self.__dict__.get("_assigned_timesteps")
        return _DropIn.timesteps.fget(self) if assigned is None else assigned  # type: ignore[attr-defined]

    @timesteps.setter
    def timesteps(self, value: torch.Tensor) -> None:
        # Dance Diffusion assigns `scheduler.timesteps = scheduler.timesteps.to(dtype)`: diffusers looks a first
        # step's timestep up in that table and steps its noise levels by index, as this drop-in does.
        self.__dict__["_assigned_timesteps"] = value

    def _levels_exposed(self) -> None:
        """diffusers' `betas` and `alphas` of the schedule in force: the plan's noise levels (a pipeline's edit of
        `betas` re-plans the steps from it, as diffusers steps from its edited table); no assigned timesteps."""
        self.__dict__["_assigned_timesteps"] = None
        self.betas = self._tables["sigmas"]
        self.alphas = (1.0 - self.betas**2) ** 0.5

    @property
    def num_inference_steps(self) -> int | None:  # type: ignore[override]
        # The count set_timesteps was given (trained betas make the schedule whatever it says), the constructor's first.
        request = self._request
        return self.config.num_train_timesteps if request is None else request.num_inference_steps

    @property
    def ets(self) -> list[torch.Tensor]:
        """The newest e the state keeps, oldest first."""
        state = self._state
        if state is None:
            return []
        level = self._functional._cursor(state)
        filled = level.level if level is not None else int(state.lower_order_nums[0])
        return list(state.history[len(state.history) - filled :]) if filled else []

    @ets.setter
    def ets(self, value: list[torch.Tensor]) -> None:
        if getattr(self, "_state", None) is None and value == []:
            return  # diffusers' value before any call (its constructor and set_timesteps set it): the state's already
        raise NotImplementedError(
            f"{type(self).__name__}: ets is read from the functional state and cannot be assigned (the warm-up follows "
            "the count of steps since set_timesteps)."
        )

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        return torch.promote_types(sample.dtype, model_output.dtype)  # diffusers does not upcast: types promote

    def _core_sample(self, sample: torch.Tensor, state: Any, out_dtype: torch.dtype) -> torch.Tensor:
        if state is None:
            return sample.to(out_dtype)
        return sample.to(state.history[0].dtype)
