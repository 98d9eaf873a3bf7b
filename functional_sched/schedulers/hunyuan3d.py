"""Hunyuan3D's flow-match Euler: sglang's `Hunyuan3DFlowMatchEulerDiscreteScheduler` and its phased-consistency
variant `Hunyuan3DConsistencyFlowMatchEulerDiscreteScheduler` (Hunyuan3D-2's shape DiT, and its turbo checkpoints).

Their sigmas ascend: x_sigma = sigma x0 + (1 - sigma) noise, so sigma 0 is pure noise, 1 is data, the model's
velocity is x0 - noise, and a schedule ends at sigma 1. sglang's shape stage passes `sigmas=np.linspace(0, 1, n)`,
so its last step runs from 1 to the final 1: a model call whose step changes nothing, kept here as sglang has it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..machinery import options
from ..machinery.options import Integer, Option, Real
from ..machinery.plan import Plan, plus, single_plan
from ..machinery.schedule import MAX_INFERENCE_STEPS, Schedule
from ..math import schedules
from . import common
from .flow_match import DT, FlowEuler, check_step_count, training_sigma_range

# Columns of the coefficient table: flow-match Euler's sigma and step length, then the way to data, 1 - sigma.
TO_DATA = DT + 1

F64 = torch.float64


class AscendingFlowMatch(FlowEuler):
    """Flow-match Euler's step up an ascending sigma table (0 = noise, 1 = data), the final sigma 1: `x_{i+1} = x_i +
    (sigma_{i+1} - sigma_i) v_i`, its x0 estimate `x_i + (1 - sigma_i) v_i` (the sample carried along the velocity
    to sigma 1, the consistency class's `pred_original_sample`). What both of sglang's Hunyuan3D classes share: the
    step, the plan's columns, the noise levels; a subclass makes the sigma table."""

    reference_library: ClassVar[str] = "sglang"
    plan_columns: ClassVar[int] = TO_DATA + 1

    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return sigma, 1 - sigma  # x = sigma x0 + (1 - sigma) noise

    def _refuse_timesteps(self, schedule: Schedule) -> None:
        if schedule.timesteps is not None:
            raise ValueError(
                f"{self.name}: custom timesteps are not supported (sglang's set_timesteps takes none); pass custom "
                "sigmas, as Hunyuan3D's shape stage does."
            )

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        # The step's scalars as sglang forms them from its float32 sigmas (a float64 plan keeps float64).
        current, following = sigmas[:-1], sigmas[1:]
        coefficients = torch.stack([current, following - current, 1.0 - current], dim=-1)
        return single_plan(timesteps, sigmas, coefficients[:, None])

    def _estimate(
        self, c: tuple[torch.Tensor, ...], model_output: torch.Tensor, work: torch.Tensor, eager: bool
    ) -> torch.Tensor:
        return plus(self._times(c[TO_DATA], model_output, work.dtype), work, eager=eager)

    def _network_output(self, state: Any, sample: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The velocity whose x0 at the model's sigma is `x0` (the Gaussian problem's exact model,
        `functional_sched.testing.gaussian`): (x0 - x) / (1 - sigma); at sigma 1 the sample is its own x0 and any
        velocity is one (0 here): the step there has length 0."""
        to_data = 1 - self._model_sigma(state)[:, None].to(sample.dtype)
        safe = torch.where(to_data > 0, to_data, torch.ones_like(to_data))
        return torch.where(to_data > 0, (x0 - sample) / safe, torch.zeros_like(sample))


@options.config
class Hunyuan3DFlowMatchEulerDiscrete(AscendingFlowMatch):
    """Euler steps of rectified flow on Hunyuan3D's ascending schedule (sglang's
    `Hunyuan3DFlowMatchEulerDiscreteScheduler`, from Hunyuan3D-2's `FlowMatchEulerDiscreteScheduler`).

    Sigmas: custom ones (the shape stage's `np.linspace(0, 1, n)`) or `linspace(sigma_max, sigma_min, n)` of the
    training table `(1..N) / N` (statically shifted unless `use_dynamic_shifting`, so its first, smallest sigma is
    `sigma_max`); then shifted, statically by `shift` or by `exp(mu)` (float64, as sglang's numpy), rounded to float32;
    timesteps `N * sigma`; the final sigma 1. `x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v_i`.

    Implements Euler steps of rectified flow (Liu et al., 2022; Esser et al., 2024) as Hunyuan3D 2.0 samples its
    shape latents (Tencent Hunyuan3D Team, 2025, "Hunyuan3D 2.0: Scaling Diffusion Models for High Resolution
    Textured 3D Assets Generation").
    """

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    shift: float = Option(1.0, Real(above=0), examples=(3.0, 0.7))
    use_dynamic_shifting: bool = common.USE_DYNAMIC_SHIFTING

    diffusers_name: ClassVar[str] = "Hunyuan3DFlowMatchEulerDiscreteScheduler"

    def _check_schedule(self, schedule: Schedule) -> None:
        self._refuse_timesteps(schedule)
        if self.use_dynamic_shifting and schedule.mu is None:
            raise ValueError(
                f"{self.name}: use_dynamic_shifting=True needs mu (the shift is exp(mu)); pass init(..., mu=...)."
            )
        check_step_count(self.name, schedule, "sigmas")
        super()._check_schedule(schedule)

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        train = self.num_train_timesteps
        if sigmas is None:
            # sglang's sigma_max and sigma_min: its ascending training table's first (smallest) and last entry.
            sigma_max, sigma_min = training_sigma_range(train, self.shift, self.use_dynamic_shifting)
            sigmas = schedules.np_linspace(sigma_max * train, sigma_min * train, num_inference_steps) / train
        elif sigmas.dtype not in (torch.float32, F64):  # numpy promotes integers (and the rest) to float64
            sigmas = sigmas.to(F64)
        if self.use_dynamic_shifting:
            sigmas = schedules.time_shift(sigmas, mu, "exponential")
        else:
            sigmas = schedules.shift_sigmas(sigmas, self.shift)
        sigmas = sigmas.to(torch.float32)
        timesteps = sigmas * train
        sigmas = torch.cat([sigmas, torch.ones(1)])
        return self._plan_from_tables(timesteps, sigmas.to(dtype))


@options.config
class Hunyuan3DConsistencyFlowMatchEulerDiscrete(AscendingFlowMatch):
    """Euler steps on the grid of a phased-consistency (PCM) distilled flow model: Hunyuan3D-2's turbo shape DiTs
    (sglang's `Hunyuan3DConsistencyFlowMatchEulerDiscreteScheduler`).

    Grid: `linspace(0, 1, N)` at indices `[0] + [k * (N // pcm_timesteps) - 1 for k in 1..pcm_timesteps - 1]`
    (float32); n steps take its entries `floor(linspace(0, pcm_timesteps, n, endpoint=False))`, the final sigma 1;
    timesteps `N * sigma`. Custom sigmas give only the step count (their values, in [0, 1], are not read, as in
    sglang).
    `x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v_i`; its x0 estimate (`denoised=True`, sglang's
    `pred_original_sample`) is `x_i + (1 - sigma_i) v_i`. More steps than `pcm_timesteps` are refused: sglang's
    schedule then repeats its first timestep and its loop fails with an IndexError.

    Implements Euler sampling on the phased schedule of Phased Consistency Models (Wang et al., 2024, "Phased
    Consistency Models"), as Hunyuan3D 2.0's turbo models use it.
    """

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    pcm_timesteps: int = Option(50, Integer(minimum=1, maximum=1_000_000), examples=(100, 30))

    diffusers_name: ClassVar[str] = "Hunyuan3DConsistencyFlowMatchEulerDiscreteScheduler"
    _sigmas_on_host: ClassVar[bool] = True  # sglang keeps this class's sigmas on the CPU

    @property
    def max_inference_steps(self) -> int:
        return min(self.pcm_timesteps, MAX_INFERENCE_STEPS)

    def _steps_limit_reason(self) -> str:
        return (
            ": pcm_timesteps; with more steps floor(linspace(0, pcm_timesteps, n, endpoint=False)) repeats the grid's "
            "first entry, and sglang's loop fails with an IndexError"
        )

    def _check_schedule(self, schedule: Schedule) -> None:
        self._refuse_timesteps(schedule)
        if schedule.mu is not None:
            raise ValueError(f"{self.name}: mu is not supported (this schedule has no dynamic shift).")
        steps, sigmas = schedule.num_inference_steps, schedule.sigmas
        if sigmas is None and steps is None:
            raise ValueError(f"{self.name}: give num_inference_steps, or custom sigmas (their count is the steps).")
        count = self._count(steps, None if sigmas is None else len(sigmas.values))
        if count > self.max_inference_steps:
            given = f"num_inference_steps={count}" if steps is not None else f"{count} custom sigmas (the step count)"
            raise ValueError(
                f"{self.name}: {given} is more than pcm_timesteps={self.pcm_timesteps}"
                f"{self._steps_limit_reason().removeprefix(': pcm_timesteps')}. Use at most pcm_timesteps steps."
            )
        super()._check_schedule(schedule)

    @staticmethod
    def _count(num_inference_steps: int | None, custom: int | None) -> int:
        """The step count: `num_inference_steps` where given (sglang then ignores the sigmas), else the number of
        custom sigmas."""
        return num_inference_steps if num_inference_steps is not None else int(custom or 0)

    def _grid(self) -> torch.Tensor:
        """The PCM grid, [pcm_timesteps] float32: `linspace(0, 1, N)` (float64) at the phase ends, as sglang indexes
        it (an index of -1, where N // pcm_timesteps is 0, is the last entry, as numpy takes it)."""
        train, pcm = self.num_train_timesteps, self.pcm_timesteps
        ends = torch.arange(1, pcm, dtype=torch.int64) * (train // pcm) - 1
        indices = torch.cat([torch.zeros(1, dtype=torch.int64), ends])
        return schedules.np_linspace(0.0, 1.0, train)[indices].to(torch.float32)

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        n = self._count(num_inference_steps, None if sigmas is None else len(sigmas))
        # numpy's linspace(0, pcm, n, endpoint=False): arange(n) * (pcm / n), floored.
        picks = torch.floor(torch.arange(n, dtype=F64) * (self.pcm_timesteps / n)).to(torch.int64)
        chosen = self._grid()[picks]
        timesteps = chosen * self.num_train_timesteps
        sigmas = torch.cat([chosen, torch.ones(1)])
        return self._plan_from_tables(timesteps, sigmas.to(dtype))
