"""The drop-ins of CogVideoX's schedulers (`functional_sched.CogVideoXDDIM`, `functional_sched.CogVideoXDPM`).

Both step from the timestep each call passes, as DDIM's drop-in does (`ddpm._AlphaBar`): a call at a timestep of the
planned table steps the functional state from that place; any other is diffusers' own step. The DDIM variant's `step`
takes `eta`, `use_clipped_model_output`, `generator` and `variance_noise` and ignores them, as diffusers' does.

The DPM variant keeps diffusers' signature: the caller passes the previous x0 (`old_pred_original_sample`) and the
timestep it came from (`timestep_back`), and its values are the ones used (copied into the state). The call the
CogVideoX pipeline makes (None, None at a run's first step; the last step's x0 and timestep after) steps the state; a
call the state's plan has no entry for (an x0 with another back timestep, or an x0 passed to a fresh run past its
first step) is diffusers' own step, and the next call starts the state over. Like diffusers', it returns a tuple
`(prev_sample, pred_original_sample)` at a first-order step whatever `return_dict` says.
"""

from __future__ import annotations

from typing import Any

import diffusers
import torch
from diffusers.schedulers.scheduling_ddim_cogvideox import DDIMSchedulerOutput as DDIMOutput
from diffusers.schedulers.scheduling_dpm_cogvideox import DDIMSchedulerOutput as DPMOutput

import functional_sched as fs

from .ddpm import _AlphaBar


class CogVideoXDDIMScheduler(_AlphaBar, diffusers.CogVideoXDDIMScheduler):
    """diffusers' `CogVideoXDDIMScheduler` on `functional_sched.CogVideoXDDIM`."""

    _functional_class = fs.CogVideoXDDIM
    _output_class = DDIMOutput


class CogVideoXDPMScheduler(_AlphaBar, diffusers.CogVideoXDPMScheduler):
    """diffusers' `CogVideoXDPMScheduler` on `functional_sched.CogVideoXDPM`."""

    _functional_class = fs.CogVideoXDPM
    _output_class = DPMOutput
    _previous_x0: torch.Tensor | None = None  # the caller's x0 for the step under way

    def _step(  # type: ignore[override]
        self,
        model_output: torch.Tensor,
        old_pred_original_sample: torch.Tensor | None,
        timestep: Any,
        timestep_back: Any,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = False,
    ) -> Any:
        index = self._planned_index(timestep)
        second = index is not None and old_pred_original_sample is not None and self._goes_on(timestep)
        if index is None or not self._planned_call(index, second, timestep_back):
            self._state = None  # the next call starts over from its timestep
            return self._diffusers_class.step(
                self,
                model_output,
                old_pred_original_sample,
                timestep,
                timestep_back,
                sample,
                generator=generator,
                return_dict=return_dict,
            )
        self._previous_x0 = old_pred_original_sample if second else None
        try:
            prev_sample, x0 = super()._step(model_output, timestep, sample, generator=generator, return_dict=False)
        finally:
            self._previous_x0 = None
        if second and return_dict:
            return self._output_class(prev_sample=prev_sample, pred_original_sample=x0)
        return prev_sample, x0

    def _goes_on(self, timestep: Any) -> bool:
        """diffusers' `prev_timestep >= 0`: the step is not the schedule's last (which is first order)."""
        return int(timestep) - self.config.num_train_timesteps // self.num_inference_steps >= 0

    def _planned_call(self, index: int, second: bool, timestep_back: Any) -> bool:
        """Whether the state can take this call: a first-order one from a fresh state (a running state at a step
        that goes on is started over, at level 0), a second-order one from the state that took the step before, with
        that step's timestep as `timestep_back`."""
        running = self._state is not None and self._functional.steps_taken(self._state) == index
        if not second:
            if running and self._goes_on(self._tables["timesteps"][index]):
                self._state = None
            return True
        return running and index > 0 and int(timestep_back) == int(self._tables["timesteps"][index - 1])

    def _with_edits(self, state: Any, work: torch.Tensor) -> Any:
        previous = self._previous_x0
        if previous is None:
            return state
        kept = previous.to(device=work.device, dtype=state.previous_x0.dtype, copy=True)  # the caller's, copied
        return state.replace(previous_x0=kept.expand_as(state.previous_x0).contiguous())

    def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
        return self._functional.noise(state, sample, generator)  # diffusers ignores variance_noise
