"""The drop-in of flow-matching Heun (`functional_sched.FlowMatchHeunDiscrete`): Heun's two-call drop-in
(`drop_ins.heun`) on a flow schedule. As diffusers, the sample is upcast to float32, the result cast to the model
output's dtype, the sigmas kept on `set_timesteps`' device; there is no `scale_model_input`, `init_noise_sigma` or
`add_noise` (`scale_noise` instead). Karras' churn (`step(s_churn > 0)`) is refused by name."""

from __future__ import annotations

from typing import Any, ClassVar

import diffusers
import torch
from diffusers.schedulers.scheduling_flow_match_heun_discrete import FlowMatchHeunDiscreteSchedulerOutput

from functional_sched.machinery import checks
from functional_sched.schedulers.flow_heun import FlowMatchHeunDiscrete

from ..drop_in import FlowMatchEulerDiscreteScheduler, _DropIn
from .heun import HeunDiscreteScheduler, TwoCallDropIn, absent, run_value
from .sigma_discrete import SigmaDiscreteDropIn


def _missing(name: str) -> property:
    """An attribute diffusers' class does not have (reading it raises AttributeError, so `hasattr` is False)."""
    return property(lambda self: absent(self, name))


class FlowMatchHeunDiscreteScheduler(TwoCallDropIn, diffusers.FlowMatchHeunDiscreteScheduler):
    """diffusers' `FlowMatchHeunDiscreteScheduler` on `functional_sched.FlowMatchHeunDiscrete`."""

    _functional_class: ClassVar[type] = FlowMatchHeunDiscrete
    _output_class = FlowMatchHeunDiscreteSchedulerOutput
    _returns_x0 = False
    _steps_on_default_tables = False  # diffusers' step before set_timesteps fails (it has no `dt` yet)

    def _check_timestep(self, timestep: Any) -> None:
        if isinstance(timestep, (int, torch.IntTensor, torch.LongTensor)):
            raise ValueError(
                "Passing integer indices (e.g. from `enumerate(timesteps)`) as timesteps to"
                " `FlowMatchHeunDiscreteScheduler.step()` is not supported. Make sure to pass"
                " one of the `scheduler.timesteps` as a timestep."
            )

    def _take_step_arguments(self, arguments: dict[str, Any]) -> None:
        churn = arguments.get("s_churn", 0.0)
        if churn != 0.0:
            raise NotImplementedError(
                f"{type(self).__name__}.step: s_churn={churn!r} is not supported (FlowMatchHeunDiscrete has no "
                "churn; diffusers' churn draws noise at both calls of an interval and scales the step by "
                "sigma_hat). Pass s_churn=0.0 (the default); s_tmin, s_tmax and s_noise then change nothing."
            )
        super()._take_step_arguments(arguments)

    _exposed_sigmas = FlowMatchEulerDiscreteScheduler._exposed_sigmas  # on set_timesteps' device, as diffusers
    _output_dtype = SigmaDiscreteDropIn._output_dtype  # the model output's
    _core_sample = SigmaDiscreteDropIn._core_sample  # upcast to float32
    scale_model_input = _DropIn.scale_model_input  # diffusers has none: the model takes the sample as it is

    def scale_noise(
        self, sample: torch.Tensor, timestep: float | torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """diffusers' flow noising at one sigma: its step index's, set from `timestep` (or the begin index) if no step
        has been taken (several rows' timesteps fail the lookup, as in diffusers)."""
        owner = f"{type(self).__name__}.scale_noise"
        checks.check_like(owner, "noise", noise, checks.tensor(owner, "sample", sample), "sample")
        if self.step_index is None:
            self._scaled_index = (
                self._begin_index if self._begin_index is not None else self._index_for_timestep(timestep)
            )
        sigma = self.sigmas[self.step_index]
        return sigma * noise + (1.0 - sigma) * sample

    @property
    def num_inference_steps(self) -> int:  # type: ignore[override]
        if self._plan is None:
            absent(self, "num_inference_steps")  # diffusers sets it in set_timesteps
        return TwoCallDropIn.num_inference_steps.fget(self)  # type: ignore[attr-defined]

    def _dt(self) -> torch.Tensor | None:
        if self._plan is None:
            absent(self, "dt")  # diffusers sets it (to None) in set_timesteps
        return HeunDiscreteScheduler._dt(self)  # type: ignore[arg-type]

    def _prev_derivative(self) -> torch.Tensor | None:
        if self._plan is None:
            absent(self, "prev_derivative")
        return HeunDiscreteScheduler._prev_derivative(self)  # type: ignore[arg-type]

    init_noise_sigma = _missing("init_noise_sigma")
    add_noise = _missing("add_noise")

    _kept = HeunDiscreteScheduler._kept
    dt = run_value("dt", _dt)
    prev_derivative = run_value("prev_derivative", _prev_derivative)
    sample = run_value("sample", HeunDiscreteScheduler._sample)
