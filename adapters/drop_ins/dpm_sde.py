"""The drop-in of DPM-Solver++ SDE (`functional_sched.DPMSolverSDE`).

diffusers seeds one Brownian tree for the whole batch at the first `step` (from `noise_sampler_seed`, or the global
torch generator) and queries it at every call but the last; so does this drop-in, with diffusers' own sampler (a
pipeline's images stay bit-equal), at the sigmas the core's plan gives for the call. The core itself takes the noise
as an argument (`functional_sched.brownian_noise` gives each request its own tree). `sample` and `mid_point_sigma`
(diffusers' phase) are read from the state. Defined only where torchsde is installed, as diffusers' class needs it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import diffusers
import torch
from diffusers.utils import is_torchsde_available

import functional_sched as fs
from functional_sched.schedulers.dpm_sde import INPUT_SCALE, PHASE, SECOND, SIGMA_IN

from .sigma_discrete import SigmaDiscreteDropIn


def _run_value(name: str, read: Any) -> property:
    """diffusers' phase attribute, read from the state; assigning it is refused by name (but for the None its
    constructor and `set_timesteps` give it)."""

    def assign(self: Any, value: Any) -> None:
        if value is None and getattr(self, "_state", None) is None:
            return
        raise NotImplementedError(
            f"{type(self).__name__}: {name} is read from the functional state and cannot be assigned (the phase of "
            "each call follows the calls since set_timesteps)."
        )

    return property(read, assign)


if is_torchsde_available():
    from diffusers.schedulers.scheduling_dpmsolver_sde import (
        BrownianTreeNoiseSampler,
        DPMSolverSDESchedulerOutput,
    )

    class _NoiseSampler(BrownianTreeNoiseSampler):
        """diffusers' sampler, equal to another built alike (the same tree: seed, range, shape, dtype and device), as a
        pipeline comparing two schedulers' attributes would see them."""

        def _key(self) -> tuple[Any, ...]:
            tree = self.tree
            return (
                tree.sign,
                tree.batched,
                [(t.entropy, t._start, t._end, t.shape, t.dtype, t.device) for t in tree.trees],
            )

        def __eq__(self, other: object) -> bool:
            if not isinstance(other, BrownianTreeNoiseSampler):
                return NotImplemented
            return _NoiseSampler._key(self) == _NoiseSampler._key(other)  # type: ignore[arg-type]

        __hash__ = None  # type: ignore[assignment]

    class DPMSolverSDEScheduler(SigmaDiscreteDropIn, diffusers.DPMSolverSDEScheduler):
        """diffusers' `DPMSolverSDEScheduler` on `functional_sched.DPMSolverSDE` (`s_noise`, a `step()` argument,
        re-plans the run where it differs from the config in force). diffusers does not upcast: the sample's and the
        model output's dtypes promote."""

        _functional_class: ClassVar[type] = fs.DPMSolverSDE
        _output_class = DPMSolverSDESchedulerOutput

        #: The sample of the call in progress, which diffusers builds its tree like (shape, dtype, device).
        _first_sample: torch.Tensor | None = None

        def _set_timesteps(  # type: ignore[override]
            self, num_inference_steps: int | None = None, device: Any = None, num_train_timesteps: int | None = None
        ) -> None:
            if num_train_timesteps is not None and num_train_timesteps != self.config.num_train_timesteps:
                raise NotImplementedError(
                    f"{type(self).__name__}.set_timesteps: num_train_timesteps={num_train_timesteps} other than the "
                    f"config's ({self.config.num_train_timesteps}) is not supported; set it in the config."
                )
            super()._set_timesteps(num_inference_steps, device)
            self.noise_sampler = None

        @property
        def num_inference_steps(self) -> int:  # type: ignore[override]
            return (len(self.timesteps) + 1) // 2  # intervals: two calls each but the last

        def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
            return torch.promote_types(sample.dtype, model_output.dtype)

        def _entry(self, step: int) -> tuple[torch.Tensor, ...]:
            """The host plan entry (0-d CPU coefficients) of call `step` of the state's plan."""
            cursor = self._functional._cursor(self._state)
            if cursor is not None:
                return cursor.owned.host.entry(step, 0)
            return self._state.plan.coefficients[0, step, 0].cpu().unbind(0)

        def _step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, **arguments: Any) -> Any:
            self._first_sample = sample
            try:
                return super()._step(model_output, timestep, sample, **arguments)
            finally:
                self._first_sample = None

        def _core_sample(self, sample: torch.Tensor, state: Any, out_dtype: torch.dtype) -> torch.Tensor:
            return sample.to(out_dtype if state is None else state.interval_start.dtype)

        def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
            if self.noise_sampler is None:  # diffusers' tree over its sigma table, built at the first step
                sigmas = self.sigmas
                low, high = sigmas[sigmas > 0].min(), sigmas.max()
                like = self._first_sample if self._first_sample is not None else sample
                self.noise_sampler = _NoiseSampler(like, low.item(), high.item(), self.noise_sampler_seed)
            (query,) = self._functional._brownian_queries(state)[:1]
            if query is None:
                return torch.zeros_like(sample)  # the Euler call into sigma 0: diffusers queries nothing
            return self.noise_sampler(query.start, query.end)

        # ------------------------------------------------------------------------------------------------ phase
        def _mid_interval(self) -> bool:
            """Whether the next call is an interval's second (diffusers then holds the interval's sample)."""
            if self._state is None:
                return False
            step = self.step_index
            return step < len(self.timesteps) and float(self._entry(step)[PHASE]) == SECOND

        def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None) -> torch.Tensor:
            index = self._model_sigma_index(timestep)
            if self._state is None:  # diffusers' first call of a run is an interval's first, at the table's sigma
                return super().scale_model_input(sample, timestep)
            self.is_scale_input_called = True
            return sample / self._entry(index)[INPUT_SCALE]

        def _sample(self) -> torch.Tensor | None:
            return self._state.interval_start if self._mid_interval() else None

        def _mid_point_sigma(self) -> torch.Tensor | None:
            return self._entry(self.step_index)[SIGMA_IN].clone() if self._mid_interval() else None

        sample = _run_value("sample", _sample)
        mid_point_sigma = _run_value("mid_point_sigma", _mid_point_sigma)

        @property
        def state_in_first_order(self) -> bool:
            return not self._mid_interval()

    __all__ = ["DPMSolverSDEScheduler"]
else:  # pragma: no cover - diffusers' class needs torchsde too
    __all__ = []
