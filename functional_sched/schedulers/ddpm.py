"""DDPM ancestral sampling: diffusers' `DDPMScheduler` (unconditional DDPM pipelines, DeepFloyd IF's and the SD x4
upscaler's training scheduler). What it shares with DDIM (the training table, the schedule, the conversion of the
model output) lives in `ddim.py`."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Choice, Option
from ..machinery.plan import Plan, as_dtype, plus, scaled
from ..machinery.record import record
from ..machinery.schedule import Schedule
from ..math import schedules
from . import common
from .ddim import ALPHA_BAR, CLIP_SAMPLE, CLIP_SAMPLE_RANGE, PREDICTION_TYPE, TIMESTEP_SPACING, AlphaBarScheduler

BETA_SCHEDULES = (*schedules.BETA_SCHEDULES, "sigmoid", "laplace")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")
LEARNED = ("learned", "learned_range")

# Columns after the shared ones (alpha_bar, sqrt(alpha_bar), sqrt(1 - alpha_bar)): the posterior mean's weights of x0
# and of the sample, the noise's scale for a fixed variance (0 at timestep 0), the log-variance range a learned one
# interpolates, and whether the step adds noise at all (its timestep is above 0).
X0_COEFF, SAMPLE_COEFF, STD, MIN_LOG, MAX_LOG, NOISY = range(ALPHA_BAR + 3, ALPHA_BAR + 9)


@record(host=("cursor",))
class DDPMState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class DDPM(AlphaBarScheduler):
    """Ancestral sampling of the DDPM posterior q(x_prev | x_t, x0): x_prev = c0 x0 + ct x_t + std noise, from the
    timestep the step is called at to the next of its table, no noise at timestep 0. Every `variance_type` diffusers
    has: fixed ones from the schedule, learned ones from the model output's second half of channels (Nichol &
    Dhariwal's interpolation for 'learned_range'). Options, schedule and arithmetic as diffusers 0.42.1.

    Implements Ho et al. (2020), "Denoising Diffusion Probabilistic Models", Algorithm 2, with the learned variances
    of Nichol & Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", eq. 15.
    """

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    beta_start: float = common.BETA_START
    beta_end: float = common.BETA_END
    beta_schedule: str = common.BETA_SCHEDULE.but(domain=Choice(*BETA_SCHEDULES))
    trained_betas: tuple[float, ...] | None = common.TRAINED_BETAS
    variance_type: str = Option("fixed_small", Choice(*VARIANCE_TYPES))
    clip_sample: bool = CLIP_SAMPLE
    prediction_type: str = PREDICTION_TYPE
    thresholding: bool = common.THRESHOLDING
    dynamic_thresholding_ratio: float = common.DYNAMIC_THRESHOLDING_RATIO
    clip_sample_range: float = CLIP_SAMPLE_RANGE
    sample_max_value: float = common.SAMPLE_MAX_VALUE
    timestep_spacing: str = TIMESTEP_SPACING
    steps_offset: int = common.STEPS_OFFSET
    rescale_betas_zero_snr: bool = common.RESCALE_BETAS_ZERO_SNR

    state_type: ClassVar[type] = DDPMState
    diffusers_name: ClassVar[str] = "DDPMScheduler"
    plan_columns: ClassVar[int] = NOISY + 1

    @property
    def stochastic(self) -> bool:
        """Always: fresh noise every step (a step at timestep 0 ignores it, as diffusers draws none there)."""
        return True

    def _step_options(self) -> tuple[Any, ...]:
        return (*self._conversion_options(), self.variance_type)

    def _draws_noise(self, state: Any) -> bool:
        """diffusers draws none for a step at timestep 0 (a row's last, where its table ends at 0)."""
        return bool((self.timestep(state) > 0).any())

    def _check_options(self) -> None:
        if self.variance_type == "fixed_large_log":
            raise ValueError(
                f"{self.name}: variance_type='fixed_large_log' is not supported: diffusers 0.42.1 scales the noise by "
                "sqrt(log(beta_t)), the square root of a negative number, and returns NaN at every step but the last."
            )

    def _training_betas(self) -> torch.Tensor:
        n = self.num_train_timesteps
        if self.trained_betas is None and self.beta_schedule == "sigmoid":  # GeoDiff's
            return torch.sigmoid(torch.linspace(-6, 6, n)) * (self.beta_end - self.beta_start) + self.beta_start
        if self.trained_betas is None and self.beta_schedule == "laplace":
            return torch.tensor([_laplace_beta(i / n, (i + 1) / n) for i in range(n)], dtype=torch.float32)
        return super()._training_betas()

    def _check_schedule(self, schedule: Schedule) -> None:
        if schedule.num_inference_steps is None and schedule.timesteps is None:
            raise ValueError(f"{self.name}: give num_inference_steps or custom timesteps.")
        if schedule.num_inference_steps is not None and schedule.timesteps is not None:
            raise ValueError(f"{self.name}: give num_inference_steps or custom timesteps, not both.")
        super()._check_schedule(schedule)

    def _coefficient_table(self, timesteps: torch.Tensor, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # diffusers' step and _get_variance: from t to the next timestep of the table (alpha_bar 1 after the last),
        # each scalar as they form it.
        prev = torch.cat([timesteps[1:], timesteps.new_tensor([-1])])
        alpha = alpha_bar[timesteps]
        alpha_prev = torch.where(prev >= 0, alpha_bar[prev.clamp(min=0)], alpha_bar.new_tensor(1.0))
        beta, beta_prev = 1 - alpha, 1 - alpha_prev
        current_alpha = alpha / alpha_prev
        current_beta = 1 - current_alpha
        x0_coeff = (alpha_prev ** (0.5) * current_beta) / beta
        sample_coeff = current_alpha ** (0.5) * beta_prev / beta
        variance = torch.clamp((1 - alpha_prev) / (1 - alpha) * current_beta, min=1e-20)
        # Logs and exponentials one scalar at a time, as diffusers takes them (a vectorised kernel may round otherwise).
        min_log, max_log = _elementwise(torch.log, variance), _elementwise(torch.log, current_beta)
        if self.variance_type == "fixed_small":
            std = variance ** (0.5)
        elif self.variance_type == "fixed_small_log":
            std = _elementwise(lambda log: torch.exp(0.5 * log), min_log)
        elif self.variance_type == "fixed_large":
            std = current_beta ** (0.5)
        else:  # learned: the model gives it
            std = torch.zeros_like(alpha)
        noisy = (timesteps > 0).to(alpha.dtype)
        std = std * noisy
        table = [alpha, alpha ** (0.5), beta ** (0.5), x0_coeff, sample_coeff, std, min_log, max_log, noisy]
        return torch.stack(table, dim=-1), alpha_prev[-1]

    def step(
        self,
        state: DDPMState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, DDPMState] | tuple[torch.Tensor, DDPMState, torch.Tensor]:
        """One ancestral step of every row from its timestep to the next of its schedule: `(prev_sample, new_state)`,
        in `sample`'s dtype (the arithmetic in the inputs' dtypes, as diffusers', which does not upcast).

        `noise` (standard normal, `sample`'s shape) is required, and used in the model output's dtype: draw it as
        diffusers does, `functional_sched.randn_tensor(sample.shape, generator=g, dtype=model_output.dtype)` (on the
        CPU a float32 draw is the same numbers); a step at timestep 0 adds none (diffusers draws none there). With a
        learned `variance_type` the model output has twice the sample's channels: the second half is the variance.
        `denoised=True` also returns the step's x0 estimate, clipped or thresholded as configured (diffusers'
        `pred_original_sample`): `(prev_sample, new_state, x0)`.
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check(state, model_output, sample, noise, denoised, cursor)
        c = self._coefficients(state, sample, cursor)
        predicted_variance = None
        if self.variance_type in LEARNED:
            model_output, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)
        eager = cursor is not None
        prev_sample, x0 = self._posterior_mean(c, model_output, sample, eager)
        noisy = cursor is None or bool(c[NOISY])  # the host knows whether this step adds noise; a graph selects
        if noisy:
            noise = as_dtype(noise, model_output.dtype)
            if predicted_variance is None:
                term = scaled(c[STD], noise)
            elif self.variance_type == "learned":
                term = predicted_variance ** (0.5) * noise
            else:  # learned_range: interpolate log-variances by the model's fraction
                fraction = (predicted_variance + 1) / 2
                log_variance = _times(fraction, c[MAX_LOG]) + _times(1 - fraction, c[MIN_LOG])
                term = torch.exp(0.5 * log_variance) * noise
            if predicted_variance is not None and cursor is None:
                prev_sample = torch.where(c[NOISY] > 0, prev_sample + term, prev_sample)
            else:
                prev_sample = plus(term, prev_sample, eager=eager)
        if denoised and x0 is model_output:
            x0 = x0.clone()  # the caller's own tensor (sample prediction, unclipped): never handed back as ours
        return self._returned(prev_sample, state.replace(**self._advanced(state, cursor)), x0, sample, denoised)

    def _posterior_mean(
        self, c: tuple[torch.Tensor, ...], model_output: torch.Tensor, sample: torch.Tensor, eager: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior's mean `c0 x0 + ct x_t`, diffusers' sum in its order, and x0."""
        x0, _ = self._converted(model_output, sample, c, epsilon=False)
        return plus(scaled(c[SAMPLE_COEFF], sample), scaled(c[X0_COEFF], x0), eager=eager), x0

    def _transition(
        self, state: DDPMState, model_output: torch.Tensor, sample: torch.Tensor, cursor: host.Cursor | None
    ) -> tuple[torch.Tensor, torch.Tensor, DDPMState] | None:
        """`step`'s Gaussian transition in closed form (`functional_sched.step_transition`) for a fixed variance: the
        posterior mean, its std per row (0 at timestep 0; in the model output's dtype, as the step scales the noise),
        the state after. None for a learned variance (elementwise, from the model output: read off the step)."""
        if self.variance_type in LEARNED:
            return None
        c = self._coefficients(state, sample, cursor)
        mean = self._posterior_mean(c, model_output, sample, cursor is not None)[0]
        new_state = state.replace(**self._advanced(state, cursor))
        return as_dtype(mean, sample.dtype), as_dtype(c[STD], model_output.dtype), new_state

    def _output_like_sample(self) -> bool:
        # A learned variance comes as more channels: the first half is the prediction, the second the variance.
        return self.variance_type not in LEARNED

    def _check(
        self,
        state: DDPMState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        noise: torch.Tensor | None,
        denoised: bool,
        cursor: host.Cursor | None,
    ) -> None:
        self._check_common(state, model_output, sample, noise, denoised, cursor, "its ancestral step")
        if self.variance_type in LEARNED and (
            model_output.dim() != sample.dim()
            or model_output.shape[1] != 2 * sample.shape[1]
            or model_output.shape[2:] != sample.shape[2:]
        ):
            raise ValueError(
                f"{self.name}: with variance_type={self.variance_type!r} the model output holds the prediction's "
                f"channels, then as many of the variance's: shaped like the sample {tuple(sample.shape)} with twice "
                f"its channels, got model_output {tuple(model_output.shape)}."
            )


def _times(tensor: torch.Tensor, coefficient: torch.Tensor) -> torch.Tensor:
    """`tensor * coefficient` as torch forms diffusers' product with a 0-d float32 coefficient on the right: at the
    coefficient's precision, rounded once to a half-precision tensor's dtype (on the left, `scaled`, it is rounded
    first)."""
    if coefficient.dtype == tensor.dtype:
        return tensor * coefficient
    return (tensor.to(coefficient.dtype) * coefficient).to(tensor.dtype)


def _elementwise(function: Any, values: torch.Tensor) -> torch.Tensor:
    """`function` of each value alone (a 0-d tensor), as diffusers applies it to one step's scalar."""
    return torch.stack([function(value) for value in values.unbind(0)])


def _laplace_beta(start: float, end: float, max_beta: float = 0.999) -> float:
    """The beta between times `start` and `end` of diffusers' 'laplace' alpha_bar (its `betas_for_alpha_bar`)."""

    def alpha_bar(t: float) -> float:
        lmb = -0.5 * math.copysign(1, 0.5 - t) * math.log(1 - 2 * math.fabs(0.5 - t) + 1e-6)
        snr = math.exp(lmb)
        return math.sqrt(snr / (1 + snr))

    return min(1 - alpha_bar(end) / alpha_bar(start), max_beta)
