"""sglang's UniPC schedulers (sglang 0.5.23's `multimodal_gen`): Wan's original flow UniPC, and sglang's copy of
diffusers' `UniPCMultistepScheduler`.

- `FlowUniPCMultistep`: sglang's `FlowUniPCMultistepScheduler`, the scheduler its Wan 2.1/2.2 pipelines (and
  LongLive2, flux3_action, cosmos3) run: Wan's original UniPC for flow matching. diffusers' UniPC step (`unipc`),
  on its own sigma grid: the construction-time `shift` fixes the grid's top (sigma_max, float32), `set_timesteps`
  spaces `linspace(sigma_max, 0, N + 1)[:-1]` and shifts it again; timesteps truncated. Its order-2 corrector solves
  for its rhos by Cramer's rule and keeps them float32 for half-precision samples.
- `SglangUniPCMultistep`: sglang's copy of diffusers' `UniPCMultistepScheduler` ("modified from diffusers 0.35"), the
  class a checkpoint that names UniPC gets in sglang: diffusers' math on diffusers 0.35's flow grid
  (`shift(linspace(1 - 1/T, 0, N + 1))[:-1]`, no nudge), `mu` as the static shift `exp(mu)`.

Implements Zhao et al. (2023), "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
Models", with the Wan team's flow-matching schedule (Wan et al. 2025, "Wan: Open and Advanced Large-Scale Video
Generative Models").
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch

from ..machinery import options
from ..machinery.options import Choice, Flag, Option, Optional, Real
from ..machinery.schedule import Schedule
from ..math import schedules
from . import common
from .unipc import UniPCMultistep

_UNIPC = options.declared(UniPCMultistep)


def _pinned(value: Any) -> Any:
    """An option of diffusers' UniPC that sglang's class does not have: held at `value`, no option of ours."""
    return attrs.field(default=value, init=False, repr=False)


@options.config
class FlowUniPCMultistep(UniPCMultistep):
    """Wan's original flow UniPC (sglang's `FlowUniPCMultistepScheduler`): diffusers' UniPC predictor-corrector on a
    flow schedule whose top is fixed at construction.

    `shift` is the shift the scheduler is built with, which fixes the grid's top, sigma_max = shift(1 - 1/T) in
    float32, and which `set_timesteps` applies again; `set_shift` the shift `set_timesteps` applies instead, within
    that range (sglang's `set_shift(s)`, or its `set_timesteps(shift=s)` argument; None: `shift`). Wan's pipelines
    build it with their flow_shift (`shift=3.0`, 5, 8, 12); LongLive2 (`FlowUniPC(shift=1)`, `set_timesteps(4,
    shift=5)`) is `set_shift=5.0`; cosmos3 (`set_shift(10)` on the checkpoint's shift-1 scheduler) `set_shift=10.0`.
    `mu` (with `use_dynamic_shifting`) shifts `exp(mu) / (exp(mu) + 1/s - 1)` instead, on an unshifted top.

    Refused, where sglang's numbers are wrong or undefined: `predict_x0=False` (sglang converts a velocity to noise
    with the wrong sign, `x - (1 - s) v`); custom sigmas whose first one is 1 in float32 (sglang has no nudge: log 0,
    then NaN from the second step); and, as for diffusers' UniPC, the last step into sigma = 0 at order >= 2 or with
    B(h) = h.
    """

    # sglang's options, in its order (`prediction_type` flow only; `timestep_spacing`, `steps_offset` accepted and
    # unused, as sglang accepts and ignores them).
    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    solver_order: int = common.SOLVER_ORDER
    prediction_type: str = Option("flow_prediction", Choice("flow_prediction"))
    shift: float = Option(1.0, Real(above=0), examples=(3.0, 5.0, 8.0, 12.0))
    use_dynamic_shifting: bool = common.USE_DYNAMIC_SHIFTING
    thresholding: bool = common.THRESHOLDING
    dynamic_thresholding_ratio: float = common.DYNAMIC_THRESHOLDING_RATIO
    sample_max_value: float = common.SAMPLE_MAX_VALUE
    predict_x0: bool = Option(True, Flag())
    solver_type: str = _UNIPC["solver_type"]
    lower_order_final: bool = common.LOWER_ORDER_FINAL
    disable_corrector: tuple[int, ...] = _UNIPC["disable_corrector"]
    timestep_spacing: str = common.TIMESTEP_SPACING
    steps_offset: int = common.STEPS_OFFSET
    final_sigmas_type: str = common.FINAL_SIGMAS_TYPE
    # sglang's `set_shift(s)` (or `set_timesteps(shift=s)`) after construction: `set_timesteps` then shifts by s within
    # the range `shift` fixed. None, or `shift`'s own value, for `shift` alone (stored as None); no effect with dynamic
    # shifting (stored as None too).
    set_shift: float | None = Option(None, Optional(Real(above=0)), examples=(5.0, 10.0), set_by="set_shift")

    # diffusers' UniPC options that sglang's class lacks: held at what its schedule and step amount to.
    beta_start: float = _pinned(0.0001)
    beta_end: float = _pinned(0.02)
    beta_schedule: str = _pinned("linear")
    trained_betas: tuple[float, ...] | None = _pinned(None)
    use_karras_sigmas: bool = _pinned(False)
    use_exponential_sigmas: bool = _pinned(False)
    use_beta_sigmas: bool = _pinned(False)
    use_flow_sigmas: bool = _pinned(True)
    flow_shift: float = _pinned(1.0)
    rescale_betas_zero_snr: bool = _pinned(False)
    time_shift_type: str = _pinned("exponential")
    sigma_min: float | None = _pinned(None)
    sigma_max: float | None = _pinned(None)
    shift_terminal: float | None = _pinned(None)

    reference_library: ClassVar[str] = "sglang"
    diffusers_name: ClassVar[str] = "FlowUniPCMultistepScheduler"

    def _check_options(self) -> None:
        if not self.predict_x0:
            raise ValueError(
                f"{self.name}: predict_x0=False is not supported: sglang 0.5.23's FlowUniPCMultistepScheduler converts "
                "the velocity to noise as x - (1 - sigma) v (the right one is x + (1 - sigma) v), so its samples are "
                "wrong; use predict_x0=True (Wan's setting)."
            )
        super()._check_options()
        if self.set_shift is not None and (self.use_dynamic_shifting or self.set_shift == self.shift):
            object.__setattr__(self, "set_shift", None)  # the same schedule: one config for it (frozen, as `validate`)

    # ------------------------------------------------------------------------------------------------ schedule
    def _check_schedule(self, schedule: Schedule) -> None:
        if schedule.sigmas is not None and schedule.sigmas.values[0] >= 1 - 1e-6:
            raise ValueError(
                f"{self.name}: custom sigmas starting at {schedule.sigmas.values[0]!r} are not supported: sglang's "
                "FlowUniPCMultistepScheduler has no nudge below 1 (diffusers' UniPC subtracts 1e-6), so log(sigma) "
                "of the first step is undefined and its samples are NaN from the second step; start below 1 - 1e-6."
            )
        super()._check_schedule(schedule)

    @property
    def top_sigma(self) -> float:
        """sigma_max: the construction shift's image of 1 - 1/T, in float32 as sglang's `__init__` computes it (its
        training table, shifted in float32 unless `use_dynamic_shifting`)."""
        train = self.num_train_timesteps
        table = (1.0 - schedules.np_linspace(1, 1 / train, train).flip(0)).to(torch.float32)
        if not self.use_dynamic_shifting:
            table = self.shift * table / (1 + (self.shift - 1) * table)
        return table[0].item()

    def _schedule(
        self, n: int | None, timesteps: torch.Tensor | None, custom_sigmas: torch.Tensor | None, mu: float | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if custom_sigmas is not None:
            sigmas = custom_sigmas.to(torch.float64)
        else:
            sigmas = schedules.np_linspace(self.top_sigma, 0.0, n + 1)[:-1]  # sglang's sigma_min: shift(0) = 0
        if self.use_dynamic_shifting:
            sigmas = schedules.time_shift(sigmas, mu, "exponential")
        else:
            sigmas = schedules.shift_sigmas(sigmas, self.shift if self.set_shift is None else self.set_shift)
        final = sigmas[-1] if self.final_sigmas_type == "sigma_min" else torch.zeros((), dtype=torch.float64)
        timesteps = (sigmas * self.num_train_timesteps).to(torch.int64)  # truncated, as sglang
        sigmas = torch.cat([sigmas, final.reshape(1)]).to(torch.float32)
        if sigmas[0].item() >= 1.0:
            raise ValueError(
                f"{self.name}: the schedule's first sigma rounds to 1 in float32, where sglang's "
                "FlowUniPCMultistepScheduler's log(sigma) is undefined and its samples NaN; use a smaller shift."
            )
        return timesteps, sigmas

    def _custom_range(self, name: str) -> tuple[float, float, bool]:
        return (0.0, 1.0, False)

    # ------------------------------------------------------------------------------------------------ step
    def _corrector_rhos(self, ratio: torch.Tensor, weights: list[torch.Tensor], solved: torch.Tensor) -> torch.Tensor:
        # Wan's `(b0 - b1) / (1 - r)`, `(b1 - r b0) / (1 - r)` (sglang's unipc.py); where a step never corrects at
        # order 2 (no earlier output: r = 0 at the first step, or inf into sigma = 0) diffusers' identity stands in.
        det = 1 - ratio
        cramer = torch.stack([(weights[0] - weights[1]) / det, (weights[1] - ratio * weights[0]) / det], dim=-1)
        return torch.where(torch.isfinite(cramer), cramer, solved)

    def _corrector_weights_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return torch.promote_types(dtype, torch.float32)  # Cramer's rhos are not cast to the sample's dtype


@options.config
class SglangUniPCMultistep(UniPCMultistep):
    """sglang's copy of diffusers' `UniPCMultistepScheduler` (sglang 0.5.23, "modified from diffusers 0.35"): diffusers'
    UniPC, but with `use_flow_sigmas` the flow grid of diffusers <= 0.35: `shift(1 - linspace(1, 1/T, N + 1))`,
    flipped, the last dropped (its top is shift(1 - 1/T), never 1: no nudge); `mu` is the static shift
    `flow_shift = exp(mu)` (sglang writes it into its config, where later calls without `mu` keep using it: here
    `mu` is an `init` argument, and dynamic shifting needs it at every `init`).

    Without `mu`, dynamic shifting shifts by `flow_shift` (as sglang, whose `flow_shift` holds exp of the last `mu` it
    was given: `from_sglang` maps that). Refused, where sglang's numbers differ from what the option says:
    `shift_terminal` (sglang accepts and ignores it), custom sigmas (its `set_timesteps` takes none), `mu` without
    exponential dynamic shifting (sglang asserts it).
    """

    reference_library: ClassVar[str] = "sglang"
    diffusers_name: ClassVar[str] = "UniPCMultistepScheduler"

    def _check_options(self) -> None:
        if self.shift_terminal is not None:
            raise ValueError(
                f"{self.name}: shift_terminal={self.shift_terminal!r} is not supported: sglang 0.5.23's "
                "UniPCMultistepScheduler accepts it and ignores it (its flow grid ends where shift_terminal=None "
                "does); leave it unset, or use UniPCMultistep (diffusers' class) to stretch the schedule."
            )
        super()._check_options()

    def _check_schedule(self, schedule: Schedule) -> None:
        if schedule.sigmas is not None:
            raise ValueError(
                f"{self.name}: custom sigmas are not supported: sglang's UniPCMultistepScheduler.set_timesteps takes "
                "none (num_inference_steps, device, mu)."
            )
        if schedule.mu is not None and not (self.use_dynamic_shifting and self.time_shift_type == "exponential"):
            raise ValueError(
                f"{self.name}: mu needs use_dynamic_shifting=True and time_shift_type='exponential' (sglang's "
                "UniPCMultistepScheduler asserts both when given mu)."
            )
        if schedule.mu is None and self.use_dynamic_shifting:
            # sglang without mu shifts by flow_shift (exp of a previous call's mu, where one was given: from_sglang
            # maps that in `flow_shift`); diffusers' check, which needs mu, does not apply.
            schedule = attrs.evolve(schedule, mu=0.0)
        super()._check_schedule(schedule)

    def _flow_sigmas(self, n: int, custom_sigmas: torch.Tensor | None, mu: float | None) -> torch.Tensor:
        train = self.num_train_timesteps
        shift = self.flow_shift
        if mu is not None:  # sglang: config.flow_shift = np.exp(mu), then the static shift
            shift = float(schedules.np_exp(torch.tensor([mu], dtype=torch.float64))[0])
        sigmas = 1.0 - schedules.np_linspace(1, 1 / train, n + 1)
        return schedules.shift_sigmas(sigmas, shift).flip(0)[:-1]
