"""The flow-matching LCM drop-in: `FlowMatchLCMScheduler`, scale-wise generation (`set_scale_factors`) included."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import diffusers
import torch
from diffusers.schedulers.scheduling_flow_match_lcm import FlowMatchLCMSchedulerOutput

import functional_sched as fs
from functional_sched.schedulers.flow_lcm import FlowMatchLCM

from ..drop_in import FlowMatchEulerDiscreteScheduler as _FlowMatchEuler
from ..drop_in import _DropIn


class FlowMatchLCMScheduler(_DropIn, diffusers.FlowMatchLCMScheduler):
    """diffusers' `FlowMatchLCMScheduler` on `functional_sched.FlowMatchLCM`: every step draws its noise from the
    `generator` as diffusers does (float32, shaped as the step's result: the next resolution with scale factors).
    `set_scale_factors` takes effect as in diffusers (the config keeps the constructor's factors); `set_shift` to a
    shift other than the config's is refused (diffusers then mixes two shifts, see `from_diffusers`)."""

    _functional_class: ClassVar[type] = FlowMatchLCM
    _output_class = FlowMatchLCMSchedulerOutput
    _missing_timestep_is_last = False  # diffusers raises IndexError for a timestep not in its table

    # As flow-match Euler's drop-in: sigmas on set_timesteps' device, the model output's dtype out, float32 steps,
    # scale_noise.
    _exposed_sigmas = _FlowMatchEuler._exposed_sigmas
    _output_dtype = _FlowMatchEuler._output_dtype
    _core_sample = _FlowMatchEuler._core_sample
    scale_noise = _FlowMatchEuler.scale_noise

    def _check_timestep(self, timestep: Any) -> None:
        if isinstance(timestep, (int, torch.IntTensor, torch.LongTensor)):
            raise ValueError(
                "Passing integer indices (e.g. from `enumerate(timesteps)`) as timesteps to"
                " `FlowMatchLCMScheduler.step()` is not supported. Make sure to pass"
                " one of the `scheduler.timesteps` as a timestep."
            )

    def _step(self, model_output: Any, timestep: Any, sample: Any, **arguments: Any) -> Any:
        # diffusers checks the factors against the table at every step: `set_scale_factors` may come at any time.
        self._check_timestep(timestep)
        factors = self._scale_factors
        if factors and self._upscale_mode and len(self.timesteps) != len(factors) + 1:
            raise ValueError(
                "`_scale_factors` should have the same length as `timesteps` - 1, if `_scale_factors` are set."
            )
        return super()._step(model_output, timestep, sample, **arguments)

    def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
        shape = self._functional.noise_shape(state, sample)
        return fs.randn_tensor(shape, generator=generator, device=sample.device, dtype=torch.float32)

    def set_scale_factors(self, scale_factors: list[float], upscale_mode: str) -> None:
        """diffusers' scale-wise generation set at run time: the steps from here on (this run's, if one is under way)
        interpolate x0 to `scale_factors[i]` times the initial size with `upscale_mode`; None or [] for none."""
        self._scale_factors = scale_factors
        self._upscale_mode = upscale_mode
        on = bool(scale_factors) and bool(upscale_mode)
        self._functional = attrs.evolve(
            self._functional,
            scale_factors=tuple(scale_factors) if on else None,
            upscale_mode=upscale_mode if on else self._functional.upscale_mode,
        )
        request = self._request
        if self._state is not None and request is not None:
            self._state = self._functional._replanned(self._state, request.num_inference_steps, **request.custom)

    def set_shift(self, shift: float) -> None:
        if not self.config.use_dynamic_shifting and shift != self.config.shift:
            raise NotImplementedError(
                f"functional_sched does not support FlowMatchLCMScheduler.set_shift({shift!r}) on a scheduler built "
                f"with shift={self.config.shift!r}: diffusers then shifts by {shift!r} within the sigma range of "
                f"shift={self.config.shift!r}. Build the scheduler with shift={shift!r} instead "
                "(FlowMatchLCMScheduler.from_config(config, shift=...))."
            )
        self._shift = shift
