"""The drop-ins of LCM and TCD (`functional_sched.LCM`, `functional_sched.TCD`).

diffusers keeps a step index for these (found from the first timestep, or `set_begin_index`) and no sigma table: so do
these drop-ins. `set_timesteps`' per-call `original_inference_steps` and `strength` (img2img) make a timestep table
(`spaced_timesteps`) that the functional state steps as custom timesteps: the same steps, since each reads only its
table. `step` returns diffusers' output class with its second field (LCM's `denoised`, TCD's `pred_noised_sample`),
and draws its noise as diffusers does, in the estimate's dtype, at every step but the last. `add_noise`,
`get_velocity`, `previous_timestep` and the other helpers are diffusers' own methods, on the drop-in's own copies of
its tables.
"""

from __future__ import annotations

from typing import Any

import diffusers
import torch
from diffusers.schedulers.scheduling_lcm import LCMSchedulerOutput
from diffusers.schedulers.scheduling_tcd import TCDSchedulerOutput

import functional_sched as fs
from functional_sched.adapters.drop_in import _DropIn
from functional_sched.machinery.plan import as_dtype
from functional_sched.schedulers import lcm

from .ddpm import _absent


class _Consistency(_DropIn):
    """What the LCM and TCD drop-ins share: the schedule's per-call arguments, the noise, diffusers' dtypes."""

    _returns_x0 = True
    _missing_timestep_is_last = False  # diffusers' index_for_timestep raises IndexError for an unknown timestep
    sigmas = _absent("sigmas")  # type: ignore[assignment]

    def _set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        original_inference_steps: int | None = None,
        timesteps: Any = None,
        strength: float = 1.0,
    ) -> None:
        if num_inference_steps is None and timesteps is None:
            raise ValueError("Must pass exactly one of `num_inference_steps` or `custom_timesteps`.")
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("Can only pass one of `num_inference_steps` or `custom_timesteps`.")
        functional = self._functional
        assert isinstance(functional, lcm.ConsistencyScheduler)
        if timesteps is not None and strength != 1.0 and int(len(timesteps) * strength) < len(timesteps):
            raise NotImplementedError(
                f"{type(self).__name__}.set_timesteps: custom timesteps with strength={strength:g} are not supported: "
                "diffusers 0.42.1 cuts the table but keeps num_inference_steps at its full length, so its last step "
                "adds noise. Pass the cut table itself, with strength=1."
            )
        custom = timesteps is not None
        if num_inference_steps is not None and (original_inference_steps is not None or strength != 1.0):
            timesteps = functional.spaced_timesteps(
                num_inference_steps, original_inference_steps=original_inference_steps, strength=strength
            )
            num_inference_steps = None  # the table of the per-call arguments, stepped as custom timesteps
        super()._set_timesteps(num_inference_steps, device, timesteps=timesteps)
        if custom:
            self.custom_timesteps = True  # diffusers sets it for custom timesteps, and never clears it

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        return torch.promote_types(sample.dtype, model_output.dtype)  # diffusers does not upcast: types promote

    def _x0(self, x0: torch.Tensor, model_output: torch.Tensor) -> torch.Tensor:
        return as_dtype(x0, torch.promote_types(x0.dtype, model_output.dtype))

    def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
        if not self._functional.stochastic:
            return None
        if not self._functional._draws_noise(state):  # diffusers draws none at the last step; the step adds none
            return torch.zeros_like(sample)
        # diffusers' `randn_tensor(model_output.shape, ...)` in the estimate's dtype (the inputs' promoted).
        dtype = torch.promote_types(sample.dtype, model_output.dtype)
        return fs.randn_tensor(model_output.shape, generator=generator, device=model_output.device, dtype=dtype)


class LCMScheduler(_Consistency, diffusers.LCMScheduler):
    """diffusers' `LCMScheduler` on `functional_sched.LCM`."""

    _functional_class = lcm.LCM
    _output_class = LCMSchedulerOutput

    def _step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, **arguments: Any) -> Any:
        result = super()._step(model_output, timestep, sample, **arguments)
        self.sigma_data = lcm.SIGMA_DATA  # diffusers sets it in each step's boundary scalings
        return result


class TCDScheduler(_Consistency, diffusers.TCDScheduler):
    """diffusers' `TCDScheduler` on `functional_sched.TCD` (`eta`, a `step()` argument, re-plans where it changes)."""

    _functional_class = lcm.TCD
    _output_class = TCDSchedulerOutput
