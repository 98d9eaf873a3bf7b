"""Flow-matching Heun: diffusers' `FlowMatchHeunDiscreteScheduler`, Heun's two calls per interval (`heun`) on the
shifted flow schedule of SD3 (`flow_match`).

Implements Algorithm 1 (Heun's 2nd-order deterministic sampler) of Karras et al. (2022), "Elucidating the Design
Space of Diffusion-Based Generative Models", on the rectified-flow schedule of Esser et al. (2024), "Scaling Rectified
Flow Transformers for High-Resolution Image Synthesis", with diffusers 0.42.1's options and call table.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..machinery import host, options
from ..machinery.options import Integer
from ..machinery.plan import Plan, scaled, working_dtype
from ..machinery.record import record
from ..machinery.schedule import Schedule
from ..machinery.scheduler import Scheduler
from ..math import schedules
from .flow_match import FlowMatchEulerDiscrete
from .heun import HeunDiscrete, TwoCallScheduler

_FLOW = options.declared(FlowMatchEulerDiscrete)


@record(host=("cursor",))
class FlowMatchHeunState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64: calls taken (two per interval but the last)
    prev_derivative: torch.Tensor  # [R, ...], float32 (float64 for float64 samples): the interval's first derivative
    sample: torch.Tensor  # [R, ...], the sample's dtype: the sample the interval started from (diffusers' `sample`)
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class FlowMatchHeunDiscrete(TwoCallScheduler):
    """Heun steps of the rectified-flow ODE dx/dsigma = v(x, sigma): an Euler step to the next sigma, then (at the
    repeated timestep) the trapezoidal correction with the mean of the two velocities. The last interval, into
    sigma = 0, is the Euler step alone.

    The schedule is FlowMatchEuler's default one (`shift`, no dynamic shifting, no custom tables: diffusers'
    `set_timesteps` takes a step count only). As diffusers, the step works on the sample upcast to float32 and
    returns the sample's dtype (the drop-in casts to the model output's, as diffusers does). Karras' churn (diffusers'
    `s_churn`, ... `step()` arguments) is not supported: the drop-in refuses `s_churn > 0`.

    Implements Algorithm 1 of Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based Generative
    Models", on the flow schedule of Esser et al. (2024).
    """

    num_train_timesteps: int = _FLOW["num_train_timesteps"].but(domain=Integer(minimum=2, maximum=1_000_000))
    shift: float = _FLOW["shift"]

    state_type: ClassVar[type] = FlowMatchHeunState
    diffusers_name: ClassVar[str] = "FlowMatchHeunDiscreteScheduler"
    _averages: ClassVar[bool] = True
    _upcasts: ClassVar[bool] = True

    # Heun's own: the model sees each call's sigma, both calls of an interval step its whole length.
    _call_coefficients = HeunDiscrete._call_coefficients

    def _step_options(self) -> tuple[Any, ...]:
        return ()

    def _check_options(self) -> None:
        pass

    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return schedules.flow_alpha_sigma(sigma)

    # ------------------------------------------------------------------------------------------------ plan
    def _check_schedule(self, schedule: Schedule) -> None:
        if schedule.timesteps is not None or schedule.sigmas is not None:
            raise ValueError(
                f"{self.name}: custom timesteps or sigmas are not supported (diffusers' set_timesteps takes "
                "num_inference_steps only)."
            )
        if schedule.mu is not None:
            raise ValueError(f"{self.name}: mu is not used by this scheduler (it has no dynamic shifting).")
        if schedule.num_inference_steps is None:
            raise ValueError(f"{self.name}: give num_inference_steps.")
        Scheduler._check_schedule(self, schedule)

    def _schedule(
        self, n: int | None, timesteps: torch.Tensor | None, sigmas: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(timesteps [N], sigmas [N + 1]) of the intervals: FlowMatchEuler's statically shifted schedule, which
        diffusers' FlowMatchHeun computes alike (linspace between the shifted training ends, shifted in float64)."""
        flow = FlowMatchEulerDiscrete(num_train_timesteps=self.num_train_timesteps, shift=self.shift)
        plan = flow._build_plan(n, None, None, None, torch.float32)
        return plan.timesteps[0], plan.sigmas[0]

    # ------------------------------------------------------------------------------------------------ the model's side
    init_noise_sigma = Scheduler.init_noise_sigma
    scale_model_input = Scheduler.scale_model_input

    def _data_prediction(
        self,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        sigma: torch.Tensor,
        v_out: torch.Tensor,
        v_in: torch.Tensor,
    ) -> torch.Tensor:
        """x0 = sample - v sigma, as diffusers writes it (`model_output * sigma`: the CPU rounds a half-precision
        product at the coefficient's precision)."""
        return sample - scaled(sigma, model_output, tensor_first=True)

    def _buffers(self, sample: torch.Tensor) -> dict[str, torch.Tensor]:
        # diffusers keeps the float32 derivative; the stored sample is the caller's, upcast exactly where it is used.
        derivative = torch.zeros(sample.shape, dtype=working_dtype(sample), device=sample.device)
        return {"prev_derivative": derivative, "sample": torch.zeros_like(sample)}
