"""CogVideoX's two samplers: diffusers' `CogVideoXDDIMScheduler` and `CogVideoXDPMScheduler` (the CogVideoX
pipelines' schedulers), on the alpha_bar schedule of `ddim.py` with CogVideoX's changes to it.

Both build alpha_bar as diffusers does for these classes: 'scaled_linear' betas in float64 (so alpha_bar and every
coefficient are float64, multiplied into float32 samples as 0-d scalars), an SNR shift alpha_bar / (s + (1 - s)
alpha_bar) ("following SD3"), then a zero-terminal-SNR rescale of alpha_bar itself (not of the betas, as DDIM's
`rescale_betas_zero_snr` does). The published CogVideoX configs predict v with zero terminal SNR, 'trailing' spacing.
`clip_sample`, `clip_sample_range` and `sample_max_value` are options diffusers declares and never reads (no clipping,
no thresholding): taken, and ignored likewise.

The DPM variant is DPM-Solver++(2M) with its SDE noise, as the CogVideoX authors wrote it: every step draws noise,
and a second-order step (any but a run's first and the schedule's last) draws twice and uses the second draw. In
diffusers the caller threads the previous x0 and the previous timestep through `step`; here the state carries the
previous x0 (a buffer, zero at first) and a warm-up level (0 for a run's first step, then 1); the plan's level-1 entry
of step i is the second-order step from timestep i - 1, as the CogVideoX pipeline calls it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.noise import randn_tensor
from ..machinery.options import Choice, Flag, Option, Real
from ..machinery.plan import Plan, as_dtype, gather_step, plus, scaled, single_plan
from ..machinery.record import record
from ..machinery.schedule import Schedule
from . import common
from .ddim import ALPHA_BAR, PREDICTION_TYPE, AlphaBarScheduler

# The DDIM variant's update: x_prev = a x + b x0.
SAMPLE_WEIGHT, X0_WEIGHT = range(3, 5)
# The DPM variant's: x_prev = mult1 x - mult2 d + noise_scale z, d = mult3 x0 - mult4 x0_previous (x0 at first order),
# SECOND_ORDER 1 where it forms d (and draws its noise twice).
MULT1, MULT2, MULT3, MULT4, NOISE_SCALE, SECOND_ORDER = range(3, 9)

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def rescaled_to_zero_snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """alpha_bar shifted and scaled in sqrt space to end at 0 and keep its first value, Lin et al. (2023), Algorithm 1,
    applied to alpha_bar itself as CogVideoX's schedulers apply it (after their SNR shift)."""
    root = alpha_bar.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    return ((root - last) * (first / (first - last))) ** 2


