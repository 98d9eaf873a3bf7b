"""Flow-match Euler on a float32 linspace schedule: sglang's `SelfForcingFlowMatchScheduler` (self-forcing and causal
DMD video: LingBot-World) and `FlowMatchScheduler` (MOVA's base; its pair scheduler is `flow_pair.py`).

sglang 0.5.23 (`multimodal_gen/runtime/models/schedulers/scheduling_self_forcing_flow_match.py`, `flow_match_pair.py`)
spaces sigmas with torch's float32 `linspace(sigma_start, sigma_min, n)` (diffusers' flow-match Euler: numpy float64),
shifts them in float32 and keeps no final sigma in its table (its step goes to 0 past the last one, or to 1 with
`inverse_timesteps`/`reverse_sigmas`). The Euler step is flow-match Euler's (`flow_match.FlowEuler`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..machinery import options
from ..machinery.options import Flag, Integer, Option, Optional, Real
from ..machinery.plan import Plan
from ..machinery.schedule import Schedule
from . import common
from .flow_match import FlowEuler


def linspace_sigmas(scheduler: Any, num_inference_steps: int, shift: float, strength: float, mu: float | None) -> Any:
    """sglang's `set_timesteps` sigma table [N] (no final sigma), float32, for one shift, denoising strength and (with
    `exponential_shift`) mu: the same torch operations in the same order, so the same bits."""
    sigma_start = scheduler.sigma_min + (scheduler.sigma_max - scheduler.sigma_min) * strength  # a Python float
    count = num_inference_steps + 1 if scheduler.extra_one_step else num_inference_steps
    sigmas = torch.linspace(sigma_start, scheduler.sigma_min, count, dtype=torch.float32)[:num_inference_steps]
    if scheduler.inverse_timesteps:
        sigmas = torch.flip(sigmas, dims=[0])
    if getattr(scheduler, "exponential_shift", False):
        sigmas = math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))
    else:
        sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    terminal = getattr(scheduler, "shift_terminal", None)
    if terminal is not None:
        one_minus_z = 1 - sigmas
        scale_factor = one_minus_z[-1] / (1 - terminal)
        if scale_factor != 0:
            sigmas = 1 - (one_minus_z / scale_factor)
    if scheduler.reverse_sigmas:
        sigmas = 1 - sigmas
    return sigmas


@options.config
class LinspaceFlowMatch(FlowEuler):
    """Base of sglang's float32-linspace flow-match classes: their options (sglang's names and defaults) and the
    table, stepped by flow-match Euler's step `x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v_i` (`FlowEuler`)."""

    # sglang's constructor builds its table for this many steps; a request's `init` gives its own count.
    num_inference_steps: int = Option(100, Integer(minimum=1, maximum=10_000), examples=(1000, 4))
    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    shift: float = Option(3.0, Real(above=0), examples=(5.0, 10.0, 1.0))
    sigma_max: float = Option(1.0, Real(above=0, at_most=1), examples=(0.9,))
    sigma_min: float = Option(0.003 / 1.002, Real(at_least=0, below=1), examples=(0.0,))
    inverse_timesteps: bool = Option(False, Flag())
    extra_one_step: bool = Option(False, Flag())
    reverse_sigmas: bool = Option(False, Flag())

    reference_library: ClassVar[str] = "sglang"
    # sglang multiplies by 0-d float32 CPU sigmas, the model output first (`model_output * (sigma_ - sigma)`).
    _sigmas_on_host: ClassVar[bool] = True
    _tensor_first: ClassVar[bool] = True

    # ------------------------------------------------------------------------------------------------ plan
    def _check_schedule(self, schedule: Schedule) -> None:
        if schedule.timesteps is not None or schedule.sigmas is not None:
            raise ValueError(
                f"{self.name}: custom timesteps or sigmas are not supported (sglang's set_timesteps takes none); "
                "give num_inference_steps."
            )
        if schedule.num_inference_steps is None:
            raise ValueError(f"{self.name}: give num_inference_steps.")
        if schedule.mu is not None:
            raise ValueError(f"{self.name}: mu is not supported (sglang's set_timesteps takes none).")
        super()._check_schedule(schedule)

    def _final_sigma(self) -> float:
        """Where sglang's step goes past the table's last sigma: 0, or 1 where the table rises."""
        return 1.0 if self.inverse_timesteps or self.reverse_sigmas else 0.0

    def _schedule_sigmas(self, num_inference_steps: int) -> torch.Tensor:
        """The table's sigmas [N], float32, as sglang's `set_timesteps(num_inference_steps)` makes them."""
        return linspace_sigmas(self, num_inference_steps, self.shift, 1.0, None)

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        assert num_inference_steps is not None
        table = self._schedule_sigmas(num_inference_steps)
        timesteps = table * self.num_train_timesteps
        return self._plan_from_tables(timesteps, torch.cat([table, torch.full((1,), self._final_sigma())]).to(dtype))


