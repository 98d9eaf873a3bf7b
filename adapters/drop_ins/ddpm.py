"""The drop-ins of DDIM and DDPM (`functional_sched.DDIM`, `functional_sched.DDPM`).

diffusers steps these from the timestep each call passes (its alpha_bar and the one before it), with no step index,
no begin index and no sigma table: neither do these drop-ins (a pipeline's `hasattr(scheduler, "set_begin_index")`
answers as with diffusers'). A call at a timestep of the planned table steps the functional state from that place of
the schedule; a call at any other timestep (or before `set_timesteps`, which DDPM allows: it then steps its training
schedule) is diffusers' own step, which needs nothing but that timestep. `add_noise`, `get_velocity` and the other
helpers are diffusers' own methods, on the drop-in's own copies of its tables.
"""

from __future__ import annotations

from typing import Any, NoReturn

import diffusers
import torch
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput
from diffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput

import functional_sched as fs
from functional_sched.adapters.drop_in import _DropIn
from functional_sched.machinery.plan import as_dtype


def _absent(name: str) -> property:
    """An attribute diffusers' class does not have: reading it raises AttributeError, so `hasattr` is False."""

    def missing(self: Any) -> NoReturn:
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    return property(missing)


class _AlphaBar(_DropIn):
    """What the DDIM and DDPM drop-ins share: the step found by its timestep, diffusers' output and dtypes."""

    _returns_x0 = True
    sigmas = _absent("sigmas")  # type: ignore[assignment]
    step_index = _absent("step_index")  # type: ignore[assignment]
    begin_index = _absent("begin_index")  # type: ignore[assignment]
    set_begin_index = _absent("set_begin_index")  # type: ignore[assignment]

    def _step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, **arguments: Any) -> Any:
        index = self._planned_index(timestep)
        if index is None:  # off the planned table (or none planned): diffusers' step needs only the timestep
            return self._diffusers_class.step(self, model_output, timestep, sample, **arguments)
        if self._state is not None and self._functional.steps_taken(self._state) != index:
            self._state = None  # a call out of sequence: the state starts over at the timestep's place
        self._begin_index = index
        return super()._step(model_output, timestep, sample, **arguments)

    def _planned_index(self, timestep: Any) -> int | None:
        """Where an integer `timestep` stands in the planned table (its first match), else None (a float timestep
        too: diffusers indexes its table with it, and fails as it does)."""
        if self._plan is None:
            return None
        if isinstance(timestep, torch.Tensor):
            if timestep.is_floating_point() or timestep.is_complex() or timestep.dtype == torch.bool:
                return None
            timestep = int(timestep)
        elif not isinstance(timestep, int) or isinstance(timestep, bool):
            return None
        table = self._tables["timesteps"]
        if self._state is not None:  # the common call: the timestep the state stands at
            step = self._functional.steps_taken(self._state)
            if step < table.shape[0] and int(table[step]) == timestep:
                return step
        values = table.tolist()
        return values.index(timestep) if timestep in values else None

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        return torch.promote_types(sample.dtype, model_output.dtype)  # diffusers does not upcast: types promote

    def _x0(self, x0: torch.Tensor, model_output: torch.Tensor) -> torch.Tensor:
        # A sample prediction is the model's output itself (clipped or thresholded in its dtype); else types promote.
        if self._functional.prediction_type == "sample":
            return as_dtype(x0, model_output.dtype)
        return as_dtype(x0, torch.promote_types(x0.dtype, model_output.dtype))

    def _drawn(self, model_output: torch.Tensor, sample: torch.Tensor, generator: Any) -> torch.Tensor:
        """diffusers' draw: `randn_tensor(model_output.shape, ...)` in the model output's dtype (after DDPM splits a
        learned variance off, the sample's shape)."""
        return fs.randn_tensor(sample.shape, generator=generator, device=model_output.device, dtype=model_output.dtype)


class DDIMScheduler(_AlphaBar, diffusers.DDIMScheduler):
    """diffusers' `DDIMScheduler` on `functional_sched.DDIM`."""

    _functional_class = fs.DDIM
    _output_class = DDIMSchedulerOutput

    def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
        if not self._functional.stochastic:
            return None
        if variance_noise is not None and generator is not None:
            raise ValueError(
                "Cannot pass both generator and variance_noise. Please make sure that either `generator` or"
                " `variance_noise` stays `None`."
            )
        if variance_noise is not None:
            return variance_noise
        return self._drawn(model_output, sample, generator)


class DDPMScheduler(_AlphaBar, diffusers.DDPMScheduler):
    """diffusers' `DDPMScheduler` on `functional_sched.DDPM`."""

    _functional_class = fs.DDPM
    _output_class = DDPMSchedulerOutput

    def _set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Any = None,
        **arguments: Any,
    ) -> None:
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("Can only pass one of `num_inference_steps` or `custom_timesteps`.")
        super()._set_timesteps(num_inference_steps, device, timesteps=timesteps, **arguments)
        # diffusers keeps the step count of the last set_timesteps that had one, and flags custom timesteps.
        self.custom_timesteps = timesteps is not None
        if timesteps is None:
            self._step_count = num_inference_steps

    @property
    def num_inference_steps(self) -> int | None:  # type: ignore[override]
        return getattr(self, "_step_count", None)

    def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
        if not self._functional._draws_noise(state):  # diffusers draws nothing at timestep 0; the step adds none
            return torch.zeros_like(sample)
        return self._drawn(model_output, sample, generator)
