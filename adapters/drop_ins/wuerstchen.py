"""The drop-in of DDPMWuerstchen (`functional_sched.DDPMWuerstchen`).

diffusers' `DDPMWuerstchenScheduler` has no table before `set_timesteps`, exposes the whole table (the steps' timesteps
and the last one, which the pipelines' loop over `timesteps[:-1]` only steps to), and finds where each `step` goes by
the table value nearest the first row's timestep; it has no step index, begin index, sigma table or step count, and
neither has this drop-in. `step` takes the pipelines' timestep, one ratio per row (`t.expand(batch).to(dtype)`; a 0-d
tensor or a number is taken too): a call at the timestep the state stands at steps it, a call at another planned
timestep starts the state over there (img2img), and a timestep off the table, or rows at different timesteps, are
refused by name (diffusers would compute alpha_bar at each row's own value). The core computes alpha_bar at the
timestep rounded to the sample's dtype, as the pipelines pass it; a timestep of another dtype than the latents' is
refused by name. `add_noise` and `previous_timestep` are diffusers' own methods, on the drop-in's own attributes.
"""

from __future__ import annotations

from typing import Any, NoReturn

import diffusers
import torch
from diffusers.schedulers.scheduling_ddpm_wuerstchen import DDPMWuerstchenSchedulerOutput

import functional_sched as fs
from functional_sched.adapters.drop_in import _DropIn
from functional_sched.schedulers.wuerstchen import TIMESTEP_DTYPES, DDPMWuerstchen


def _absent(name: str) -> property:
    """An attribute diffusers' class does not have: reading it raises AttributeError, so `hasattr` is False."""

    def missing(self: Any) -> NoReturn:
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    return property(missing)


class DDPMWuerstchenScheduler(_DropIn, diffusers.DDPMWuerstchenScheduler):
    """diffusers' `DDPMWuerstchenScheduler` on `functional_sched.DDPMWuerstchen`."""

    _functional_class = DDPMWuerstchen
    _output_class = DDPMWuerstchenSchedulerOutput
    sigmas = _absent("sigmas")  # type: ignore[assignment]
    step_index = _absent("step_index")  # type: ignore[assignment]
    begin_index = _absent("begin_index")  # type: ignore[assignment]
    set_begin_index = _absent("set_begin_index")  # type: ignore[assignment]
    num_inference_steps = _absent("num_inference_steps")  # type: ignore[assignment]

    @property
    def timesteps(self) -> torch.Tensor:  # type: ignore[override]
        table = self.__dict__.get("_table")
        if table is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'timesteps'")
        return table

    def _set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Any = None,
        **arguments: Any,
    ) -> None:
        if isinstance(timesteps, torch.Tensor) and timesteps.dtype != torch.float32:
            raise NotImplementedError(
                f"{type(self).__name__}.set_timesteps: timesteps as a {timesteps.dtype} tensor: diffusers then steps "
                "in that dtype; pass a list or a float32 tensor (as the pipelines do)."
            )
        if timesteps is not None:
            num_inference_steps = None  # diffusers takes the custom table and ignores the count
        super()._set_timesteps(num_inference_steps, device, timesteps=timesteps, **arguments)
        # diffusers' table: the steps' timesteps and the last one (our plan's table holds the steps' only).
        if timesteps is None:
            table = torch.linspace(1.0, 0.0, num_inference_steps + 1, device=device)
        elif isinstance(timesteps, torch.Tensor):
            table = timesteps.clone()  # diffusers keeps the caller's tensor where it is
        else:
            table = torch.Tensor(timesteps).to(device)
        self.__dict__["_table"] = table
        self._values = table.tolist()

    def _step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        **arguments: Any,
    ) -> Any:
        ratio = torch.as_tensor(timestep).reshape(-1)
        if self._plan is None:
            self.timesteps  # noqa: B018  (diffusers' AttributeError before set_timesteps)
        index = int((self.timesteps - ratio[0].to(self.timesteps.device)).abs().argmin())
        if index + 1 >= len(self._values):
            raise IndexError(f"index {index + 1} is out of bounds for dimension 0 with size {len(self._values)}")
        self._check_ratio(ratio, index, sample)
        if self._state is not None and self._functional.steps_taken(self._state) != index:
            self._state = None  # a call out of sequence: the state starts over at the timestep's place
        self._begin_index = index
        return super()._step(model_output, ratio[0], sample, generator=generator, return_dict=return_dict)

    def _check_ratio(self, ratio: torch.Tensor, index: int, sample: torch.Tensor) -> None:
        """The rows' timestep is the planned one at `index`, as the sample's dtype gives it (the pipelines' cast)."""
        name = type(self).__name__
        if ratio.numel() > 1 and not bool((ratio == ratio[0]).all()):
            raise NotImplementedError(
                f"{name}.step: the rows are at different timesteps {ratio.tolist()}; the drop-in steps a batch at one "
                "timestep (diffusers looks up the first row's)."
            )
        dtype = ratio.dtype if ratio.is_floating_point() else torch.float32
        planned = torch.tensor(self._values[index], dtype=torch.float32)
        expected = planned.to(sample.dtype if sample.dtype in (*TIMESTEP_DTYPES, torch.float64) else torch.float32)
        if dtype != expected.dtype or float(ratio[0]) != float(expected):
            raise NotImplementedError(
                f"{name}.step: timestep {float(ratio[0])!r} ({dtype}) is not the planned {float(planned)!r} as the "
                f"latents' dtype {sample.dtype} gives it; the drop-in steps the planned timesteps, passed as the "
                "pipelines pass them (t.expand(batch).to(latents.dtype))."
            )

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        return model_output.dtype

    def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
        # diffusers draws at every step (the last one scales it by zero), in the model output's dtype.
        return fs.randn_tensor(sample.shape, generator=generator, device=model_output.device, dtype=model_output.dtype)
