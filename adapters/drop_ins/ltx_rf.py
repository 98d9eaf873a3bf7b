"""The drop-in of LTX's ancestral rectified-flow Euler (`functional_sched.LTXEulerAncestralRF`).

As diffusers: custom `sigmas` (or `timesteps` standing for them) hold the final sigma, and `timesteps` then holds its
timestep too (N + 1 of them; LTX's pipelines loop over `timesteps[:-1]`); a `step` past the last returns the sample
as it is; `mu` and `num_inference_steps` beside custom sigmas are ignored; the sample is upcast to float32 and the
result cast back to the sample's dtype; noise is drawn in float32 from `generator` at every step but a final one.
Beyond diffusers' API: custom tables may be numpy arrays, and `scale_noise` noises a clean sample as flow matching
does (FlowMatchEuler's; diffusers' LTX pipelines do it by hand).
"""

from __future__ import annotations

from typing import Any, ClassVar

import diffusers
import torch
from diffusers.schedulers.scheduling_ltx_euler_ancestral_rf import LTXEulerAncestralRFSchedulerOutput

from functional_sched.machinery.noise import randn_tensor
from functional_sched.machinery.plan import as_dtype
from functional_sched.schedulers.ltx_rf import LTXEulerAncestralRF

from ..drop_in import FlowMatchEulerDiscreteScheduler, _DropIn, _Request


class LTXEulerAncestralRFScheduler(_DropIn, diffusers.LTXEulerAncestralRFScheduler):
    """diffusers' `LTXEulerAncestralRFScheduler` on `functional_sched.LTXEulerAncestralRF`."""

    _functional_class: ClassVar[type] = LTXEulerAncestralRF
    _output_class = LTXEulerAncestralRFSchedulerOutput
    _missing_timestep_is_last = False

    def _check_timestep(self, timestep: Any) -> None:
        if isinstance(timestep, (int, torch.IntTensor, torch.LongTensor)):
            raise ValueError(
                "Passing integer indices (e.g. from `enumerate(timesteps)`) as timesteps to"
                " `LTXEulerAncestralRFScheduler.step()` is not supported. Make sure to pass"
                " one of the `scheduler.timesteps` values as `timestep`."
            )

    def _set_timesteps(  # type: ignore[override]
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: Any = None,
        timesteps: Any = None,
        mu: float | None = None,
        **kwargs: Any,
    ) -> None:
        if sigmas is not None or timesteps is not None:  # diffusers' explicit path: the table alone makes the steps
            num_inference_steps, mu = None, None
            if sigmas is not None:
                timesteps = None
        super()._set_timesteps(num_inference_steps, device, sigmas=sigmas, mu=mu, timesteps=timesteps)

    def _validate_request(self, num_inference_steps: Any, sigmas: Any, mu: Any, timesteps: Any) -> None:
        if sigmas is None and timesteps is None:  # only FlowMatchEuler's schedule from a step count needs mu
            super()._validate_request(num_inference_steps, sigmas, mu, timesteps)

    def _planned(self, request: _Request, device: str | torch.device) -> None:
        super()._planned(request, device)
        if request.sigmas is not None or request.timesteps is not None:
            with torch.inference_mode(False):  # diffusers' table: every sigma's timestep, the final one's too
                self._tables["timesteps"] = self._plan.sigmas[0] * float(self.config.num_train_timesteps)
            self._versions["timesteps"] = self._tables["timesteps"]._version

    def _with_table_edits(self, state: Any) -> Any:
        exposed = self._tables["timesteps"]
        if len(exposed) != len(self._tables["sigmas"]) or not self._edited_tables():
            return super()._with_table_edits(state)
        # A custom table holds the final sigma's timestep too, which no step starts from: the plan's are the others.
        self._tables["timesteps"] = exposed[:-1]
        state = super()._with_table_edits(state)
        with torch.inference_mode(False):
            self._tables["timesteps"] = torch.cat([self._tables["timesteps"], exposed[-1:].to(exposed.device)])
        self._versions["timesteps"] = self._tables["timesteps"]._version
        return state

    def _step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> Any:
        if self._state is not None and self._functional.steps_left(self._state) == 0:
            self._check_timestep(timestep)  # diffusers: past the last step, the sample as it is
            return self._output_class(prev_sample=sample) if return_dict else (sample,)
        return super()._step(model_output, timestep, sample, generator=generator, return_dict=return_dict)

    def _index_for_timestep(self, timestep: Any, schedule_timesteps: torch.Tensor | None = None) -> int:
        table = self.timesteps if schedule_timesteps is None else schedule_timesteps
        value = timestep.to(table.device) if isinstance(timestep, torch.Tensor) else timestep
        if not bool((table == value).any()):
            raise ValueError(
                "Passed `timestep` is not in `self.timesteps`. Make sure to use values from `scheduler.timesteps`."
            )
        return super()._index_for_timestep(timestep, schedule_timesteps)

    _exposed_sigmas = FlowMatchEulerDiscreteScheduler._exposed_sigmas  # on set_timesteps' device, as diffusers
    scale_noise = FlowMatchEulerDiscreteScheduler.scale_noise

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        return sample.dtype

    def _core_sample(self, sample: torch.Tensor, state: Any, out_dtype: torch.dtype) -> torch.Tensor:
        return as_dtype(sample, torch.float32)  # diffusers upcasts the sample and steps in float32

    def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
        if not self._functional.stochastic:
            return None
        if not self._functional._draws_noise(state):
            return torch.zeros_like(sample)  # a final step: diffusers draws none, so the generator keeps its stream
        return randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=torch.float32)
