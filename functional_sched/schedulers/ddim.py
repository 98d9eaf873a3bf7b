"""DDIM: diffusers' `DDIMScheduler` (Stable Diffusion 1.x/2.x's classic sampler), and what DDPM shares with it.

Both index diffusers' training table alpha_bar by the integer timestep a step is called at (diffusers keeps no step
index): step i goes from alpha_bar[t_i] to alpha_bar[prev_i], where DDIM's prev_i is `t_i - N // n` (not the next
timestep of its table, with 'linspace' or 'trailing' spacing) and DDPM's is the next timestep of its table. The plan
holds each step's scalars as diffusers forms them from the two alpha_bars; the step converts the model output into
x0 and epsilon at t_i (clipped or thresholded x0) and recombines them at prev_i.

These classes keep no sigma table in diffusers. Ours holds each timestep's noise level as the VP sigma,
sqrt(1 - alpha_bar) (finite where a zero-terminal-SNR schedule's alpha_bar reaches 0), then the level the last step
goes to; `_alpha_sigma` reads it back as (sqrt(1 - sigma^2), sigma).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Choice, Flag, Option, Real
from ..machinery.plan import Plan, as_dtype, divided, plus, scaled, single_plan
from ..machinery.record import record
from ..machinery.schedule import Schedule
from ..machinery.scheduler import Scheduler
from ..math import predictions, schedules
from . import common

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")

# Columns both tables begin with: alpha_bar at the step's timestep (add_noise), and x_t = sqrt_alpha x0 + sqrt_beta eps.
ALPHA_BAR, SQRT_ALPHA, SQRT_BETA = range(3)
# DDIM's update: x_prev = sqrt(alpha_bar_prev) x0 + direction eps (+ std noise, with eta > 0).
SQRT_ALPHA_PREV, DIRECTION, STD = range(3, 6)

# The options both diffusers classes declare alike (each class lists its own in diffusers' order).
CLIP_SAMPLE = Option(True, Flag())
CLIP_SAMPLE_RANGE = Option(1.0, Real(above=0), examples=(1.5,))
PREDICTION_TYPE = Option("epsilon", Choice(*PREDICTION_TYPES))
TIMESTEP_SPACING = common.TIMESTEP_SPACING.but(default="leading")


def spaced_timesteps(
    spacing: str, num_inference_steps: int, num_train_timesteps: int, steps_offset: int
) -> torch.Tensor:
    """DDIM's and DDPM's integer timesteps, descending: 'linspace' rounds n points of [0, N - 1], 'leading' steps by
    N // n from 0 (plus `steps_offset`), 'trailing' by N / n down from N, minus 1."""
    n, train = num_inference_steps, num_train_timesteps
    if spacing == "linspace":
        return schedules.np_linspace(0, train - 1, n).round().flip(0).to(torch.int64)
    if spacing == "leading":
        return (torch.arange(n, dtype=torch.int64) * (train // n)).flip(0) + steps_offset
    return schedules.np_arange(train, 0, -(train / n)).round().to(torch.int64) - 1


class AlphaBarScheduler(Scheduler):
    """Base of DDIM and DDPM: the training table, the schedule, the conversion of the model output and noising, all
    from alpha_bar at the timesteps; a subclass declares the options (`options.config`) and its update."""

    num_train_timesteps: int
    beta_start: float
    beta_end: float
    beta_schedule: str
    trained_betas: tuple[float, ...] | None
    clip_sample: bool
    clip_sample_range: float
    prediction_type: str
    thresholding: bool
    dynamic_thresholding_ratio: float
    sample_max_value: float
    timestep_spacing: str
    steps_offset: int
    rescale_betas_zero_snr: bool

    _takes_repeats: ClassVar[bool] = False  # diffusers' DDPM wants custom timesteps strictly descending
    _alpha_bar_column: ClassVar[int | None] = ALPHA_BAR
    #: Whether `timestep_spacing` and `steps_offset` space the timesteps (LCM and TCD declare them and space their own).
    _spaced_by_config: ClassVar[bool] = True

    # ------------------------------------------------------------------ hooks for the subclasses
    def _coefficient_table(self, timesteps: torch.Tensor, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([N, C] coefficients, alpha_bar where the last step ends), from the float32 training table `alpha_bar`
        (float64 plans get it widened)."""
        raise NotImplementedError

    def _training_betas(self) -> torch.Tensor:
        return common.training_betas(self)

    @property
    def _clips(self) -> bool:
        """Whether x0 is clipped to `clip_sample_range` (CogVideoX's classes take `clip_sample` and ignore it)."""
        return self.clip_sample

    @property
    def _thresholds(self) -> bool:
        """Whether x0 is thresholded (TCD's class takes `thresholding` and ignores it)."""
        return self.thresholding

    # ------------------------------------------------------------------ shared
    def _training_cumprod(self) -> torch.Tensor:
        """diffusers' `alphas_cumprod`, float32: a zero-SNR rescale ends it at exactly 0 (unlike the sigma-based
        schedulers', which move that 0 to 2**-24)."""
        betas = self._training_betas()
        if self.rescale_betas_zero_snr:
            betas = schedules.rescale_zero_terminal_snr(betas)
        return torch.cumprod(1.0 - betas, dim=0)

    @property
    def max_inference_steps(self) -> int:
        return min(super().max_inference_steps, self.num_train_timesteps)

    def _steps_limit_reason(self) -> str:
        return ", num_train_timesteps: diffusers refuses more steps than training timesteps"

    def _custom_range(self, name: str) -> tuple[float, float, bool]:
        return 0, self.num_train_timesteps - 1, True

    def _check_schedule(self, schedule: Schedule) -> None:
        owner = self.name
        if schedule.sigmas is not None:
            raise ValueError(f"{owner}: custom sigmas are not supported (diffusers' set_timesteps takes none).")
        if self.trained_betas is not None and len(self.trained_betas) != self.num_train_timesteps:
            raise ValueError(
                f"{owner}: trained_betas has {len(self.trained_betas)} values but num_train_timesteps="
                f"{self.num_train_timesteps}; give one beta per training timestep."
            )
        steps = schedule.num_inference_steps
        leading = self._spaced_by_config and self.timestep_spacing == "leading"
        if schedule.timesteps is None and steps is not None and leading:
            last = (steps - 1) * (self.num_train_timesteps // steps) + self.steps_offset
            if last >= self.num_train_timesteps:
                raise ValueError(
                    f"{owner}: with steps_offset={self.steps_offset}, {steps} 'leading' steps start at timestep "
                    f"{last}, past the training schedule's last ({self.num_train_timesteps - 1}); diffusers raises "
                    "IndexError. Use fewer steps or a smaller offset."
                )
        super()._check_schedule(schedule)

    def _timesteps(self, n: int | None, timesteps: torch.Tensor | None) -> torch.Tensor:
        if timesteps is not None:
            return timesteps.to(torch.float64).to(torch.int64)
        assert n is not None
        return spaced_timesteps(self.timestep_spacing, n, self.num_train_timesteps, self.steps_offset)

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
        coefficients, final = self._coefficient_table(timesteps, alpha_bar.to(dtype))
        # x0 = (x - eps) / sqrt(alpha_bar) is infinite at alpha_bar = 0; clipping alone makes it finite again (+-1).
        # (alpha_bar where each step forms x0: at its timestep, or where an inverse step starts.)
        unclipped = self._thresholds or not self._clips
        if self.prediction_type == "epsilon" and unclipped and bool((coefficients[:, ALPHA_BAR] == 0).any()):
            raise ValueError(
                f"{self.name}: timestep {self.num_train_timesteps - 1} has alpha_bar = 0 "
                "(rescale_betas_zero_snr=True), where an epsilon prediction gives an infinite x0 (diffusers divides "
                "by sqrt(alpha_bar) = 0 and, unless clip_sample clips it, returns NaN); "
                "use prediction_type='v_prediction', as zero-SNR models do."
            )
        levels = torch.cat([coefficients[:, ALPHA_BAR], final.reshape(1)])
        return single_plan(timesteps, (1 - levels) ** 0.5, coefficients[:, None])

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        # The step reads alpha_bar at the timesteps it is called at, not the sigma table (diffusers keeps none).
        plan = self._build_plan(None, timesteps.to(torch.float64), None, None, sigmas.dtype)
        return single_plan(timesteps.to(torch.int64), sigmas, plan.coefficients[0])

    def sigmas(self, state: Any) -> torch.Tensor:
        """Each timestep's noise level as the VP sigma, sqrt(1 - alpha_bar), then the level the last step goes to:
        [N + 1], or [R, N + 1] if stacked (diffusers' DDIM and DDPM keep no sigma table)."""
        return super().sigmas(state)

    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (1 - sigma**2) ** 0.5, sigma

    def _conversion_options(self) -> tuple[Any, ...]:
        return (
            self.prediction_type,
            self.thresholding,
            self.dynamic_thresholding_ratio,
            self.sample_max_value,
            self.clip_sample,
            self.clip_sample_range,
        )

    def _converted(
        self, model_output: torch.Tensor, sample: torch.Tensor, c: tuple[torch.Tensor, ...], epsilon: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x0, epsilon) of the model output at the step's timestep, x0 thresholded or clipped where configured
        (epsilon, only if asked, from the output before that): diffusers' expressions, in its order."""
        sqrt_alpha, sqrt_beta = c[SQRT_ALPHA], c[SQRT_BETA]
        eps = None
        if self.prediction_type == "epsilon":
            x0 = divided(sample - scaled(sqrt_beta, model_output), sqrt_alpha)
            eps = model_output
        elif self.prediction_type == "sample":
            x0 = model_output
            if epsilon:
                eps = divided(sample - scaled(sqrt_alpha, x0), sqrt_beta)
        else:  # v_prediction
            x0 = scaled(sqrt_alpha, sample) - scaled(sqrt_beta, model_output)
            if epsilon:
                eps = scaled(sqrt_alpha, model_output) + scaled(sqrt_beta, sample)
        if self._thresholds:
            x0 = predictions.threshold(x0, self.dynamic_thresholding_ratio, self.sample_max_value)
        elif self._clips:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        return x0, eps

    def _returned(
        self, prev_sample: torch.Tensor, new_state: Any, x0: torch.Tensor, sample: torch.Tensor, denoised: bool
    ) -> Any:
        """`step`'s result in the sample's dtype: (prev_sample, new_state), and x0 if `denoised`."""
        if not denoised:
            return as_dtype(prev_sample, sample.dtype), new_state
        return as_dtype(prev_sample, sample.dtype), new_state, as_dtype(x0, sample.dtype)

    def _check_common(
        self,
        state: Any,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        noise: torch.Tensor | None,
        denoised: bool,
        cursor: host.Cursor | None,
        condition: str,
    ) -> None:
        self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
        if self.stochastic:
            checks.check_noise(self.name, condition, noise, sample)


@record(host=("cursor",))
class DDIMState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class DDIM(AlphaBarScheduler):
    """Denoising diffusion implicit models: x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - s^2) eps + s noise, with
    s = eta sqrt((1 - a_prev) / (1 - a) (1 - a / a_prev)) (eta = 0: the deterministic DDIM ODE step; eta = 1: DDPM's
    posterior variance). Options, schedule and arithmetic as diffusers 0.42.1; `eta` and `use_clipped_model_output`,
    `step()` arguments there, are options here.

    Implements Song et al. (2021), "Denoising Diffusion Implicit Models", eq. 12; zero terminal SNR and 'trailing'
    spacing from Lin et al. (2023), "Common Diffusion Noise Schedules and Sample Steps are Flawed".
    """

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    beta_start: float = common.BETA_START
    beta_end: float = common.BETA_END
    beta_schedule: str = common.BETA_SCHEDULE
    trained_betas: tuple[float, ...] | None = common.TRAINED_BETAS
    clip_sample: bool = CLIP_SAMPLE
    set_alpha_to_one: bool = Option(True, Flag())
    steps_offset: int = common.STEPS_OFFSET
    prediction_type: str = PREDICTION_TYPE
    thresholding: bool = common.THRESHOLDING
    dynamic_thresholding_ratio: float = common.DYNAMIC_THRESHOLDING_RATIO
    clip_sample_range: float = CLIP_SAMPLE_RANGE
    sample_max_value: float = common.SAMPLE_MAX_VALUE
    timestep_spacing: str = TIMESTEP_SPACING
    rescale_betas_zero_snr: bool = common.RESCALE_BETAS_ZERO_SNR
    # diffusers' step() arguments: the weight of the fresh noise (0: DDIM, 1: DDPM's variance), and whether epsilon is
    # recomputed from the clipped x0.
    eta: float = Option(0.0, Real(at_least=0), examples=(1.0, 0.5), step_argument=True)
    use_clipped_model_output: bool = Option(False, Flag(), step_argument=True)

    state_type: ClassVar[type] = DDIMState
    diffusers_name: ClassVar[str] = "DDIMScheduler"
    plan_columns: ClassVar[int] = STD + 1

    @property
    def stochastic(self) -> bool:
        """Whether `step` takes fresh noise: with `eta > 0`."""
        return self.eta > 0

    def _step_options(self) -> tuple[Any, ...]:
        return (*self._conversion_options(), self.stochastic, self.use_clipped_model_output)

    def _check_schedule(self, schedule: Schedule) -> None:
        if schedule.timesteps is not None:
            raise ValueError(f"{self.name}: custom timesteps are not supported (diffusers' set_timesteps takes none).")
        if schedule.num_inference_steps is None:
            raise ValueError(f"{self.name}: give num_inference_steps.")
        super()._check_schedule(schedule)

    def _coefficient_table(self, timesteps: torch.Tensor, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # diffusers' step: prev = t - N // n, and alpha_bar there (the final one below 0); each scalar as it forms it.
        prev = timesteps - self.num_train_timesteps // len(timesteps)
        final = alpha_bar.new_tensor(1.0) if self.set_alpha_to_one else alpha_bar[0]
        alpha = alpha_bar[timesteps]
        alpha_prev = torch.where(prev >= 0, alpha_bar[prev.clamp(min=0)], final)
        beta = 1 - alpha
        variance = ((1 - alpha_prev) / beta) * (1 - alpha / alpha_prev)
        std = self.eta * variance ** (0.5)
        direction = (1 - alpha_prev - std**2) ** (0.5)
        table = torch.stack([alpha, alpha ** (0.5), beta ** (0.5), alpha_prev ** (0.5), direction, std], dim=-1)
        return table, alpha_prev[-1]

    def step(
        self,
        state: DDIMState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, DDIMState] | tuple[torch.Tensor, DDIMState, torch.Tensor]:
        """One DDIM step of every row from its timestep: `(prev_sample, new_state)`, in `sample`'s dtype (the
        arithmetic in the inputs' dtypes, as diffusers', which does not upcast).

        With `eta > 0` it takes `noise` (standard normal, `sample`'s shape), used in the model output's dtype: draw it
        as diffusers does, `functional_sched.randn_tensor(sample.shape, generator=g, dtype=model_output.dtype)` (on
        the CPU a float32 draw is the same numbers). `denoised=True` also returns the step's x0 estimate, clipped or
        thresholded as configured (diffusers' `pred_original_sample`): `(prev_sample, new_state, x0)`.
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_common(state, model_output, sample, noise, denoised, cursor, "eta > 0")
        c = self._coefficients(state, sample, cursor)
        eager = cursor is not None
        prev_sample, x0 = _drift(self, c, model_output, sample, eager)  # DDIMInverse borrows this step
        if self.stochastic:
            prev_sample = plus(scaled(c[STD], as_dtype(noise, model_output.dtype)), prev_sample, eager=eager)
        if denoised and x0 is model_output:
            x0 = x0.clone()  # the caller's own tensor (sample prediction, unclipped): never handed back as ours
        return self._returned(prev_sample, state.replace(**self._advanced(state, cursor)), x0, sample, denoised)

    def _transition(
        self, state: DDIMState, model_output: torch.Tensor, sample: torch.Tensor, cursor: host.Cursor | None
    ) -> tuple[torch.Tensor, torch.Tensor, DDIMState]:
        """`step`'s Gaussian transition in closed form (`functional_sched.step_transition`): the drift, the noise's
        scale eta sigma_t per row (in the model output's dtype, as the step scales the noise), the state after."""
        c = self._coefficients(state, sample, cursor)
        mean = _drift(self, c, model_output, sample, cursor is not None)[0]
        new_state = state.replace(**self._advanced(state, cursor))
        return as_dtype(mean, sample.dtype), as_dtype(c[STD], model_output.dtype), new_state


def _drift(
    scheduler: Any, c: tuple[torch.Tensor, ...], model_output: torch.Tensor, sample: torch.Tensor, eager: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The DDIM step's noise-free part and its x0: diffusers' sum, `sqrt(a_prev) * x0 + direction * eps`, in its order
    (the layout of a sum follows it)."""
    x0, epsilon = scheduler._converted(model_output, sample, c, epsilon=not scheduler.use_clipped_model_output)
    if scheduler.use_clipped_model_output:
        epsilon = divided(sample - scaled(c[SQRT_ALPHA], x0), c[SQRT_BETA])
    return plus(scaled(c[DIRECTION], epsilon), scaled(c[SQRT_ALPHA_PREV], x0), eager=eager), x0
