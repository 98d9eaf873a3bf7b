"""sglang's own flow-match Euler schedulers (sglang 0.5.23, `multimodal_gen/runtime/models/schedulers/`): its copy of
diffusers' `FlowMatchEulerDiscreteScheduler`, its LTX-2 pipelines' subclass of it `LTX2FlowMatchScheduler` (defined in
`runtime/pipelines/ltx_2_pipeline.py`), and MOSS-Image's nearest-grid `MOSSImageScheduler`.

sglang's copy (`scheduling_flow_match_euler_discrete.py`) steps as diffusers does, bit for bit, and makes the same
tables on the default path; it rounds to float32 on three schedule paths where diffusers keeps float64:
- the exponential time shift of a float32 table (custom sigmas, as Flux, Qwen-Image and LTX-2 pass them; uniform
  sigmas; custom timesteps): sglang forms `exp(mu)` with `np.exp`, a float64 numpy scalar, which (numpy >= 2, NEP 50)
  promotes the float32 `1/t - 1` to float64: `exp(mu) / (exp(mu) + r)` is evaluated in float64, rounded once to
  float32. diffusers' `math.exp(mu)` is a weak Python float: float32 throughout.
- `shift_terminal`: sglang rounds the sigmas to a float32 tensor, then stretches them in float32 (and leaves a schedule
  whose last sigma is 1 as it is, where diffusers divides by zero);
- Karras, exponential and beta spacings run between the float32-rounded ends of the table (a float32 tensor's
  `.item()`), where diffusers reads float64 ends.
It also has an option of its own, `use_uniform_sigmas` (sigmas `linspace(1, 0, n + 1)[:-1]`, float32, before the
shift), and a `transition=` argument of `step` (a caller's replacement of the update, for RL rollouts: not a scheduler
option; the drop-in refuses it by name).

`MOSSImageScheduler` (`moss_image.py`) subclasses diffusers' class (not sglang's): it snaps a shifted inference grid
to the nearest point of a shifted training grid, drops consecutive repeats (so a schedule may have fewer steps than
asked for: shift 12 and 200 steps give 172), and steps diffusers' Euler over those sigmas.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from ..machinery import options
from ..machinery.options import Flag, Option, Real
from ..machinery.plan import Plan
from ..machinery.schedule import Schedule
from ..math import schedules
from . import common
from .flow_match import FlowEuler, FlowMatchEulerDiscrete


@options.config
class SglangFlowMatchEulerDiscrete(FlowMatchEulerDiscrete):
    """sglang's `FlowMatchEulerDiscreteScheduler`: `FlowMatchEulerDiscrete`'s Euler steps on sglang's schedule (its
    float32 roundings of the dynamic shift, `shift_terminal` and the Karras/exponential/beta ends; its option
    `use_uniform_sigmas`). `set_shift` is the shift sglang's `set_shift` gave (its loader calls it with the pipeline's
    `flow_shift` on every scheduler it loads), as for diffusers' class.

    Implements Euler steps of rectified flow (Liu et al., 2022; Esser et al., 2024, "Scaling Rectified Flow
    Transformers for High-Resolution Image Synthesis").
    """

    use_uniform_sigmas: bool = Option(False, Flag(), exclusive="sigma spacing")

    reference_library: ClassVar[str] = "sglang"
    diffusers_name: ClassVar[str] = "FlowMatchEulerDiscreteScheduler"

    def _default_sigmas(self, n: int) -> torch.Tensor:
        if self.use_uniform_sigmas:  # np.linspace(1, 0, n + 1, dtype=float32)[:-1]: float64 points, cast
            return schedules.np_linspace(1.0, 0.0, n + 1)[:-1].to(torch.float32)
        return super()._default_sigmas(n)

    def _time_shifted(self, sigmas: torch.Tensor, mu: float) -> torch.Tensor:
        if self.time_shift_type != "exponential":
            return super()._time_shifted(sigmas, mu)
        # sglang: np.exp(mu) / (np.exp(mu) + (1 / t - 1) ** 1.0) on a numpy array: `1 / t - 1` in the table's dtype,
        # the rest in float64 (np.exp's float64 scalar promotes a float32 array under numpy >= 2).
        scale = schedules.np_exp(torch.tensor([mu], dtype=torch.float64))
        return scale / (scale + (1 / sigmas - 1).to(torch.float64))

    def _stretched(self, sigmas: torch.Tensor) -> torch.Tensor:
        # sglang stretches a float32 tensor, and leaves a schedule whose last sigma is 1 as it is (scale factor 0).
        sigmas = sigmas.to(torch.float32)
        if (1 - sigmas[-1]).item() == 0:
            return sigmas
        return schedules.stretch_to_terminal(sigmas, self.shift_terminal)

    def _spacing_ends(self, sigmas: torch.Tensor) -> tuple[float, float]:
        return super()._spacing_ends(sigmas.to(torch.float32))  # sglang hands its spacings a float32 tensor


@options.config
class SglangLTX2FlowMatch(SglangFlowMatchEulerDiscrete):
    """sglang's `LTX2FlowMatchScheduler` (LTX-2's pipelines in sglang, `runtime/pipelines/ltx_2_pipeline.py`): sglang's
    flow-match Euler (`SglangFlowMatchEulerDiscrete`) but for two things. Its exponential time shift runs in torch
    float32 (`e^mu / (e^mu + (1 / t - 1))` on the sigmas rounded to float32, `e^mu` a Python float: a reciprocal-times
    division). Custom sigmas without `mu` and without timesteps (the distilled checkpoints' pinned tables, the
    two-stage pipelines' stage-2 sigmas) are taken as they are, rounded to float32: no shift, no `shift_terminal`, no
    spacing, no inversion, and no `mu` needed with `use_dynamic_shifting`; timesteps `N * sigma`, the final sigma 0.

    Implements Euler steps of rectified flow (Liu et al., 2022; Esser et al., 2024) on LTX-2's schedule (HaCohen et
    al., 2026, "LTX-2: Efficient Joint Audio-Visual Foundation Model").
    """

    diffusers_name: ClassVar[str] = "LTX2FlowMatchScheduler"

    def _verbatim(self, schedule: Schedule) -> bool:
        return schedule.sigmas is not None and schedule.timesteps is None and schedule.mu is None

    def _time_shifted(self, sigmas: torch.Tensor, mu: float) -> torch.Tensor:
        if self.time_shift_type != "exponential":
            return super()._time_shifted(sigmas, mu)
        # sglang: torch.from_numpy(t).to(torch.float32), then math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** sigma)
        # with sigma 1.0: the same torch operations in the same order.
        sigmas = sigmas.to(torch.float32)
        return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1) ** 1.0)

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        if sigmas is None or timesteps is not None or mu is not None:
            return super()._build_plan(num_inference_steps, timesteps, sigmas, mu, dtype)
        sigmas = sigmas.to(torch.float32)
        return self._plan_from_tables(sigmas * self.num_train_timesteps, torch.cat([sigmas, torch.zeros(1)]).to(dtype))


@options.config
class MOSSImage(FlowEuler):
    """sglang's `MOSSImageScheduler` (MOSS-Image): Euler steps of rectified flow over a nearest-grid schedule.

    The inference grid `shift_s(linspace(1, s / (N + s - 1), n))` (s = `shift`) is snapped to the nearest point of the
    training grid (the same with `training_shift`, N points; ties to the smaller sigma), consecutive repeats dropped:
    the schedule may have fewer steps than `num_inference_steps` (the host knows the count: `steps_left`,
    `timesteps`). No custom tables and no `mu` (sglang's `set_timesteps` takes none). The step is
    `FlowMatchEulerDiscrete`'s, `x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v_i`, in float32 as diffusers' class that
    sglang's subclasses.

    Implements Euler steps of rectified flow (Liu et al., 2022; Esser et al., 2024, "Scaling Rectified Flow
    Transformers for High-Resolution Image Synthesis").
    """

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    shift: float = Option(5.0, Real(above=0), examples=(3.0, 1.0, 12.0))
    training_shift: float = Option(1.0, Real(above=0), examples=(3.0,))

    reference_library: ClassVar[str] = "sglang"
    diffusers_name: ClassVar[str] = "MOSSImageScheduler"

    # diffusers' deterministic step (sglang's class is built with diffusers' defaults), per-token timesteps included.
    step = FlowMatchEulerDiscrete.step

    def _check_schedule(self, schedule: Schedule) -> None:
        for name in ("timesteps", "sigmas"):
            if getattr(schedule, name) is not None:
                raise ValueError(
                    f"{self.name}: custom {name} are not supported (sglang's set_timesteps takes none: it snaps its "
                    "own grid)."
                )
        if schedule.mu is not None:
            raise ValueError(f"{self.name}: mu is not supported (sglang's set_timesteps takes none).")
        if schedule.num_inference_steps is None:
            raise ValueError(f"{self.name}: give num_inference_steps.")
        super()._check_schedule(schedule)

    def snapped_sigmas(self, num_inference_steps: int) -> torch.Tensor:
        """The schedule's sigmas (without the final 0), float32: the inference grid snapped to the training grid, as
        sglang's `set_timesteps` computes them (torch float32 on the CPU)."""
        total = self.num_train_timesteps

        def grid(count: int, shift: float) -> torch.Tensor:
            values = torch.linspace(1, shift / (total + shift - 1), count)
            return shift * values / (1 + (shift - 1) * values)

        sigmas = grid(num_inference_steps, self.shift)
        training = grid(total, self.training_shift).flip(0)
        upper = torch.searchsorted(training, sigmas).clamp(max=total - 1)
        lower = (upper - 1).clamp(min=0)
        nearest = torch.where((sigmas - training[lower]).abs() <= (training[upper] - sigmas).abs(), lower, upper)
        return torch.unique_consecutive(training[nearest])

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        assert num_inference_steps is not None  # no custom tables (`_check_schedule`)
        with torch.device("cpu"):
            snapped = self.snapped_sigmas(num_inference_steps)
        # diffusers' set_timesteps(sigmas=...) with shift 1: the float32 values as they are, timesteps = sigmas * N.
        timesteps = snapped * self.num_train_timesteps
        return self._plan_from_tables(timesteps, torch.cat([snapped, torch.zeros(1)]).to(dtype))
