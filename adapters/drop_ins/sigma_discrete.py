"""What the drop-ins of the k-diffusion-style discrete schedulers (`functional_sched.schedulers.sigma_discrete`) share:
the model input scaled by sqrt(sigma^2 + 1), `init_noise_sigma` from the sigma table, variance-exploding `add_noise`,
the x0 estimate returned with the sample, stepping on the construction tables before `set_timesteps`."""

from __future__ import annotations

from typing import Any

import torch

from functional_sched.machinery import checks

from ..drop_in import _check_timesteps, _DropIn


class SigmaDiscreteDropIn(_DropIn):
    """What the VE-sigma drop-ins share. diffusers keeps their sigmas on the CPU, steps in float32 and returns the
    model output's dtype, with the x0 estimate in float32."""

    _missing_timestep_is_last = False  # diffusers' lookup raises IndexError for a timestep not in the schedule
    _returns_x0 = True
    _steps_on_default_tables = True

    #: The index `scale_model_input` looked up before the first step (diffusers sets its step index there).
    _scaled_index: int | None = None

    #: The final sigma of a log-linear table as a pipeline edited it (no step reaches it; diffusers shows it).
    _unreached: torch.Tensor | None = None

    def _set_timesteps(self, *args: Any, **kwargs: Any) -> None:
        self._scaled_index = self._unreached = None
        super()._set_timesteps(*args, **kwargs)

    @property
    def step_index(self) -> int | None:
        if self._state is None:
            return self._scaled_index  # diffusers' scale_model_input sets the index before the first step
        return self._functional.steps_taken(self._state)

    @property
    def init_noise_sigma(self) -> torch.Tensor:
        largest = self.sigmas.max()
        if self.config.timestep_spacing in ("linspace", "trailing"):
            return largest
        return (largest**2 + 1) ** 0.5

    def _exposed_sigmas(self, plan: Any) -> torch.Tensor:
        functional = self._functional
        table = plan.sigmas[0].cpu()
        if getattr(functional, "_unreached_final", False):
            final = self._unreached if self._unreached is not None else functional._final_sigma().reshape(1)
            table = torch.cat([table, final.to(table.dtype)])
        return table

    def _planned_sigmas(self, exposed: torch.Tensor) -> torch.Tensor:
        if getattr(self._functional, "_unreached_final", False):
            self._unreached = exposed[-1:].clone()  # no step's (log-linear sigmas), but shown as it was edited
            return exposed[:-1]
        return exposed

    def _model_sigma_index(self, timestep: Any) -> int:
        """The index of the sigma the model sees at this call (diffusers' `step_index`, looked up if not set)."""
        if self.step_index is None:
            if self._plan is None:
                self._on_default_tables()  # diffusers scales (and steps) on its construction tables
            self._scaled_index = (
                self._begin_index if self._begin_index is not None else self._index_for_timestep(timestep)
            )
        return self.step_index

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None) -> torch.Tensor:
        owner = f"{type(self).__name__}.scale_model_input"
        checks.tensor(owner, "sample", sample)
        sigma = self.sigmas[self._model_sigma_index(timestep)]
        self.is_scale_input_called = True
        return sample / ((sigma**2 + 1) ** 0.5)

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        return model_output.dtype

    def _core_sample(self, sample: torch.Tensor, state: Any, out_dtype: torch.dtype) -> torch.Tensor:
        return sample.to(torch.float32)  # diffusers upcasts the sample and steps in float32

    def _x0(self, x0: torch.Tensor, model_output: torch.Tensor) -> torch.Tensor:
        # A sample-predicting model's output is diffusers' x0 as it is (its dtype).
        if self._functional.prediction_type in ("sample", "original_sample"):
            return model_output
        return x0

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        owner = f"{type(self).__name__}.add_noise"
        checks.tensor(owner, "original_samples", original_samples)
        checks.check_like(owner, "noise", noise, original_samples, "original_samples")
        _check_timesteps(owner, "timesteps", timesteps)
        return original_samples + noise * self._noising_sigma(original_samples, timesteps)
