"""The EDM family's drop-ins: `EDMEulerScheduler`, `EDMDPMSolverMultistepScheduler` and
`CosineDPMSolverMultistepScheduler` (`functional_sched.schedulers.edm`, `.edm_dpm`).

diffusers feeds the model `sample * c_in` (c_in = 1 / sqrt(sigma^2 + sigma_data^2)) at the current sigma, and its
`init_noise_sigma` is sqrt(sigma_max^2 + 1) (a Python float); noising is variance-exploding, x0 + sigma noise.
"""

from __future__ import annotations

from typing import Any, ClassVar

import diffusers
import torch
from diffusers.schedulers.scheduling_edm_euler import EDMEulerSchedulerOutput
from diffusers.utils import is_torchsde_available

import functional_sched as fs
from functional_sched.machinery import checks
from functional_sched.schedulers.edm import EDMEuler
from functional_sched.schedulers.edm_dpm import CosineDPMSolverMultistep, EDMDPMSolverMultistep

from ..drop_in import _Multistep
from .sigma_discrete import SigmaDiscreteDropIn


class EDMEulerScheduler(SigmaDiscreteDropIn, diffusers.EDMEulerScheduler):
    """diffusers' `EDMEulerScheduler` on `functional_sched.EDMEuler` (the churn `step()` arguments re-plan the run
    where they differ from the config in force). As Cosmos 1.0's pipeline uses it: a step for x0 alone, the step index
    set back (`_step_index -= 1`), then a step of the guided half of the batch with `pred_original_sample`."""

    _functional_class: ClassVar[type] = EDMEuler
    _output_class = EDMEulerSchedulerOutput

    @property
    def init_noise_sigma(self) -> float:  # type: ignore[override]
        return (self.config.sigma_max**2 + 1) ** 0.5

    def _check_timestep(self, timestep: Any) -> None:
        if isinstance(timestep, (int, torch.IntTensor, torch.LongTensor)):
            raise ValueError(
                "Passing integer indices (e.g. from `enumerate(timesteps)`) as timesteps to"
                " `EDMEulerScheduler.step()` is not supported. Make sure to pass"
                " one of the `scheduler.timesteps` as a timestep."
            )

    def _set_timesteps(  # type: ignore[override]
        self, num_inference_steps: int | None = None, device: Any = None, sigmas: Any = None
    ) -> None:
        if sigmas is not None:
            raise NotImplementedError(
                f"{type(self).__name__}.set_timesteps: custom sigmas are not supported (diffusers reads them as "
                "positions of its Karras or exponential ramp); set num_inference_steps."
            )
        super()._set_timesteps(num_inference_steps, device)
        self._rewound = None

    #: The step index a pipeline set (Cosmos rewinds it after the call that only gave it x0): the next step restarts
    #: the state there. EDM Euler's state holds nothing but its place, so the restart is exact.
    _rewound: int | None = None

    @property
    def step_index(self) -> int | None:
        return self._rewound if self._rewound is not None else super().step_index

    @property
    def _step_index(self) -> int | None:
        return self.step_index

    @_step_index.setter
    def _step_index(self, value: int | None) -> None:
        if value is None and self._state is None:
            return  # diffusers' own resets
        self._rewound = checks.integer(type(self).__name__, "_step_index", value, minimum=0)

    def _with_edits(self, state: Any, work: torch.Tensor) -> Any:
        """The state at the index a pipeline set, or for a batch of another size (Cosmos steps the guided half of
        the batch it took x0 from): restarted there."""
        rows = self._functional._rows_and_device(state)[0]
        if self._rewound is None and rows == work.shape[0]:
            return state
        index = self._rewound if self._rewound is not None else self._functional.steps_taken(state)
        self._rewound = None
        return self._started(work, index)

    def _passed_through(self, arguments: dict[str, Any]) -> dict[str, Any]:
        x0 = arguments.get("pred_original_sample")
        return {} if x0 is None else {"pred_original_sample": x0}

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None) -> torch.Tensor:
        owner = f"{type(self).__name__}.scale_model_input"
        checks.tensor(owner, "sample", sample)
        sigma = self.sigmas[self._model_sigma_index(timestep)]
        self.is_scale_input_called = True
        return self.precondition_inputs(sample, sigma)

    def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
        if not self._functional.stochastic:
            return None
        if not self._functional._draws_noise(state):
            return torch.zeros_like(sample)  # scaled by zero: diffusers draws none, so the generator keeps its stream
        return fs.randn_tensor(
            model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
        )


class _EDMMultistep(_Multistep):
    """What the EDM DPM-Solver drop-ins share: the model input `sample * c_in`, diffusers' `init_noise_sigma`, and
    no upcast (the result has the sample's and the model output's promoted dtype)."""

    @property
    def init_noise_sigma(self) -> float:  # type: ignore[override]
        return (self.config.sigma_max**2 + 1) ** 0.5

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None) -> torch.Tensor:
        owner = f"{type(self).__name__}.scale_model_input"
        checks.tensor(owner, "sample", sample)
        index = self.step_index
        if index is None:  # diffusers looks the index up here, as its first `step` does
            index = self._begin_index if self._begin_index is not None else self._index_for_timestep(timestep)
        self.is_scale_input_called = True
        return self.precondition_inputs(sample, self.sigmas[index])

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        return torch.promote_types(sample.dtype, model_output.dtype)


class EDMDPMSolverMultistepScheduler(_EDMMultistep, diffusers.EDMDPMSolverMultistepScheduler):
    """diffusers' `EDMDPMSolverMultistepScheduler` on `functional_sched.EDMDPMSolverMultistep`: the SDE variant draws
    its noise from the `generator` as diffusers does (the converted output's dtype)."""

    _functional_class: ClassVar[type] = EDMDPMSolverMultistep

    def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
        if not self._functional.stochastic:
            return None
        dtype = self._output_dtype(model_output, sample)
        return fs.randn_tensor(sample.shape, generator=generator, device=model_output.device, dtype=dtype)


if is_torchsde_available():  # diffusers' class needs torchsde too
    from .dpm_sde import _NoiseSampler  # diffusers' sampler, equal to another built alike

    class CosineDPMSolverMultistepScheduler(_EDMMultistep, diffusers.CosineDPMSolverMultistepScheduler):
        """diffusers' `CosineDPMSolverMultistepScheduler` on `functional_sched.CosineDPMSolverMultistep`. As diffusers,
        it builds one Brownian tree at the first `step` after `set_timesteps`, seeded from `generator.initial_seed()`
        (one per row for a list of generators; from the global generator without one), and queries it at every step,
        with diffusers' own sampler, at the sigmas the core's plan gives for the step."""

        _functional_class: ClassVar[type] = CosineDPMSolverMultistep

        def _set_timesteps(self, num_inference_steps: int | None = None, device: Any = None) -> None:  # type: ignore[override]
            super()._set_timesteps(num_inference_steps, device)
            self.noise_sampler = None

        def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
            if getattr(self, "noise_sampler", None) is None:
                seed = None
                if generator is not None:
                    seed = (
                        [g.initial_seed() for g in generator]
                        if isinstance(generator, list)
                        else generator.initial_seed()
                    )
                like = torch.empty(sample.shape, dtype=self._output_dtype(model_output, sample), device=sample.device)
                self.noise_sampler = _NoiseSampler(
                    like, sigma_min=self.config.sigma_min, sigma_max=self.config.sigma_max, seed=seed
                )
            (query,) = self._functional._brownian_queries(state)[:1]
            return self.noise_sampler(query.start, query.end).to(model_output.device)
