"""Consistency sampling: diffusers' `LCMScheduler` (LCM, LCM-LoRA, PixArt-LCM) and `TCDScheduler` (TCD LoRAs).

Both step on DDIM's training table alpha_bar (`ddim.AlphaBarScheduler`) at timesteps taken from a coarse grid of
`original_inference_steps` training timesteps (the grid the model was distilled on: every `N // original`-th, ending
at N - 1), `num_inference_steps` of them evenly spaced by index. diffusers declares `timestep_spacing`,
`steps_offset` and `set_alpha_to_one` for these classes and reads none of them; so do these (TCD reads no clipping,
thresholding or `timestep_scaling` either).

Each step maps the sample to a denoised estimate and noises it afresh to the next timestep of the table: LCM with the
consistency model's boundary conditions, x0' = c_skip x + c_out x0 (its last step returns x0' itself); TCD by a DDIM
step down to an intermediate timestep s = floor((1 - eta) t_next), then forward noise from s up to t_next (`eta` = 0:
plain DDIM steps; 1: LCM's multistep consistency sampling without the boundary conditions). These are samplers of a
distilled consistency model, not solvers of the probability-flow ODE of a diffusion model: fed the exact denoiser of
a diffusion model, LCM's steps do not converge to its ODE's solution as the steps grow (TCD with `eta` = 0 does: it
is DDIM there); fed the exact consistency function, both land on the data's marginal at every step, whatever their
count.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Choice, Flag, Integer, Option, Real
from ..machinery.plan import Plan, as_dtype, plus, scaled
from ..machinery.record import record
from ..machinery.schedule import MAX_INFERENCE_STEPS, Schedule
from . import common
from .ddim import ALPHA_BAR, CLIP_SAMPLE_RANGE, PREDICTION_TYPES, TIMESTEP_SPACING, AlphaBarScheduler

# The consistency models' data spread, as diffusers fixes it (`get_scalings_for_boundary_condition_discrete`).
SIGMA_DATA = 0.5

# LCM's columns after the shared ones (alpha_bar, sqrt(alpha_bar), sqrt(1 - alpha_bar)): the boundary conditions,
# then the fresh noising to the next timestep, x_next = sqrt(a_next) x0' + sqrt(1 - a_next) noise (1 and 0 at the
# last step, which returns x0'), and whether the step draws noise (all but the last).
C_SKIP, C_OUT, SQRT_ALPHA_NEXT, SQRT_BETA_NEXT = range(ALPHA_BAR + 3, ALPHA_BAR + 7)
# TCD's: the DDIM step down to s, x_s = sqrt(a_s) x0 + sqrt(1 - a_s) eps, then the forward noising from s up to the
# next timestep, x_next = sqrt(a_next / a_s) x_s + sqrt(1 - a_next / a_s) noise (1 and 0 where none is drawn).
SQRT_ALPHA_S, SQRT_BETA_S, FORWARD, FORWARD_STD = range(ALPHA_BAR + 3, ALPHA_BAR + 7)
NOISY = ALPHA_BAR + 7  # both: 1 where the step draws noise, else 0

# The options both classes declare alike, with diffusers' defaults for them (Stable Diffusion's betas).
BETA_START = common.BETA_START.but(default=0.00085)
BETA_END = common.BETA_END.but(default=0.012)
BETA_SCHEDULE = common.BETA_SCHEDULE.but(default="scaled_linear")
# The coarse grid the model was distilled on: at most the training timesteps (checked against them at construction).
ORIGINAL_INFERENCE_STEPS = Option(50, Integer(minimum=1, maximum=1_000_000), examples=(4, 100, 1000))
CLIP_SAMPLE = Option(False, Flag())
TIMESTEP_SCALING = Option(10.0, Real(above=0), examples=(1.0,))


@options.config
class ConsistencyScheduler(AlphaBarScheduler):
    """Base of LCM and TCD: the options both declare alike (in diffusers' order), the coarse-grid schedule, the
    checks of its step counts, the noise drawn at every step but the last; a subclass adds its update."""

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    beta_start: float = BETA_START
    beta_end: float = BETA_END
    beta_schedule: str = BETA_SCHEDULE
    trained_betas: tuple[float, ...] | None = common.TRAINED_BETAS
    original_inference_steps: int = ORIGINAL_INFERENCE_STEPS
    clip_sample: bool = CLIP_SAMPLE
    clip_sample_range: float = CLIP_SAMPLE_RANGE
    set_alpha_to_one: bool = Option(True, Flag())
    steps_offset: int = common.STEPS_OFFSET
    prediction_type: str = Option("epsilon", Choice(*PREDICTION_TYPES))
    thresholding: bool = common.THRESHOLDING
    dynamic_thresholding_ratio: float = common.DYNAMIC_THRESHOLDING_RATIO
    sample_max_value: float = common.SAMPLE_MAX_VALUE
    timestep_spacing: str = TIMESTEP_SPACING
    timestep_scaling: float = TIMESTEP_SCALING
    rescale_betas_zero_snr: bool = common.RESCALE_BETAS_ZERO_SNR

    _spaced_by_config: ClassVar[bool] = False
    #: Whether `set_timesteps(original_inference_steps=...)` draws the timesteps from every training timestep (TCD's
    #: quirk: the value given then only bounds the step count) rather than from a grid of that many.
    _per_call_grid_is_every_timestep: ClassVar[bool] = False

    @property
    def stochastic(self) -> bool:
        """Whether `step` takes fresh noise: every step but the last adds it (`_draws_noise`)."""
        return True

    def _draws_noise(self, state: Any) -> bool:
        """Whether any row is before its last step: diffusers draws no noise at the last."""
        if not self.stochastic:
            return False
        return bool(self._coefficients(state, state.step_index, self._cursor(state))[NOISY].any())

    def _check_options(self) -> None:
        if self.original_inference_steps > self.num_train_timesteps:
            raise ValueError(
                f"{self.name}: original_inference_steps={self.original_inference_steps} cannot be more than "
                f"num_train_timesteps={self.num_train_timesteps}: it counts training timesteps the model was distilled "
                "on (diffusers' set_timesteps raises)."
            )

    def _custom_range(self, name: str) -> tuple[float, float, bool]:
        return 0, self.num_train_timesteps - 1, True

    def _check_schedule(self, schedule: Schedule) -> None:
        steps, custom = schedule.num_inference_steps, schedule.timesteps
        if (steps is None) == (custom is None):
            raise ValueError(f"{self.name}: give num_inference_steps or custom timesteps (exactly one of them).")
        if steps is not None:
            self._check_steps(steps, self.original_inference_steps, 1.0, self.original_inference_steps)
        super()._check_schedule(schedule)

    def _check_steps(self, steps: int, original: int, strength: float, grid: int) -> None:
        """diffusers' checks of a step count against the coarse grid (`grid` timesteps, of `original`)."""
        if steps > self.num_train_timesteps:
            raise ValueError(
                f"{self.name}: num_inference_steps={steps} cannot be more than num_train_timesteps="
                f"{self.num_train_timesteps}."
            )
        if grid < steps:
            raise ValueError(
                f"{self.name}: num_inference_steps={steps} is more than the {grid} timesteps of the grid "
                f"(original_inference_steps={original} x strength={strength:g}): it takes a subset of them. Use fewer "
                "steps, or a larger original_inference_steps or strength."
            )
        if steps > original:
            raise ValueError(
                f"{self.name}: num_inference_steps={steps} cannot be more than original_inference_steps={original}: "
                "the schedule is a subset of the original_inference_steps-sized grid."
            )

    def spaced_timesteps(
        self, num_inference_steps: int, *, original_inference_steps: int | None = None, strength: float = 1.0
    ) -> torch.Tensor:
        """diffusers' `set_timesteps(num_inference_steps, original_inference_steps=..., strength=...)` table, int64:
        the coarse grid of `original_inference_steps` (default: the option) training timesteps, cut to its first
        `strength` fraction (img2img), reversed, and `num_inference_steps` of them evenly spaced by index. Pass it to
        `init(timesteps=...)` for the per-call arguments that `init` does not take."""
        steps = checks.integer(self.name, "num_inference_steps", num_inference_steps, 1, MAX_INFERENCE_STEPS)
        strength = checks.real(self.name, "strength", strength)
        if not 0 < strength <= 1:
            raise ValueError(f"{self.name}: strength must be in (0, 1], got {strength!r}.")
        every = self._per_call_grid_is_every_timestep and original_inference_steps is not None
        original = self.original_inference_steps
        if original_inference_steps is not None:
            original = checks.integer(self.name, "original_inference_steps", original_inference_steps, 1)
        train = self.num_train_timesteps
        if not every and original > train:
            raise ValueError(
                f"{self.name}: original_inference_steps={original} cannot be more than num_train_timesteps={train}."
            )
        if every:
            grid = torch.arange(0, int(train * strength), dtype=torch.int64)
        else:
            grid = torch.arange(1, int(original * strength) + 1, dtype=torch.int64) * (train // original) - 1
        self._check_steps(steps, original, strength, len(grid))
        # numpy's `floor(linspace(0, len, steps, endpoint=False))`: i * (len / steps), in float64.
        indices = torch.floor(torch.arange(steps, dtype=torch.float64) * (len(grid) / steps)).to(torch.int64)
        return grid.flip(0)[indices]

    def _timesteps(self, n: int | None, timesteps: torch.Tensor | None) -> torch.Tensor:
        if timesteps is not None:
            return super()._timesteps(None, timesteps)
        assert n is not None
        return self.spaced_timesteps(n)

    def _last(self, timesteps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """1 at the table's last step, else 0."""
        last = torch.zeros(timesteps.shape, dtype=dtype)
        last[-1] = 1
        return last

    def _check_step(
        self,
        state: Any,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        noise: torch.Tensor | None,
        denoised: bool,
        cursor: host.Cursor | None,
    ) -> None:
        condition = "each step's fresh noise (any values at a row's last step, which adds none)"
        self._check_common(state, model_output, sample, noise, denoised, cursor, condition)

    def _noised(
        self,
        clean: torch.Tensor,
        noise: torch.Tensor | None,
        keep: torch.Tensor,
        fresh: torch.Tensor,
        noisy: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> torch.Tensor:
        """`keep * clean + fresh * noise` (noise in `clean`'s dtype, as diffusers draws it), or `clean` itself where
        the host knows this step draws none; a graph multiplies by the plan's 1 and 0 there, which gives the same
        bits."""
        if not self.stochastic or (cursor is not None and not bool(noisy)):
            return clean
        assert noise is not None
        return plus(scaled(fresh, as_dtype(noise, clean.dtype)), scaled(keep, clean), eager=cursor is not None)

    def _finished(
        self,
        prev_sample: torch.Tensor,
        state: Any,
        estimate: torch.Tensor,
        sample: torch.Tensor,
        denoised: bool,
        cursor: host.Cursor | None,
    ) -> Any:
        if denoised and estimate is prev_sample:
            estimate = estimate.clone()  # the last step returns it as the sample too: two tensors, not one
        return self._returned(prev_sample, state.replace(**self._advanced(state, cursor)), estimate, sample, denoised)


@record(host=("cursor",))
class LCMState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class LCM(ConsistencyScheduler):
    """Multistep latent consistency sampling: x0' = c_skip(t) x + c_out(t) x0 with the consistency boundary
    conditions c_skip = s_d^2 / ((k t)^2 + s_d^2), c_out = k t / sqrt((k t)^2 + s_d^2) (s_d = 0.5, k =
    `timestep_scaling`), then x_next = sqrt(a_next) x0' + sqrt(1 - a_next) noise, at every step but the last, which
    returns x0'. Options, schedule and arithmetic as diffusers 0.42.1.

    Implements Luo et al. (2023), "Latent Consistency Models: Synthesizing High-Resolution Images with Few-Step
    Inference", Algorithm 3 (multistep latent consistency sampling), with the boundary conditions of Song et al.
    (2023), "Consistency Models", Appendix C.
    """

    state_type: ClassVar[type] = LCMState
    diffusers_name: ClassVar[str] = "LCMScheduler"
    plan_columns: ClassVar[int] = NOISY + 1

    def _step_options(self) -> tuple[Any, ...]:
        return self._conversion_options()

    def _coefficient_table(self, timesteps: torch.Tensor, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # diffusers' step: alpha_bar at t and at the next timestep of the table, the boundary scalings from the integer
        # timestep times `timestep_scaling` (float32 as torch promotes it; float64 plans in float64), each as it
        # forms them. The last step returns x0' (its next level is the data's).
        alpha = alpha_bar[timesteps]
        alpha_next = alpha_bar[torch.cat([timesteps[1:], timesteps[-1:]])]
        last = self._last(timesteps, alpha.dtype)
        scaled_timestep = timesteps.to(alpha.dtype) * self.timestep_scaling
        c_skip = SIGMA_DATA**2 / (scaled_timestep**2 + SIGMA_DATA**2)
        c_out = scaled_timestep / (scaled_timestep**2 + SIGMA_DATA**2) ** 0.5
        table = [
            alpha,
            alpha.sqrt(),
            (1 - alpha).sqrt(),
            c_skip,
            c_out,
            torch.where(last > 0, 1.0, alpha_next.sqrt()),
            torch.where(last > 0, 0.0, (1 - alpha_next).sqrt()),
            1 - last,
        ]
        return torch.stack(table, dim=-1), alpha.new_tensor(1.0)

    def step(
        self,
        state: LCMState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, LCMState] | tuple[torch.Tensor, LCMState, torch.Tensor]:
        """One consistency step of every row from its timestep to the next of its schedule: `(prev_sample,
        new_state)`, in `sample`'s dtype (the arithmetic in the inputs' dtypes, as diffusers', which does not upcast).

        `noise` (standard normal, `sample`'s shape) is required, and used in the dtype of x0' (the sample's and the
        model output's promoted): draw it as diffusers does, `functional_sched.randn_tensor(sample.shape,
        generator=g, dtype=...)` (on the CPU a float32 draw is the same numbers), at every step but a row's last,
        which adds none (diffusers draws none there: `_draws_noise`). `denoised=True` also returns the step's x0'
        (diffusers' `denoised`, what LCM pipelines decode): `(prev_sample, new_state, x0')`.
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_step(state, model_output, sample, noise, denoised, cursor)
        c = self._coefficients(state, sample, cursor)
        x0, _ = self._converted(model_output, sample, c, epsilon=False)
        # diffusers' `c_out * x0 + c_skip * sample`; its c_skip and c_out are 0-d tensors on the timestep's device.
        estimate = plus(
            scaled(c[C_SKIP], sample, on_host=False), scaled(c[C_OUT], x0, on_host=False), eager=cursor is not None
        )
        prev_sample = self._noised(estimate, noise, c[SQRT_ALPHA_NEXT], c[SQRT_BETA_NEXT], c[NOISY], cursor)
        return self._finished(prev_sample, state, estimate, sample, denoised, cursor)


@record(host=("cursor",))
class TCDState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class TCD(ConsistencyScheduler):
    """Strategic stochastic sampling: a DDIM step from t down to s = floor((1 - eta) t_next),
    x_s = sqrt(a_s) x0 + sqrt(1 - a_s) eps, then forward noise from s up to the next timestep,
    x_next = sqrt(a_next / a_s) x_s + sqrt(1 - a_next / a_s) noise (none at the last step, which goes to timestep 0,
    nor with `eta` = 0, where every step is DDIM's). Options, schedule and arithmetic as diffusers 0.42.1; `eta`
    (the paper's gamma), a `step()` argument there, is an option here.

    Implements Zheng et al. (2024), "Trajectory Consistency Distillation: Improved Latent Consistency Distillation by
    Semi-Linear Consistency Function with Trajectory Mapping", Algorithm 4 (strategic stochastic sampling).
    """

    # diffusers' step() argument: the share of each interval redone stochastically (0: DDIM; 1: all of it).
    eta: float = Option(0.3, Real(at_least=0, at_most=1), examples=(0.0, 1.0, 0.5), step_argument=True)

    state_type: ClassVar[type] = TCDState
    diffusers_name: ClassVar[str] = "TCDScheduler"
    plan_columns: ClassVar[int] = NOISY + 1
    _per_call_grid_is_every_timestep: ClassVar[bool] = True

    @property
    def _clips(self) -> bool:
        return False  # diffusers' TCD declares clip_sample and applies it nowhere

    @property
    def _thresholds(self) -> bool:
        return False  # nor thresholding

    @property
    def stochastic(self) -> bool:
        """Whether `step` takes fresh noise: with `eta > 0`, at every step but the last (`_draws_noise`)."""
        return self.eta > 0

    def _step_options(self) -> tuple[Any, ...]:
        return (self.prediction_type, self.stochastic)

    def _coefficient_table(self, timesteps: torch.Tensor, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # diffusers' step: the next timestep of the table (0 after the last), s from it in float32 as torch promotes
        # `(1 - eta) * prev_timestep`, and alpha_bar at t, at the next timestep and at s, each scalar as it forms it.
        following = torch.cat([timesteps[1:], timesteps.new_zeros(1)])
        intermediate = torch.floor((1 - self.eta) * following).to(torch.int64)
        alpha, alpha_next, alpha_s = alpha_bar[timesteps], alpha_bar[following], alpha_bar[intermediate]
        noisy = (1 - self._last(timesteps, alpha.dtype)) * float(self.stochastic)
        table = [
            alpha,
            alpha ** (0.5),
            (1 - alpha) ** (0.5),
            alpha_s.sqrt(),
            (1 - alpha_s).sqrt(),
            torch.where(noisy > 0, (alpha_next / alpha_s).sqrt(), 1.0),
            torch.where(noisy > 0, (1 - alpha_next / alpha_s).sqrt(), 0.0),
            noisy,
        ]
        return torch.stack(table, dim=-1), alpha_bar[0]

    def step(
        self,
        state: TCDState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, TCDState] | tuple[torch.Tensor, TCDState, torch.Tensor]:
        """One TCD step of every row from its timestep to the next of its schedule: `(prev_sample, new_state)`, in
        `sample`'s dtype (the arithmetic in the inputs' dtypes, as diffusers', which does not upcast).

        With `eta > 0` it takes `noise` (standard normal, `sample`'s shape), used in the dtype of x_s (the sample's
        and the model output's promoted): draw it as diffusers does, `functional_sched.randn_tensor(sample.shape,
        generator=g, dtype=...)`, at every step but a row's last (diffusers draws none there: `_draws_noise`).
        `denoised=True` also returns the step's x_s (diffusers' `pred_noised_sample`; x0 itself where s has
        alpha_bar 1, at no timestep of a training table): `(prev_sample, new_state, x_s)`.
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_step(state, model_output, sample, noise, denoised, cursor)
        c = self._coefficients(state, sample, cursor)
        x0, epsilon = self._converted(model_output, sample, c, epsilon=True)
        assert epsilon is not None
        # diffusers' `sqrt(a_s) * x0 + sqrt(1 - a_s) * eps`.
        noised = plus(scaled(c[SQRT_BETA_S], epsilon), scaled(c[SQRT_ALPHA_S], x0), eager=cursor is not None)
        prev_sample = self._noised(noised, noise, c[FORWARD], c[FORWARD_STD], c[NOISY], cursor)
        return self._finished(prev_sample, state, noised, sample, denoised, cursor)
