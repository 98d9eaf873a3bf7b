"""Helios: the pyramid flow-matching scheduler of the Helios video models (diffusers' `HeliosScheduler` and
`HeliosDMDScheduler`, and sglang's own `HeliosScheduler`), with UniPC, Euler or DMD steps.

A pyramid (`stages` > 1) splits the flow between noise and data into stages, each denoised at its own resolution:
the pipeline upsamples and renoises the latents between stages, and each stage is a schedule of its own (one
`stage_index` per config, as the pipelines call `set_timesteps(n, stage_index)` once per stage). Within a stage the
sample keeps its shape: a step never resizes. The sigmas of a pyramid stage run linearly from 0.999 to 0.000999 (then
0), while the model sees the stage's own timestep range; one stage (`stages=1`) is an ordinary flow schedule.

The tables keep the dtype the reference ends with: float32 where it computes them (`stages=1`, no custom sigmas),
float64 from custom sigmas and in pyramid stages. UniPC steps are our `UniPCMultistep`'s plan and update, with the
coefficients formed from those tables (sigma_t clamped at 1e-8, no nudge of a first sigma at 1), so a final sigma of 0
keeps a finite log-SNR.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..machinery import checks, options
from ..machinery.options import Choice, Flag, Integer, Integers, Numbers, Option, Real
from ..machinery.plan import Plan, as_dtype, gather_rows, per_row, scaled, single_plan
from ..machinery.schedule import Schedule
from ..machinery.scheduler import Scheduler
from ..math import schedules
from . import common, unipc
from .multistep import MultistepScheduler
from .unipc import UniPCMultistep, UniPCState

SCHEDULER_TYPES = ("unipc", "euler")

# Euler's and DMD's columns (UniPC's are `unipc`'s). DMD works in float64: each of its sigmas is kept exactly as three
# float32 parts (a float32 plan cannot hold a float64 table's values otherwise); WIDE: whether it renoises in float64.
DT = 0
S_T, S_NEXT = 0, 3
WIDE, LAST = 6, 7
# After every kind's columns: the step's table sigma, exactly, as three parts (the reference's float64 table).
EXACT_SIGMA = unipc.CORRECTOR + unipc.BLOCK

NUM_TRAIN_TIMESTEPS = Option(1000, Integer(minimum=2, maximum=100_000))
SHIFT = Option(1.0, Real(above=0), examples=(3.0,))
STAGES = Option(3, Integer(minimum=1, maximum=8), examples=(1,))
STAGE_RANGE = Option((0.0, 1 / 3, 2 / 3, 1.0), Numbers(above=-1e-9, below=1 + 1e-9), examples=((0.0, 1.0),))
GAMMA = Option(1 / 3, Real(above=0), examples=(0.5,))
# Which pyramid stage this config's schedule is, and whether DMD amplifies it (the first chunk's 2n + 1 steps): the
# arguments of the reference's `set_timesteps` that make a stage's schedule, config here (one plan per stage). Like
# `step()` arguments, no config key of the reference holds them (`step_argument`: the mapping leaves them out).
STAGE_INDEX = Option(0, Integer(minimum=0), examples=(1, 2), step_argument=True)
AMPLIFY = Option(False, Flag(), step_argument=True)


class _Pyramid(Scheduler):
    """What the Helios classes share: the per-stage schedule, the plan, and the three kinds of step."""

    state_type: ClassVar[type] = UniPCState
    diffusers_name: ClassVar[str] = "HeliosScheduler"
    plan_columns: ClassVar[int] = EXACT_SIGMA + 3
    _zero_fields: ClassVar[tuple[str, ...]] = ("last_sample",)
    _looks_up_first_timestep: ClassVar[bool] = False  # the reference counts its steps from 0, whatever it is called at

    # The model's output is a flow velocity, converted to x0 (the references' only working prediction, with flow
    # sigmas): thresholding, other predictions and noise prediction are refused by name (undeclared).
    prediction_type: ClassVar[str] = "flow_prediction"
    thresholding: ClassVar[bool] = False
    predict_x0: ClassVar[bool] = True

    def _check_options(self) -> None:
        owner = self.name
        if len(self.stage_range) < self.stages + 1 or list(self.stage_range) != sorted(self.stage_range):
            raise ValueError(
                f"{owner}: stage_range must hold at least stages + 1 = {self.stages + 1} increasing numbers (the "
                f"first stages + 1 are read), got {self.stage_range}."
            )
        if self.stage_index >= self.stages:
            raise ValueError(f"{owner}: stage_index={self.stage_index} but there are {self.stages} stages.")
        if self.use_dynamic_shifting and self.shift != 1.0:
            raise ValueError(
                f"{owner}: use_dynamic_shifting=True with shift={self.shift}: the reference asserts shift == 1 there."
            )
        if self.is_amplify_first_chunk and self.scheduler_type != "dmd":
            raise ValueError(f"{owner}: is_amplify_first_chunk=True only changes DMD schedules (scheduler_type='dmd').")

    # ------------------------------------------------------------------------------------------------ schedule
    def _check_schedule(self, schedule: Schedule) -> None:
        owner = self.name
        if schedule.timesteps is not None:
            raise ValueError(f"{owner}: custom timesteps are not supported (the reference's set_timesteps takes none).")
        if schedule.sigmas is not None and self.stages > 1:
            raise ValueError(
                f"{owner}: custom sigmas with stages={self.stages}: a pyramid stage's sigmas are fixed (the reference "
                "ignores custom ones there)."
            )
        if schedule.sigmas is not None and self.scheduler_type == "dmd" and len(schedule.sigmas.tensor()) < 2:
            raise ValueError(
                f"{owner}: one custom sigma with scheduler_type='dmd': DMD drops the last step, and the reference's "
                "schedule is empty; give at least two."
            )
        if self.use_dynamic_shifting and schedule.mu is None:
            raise ValueError(f"{owner}: use_dynamic_shifting=True needs mu; pass init(..., mu=...).")
        if schedule.num_inference_steps is None and schedule.sigmas is None:
            raise ValueError(f"{owner}: give num_inference_steps or custom sigmas.")
        super()._check_schedule(schedule)

    def _custom_range(self, name: str) -> tuple[float, float, bool]:
        return 0.0, 1.0, False

    @property
    def _takes_repeats(self) -> bool:  # type: ignore[override]
        return self.scheduler_type != "unipc" or self.solver_order == 1

    def _time_shift(self, mu: float, t: torch.Tensor, numpy: bool = False) -> torch.Tensor:
        """The references' `time_shift(mu, 1.0, t)`, written as they write it, in `t`'s dtype: on a torch tensor
        (`number / tensor` is torch's reciprocal times the number), or on a numpy array (`numpy`: a true division)."""
        scale = math.exp(mu) if self.time_shift_type == "exponential" else mu
        denominator = scale + (1 / t - 1) ** 1.0
        return torch.full_like(t, scale) / denominator if numpy else scale / denominator

    def _tables(
        self, n: int | None, custom: torch.Tensor | None, mu: float | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(timesteps, sigmas with the final 0) as the reference's `set_timesteps` makes them, in its dtypes."""
        train = self.num_train_timesteps
        n = len(custom) if custom is not None else n
        if self.scheduler_type == "dmd":
            n = 2 * n + 1 if self.is_amplify_first_chunk else n + 1
        if self.stages == 1:
            if custom is None:
                sigmas = schedules.np_linspace(1, 1 / train, n + 1)[:-1].to(torch.float32)
                if self.shift != 1.0:
                    sigmas = self._time_shift(self.shift, sigmas, numpy=True)
            else:
                sigmas = custom.to(torch.float64)
            timesteps = sigmas * train
        else:
            stage = _stage_timesteps(train, self.shift, self.stages, self.stage_range, self.gamma)[self.stage_index]
            timesteps = schedules.np_linspace(stage[0].item(), stage[-1].item(), n)
            sigmas = schedules.np_linspace(0.999, schedules.np_linspace(0.999, 0, train + 1)[train - 1].item(), n)
        sigmas = torch.cat([sigmas, torch.zeros(1)])
        if self.scheduler_type == "dmd":
            timesteps, sigmas = timesteps[:-1], torch.cat([sigmas[:-2], sigmas[-1:]])
        if self.use_dynamic_shifting:
            sigmas = self._time_shift(mu, sigmas)
            if self.stages == 1:
                timesteps = sigmas[:-1] * train
            else:
                stage = _stage_timesteps(train, self.shift, self.stages, self.stage_range, self.gamma)[self.stage_index]
                timesteps = stage.min() + sigmas[:-1] * (stage.max() - stage.min())
        return timesteps, sigmas

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        timesteps, sigmas = self._tables(num_inference_steps, sigmas, mu)
        return single_plan(timesteps, sigmas.to(dtype), self._table(timesteps, sigmas).to(dtype))

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        return single_plan(timesteps, sigmas, self._table(timesteps, sigmas).to(sigmas.dtype))

    def _table(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        """The [N, W, C] coefficients, formed from the tables in their own dtype (then rounded to the plan's, as the
        reference's 0-d float64 scalars round when they multiply float32 tensors), and each step's exact sigma."""
        n = len(timesteps)
        if self.scheduler_type == "unipc":
            orders = torch.clamp(n - torch.arange(n), max=self.solver_order)
            if not self.lower_order_final:
                orders = torch.full((n,), self.solver_order, dtype=torch.int64)
            table = unipc._coefficients(self, sigmas, orders).to(torch.float64)
            # A first sigma of 1 (one stage, computed sigmas) has alpha = 0 and log-SNR -inf: the ratio of each later
            # block that reaches back to it is infinite, and the reference's difference over it, (m_k - m0) / r_k,
            # is zero. Its rho is zeroed here (the ratio column holds 1 there, as for a block never applied).
            alpha, sigma = self._alpha_sigma(sigmas)
            infinite = ~torch.isfinite(torch.log(alpha) - torch.log(sigma))[:n]
            for block, back in ((unipc.PREDICTOR, 1), (unipc.CORRECTOR, 2)):
                for rho, k in ((unipc.RHO0, back), (unipc.RHO1, back + 1)):
                    reaches = torch.zeros(n, dtype=torch.bool)
                    reaches[k:] = infinite[: max(n - k, 0)]
                    table[reaches, :, block + rho] = 0.0
        else:
            euler = self.scheduler_type == "euler"
            columns = (sigmas[1:] - sigmas[:-1])[:, None] if euler else _dmd_table(timesteps, sigmas)
            table = torch.zeros((n, self.solver_order + 1, EXACT_SIGMA), dtype=torch.float64)
            table[..., : columns.shape[1]] = columns[:, None].to(torch.float64)
        exact = torch.stack(_parts(sigmas[:-1]), dim=-1)[:, None].expand(-1, table.shape[1], -1)
        return torch.cat([table, exact], dim=-1)

    def sigmas(self, state: Any) -> torch.Tensor:
        """The sigma table with its final 0, in the reference's dtype (its timesteps' dtype: float64 in pyramid stages
        and from custom sigmas, else float32), rebuilt exactly from the plan."""
        self._require_state(state, "sigmas")
        table = exact_sigmas(state.plan)
        return table[0] if table.shape[0] == 1 else table

    # ------------------------------------------------------------------------------------------------ state
    _start = MultistepScheduler._start
    _warmup = MultistepScheduler._warmup
    _kept = MultistepScheduler._kept
    _check = MultistepScheduler._check
    _denoised = MultistepScheduler._denoised
    _data_prediction = MultistepScheduler._data_prediction
    _update = UniPCMultistep._update
    _convert = UniPCMultistep._convert
    _unipc_step = UniPCMultistep.step
    _corrector_rhos = UniPCMultistep._corrector_rhos
    _corrector_weights_dtype = UniPCMultistep._corrector_weights_dtype

    def _check_inputs(self, model_output: torch.Tensor, sample: torch.Tensor, noise: torch.Tensor | None) -> None:
        if self.scheduler_type == "dmd":
            checks.check_noise(self.name, "a DMD step (the stage's start point)", noise, model_output)

    def _converts_by_identity(self) -> bool:
        return False

    def _integrates_data(self) -> bool:
        return True

    def _step_options(self) -> tuple[Any, ...]:
        # One stage's tables are float32, a pyramid's float64: what the step's exact sigmas rebuild.
        return (self.scheduler_type, self.solver_order, self.solver_type, self.stages == 1)

    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 1 - sigma, torch.clamp(sigma, min=1e-8)

    @property
    def stochastic(self) -> bool:
        return self.scheduler_type == "dmd"

    def _draws_noise(self, state: Any) -> bool:
        """DMD renoises every step but the last (which returns its x0): the caller draws a start point then."""
        if not self.stochastic:
            return False
        return not bool(self._coefficients(state, state.step_index, self._cursor(state))[LAST].all())

    # ------------------------------------------------------------------------------------------------ step
    def step(
        self,
        state: UniPCState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, UniPCState] | tuple[torch.Tensor, UniPCState, torch.Tensor]:
        """One step of every row: `(prev_sample, new_state)`, or with `denoised=True` also the step's x0 estimate.

        UniPC: corrector then predictor. Euler: `x + (s' - s) v` from the sample in float32 (float64 for float64
        samples), rounded to the model output's dtype as the reference returns it. DMD: x0 = x - s v in float64,
        rounded to the model output's dtype, renoised to the next sigma with `noise` (required: the stage's start
        point, which the pipeline passes at every step) and rounded to the noise's dtype, as the reference returns
        it; the last step returns x0. Every result is then in the sample's dtype (equal to the reference's cast to
        it; equal outright where the pipeline's dtypes agree).
        """
        if self.scheduler_type == "unipc":
            return self._unipc_step(state, model_output, sample, noise=noise, denoised=denoised)
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check(state, model_output, sample, noise, denoised, cursor)
        c = self._coefficients(state, sample, cursor)
        new_state = state.replace(**self._advanced(state, cursor))
        if self.scheduler_type == "euler":
            work = as_dtype(sample, torch.float64 if sample.dtype == torch.float64 else torch.float32)
            moved = as_dtype(work + scaled(c[DT], model_output), model_output.dtype)
            prev_sample = as_dtype(moved, sample.dtype)
            if denoised:
                x0 = work - per_row(gather_rows(state.plan.sigmas, state.step_index), work) * model_output
                return prev_sample, new_state, as_dtype(x0, sample.dtype)
            return prev_sample, new_state
        x0 = (sample.double() - _exact(c, S_T) * model_output.double()).to(model_output.dtype)

        def renoised() -> torch.Tensor:
            def at(dtype: torch.dtype) -> torch.Tensor:
                s_next = _exact(c, S_NEXT).to(dtype)
                wide = torch.promote_types(torch.promote_types(dtype, x0.dtype), noise.dtype)
                renoise = (1 - s_next).to(wide) * x0.to(wide) + s_next.to(wide) * noise.to(wide)
                return renoise.to(noise.dtype).to(sample.dtype)

            wide = c[WIDE] > 0
            if wide.dim() == 0:  # one host scalar (the eager fast path): only the branch taken runs
                return at(torch.float64) if bool(wide) else at(torch.float32)
            return torch.where(wide, at(torch.float64), at(torch.float32))

        last = c[LAST] > 0
        if last.dim() == 0 and cursor is not None:
            prev_sample = x0.to(sample.dtype) if bool(last) else renoised()
        else:
            prev_sample = torch.where(last, x0.to(sample.dtype), renoised())
        if denoised:
            return prev_sample, new_state, as_dtype(x0, sample.dtype)
        return prev_sample, new_state


def exact_sigmas(plan: Plan) -> torch.Tensor:
    """[S, N + 1]: a Helios plan's sigma table, final 0 included, exactly as the reference holds it, in its dtype (its
    timesteps': float64 in pyramid stages and from custom sigmas, else float32)."""
    parts = plan.coefficients[:, :, 0, EXACT_SIGMA:].double()
    steps = (parts[..., 0] + parts[..., 1]) + parts[..., 2]
    return torch.cat([steps, torch.zeros_like(steps[:, :1])], dim=1).to(plan.timesteps.dtype)


def _exact(c: tuple[torch.Tensor, ...], first: int) -> torch.Tensor:
    """A sigma kept as three float32 parts, exactly, in float64."""
    return (c[first].double() + c[first + 1].double()) + c[first + 2].double()


def _parts(values: torch.Tensor) -> list[torch.Tensor]:
    """float64 values as three float32 parts whose float64 sum is exact (24 + 24 + 24 bits hold 53)."""
    values = values.to(torch.float64)
    high = values.to(torch.float32).to(torch.float64)
    middle = (values - high).to(torch.float32).to(torch.float64)
    low = (values - high - middle).to(torch.float32).to(torch.float64)
    return [high, middle, low]


def _dmd_table(timesteps: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """[N, DMD_COLUMNS] float64: the sigma DMD's x0 reads at each step and the one it renoises to, both found as the
    reference finds them: the table entry nearest the truncated timestep (`argmin |timesteps - long(t)|`), in float64
    for x0 and in the table's dtype for the renoising; whether that runs in float64; whether the step is the last."""
    n = len(timesteps)
    truncated = timesteps.to(torch.int64)
    at_x0 = torch.argmin((timesteps.double()[None] - truncated[:, None]).abs(), dim=1)
    following = torch.cat([truncated[1:], truncated[-1:]])
    at_next = torch.argmin((timesteps[None] - following[:, None]).abs(), dim=1)
    s_t, s_next = sigmas.double()[at_x0], sigmas[at_next].double()
    wide = torch.full((n,), float(sigmas.dtype == torch.float64), dtype=torch.float64)
    last = (torch.arange(n) == n - 1).to(torch.float64)
    s_next = torch.where(last > 0, torch.zeros_like(s_next), s_next)
    return torch.stack([*_parts(s_t), *_parts(s_next), wide, last], dim=-1)


def _stage_timesteps(
    train: int, shift: float, stages: int, stage_range: tuple[float, ...], gamma: float
) -> tuple[torch.Tensor, ...]:
    """Each pyramid stage's [train] float64 timestep range, as the references' `init_sigmas_for_each_stage` makes
    it: the stages split the (shifted) flow by length, a later stage starting from its renoised level (gamma)."""
    alphas = schedules.np_linspace(1, 1 / train, train + 1)
    levels = 1.0 - alphas
    train_sigmas = torch.flip(shift * levels / (1 + (shift - 1) * levels), dims=(0,))[:-1].clone()
    train_timesteps = train_sigmas * train
    distance = []
    for index in range(stages):
        start = max(int(stage_range[index] * train), 0)
        end = min(int(stage_range[index + 1] * train), train)
        start_sigma = train_sigmas[start].item()
        end_sigma = train_sigmas[end].item() if end < train else 0.0
        if index != 0:
            ori_sigma = 1 - start_sigma
            corrected = (1 / (math.sqrt(1 + (1 / gamma)) * (1 - ori_sigma) + ori_sigma)) * ori_sigma
            start_sigma = 1 - corrected
        distance.append(start_sigma - end_sigma)
    total = sum(distance)
    ranges = []
    for index in range(stages):
        start_ratio = 0.0 if index == 0 else sum(distance[:index]) / total
        end_ratio = 0.9999999999999999 if index == stages - 1 else sum(distance[: index + 1]) / total
        highest = min(train_timesteps[int(start_ratio * train)], 999)
        lowest = train_timesteps[min(int(end_ratio * train), train - 1)]
        ranges.append(schedules.np_linspace(float(highest), float(lowest), train + 1)[:-1])
    return tuple(ranges)


@options.config
class Helios(_Pyramid):
    """diffusers 0.42.1's `HeliosScheduler`: UniPC (or Euler) steps over one stage of Helios' pyramid schedule.

    Implements the sampling of Helios (Yuan et al., 2025, "Helios: Real Real-Time Long Video Generation Model"), with
    UniPC (Zhao et al., 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models").
    """

    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
    shift: float = SHIFT
    stages: int = STAGES
    stage_range: tuple[float, ...] = STAGE_RANGE
    gamma: float = GAMMA
    solver_order: int = common.SOLVER_ORDER
    solver_type: str = Option("bh2", Choice("bh1", "bh2"))
    lower_order_final: bool = common.LOWER_ORDER_FINAL
    disable_corrector: tuple[int, ...] = Option((), Integers(), examples=((0,), (0, 1, 2, 5)))
    scheduler_type: str = Option("unipc", Choice(*SCHEDULER_TYPES))
    use_dynamic_shifting: bool = common.USE_DYNAMIC_SHIFTING
    time_shift_type: str = common.TIME_SHIFT_TYPE
    stage_index: int = STAGE_INDEX
    is_amplify_first_chunk: bool = AMPLIFY

    diffusers_name: ClassVar[str] = "HeliosScheduler"


@options.config
class HeliosDMD(_Pyramid):
    """diffusers 0.42.1's `HeliosDMDScheduler`: Helios-Distilled's DMD steps (x0, then renoised to the next sigma
    with the stage's start point) over one stage of the pyramid schedule.

    Implements the few-step sampling of Helios-Distilled (Yuan et al., 2025), a distribution-matching distillation
    (Yin et al., 2024, "One-step Diffusion with Distribution Matching Distillation").
    """

    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
    shift: float = SHIFT
    stages: int = STAGES
    stage_range: tuple[float, ...] = STAGE_RANGE
    gamma: float = GAMMA
    use_dynamic_shifting: bool = common.USE_DYNAMIC_SHIFTING
    time_shift_type: str = common.TIME_SHIFT_TYPE.but(default="linear")
    stage_index: int = STAGE_INDEX
    is_amplify_first_chunk: bool = AMPLIFY

    diffusers_name: ClassVar[str] = "HeliosDMDScheduler"
    # No solver options: DMD keeps no history (its state's single buffer stays zero).
    scheduler_type: ClassVar[str] = "dmd"
    solver_order: ClassVar[int] = 1
    solver_type: ClassVar[str] = "bh2"


@options.config
class SglangHelios(Helios):
    """sglang 0.5.23's own `HeliosScheduler` (`scheduling_helios.py`; `HeliosDMDScheduler` is its alias): diffusers'
    two Helios classes in one, with sglang's defaults (one stage, linear time shift) and DMD as a `scheduler_type`.
    Its numbers equal diffusers' classes' wherever both run."""

    stages: int = STAGES.but(default=1, examples=(3,))
    scheduler_type: str = Option("unipc", Choice(*SCHEDULER_TYPES, "dmd"))
    time_shift_type: str = common.TIME_SHIFT_TYPE.but(default="linear")

    reference_library: ClassVar[str] = "sglang"
    diffusers_name: ClassVar[str] = "HeliosScheduler"