@options.config
class CogVideoXScheduler(AlphaBarScheduler):
    """What the two CogVideoX classes share: their options (diffusers declares the same in both), the shifted alpha_bar
    table in its own dtype, the schedule and the conversion of the model output."""

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    beta_start: float = common.BETA_START.but(default=0.00085)
    beta_end: float = common.BETA_END.but(default=0.012)
    beta_schedule: str = common.BETA_SCHEDULE.but(default="scaled_linear", domain=Choice(*BETA_SCHEDULES))
    trained_betas: tuple[float, ...] | None = common.TRAINED_BETAS
    clip_sample: bool = Option(True, Flag())  # declared by diffusers, never read by its step
    set_alpha_to_one: bool = Option(True, Flag())
    steps_offset: int = common.STEPS_OFFSET
    prediction_type: str = PREDICTION_TYPE
    clip_sample_range: float = Option(1.0, Real(above=0), examples=(1.5,))  # never read by diffusers
    sample_max_value: float = common.SAMPLE_MAX_VALUE  # never read by diffusers
    timestep_spacing: str = common.TIMESTEP_SPACING.but(default="leading")
    rescale_betas_zero_snr: bool = common.RESCALE_BETAS_ZERO_SNR
    snr_shift_scale: float = Option(3.0, Real(above=0), examples=(1.0, 2.0))

    thresholding: ClassVar[bool] = False

    @property
    def _clips(self) -> bool:
        return False  # diffusers' CogVideoX steps never clip x0, whatever clip_sample says

    def _check_options(self) -> None:
        common.check_training_schedule(self)

    def _check_schedule(self, schedule: Schedule) -> None:
        if schedule.timesteps is not None:
            raise ValueError(f"{self.name}: custom timesteps are not supported (diffusers' set_timesteps takes none).")
        if schedule.num_inference_steps is None:
            raise ValueError(f"{self.name}: give num_inference_steps.")
        super()._check_schedule(schedule)

    def _training_betas(self) -> torch.Tensor:
        if self.trained_betas is None and self.beta_schedule == "scaled_linear":  # float64 in these two classes
            n = self.num_train_timesteps
            return torch.linspace(self.beta_start**0.5, self.beta_end**0.5, n, dtype=torch.float64) ** 2
        return common.training_betas(self)

    def _training_cumprod(self) -> torch.Tensor:
        """diffusers' `alphas_cumprod` of these classes, in the betas' dtype (float64 for 'scaled_linear')."""
        alpha_bar = torch.cumprod(1.0 - self._training_betas(), dim=0)
        shift = self.snr_shift_scale
        alpha_bar = alpha_bar / (shift + (1 - shift) * alpha_bar)
        return rescaled_to_zero_snr(alpha_bar) if self.rescale_betas_zero_snr else alpha_bar

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        timesteps = self._timesteps(num_inference_steps, timesteps)
        alpha_bar = self._training_cumprod()
        if self.prediction_type == "epsilon" and bool((alpha_bar[timesteps] == 0).any()):
            raise ValueError(
                f"{self.name}: timestep {self.num_train_timesteps - 1} has alpha_bar = 0 "
                "(rescale_betas_zero_snr=True), where an epsilon prediction gives an infinite x0 (diffusers divides "
                "by sqrt(alpha_bar) = 0 and returns NaN); use prediction_type='v_prediction', as CogVideoX does."
            )
        # diffusers' scalars in alpha_bar's own dtype (float32 plans), or widened (float64 plans: accuracy).
        table, final = self._coefficient_table(timesteps, alpha_bar.to(torch.promote_types(alpha_bar.dtype, dtype)))
        levels = torch.cat([table[:, 0, ALPHA_BAR], final.reshape(1)]).to(dtype)
        return single_plan(timesteps, (1 - levels) ** 0.5, table.to(dtype))

    def _final_alpha_bar(self, alpha_bar: torch.Tensor) -> torch.Tensor:
        return torch.tensor(1.0, dtype=alpha_bar.dtype) if self.set_alpha_to_one else alpha_bar[0]

    def _alpha_bars(self, timesteps: torch.Tensor, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """alpha_bar at each step's timestep and where diffusers' step goes (t - N // n, the final value below 0)."""
        prev = timesteps - self.num_train_timesteps // len(timesteps)
        alpha_prev = torch.where(prev >= 0, alpha_bar[prev.clamp(min=0)], self._final_alpha_bar(alpha_bar))
        return alpha_bar[timesteps], alpha_prev

    def _step_options(self) -> tuple[Any, ...]:
        return (self.prediction_type,)

    def _x0(self, model_output: torch.Tensor, sample: torch.Tensor, c: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x0, _ = self._converted(model_output, sample, c, epsilon=False)
        return x0


@record(host=("cursor",))
class CogVideoXDDIMState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class CogVideoXDDIM(CogVideoXScheduler):
    """The deterministic DDIM step of CogVideoX: x_prev = a x + b x0, a = sqrt((1 - a_prev) / (1 - a_t)),
    b = sqrt(a_prev) - sqrt(a_t) a. Options, schedule and arithmetic as diffusers 0.42.1 (whose `step` takes `eta`,
    `use_clipped_model_output`, `generator` and `variance_noise` and ignores them: so does the drop-in).

    Implements Song et al. (2021), "Denoising Diffusion Implicit Models", eq. 12 with eta = 0, on the schedule of
    Yang et al. (2024), "CogVideoX: Text-to-Video Diffusion Models with An Expert Transformer" (zero terminal SNR and
    'trailing' spacing from Lin et al. (2023), "Common Diffusion Noise Schedules and Sample Steps are Flawed").
    """

    state_type: ClassVar[type] = CogVideoXDDIMState
    diffusers_name: ClassVar[str] = "CogVideoXDDIMScheduler"
    plan_columns: ClassVar[int] = X0_WEIGHT + 1

    def _coefficient_table(self, timesteps: torch.Tensor, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha, alpha_prev = self._alpha_bars(timesteps, alpha_bar)
        beta = 1 - alpha
        sample_weight = ((1 - alpha_prev) / (1 - alpha)) ** 0.5
        x0_weight = alpha_prev**0.5 - alpha**0.5 * sample_weight
        table = torch.stack([alpha, alpha**0.5, beta ** (0.5), sample_weight, x0_weight], dim=-1)
        return table[:, None], alpha_prev[-1]

    def step(
        self,
        state: CogVideoXDDIMState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, CogVideoXDDIMState] | tuple[torch.Tensor, CogVideoXDDIMState, torch.Tensor]:
        """One step of every row from its timestep: `(prev_sample, new_state)` in `sample`'s dtype (the arithmetic
        in the inputs' dtypes, as diffusers', which does not upcast). `denoised=True` also returns the step's x0
        estimate (diffusers' `pred_original_sample`): `(prev_sample, new_state, x0)`."""
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_common(state, model_output, sample, noise, denoised, cursor, "")
        c = self._coefficients(state, sample, cursor)
        x0 = self._x0(model_output, sample, c)
        prev_sample = plus(scaled(c[X0_WEIGHT], x0), scaled(c[SAMPLE_WEIGHT], sample), eager=cursor is not None)
        if denoised and x0 is model_output:
            x0 = x0.clone()  # the caller's own tensor (sample prediction): never handed back as ours
        return self._returned(prev_sample, state.replace(**self._advanced(state, cursor)), x0, sample, denoised)


@record(host=("cursor",))
class CogVideoXDPMState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    lower_order_nums: torch.Tensor  # [R], int64: 0 at a run's first step (first order), then 1
    previous_x0: torch.Tensor  # like the sample, its working dtype (float32 for half samples): the last step's x0
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class CogVideoXDPM(CogVideoXScheduler):
    """DPM-Solver++(2M) with SDE noise, as CogVideoX's authors wrote it: with h = lambda_prev - lambda_t (lambda the
    half log-SNR), x_prev = sigma_prev / sigma_t e^-h x - sqrt(a_prev) (e^-2h - 1) d + sigma_prev sqrt(1 - e^-2h) z,
    d = x0 at a run's first step and the schedule's last, else (1 + 1 / 2r) x0 - x0_previous / 2r, r = h_previous / h.
    Always stochastic: `noise` is required; draw it with `noise(state, sample, generator)`, which draws as diffusers
    does (twice at a second-order step, keeping the second). Options, schedule and arithmetic as diffusers 0.42.1.

    Implements Lu et al. (2022), "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
    the SDE-DPM-Solver++(2M) update, on the schedule of Yang et al. (2024), "CogVideoX: Text-to-Video Diffusion Models
    with An Expert Transformer".
    """

    state_type: ClassVar[type] = CogVideoXDPMState
    diffusers_name: ClassVar[str] = "CogVideoXDPMScheduler"
    plan_columns: ClassVar[int] = SECOND_ORDER + 1

    @property
    def stochastic(self) -> bool:
        """Always: every step draws noise."""
        return True

    def _warmup(self, state: Any) -> torch.Tensor | None:
        return state.lower_order_nums

    def _coefficient_table(self, timesteps: torch.Tensor, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Each step's scalars as diffusers' `get_variables` and `get_mult` form them, 0-d op by 0-d op (a vectorised
        # log or exp may round differently); level 0 first order, level 1 from the previous timestep where diffusers'
        # pipeline passes it and the step goes on (t - N // n >= 0).
        alpha, alpha_prev = self._alpha_bars(timesteps, alpha_bar)
        goes_on = timesteps - self.num_train_timesteps // len(timesteps) >= 0
        rows = []
        for index in range(len(timesteps)):
            first = _dpm_row(alpha[index], alpha_prev[index], None)
            if index == 0:
                later = torch.zeros_like(first)  # unreachable: a run's first step is at level 0
            elif bool(goes_on[index]):
                later = _dpm_row(alpha[index], alpha_prev[index], alpha[index - 1])
            else:
                later = first
            rows.append(torch.stack([first, later]))
        return torch.stack(rows), alpha_prev[-1]

    def _start(
        self,
        plan: Plan,
        sample: torch.Tensor,
        step_index: torch.Tensor,
        level: torch.Tensor,
        fingerprint: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> CogVideoXDPMState:
        previous_x0 = torch.zeros(sample.shape, dtype=_kept_dtype(sample), device=sample.device)
        return CogVideoXDPMState(
            plan=plan,
            step_index=step_index,
            lower_order_nums=level,
            previous_x0=previous_x0,
            fingerprint=fingerprint,
            cursor=cursor,
        )

    def draws(self, state: CogVideoXDPMState) -> int:
        """How many noise tensors diffusers draws at the state's next step: 2 at a second-order step, else 1 (read on
        the host; the state's rows must agree, as the rows of one diffusers call do)."""
        self._require_state(state, "draws")
        cursor = self._cursor(state)
        if cursor is not None:
            if cursor.step >= cursor.owned.host.steps:
                checks.raise_finished(self.name, state)
            return 1 + int(cursor.owned.host.entry(cursor.step, cursor.level)[SECOND_ORDER])
        second = gather_step(state.plan, state.step_index, state.lower_order_nums)[:, SECOND_ORDER].tolist()
        if len(set(second)) > 1:
            raise ValueError(f"{self.name}.draws: the rows are at steps that draw different numbers of tensors.")
        return 1 + int(second[0])

    def noise(
        self, state: CogVideoXDPMState, sample: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None
    ) -> torch.Tensor:
        """The next step's `noise=`, drawn from `generator` exactly as diffusers' step draws it: `randn_tensor` of the
        sample's shape, device and dtype, once, or twice at a second-order step (the second is the one used)."""
        noise = None
        for _ in range(self.draws(state)):
            noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        assert noise is not None
        return noise

    def step(
        self,
        state: CogVideoXDPMState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, CogVideoXDPMState] | tuple[torch.Tensor, CogVideoXDPMState, torch.Tensor]:
        """One step of every row: `(prev_sample, new_state)` in `sample`'s dtype (the arithmetic in the inputs' dtypes,
        as diffusers'). `noise` (standard normal, `sample`'s shape, used in its dtype) is required: `noise(state,
        sample, generator)` draws it as diffusers does. `denoised=True` also returns the step's x0 estimate (diffusers'
        `pred_original_sample`, which the state keeps for the next step): `(prev_sample, new_state, x0)`."""
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_common(state, model_output, sample, noise, denoised, cursor, "every step")
        assert noise is not None
        c = self._coefficients(state, sample, cursor)
        x0 = self._x0(model_output, sample, c)
        eager = cursor is not None
        if eager and not bool(c[SECOND_ORDER]):  # the host knows it: x0 as it is (d = 1 x0 - 0 x0_previous)
            direction = x0
        else:
            direction = scaled(c[MULT3], x0) - scaled(c[MULT4], as_dtype(state.previous_x0, x0.dtype))
        prev_sample = scaled(c[MULT1], sample) - scaled(c[MULT2], direction)
        prev_sample = plus(scaled(c[NOISE_SCALE], as_dtype(noise, sample.dtype)), prev_sample, eager=eager)
        kept = as_dtype(x0, state.previous_x0.dtype)
        if kept is model_output or (denoised and kept is x0):
            kept = kept.clone()  # the caller's own tensor, or the one handed back: never kept as ours
        new_state = state.replace(previous_x0=kept, **self._advanced(state, cursor))
        return self._returned(prev_sample, new_state, x0, sample, denoised)


def _kept_dtype(sample: torch.Tensor) -> torch.dtype:
    """The previous x0's dtype: at least float32 (diffusers' x0 of a half sample and a float32 model output, as the
    CogVideoX pipeline steps, is float32)."""
    return torch.promote_types(sample.dtype, torch.float32)


def _dpm_row(alpha: torch.Tensor, alpha_prev: torch.Tensor, alpha_back: torch.Tensor | None) -> torch.Tensor:
    """One step's DPM coefficients from 0-d alpha_bars, as diffusers' `get_variables` and `get_mult` compute them:
    [alpha_bar, sqrt(alpha_bar), sqrt(1 - alpha_bar), mult1..4, noise scale, second order]."""
    lamb = ((alpha / (1 - alpha)) ** 0.5).log()
    lamb_next = ((alpha_prev / (1 - alpha_prev)) ** 0.5).log()
    h = lamb_next - lamb
    mult1 = ((1 - alpha_prev) / (1 - alpha)) ** 0.5 * (-h).exp()
    mult2 = (-2 * h).expm1() * alpha_prev**0.5
    noise_scale = (1 - alpha_prev) ** 0.5 * (1 - (-2 * h).exp()) ** 0.5
    if alpha_back is None:
        mult3, mult4, second = torch.ones_like(h), torch.zeros_like(h), torch.zeros_like(h)
    else:
        r = (lamb - ((alpha_back / (1 - alpha_back)) ** 0.5).log()) / h
        mult3, mult4, second = 1 + 1 / (2 * r), 1 / (2 * r), torch.ones_like(h)
    values = (alpha, alpha**0.5, (1 - alpha) ** (0.5), mult1, mult2, mult3, mult4, noise_scale, second)
    return torch.stack([value.to(alpha.dtype) for value in values])
