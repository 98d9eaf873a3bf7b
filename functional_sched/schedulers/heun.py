"""Heun: diffusers' `HeunDiscreteScheduler`, and the two-calls-per-interval machinery KDPM2 shares with it.

diffusers' Heun and KDPM2 schedulers take two model calls per interval [s_k, s_(k+1)] of their sigma schedule and
repeat timesteps so that each call is one `step()`: the first call stores the interval's start sample (and Heun its
derivative) and takes a first-order step, the second combines them. diffusers flips a mutable phase (`dt`, `sample`
set or None); here the phase is a plan column per call (`FIRST`), and the state carries the stored sample (and
derivative) as buffers shaped like the sample, zero at init. Every call is the same update,

    x0 = x0(model_output, sample, sigma_in)          (sigma_in: the sigma the model saw at this call)
    d  = (sample - x0) / sigma_in                    (Heun's second call: d = (d_first + d) / 2)
    x' = base + d dt  (+ noise sigma_up)             (base: the sample at a first call, the stored one at a second)

with sigma_in, dt and sigma_up from the plan, each term formed in diffusers' order (no upcast: the sample's and model
output's dtypes promote as diffusers' tensors do), so float32 steps reproduce diffusers bit for bit.

The phase is the call's parity: a request begins at an interval's first call (an even `begin_index`, as img2img
pipelines pass `t_start * order`). A state begun at an odd index has nothing stored for its second call (diffusers,
whose phase is its own, takes a zero-length first-order step there and stays out of step to the end).

Implements Algorithm 1 (Heun's 2nd-order deterministic sampler) of Karras et al. (2022), "Elucidating the Design
Space of Diffusion-Based Generative Models", with diffusers 0.42.1's options, schedule and call table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Choice, Flag, Option, Real
from ..machinery.plan import Plan, as_dtype, divided, gather_rows, plus, scaled, single_plan
from ..machinery.record import record
from ..math import schedules
from . import common
from .sigma_discrete import SigmaDiscreteScheduler

# Columns of the coefficient table, one row per call: the sigma the model sees (and divides the derivative by), the
# step's length, what the model input is divided by, v-prediction's two factors, 1 at an interval's first call (0 at
# its second), the ancestral noise's scale (KDPM2 ancestral's second calls; 0 elsewhere), and half the step's length
# (Heun's second call scales the sum of its derivatives by it: halving is exact, so one kernel fewer, same bits).
SIGMA_IN, DT, INPUT_SCALE, V_OUT, V_IN, FIRST, UP, HALF_DT = range(8)


@record(host=("cursor",))
class HeunState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64: calls taken (two per interval but the last)
    prev_derivative: torch.Tensor  # [R, ...], the sample's dtype: the interval's first derivative (diffusers' name)
    sample: torch.Tensor  # [R, ...], the sample's dtype: the sample the interval started from (diffusers' `sample`)
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


def call_table(values: torch.Tensor) -> torch.Tensor:
    """An interval table [N + 1] as diffusers' two-call tables hold it: the first value once, each later one twice
    but the last, then the last once ([2N]: one per call and the final one)."""
    return torch.cat([values[:1], values[1:-1].repeat_interleave(2), values[-1:]])


def interval_ends(call_sigmas: torch.Tensor) -> torch.Tensor:
    """The interval sigmas [N + 1] of a call table of sigmas [2N] (`call_table`'s inverse)."""
    if call_sigmas.shape[0] % 2:
        raise ValueError(
            f"a two-call schedule has an even number of sigmas (one per call and the final one), got "
            f"{call_sigmas.shape[0]}."
        )
    return torch.cat([call_sigmas[0::2], call_sigmas[-1:]])


class TwoCallScheduler(SigmaDiscreteScheduler):
    """What Heun and KDPM2 share: the call table, the step, the phase and the buffers. A subclass gives each call's
    coefficients (`_call_coefficients`) and whether a second call averages the derivatives (`_averages`)."""

    #: Whether the second call's derivative is the mean of the interval's two (Heun) or its own (KDPM2's midpoint).
    _averages: ClassVar[bool] = False
    #: Whether the class has diffusers' `clip_sample` option (Heun's; KDPM2's lack it).
    _has_clip_option: ClassVar[bool] = False
    #: Whether the step works in the plan's dtype (float32; float64 for float64 samples), as FlowMatchHeun upcasts.
    _upcasts: ClassVar[bool] = False
    plan_columns: ClassVar[int] = HALF_DT + 1

    @property
    def _clips(self) -> bool:
        """Whether x0 is clipped to [-clip_sample_range, clip_sample_range] (as DDIM's `_clips`)."""
        return self._has_clip_option and self.clip_sample

    _input_column: ClassVar[int] = INPUT_SCALE

    def _step_options(self) -> tuple[Any, ...]:
        clip = getattr(self, "clip_sample", False)
        return (self.prediction_type, clip, getattr(self, "clip_sample_range", 1.0) if clip else None)

    # ------------------------------------------------------------------------------------------------ plan
    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        timesteps, sigmas = self._schedule(num_inference_steps, timesteps, sigmas)
        return self._plan_from_tables(self._call_timesteps(timesteps, sigmas), call_table(sigmas).to(dtype))

    def _call_timesteps(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        """The timestep of each call [2N - 1] from the intervals' [N] (and their sigmas [N + 1]): Heun's repeated."""
        return torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)])

    def _plan_from_tables(
        self, timesteps: torch.Tensor, sigmas: torch.Tensor, kept: Mapping[str, Any] | None = None
    ) -> Plan:
        if timesteps.shape[0] + 1 != sigmas.shape[0]:
            raise ValueError(f"{self.name}: a call table needs one sigma per call and the final one.")
        sigma_in, dt, up = self._call_coefficients(sigmas, kept or {})
        calls = timesteps.shape[0]
        first = (torch.arange(calls) % 2 == 0).to(sigmas.dtype)
        input_scale = (sigma_in**2 + 1) ** 0.5
        coefficients = torch.stack(
            [sigma_in, dt, input_scale, -sigma_in / input_scale, sigma_in**2 + 1, first, up, dt / 2], dim=-1
        )
        return single_plan(timesteps, sigmas, coefficients[:, None])

    def _call_coefficients(
        self, sigmas: torch.Tensor, kept: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sigma_in, dt, sigma_up) of each call [2N - 1] from the call table of sigmas [2N], as diffusers forms them
        (with what diffusers `kept` from before its tables were edited, `_on_kept_tables`)."""
        raise NotImplementedError

    def _on_kept_tables(
        self, state: Any, timesteps: torch.Tensor, sigmas: torch.Tensor, kept: Mapping[str, Any]
    ) -> Any:
        """`_on_tables` for a drop-in whose pipeline edited its tables mid-run: diffusers reads the edited sigmas at
        each call but keeps what it computed before (Heun: a pending second call's `dt`; KDPM2: its midpoint tables),
        which `kept` gives."""
        return self._carried(state, self._tables_plan(timesteps, sigmas, state.plan.coefficients.dtype, kept))

    # ------------------------------------------------------------------------------------------------ queries
    def _model_sigma(self, state: Any) -> torch.Tensor:
        return gather_rows(state.plan.coefficients[:, :, 0, SIGMA_IN], state.step_index)

    def _draws_noise(self, state: Any) -> bool:
        """Whether any row is at an interval's second call, where diffusers' ancestral KDPM2 draws its noise."""
        if not self.stochastic:
            return False
        cursor = self._cursor(state)
        if cursor is not None:
            return cursor.step % 2 == 1
        return bool((self._coefficients(state, state.step_index, cursor)[FIRST] == 0).any())

    # ------------------------------------------------------------------------------------------------ step
    def _buffers(self, sample: torch.Tensor) -> dict[str, torch.Tensor]:
        """The state's stored tensors, zero: slices of one allocation (one fill)."""
        names = ("prev_derivative", "sample") if self._averages else ("sample",)
        zeros = torch.zeros((len(names), *sample.shape), dtype=sample.dtype, device=sample.device).unbind(0)
        return dict(zip(names, zeros, strict=True))

    def _start(
        self,
        plan: Plan,
        sample: torch.Tensor,
        step_index: torch.Tensor,
        level: torch.Tensor,
        fingerprint: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> Any:
        return self.state_type(
            plan=plan, step_index=step_index, fingerprint=fingerprint, cursor=cursor, **self._buffers(sample)
        )

    def step(
        self,
        state: Any,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, Any] | tuple[torch.Tensor, Any, torch.Tensor]:
        """One call of every row: `(prev_sample, new_state)`, or `(prev_sample, new_state, x0)` with `denoised=True`
        (diffusers' `pred_original_sample`). As diffusers, no upcast (but where `_upcasts`: FlowMatchHeun steps in the
        plan's dtype and returns the sample's): the sample's and the model output's dtypes promote (a float32 sample
        stays float32); the stored sample keeps the state's dtype. A stochastic scheduler
        (KDPM2 ancestral) needs `noise` (standard normal like the sample, drawn in the model output's dtype as diffusers
        draws it); calls that add none (first calls) ignore it.
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
            checks.check_sample_matches_state(self.name, sample, state.sample.shape, state.sample.dtype)
            if self.stochastic:
                checks.check_noise(self.name, "ancestral sampling (every interval's second call)", noise, sample)
        given = sample.dtype
        if self._upcasts:
            sample = as_dtype(sample, state.plan.coefficients.dtype)
        c = self._coefficients(state, sample, cursor)
        x0 = self._data_prediction(model_output, sample, c[SIGMA_IN], c[V_OUT], c[V_IN])
        if self._clips:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        derivative = divided(sample - x0, c[SIGMA_IN])
        if cursor is not None:  # the plan's phase column is the call's parity: no read of it needed
            prev_sample, changes = self._known_phase(state, derivative, sample, noise, c, cursor.step % 2 == 0)
        else:
            prev_sample, changes = self._any_phase(state, derivative, sample, noise, c)
        new_state = state.replace(**self._advanced(state, cursor), **changes)
        prev_sample = as_dtype(prev_sample, given)
        if denoised:
            return prev_sample, new_state, as_dtype(x0, given)
        return prev_sample, new_state

    def _known_phase(
        self,
        state: Any,
        derivative: torch.Tensor,
        sample: torch.Tensor,
        noise: torch.Tensor | None,
        c: tuple[torch.Tensor, ...],
        first: bool,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """The eager call, where the host knows its phase: diffusers' own operations, nothing selected, but kernels
        merged where the bits stay: the step and the sample's copy in one (`_step_and_kept`); Heun's mean derivative
        times dt as the sum times dt / 2 (but in float16, where halving a subnormal sum rounds)."""
        if first:
            step, kept = _step_and_kept(c[DT], derivative, sample, state.sample.dtype)
            changes = {"sample": kept}
            if self._averages:
                changes["prev_derivative"] = as_dtype(derivative, state.prev_derivative.dtype)
            return plus(step, sample, eager=True), changes
        dt = c[DT]
        if self._averages:
            derivative = plus(derivative, state.prev_derivative, eager=True)  # the fresh derivative: add into it
            if derivative.dtype == torch.float16:
                derivative = derivative / 2
            else:
                dt = c[HALF_DT]
        prev_sample = plus(scaled(dt, derivative, tensor_first=True), state.sample, eager=True)
        if self.stochastic:
            prev_sample = prev_sample + scaled(c[UP], noise, tensor_first=True)
        return prev_sample, {}

    def _any_phase(
        self,
        state: Any,
        derivative: torch.Tensor,
        sample: torch.Tensor,
        noise: torch.Tensor | None,
        c: tuple[torch.Tensor, ...],
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """The call of either phase, per row (torch.where on the plan's `FIRST`): branch-free, so it compiles and
        steps rows at different calls together. Each row's values are those of `_known_phase`."""
        first = c[FIRST] > 0
        changes = {"sample": torch.where(first, as_dtype(sample, state.sample.dtype), state.sample)}
        if self._averages:
            kept = as_dtype(derivative, state.prev_derivative.dtype)
            changes["prev_derivative"] = torch.where(first, kept, state.prev_derivative)
            derivative = torch.where(first, derivative, (state.prev_derivative + derivative) / 2)
        prev_sample = torch.where(first, sample, state.sample) + scaled(c[DT], derivative, tensor_first=True)
        if self.stochastic:
            prev_sample = torch.where(first, prev_sample, prev_sample + scaled(c[UP], noise, tensor_first=True))
        return prev_sample, changes


def _kept(sample: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The sample as the state keeps it: in its dtype, never the caller's tensor (a pipeline may edit it in place)."""
    return sample.to(dtype) if sample.dtype != dtype else sample.clone()


def _step_and_kept(
    dt: torch.Tensor, derivative: torch.Tensor, sample: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(derivative * dt, the sample as the state keeps it)`. On CUDA, where all three are one dtype, one foreach
    kernel makes both (a copy is a product by 1, exactly; the product is the one `scaled` makes, at float precision,
    rounded once): a first call then launches as many kernels as diffusers' and no copy."""
    if sample.is_cuda and derivative.dtype == sample.dtype == dtype and derivative.device == sample.device:
        step, kept = torch._foreach_mul([derivative, sample], [host.value(dt), 1.0])
        return step, kept
    return scaled(dt, derivative, tensor_first=True), _kept(sample, dtype)


def _exp_betas(num_train_timesteps: int) -> torch.Tensor:
    """diffusers' `betas_for_alpha_bar(..., alpha_transform_type="exp")`: alpha_bar(t) = exp(-12 t), float32."""
    betas = []
    for index in range(num_train_timesteps):
        start, end = index / num_train_timesteps, (index + 1) / num_train_timesteps
        betas.append(min(1 - math.exp(end * -12.0) / math.exp(start * -12.0), 0.999))
    return torch.tensor(betas, dtype=torch.float32)


@options.config
class HeunDiscrete(TwoCallScheduler):
    """Heun steps of the probability-flow ODE dx/dsigma = (x - x0(x, sigma)) / sigma: an Euler step to the next sigma,
    then (at the repeated timestep) the trapezoidal correction with the mean of the two derivatives. The last
    interval, into sigma = 0, is the Euler step alone.

    Implements Algorithm 1 of Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based Generative
    Models", with diffusers 0.42.1's options, schedule and call table.
    """

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    beta_start: float = common.BETA_START.but(default=0.00085)
    beta_end: float = common.BETA_END.but(default=0.012)
    beta_schedule: str = common.BETA_SCHEDULE.but(domain=Choice(*schedules.BETA_SCHEDULES, "exp"))
    trained_betas: tuple[float, ...] | None = common.TRAINED_BETAS
    prediction_type: str = Option("epsilon", Choice("epsilon", "v_prediction", "sample"))
    use_karras_sigmas: bool = common.USE_KARRAS_SIGMAS
    use_exponential_sigmas: bool = common.USE_EXPONENTIAL_SIGMAS
    use_beta_sigmas: bool = common.USE_BETA_SIGMAS
    clip_sample: bool = Option(False, Flag())
    clip_sample_range: float = Option(1.0, Real(above=0), examples=(0.5, 2.0))
    timestep_spacing: str = common.TIMESTEP_SPACING
    steps_offset: int = common.STEPS_OFFSET

    state_type: ClassVar[type] = HeunState
    diffusers_name: ClassVar[str] = "HeunDiscreteScheduler"
    _takes_custom: ClassVar[tuple[str, ...]] = ("timesteps",)
    _averages: ClassVar[bool] = True
    _has_clip_option: ClassVar[bool] = True

    def _training_cumprod(self) -> torch.Tensor:
        if self.beta_schedule == "exp" and self.trained_betas is None:
            return schedules.alphas_cumprod(_exp_betas(self.num_train_timesteps), False)
        return super()._training_cumprod()

    def _call_coefficients(
        self, sigmas: torch.Tensor, kept: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # The model sees each call's own sigma; both calls of an interval step its whole length, sigma_next - sigma
        # (the first computes it, the second reuses it: `kept["dt"]`, (call, dt), where the tables were edited since).
        calls = sigmas.shape[0] - 1
        first = torch.arange(calls) % 2 == 0
        length = sigmas[1:] - sigmas[:-1]
        dt = torch.where(first, length, torch.cat([length[:1], length[:-1]]))
        if "dt" in kept:
            call, value = kept["dt"]
            dt[call] = value
        return sigmas[:-1], dt, torch.zeros_like(dt)
