"""PNDM: diffusers' `PNDMScheduler` (Stable Diffusion 1.x's default), pseudo Runge-Kutta warm-up then PLMS.

diffusers' `step` counts its calls (`counter`) and branches on the count: without `skip_prk_steps`, twelve pseudo
Runge-Kutta calls (three intervals of four model calls, the timesteps repeated as diffusers' table has them), then
pseudo linear multistep (PLMS) calls with the four newest model outputs; with `skip_prk_steps` (SD 1.5), PLMS from the
start with a Heun-like second call at a repeated timestep and lower orders until four outputs are kept. Every call
is the same update,

    e = (w0 m + w1 h1 + w2 h2 + w3 h3 + w4 c) / divisor * factor     (m: this call's output, h: the history's
                                                                      newest first, c: the PRK running sum)
    x_prev = ratio x - delta e / denom                               (x: the sample, or the interval's start)

with the weights of the call's phase and the scalars of formula (9) at the call's pair of timesteps (a v-prediction
model's e is converted to epsilon first, at x and the call's timestep, as diffusers converts it). The phase is a
function of the calls taken since `init` (the warm-up level, capped at the steady phase), so the plan holds one row
per (step, level); the state carries diffusers' `ets` (a history of four outputs), `cur_model_output` and
`cur_sample` as tensors shaped like the sample, zero at first. Each term is formed in diffusers' order, so float32
steps reproduce diffusers bit for bit; an eager step whose host knows the level skips the zero terms.

diffusers keeps no sigma table for this class. Ours holds the noise level of the sample each call receives (on a run
from the first step) as sqrt(1 - alpha_bar), then the level the last call ends at; `_alpha_sigma` reads it back.

Implements Liu et al. (2022), "Pseudo Numerical Methods for Diffusion Models on Manifolds" (F-PNDM, Algorithm 2 and
formula (9)), with diffusers 0.42.1's options, schedule and warm-up.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch

from ..machinery import checks, host, options
from ..machinery.options import Choice, Flag, Option
from ..machinery.plan import Plan, as_dtype, divided, scaled, single_plan
from ..machinery.record import record
from ..machinery.schedule import Schedule
from ..machinery.scheduler import Scheduler
from ..math import predictions, schedules
from . import common


class Phase(NamedTuple):
    """What one call does, by warm-up level: diffusers' weights of the model outputs (Python numbers, as its step
    writes them), and which buffers the call reads and writes."""

    weights: tuple[float, float, float, float, float]  # of m, h1, h2, h3 (history, newest first), the PRK sum
    divisor: float  # e = weighted sum / divisor * factor
    factor: float
    keep_sum: float  # the PRK running sum afterwards: keep_sum * sum + add_sum * m
    add_sum: float
    from_start: bool  # the update starts from `cur_sample` (the interval's start), not the sample
    save_start: bool  # `cur_sample` becomes this call's sample
    push: bool  # this call's model output joins the history


_PLMS = (
    Phase((1, 0, 0, 0, 0), 1, 1, 0, 0, False, True, True),  # first call: Euler, its sample kept
    Phase((1, 1, 0, 0, 0), 2, 1, 0, 0, True, False, False),  # second call, same interval: the mean of two outputs
    Phase((3, -1, 0, 0, 0), 2, 1, 0, 0, False, False, True),  # Adams-Bashforth 2, 3, 4
    Phase((23, -16, 5, 0, 0), 12, 1, 0, 0, False, False, True),
    Phase((55, -59, 37, -9, 0), 1, 1 / 24, 0, 0, False, False, True),
)
_PRK = (
    Phase((1, 0, 0, 0, 0), 1, 1, 0, 1 / 6, False, True, True),  # to the midpoint, the interval's start kept
    Phase((1, 0, 0, 0, 0), 1, 1, 1, 1 / 3, True, False, False),  # to the midpoint again
    Phase((1, 0, 0, 0, 0), 1, 1, 1, 1 / 3, True, False, False),  # to the end
    Phase((1 / 6, 0, 0, 0, 1), 1, 1, 0, 0, True, False, False),  # to the end with the weighted sum (RK4)
)
PRK_CALLS = 12  # three intervals of four calls: the history then holds three outputs, PLMS runs at fourth order
PNDM_ORDER = 4

# Columns of the coefficient table. The phase's weights and flags (W0..PUSH), formula (9)'s scalars at the call's
# timestep pair (v-prediction's conversion, then RATIO, DELTA, DENOM), the sample's level (x0 of `denoised=True`) and
# alpha_bar at the call's timestep (`add_noise`).
W0, W1, W2, W3, W4, DIVISOR, FACTOR, KEEP_SUM, ADD_SUM, FROM_START, SAVE_START, PUSH = range(12)
ROOT_ALPHA, ROOT_BETA, RATIO, DELTA, DENOM, ALPHA, SIGMA, ALPHA_BAR = range(12, 20)


@record(host=("cursor",))
class PNDMState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    lower_order_nums: torch.Tensor  # [R], int64: calls taken since init, capped at the steady phase (the warm-up level)
    history: tuple[torch.Tensor, ...]  # 4 x [R, ...]: the newest model outputs, newest last (diffusers' `ets`)
    cur_model_output: torch.Tensor  # [R, ...]: the PRK interval's weighted sum of outputs so far
    cur_sample: torch.Tensor  # [R, ...]: the sample the interval started from
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class PNDM(Scheduler):
    """Pseudo numerical methods for diffusion models: F-PNDM's pseudo Runge-Kutta warm-up and pseudo linear multistep
    (or PLMS alone, `skip_prk_steps`), on formula (9)'s transfer x_t -> x_(t - delta).

    Implements Liu et al. (2022), "Pseudo Numerical Methods for Diffusion Models on Manifolds", with diffusers 0.42.1's
    options, schedule and warm-up.
    """

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    beta_start: float = common.BETA_START
    beta_end: float = common.BETA_END
    beta_schedule: str = common.BETA_SCHEDULE
    trained_betas: tuple[float, ...] | None = common.TRAINED_BETAS
    skip_prk_steps: bool = Option(False, Flag())
    set_alpha_to_one: bool = Option(False, Flag())
    prediction_type: str = common.PREDICTION_TYPE.but(domain=Choice("epsilon", "v_prediction"))
    timestep_spacing: str = common.TIMESTEP_SPACING.but(default="leading")
    steps_offset: int = common.STEPS_OFFSET

    state_type: ClassVar[type] = PNDMState
    diffusers_name: ClassVar[str] = "PNDMScheduler"
    plan_columns: ClassVar[int] = ALPHA_BAR + 1
    _alpha_bar_column: ClassVar[int | None] = ALPHA_BAR
    #: diffusers counts its calls and reads the timestep it is given: it never looks a timestep up.
    _looks_up_first_timestep: ClassVar[bool] = False

    @property
    def phases(self) -> tuple[Phase, ...]:
        """The phase of each warm-up level; the last one is the steady phase."""
        return _PLMS if self.skip_prk_steps else (*_PRK, *_PRK, *_PRK, _PLMS[-1])

    def _step_options(self) -> tuple[Any, ...]:
        return (self.skip_prk_steps, self.prediction_type)

    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (1 - sigma**2) ** 0.5, sigma

    # ------------------------------------------------------------------------------------------------ plan
    def _check_schedule(self, schedule: Schedule) -> None:
        owner = self.name
        for name in ("timesteps", "sigmas"):
            if getattr(schedule, name) is not None:
                raise ValueError(f"{owner}: custom {name} are not supported (diffusers' set_timesteps takes none).")
        steps = schedule.num_inference_steps
        if steps is None:
            raise ValueError(f"{owner}: give num_inference_steps.")
        if not self.skip_prk_steps and steps < PNDM_ORDER:
            raise ValueError(
                f"{owner}: num_inference_steps={steps} with skip_prk_steps=False: the Runge-Kutta warm-up takes the "
                f"first {PNDM_ORDER} timesteps (diffusers' set_timesteps fails on fewer); use {PNDM_ORDER} or more "
                "steps, or skip_prk_steps=True."
            )
        if self.trained_betas is not None and len(self.trained_betas) != self.num_train_timesteps:
            raise ValueError(
                f"{owner}: trained_betas has {len(self.trained_betas)} values but num_train_timesteps="
                f"{self.num_train_timesteps}; give one beta per training timestep."
            )
        super()._check_schedule(schedule)

    def _custom_range(self, name: str) -> tuple[float, float, bool]:
        return 0, self.num_train_timesteps - 1, True

    def _training_cumprod(self) -> torch.Tensor:
        """diffusers' `alphas_cumprod`, float32."""
        betas = common.training_betas(self)
        return torch.cumprod(1.0 - betas, dim=0)

    def _spaced(self, n: int) -> torch.Tensor:
        """diffusers' `_timesteps`, ascending, int64."""
        train = self.num_train_timesteps
        if self.timestep_spacing == "linspace":
            return schedules.np_linspace(0, train - 1, n).round().to(torch.int64)
        if self.timestep_spacing == "leading":
            return torch.arange(n, dtype=torch.int64) * (train // n) + self.steps_offset
        return schedules.np_arange(train, 0, -(train / n)).round().flip(0).to(torch.int64) - 1

    def _schedule_timesteps(self, n: int) -> torch.Tensor:
        """diffusers' `timesteps`: the PRK timesteps (each interval's start, its midpoint twice, its end) then the
        PLMS ones, or with `skip_prk_steps` the PLMS ones with the second repeated."""
        spaced = self._spaced(n)
        if self.skip_prk_steps:
            return torch.cat([spaced[:-1], spaced[-2:-1], spaced[-1:]]).flip(0)
        half = torch.tensor([0, self.num_train_timesteps // n // 2]).repeat(PNDM_ORDER)
        prk = spaced[-PNDM_ORDER:].repeat_interleave(2) + half
        prk = prk[:-1].repeat_interleave(2)[1:-1].flip(0)
        return torch.cat([prk, spaced[:-3].flip(0)])

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        assert num_inference_steps is not None
        return self._plan_of(self._schedule_timesteps(num_inference_steps), num_inference_steps, dtype)

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        calls = timesteps.shape[0]
        steps = calls - 1 if self.skip_prk_steps else calls + 3 - PRK_CALLS
        return self._plan_of(timesteps.to(torch.int64), steps, sigmas.dtype)

    def _plan_of(self, timesteps: torch.Tensor, n: int, dtype: torch.dtype) -> Plan:
        """The plan of the call table `timesteps` of an n-step schedule: each (call, level)'s timestep pair as
        diffusers' step derives it from the timestep it is given, and formula (9)'s scalars at it."""
        train, phases = self.num_train_timesteps, self.phases
        ratio, half = train // n, train // n // 2
        alpha_bar = self._training_cumprod()
        final = torch.tensor(1.0) if self.set_alpha_to_one else alpha_bar[0]
        calls, levels = timesteps.shape[0], len(phases)
        given = timesteps[:, None].expand(calls, levels)
        level = torch.arange(levels)[None, :]
        if self.skip_prk_steps:  # the second call repeats the first's interval, from the timestep after it
            second = level == 1
            pairs = torch.stack([torch.where(second, given + ratio, given), torch.where(second, given, given - ratio)])
        else:  # PRK: from the interval's start (diffusers' prk_timesteps[counter // 4 * 4]) to the half or whole step
            prk = level < PRK_CALLS
            interval_start = timesteps[level.clamp(max=PRK_CALLS - 1) // 4 * 4].expand(calls, levels)
            prk_prev = given - torch.where(level % 2 == 1, 0, half)
            pairs = torch.stack([torch.where(prk, interval_start, given), torch.where(prk, prk_prev, given - ratio)])
        # (call, level) pairs a run reaches: no more calls taken than the call's place.
        reachable = level <= torch.arange(calls)[:, None]
        outside = reachable & ~((pairs[0] >= -train) & (pairs[0] < train) & (pairs[1] < train))
        if bool(outside.any()):
            call, at = (int(index) for index in outside.nonzero()[0])
            raise ValueError(
                f"{self.name}: call {call} of {calls} steps from timestep {int(pairs[0, call, at])} to "
                f"{int(pairs[1, call, at])}, outside the training schedule's [0, {train}) (with steps_offset="
                f"{self.steps_offset}, timestep_spacing={self.timestep_spacing!r}); diffusers raises IndexError. "
                "Change them or the step count."
            )
        pairs = torch.where(reachable, pairs, torch.zeros_like(pairs))
        # Formula (9)'s scalars as diffusers forms them from float32 alpha_bars (float64 plans widen the table).
        table, final = alpha_bar.to(dtype), final.to(dtype)
        alpha = table[pairs[0]]  # a negative timestep wraps, as diffusers' indexing does
        alpha_prev = torch.where(pairs[1] >= 0, table[pairs[1].clamp(min=0)], final)
        beta, beta_prev = 1 - alpha, 1 - alpha_prev
        scalars = torch.stack(
            [
                alpha**0.5,
                beta**0.5,
                (alpha_prev / alpha) ** 0.5,
                alpha_prev - alpha,
                alpha * beta_prev**0.5 + (alpha * beta * alpha_prev) ** 0.5,
            ],
            dim=-1,
        )
        # The sample's level at each call on a run from the first step, and where the last call ends.
        steady = torch.arange(calls).clamp(max=levels - 1)
        reached = alpha_prev[torch.arange(calls), steady]
        level_alpha_bar = torch.cat([table[timesteps[:1]], reached])
        sigmas = (1 - level_alpha_bar) ** 0.5
        alpha_t, sigma_t = self._alpha_sigma(sigmas[:-1])
        noising = table[timesteps]
        per_step = torch.stack([alpha_t, sigma_t, noising], dim=-1)[:, None].expand(-1, levels, -1)
        weights = torch.tensor(
            [
                [*phase.weights, phase.divisor, phase.factor, phase.keep_sum, phase.add_sum, *map(float, phase[-3:])]
                for phase in phases
            ],
            dtype=dtype,
        )
        coefficients = torch.cat([weights[None].expand(calls, -1, -1), scalars, per_step], dim=-1)
        coefficients = torch.where(reachable[..., None], coefficients, torch.zeros_like(coefficients))
        return single_plan(timesteps, sigmas, coefficients)

    # ------------------------------------------------------------------------------------------------ step
    def _start(
        self,
        plan: Plan,
        sample: torch.Tensor,
        step_index: torch.Tensor,
        level: torch.Tensor,
        fingerprint: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> PNDMState:
        # The request's own buffers, slices of one zeroed allocation (one fill kernel).
        zeros = torch.zeros((PNDM_ORDER + 2, *sample.shape), dtype=sample.dtype, device=sample.device).unbind(0)
        return PNDMState(
            plan=plan,
            step_index=step_index,
            lower_order_nums=level,
            history=zeros[:PNDM_ORDER],
            cur_model_output=zeros[PNDM_ORDER],
            cur_sample=zeros[PNDM_ORDER + 1],
            fingerprint=fingerprint,
            cursor=cursor,
        )

    def _warmup(self, state: Any) -> torch.Tensor | None:
        return state.lower_order_nums

    def step(
        self,
        state: PNDMState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, PNDMState] | tuple[torch.Tensor, PNDMState, torch.Tensor]:
        """One call of diffusers' `step` for every row: `(prev_sample, new_state)`, prev_sample in `sample`'s dtype.

        `denoised=True` also returns the x0 estimate of this call's model output at the sample it was given
        (diffusers returns none): `(prev_sample, new_state, x0)`. `noise` is ignored (PNDM is deterministic).
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
            checks.check_sample_matches_state(self.name, sample, state.history[0].shape, state.history[0].dtype)
        c = self._coefficients(state, sample, cursor)
        if cursor is not None:
            prev_sample, changes = self._known_phase(state, model_output, sample, c, self.phases[cursor.level])
        else:
            prev_sample, changes = self._any_phase(state, model_output, sample, c)
        new_state = state.replace(**self._advanced(state, cursor), **changes)
        prev_sample = as_dtype(prev_sample, sample.dtype)
        if denoised:
            x0 = predictions.to_data(self.prediction_type, model_output, sample, c[ALPHA], c[SIGMA], c[SIGMA])
            return prev_sample, new_state, as_dtype(x0, sample.dtype)
        return prev_sample, new_state

    def _known_phase(
        self, state: PNDMState, m: torch.Tensor, sample: torch.Tensor, c: tuple[torch.Tensor, ...], phase: Phase
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """The eager step, where the host knows the call's phase: diffusers' own operations, the zero terms skipped,
        the weights the Python numbers diffusers multiplies by."""
        terms = (m, *(as_dtype(entry, m.dtype) for entry in state.history[:0:-1][:3]))
        e = None
        for weight, term in zip(phase.weights, (*terms, as_dtype(state.cur_model_output, m.dtype)), strict=True):
            if weight == 0:
                continue
            if e is None:
                e = term if weight == 1 else weight * term
            elif weight in (1, -1):
                e = e + term if weight == 1 else e - term
            else:
                e = e + weight * term if weight > 0 else e - (-weight) * term
        assert e is not None
        if phase.divisor != 1:
            e = e / phase.divisor
        if phase.factor != 1:
            e = phase.factor * e
        x = state.cur_sample if phase.from_start else sample
        changes: dict[str, Any] = {}
        if phase.push:
            changes["history"] = (*state.history[1:], _kept(m, sample))
        if phase.save_start:
            changes["cur_sample"] = sample.clone()
        if phase.add_sum:
            total = phase.add_sum * m
            if phase.keep_sum:
                total = as_dtype(state.cur_model_output, m.dtype) + total
            changes["cur_model_output"] = as_dtype(total, sample.dtype)
        elif phase.weights[4]:  # the interval's last call uses up the sum (diffusers resets it to 0)
            changes["cur_model_output"] = torch.zeros_like(state.cur_model_output)
        return self._transfer(x, e, c), changes

    def _any_phase(
        self, state: PNDMState, m: torch.Tensor, sample: torch.Tensor, c: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """The step of any phase, per row: every term with its row's weight (a zero weight adds an exact zero), the
        buffers chosen by the row's flags; branch-free, so it compiles and steps rows at different levels."""
        history = tuple(as_dtype(entry, m.dtype) for entry in state.history)
        running = as_dtype(state.cur_model_output, m.dtype)
        e = _opmath(c[W0], m)
        for weight, term in zip((W1, W2, W3, W4), (history[-1], history[-2], history[-3], running), strict=True):
            e = e + _opmath(c[weight], term)
        e = _opmath(c[FACTOR], divided(e, c[DIVISOR]))
        x = torch.where(c[FROM_START] > 0, state.cur_sample, sample)
        push, kept = c[PUSH] > 0, _kept(m, sample)
        shifted = (*state.history[1:], kept)
        changes: dict[str, Any] = {
            "history": tuple(torch.where(push, new, old) for new, old in zip(shifted, state.history, strict=True)),
            "cur_sample": torch.where(c[SAVE_START] > 0, sample, state.cur_sample),
        }
        if not self.skip_prk_steps:
            total = _opmath(c[KEEP_SUM], running) + _opmath(c[ADD_SUM], m)
            changes["cur_model_output"] = as_dtype(total, sample.dtype)
        return self._transfer(x, e, c), changes

    def _transfer(self, x: torch.Tensor, e: torch.Tensor, c: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """diffusers' `_get_prev_sample`: formula (9) from the call's timestep to the previous one, in its order."""
        if self.prediction_type == "v_prediction":
            e = scaled(c[ROOT_ALPHA], e) + scaled(c[ROOT_BETA], x)
        return scaled(c[RATIO], x) - divided(scaled(c[DELTA], e), c[DENOM])


def _kept(model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """A model output as the history keeps it: the sample's dtype, never the caller's tensor (a serving engine or a
    CUDA graph may overwrite the model's output buffer before a later step reads the history)."""
    if model_output.dtype != sample.dtype:
        return model_output.to(sample.dtype)
    return model_output.clone()


def _opmath(weight: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """`weight * tensor` rounded as torch rounds a Python number times a tensor (diffusers' `55 * ets[-1]`): in the
    tensor's dtype, or for half types in float32 and rounded once."""
    if tensor.dtype in (torch.float16, torch.bfloat16):
        return (tensor.float() * weight.float()).to(tensor.dtype)
    return as_dtype(weight, tensor.dtype) * tensor