@options.config
class SelfForcingFlowMatch(LinspaceFlowMatch):
    """Euler steps of rectified flow on a float32 linspace of sigmas shifted by `shift`, as sglang's
    `SelfForcingFlowMatchScheduler` (LingBot-World's causal DMD builds it with `sigma_min=0, extra_one_step=True` and
    1000 steps, and warps its table to the distilled steps).

    `sigma_i = shift s_i / (1 + (shift - 1) s_i)`, s = float32 linspace(sigma_start, sigma_min, N) (N + 1 points, the
    last dropped, with `extra_one_step`), `sigma_start = sigma_min + (sigma_max - sigma_min) denoising_strength`;
    timesteps `1000 sigma_i`; `x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v_i`, with sigma_N = 0 (1 where the table rises).
    `denoising_strength` is sglang's `set_timesteps` argument, here config (a drop-in re-plans when a call passes
    another). Rows at different steps each step to their own next sigma: sglang's `step` sends every row of a batch to
    sigma 0 once any row is at its last step (its `(timestep_id + 1 >= len).any()`); ours matches sglang stepping each
    row alone.

    Implements Euler steps of rectified flow (Liu et al., 2022) with the schedule of Self Forcing (Huang et al., 2025,
    "Self Forcing: Bridging the Train-Test Gap in Autoregressive Video Diffusion").
    """

    denoising_strength: float = Option(1.0, Real(above=0, at_most=1), examples=(0.5, 0.8))

    diffusers_name: ClassVar[str] = "SelfForcingFlowMatchScheduler"
    _float32_products: ClassVar[bool] = True  # sglang's `sigma.reshape(-1, 1, 1, 1)`: per-row float32 sigmas

    def _schedule_sigmas(self, num_inference_steps: int) -> torch.Tensor:
        return linspace_sigmas(self, num_inference_steps, self.shift, self.denoising_strength, None)


@options.config
class SglangFlowMatch(LinspaceFlowMatch):
    """Euler steps of rectified flow on sglang's `FlowMatchScheduler` schedule (MOVA's base class): SelfForcing's
    float32 linspace, shifted by `shift`, or with `exponential_shift` by `e^mu / (e^mu + 1/s - 1)` with mu =
    `exponential_shift_mu`, then stretched to `shift_terminal` where set (as diffusers' flow-match Euler stretches).

    Implements Euler steps of rectified flow (Liu et al., 2022; Esser et al., 2024, "Scaling Rectified Flow
    Transformers for High-Resolution Image Synthesis").
    """

    exponential_shift: bool = Option(False, Flag())
    exponential_shift_mu: float | None = Option(None, Optional(Real(at_least=-50, at_most=50)), examples=(0.7,))
    shift_terminal: float | None = common.SHIFT_TERMINAL.but(domain=Optional(Real(above=0, below=1)))

    diffusers_name: ClassVar[str] = "FlowMatchScheduler"

    def _check_options(self) -> None:
        if self.exponential_shift and self.exponential_shift_mu is None:
            raise ValueError(
                f"{self.name}: exponential_shift=True needs exponential_shift_mu (sglang's set_timesteps raises "
                "TypeError without it)."
            )

    def _schedule_sigmas(self, num_inference_steps: int) -> torch.Tensor:
        return linspace_sigmas(self, num_inference_steps, self.shift, 1.0, self.exponential_shift_mu)
