"""Euler: diffusers' `EulerDiscreteScheduler` (SDXL's default), with Karras' churn, and
`EulerAncestralDiscreteScheduler` (Euler a: an Euler step down to sigma_down, then fresh noise up to the next sigma)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Choice, Option
from ..machinery.plan import Plan, as_dtype, divided, plus, scaled, single_plan
from ..machinery.record import record
from ..math import schedules
from . import common
from .sigma_discrete import PREDICTION_TYPE, SigmaDiscreteScheduler

# Columns of Euler's coefficient table: the step's sigma, sigma_hat = sigma (1 + gamma) (churned), the step's length
# from sigma_hat, what the model input is divided by, v-prediction's two factors, and the churn noise's scale.
SIGMA, SIGMA_HAT, DT, INPUT_SCALE, V_OUT, V_IN, CHURN = range(7)


@record(host=("cursor",))
class EulerState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class EulerDiscrete(SigmaDiscreteScheduler):
    """Euler steps of the probability-flow ODE in Karras' form, dx/dsigma = (x - x0(x, sigma)) / sigma, with
    optional churn: before the step, noise raises sigma to sigma_hat = sigma (1 + gamma) where s_tmin <= sigma <=
    s_tmax, gamma = min(s_churn / N, sqrt(2) - 1) (`noise=` then required; diffusers draws it whenever gamma > 0).

    Implements Algorithm 2 of Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based Generative
    Models", with diffusers 0.42.1's options and schedule (the churn options are `step()` arguments there, static
    config here).
    """

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    beta_start: float = common.BETA_START
    beta_end: float = common.BETA_END
    beta_schedule: str = common.BETA_SCHEDULE
    trained_betas: tuple[float, ...] | None = common.TRAINED_BETAS
    prediction_type: str = PREDICTION_TYPE
    interpolation_type: str = Option("linear", Choice("linear", "log_linear"))
    use_karras_sigmas: bool = common.USE_KARRAS_SIGMAS
    use_exponential_sigmas: bool = common.USE_EXPONENTIAL_SIGMAS
    use_beta_sigmas: bool = common.USE_BETA_SIGMAS
    sigma_min: float | None = common.REGISTERED_SIGMA_MIN.but(registered=False)
    sigma_max: float | None = common.REGISTERED_SIGMA_MAX.but(registered=False)
    timestep_spacing: str = common.TIMESTEP_SPACING
    timestep_type: str = Option("discrete", Choice("discrete", "continuous"))
    steps_offset: int = common.STEPS_OFFSET
    rescale_betas_zero_snr: bool = common.RESCALE_BETAS_ZERO_SNR
    final_sigmas_type: str = common.FINAL_SIGMAS_TYPE
    # Karras' churn: diffusers' `step()` arguments.
    s_churn: float = common.S_CHURN
    s_tmin: float = common.S_TMIN
    s_tmax: float = common.S_TMAX
    s_noise: float = common.S_NOISE

    state_type: ClassVar[type] = EulerState
    diffusers_name: ClassVar[str] = "EulerDiscreteScheduler"
    plan_columns: ClassVar[int] = CHURN + 1
    _input_column: ClassVar[int] = INPUT_SCALE
    _takes_custom: ClassVar[tuple[str, ...]] = ("timesteps", "sigmas")

    @property
    def stochastic(self) -> bool:
        """Whether `step` takes noise: with churn (`s_churn > 0`)."""
        return self.s_churn > 0

    @property
    def _continuous_v(self) -> bool:
        """The model is conditioned on 0.25 log(sigma) (a continuous-time v-prediction model, e.g. the SD x4 and
        Cosmos upscalers), not on a training timestep."""
        return self.timestep_type == "continuous" and self.prediction_type == "v_prediction"

    def _step_options(self) -> tuple[Any, ...]:
        return (self.prediction_type, self.stochastic, self.s_noise)

    def _check_options(self) -> None:
        super()._check_options()
        if self.interpolation_type == "log_linear" and self._continuous_v and not self._spaced:
            raise ValueError(
                f"{self.name}: interpolation_type='log_linear' with timestep_type='continuous' and "
                "prediction_type='v_prediction' is not supported: diffusers then runs N + 1 steps for "
                "num_inference_steps=N (a timestep for every log-linear sigma but the final one). Use one or the other."
            )

    @property
    def _spaced(self) -> bool:
        return self.use_karras_sigmas or self.use_exponential_sigmas or self.use_beta_sigmas

    def _check_schedule(self, schedule: Any) -> None:
        if schedule.timesteps is not None and self._continuous_v:
            raise ValueError(
                f"{self.name}: custom timesteps cannot be used with timestep_type='continuous' and "
                "prediction_type='v_prediction' (the timesteps are 0.25 log(sigma))."
            )
        super()._check_schedule(schedule)

    # ------------------------------------------------------------------------------------------------ plan
    def _interpolated(self, timesteps: torch.Tensor, train_sigmas: torch.Tensor, n: int) -> torch.Tensor:
        if self.interpolation_type == "log_linear":
            # N + 1 sigmas evenly spaced in log sigma over the training range (float32, as torch.linspace makes them).
            log_sigmas = torch.linspace(math.log(train_sigmas[-1].item()), math.log(train_sigmas[0].item()), n + 1)
            return log_sigmas.exp().to(torch.float64)
        return super()._interpolated(timesteps, train_sigmas, n)

    def _schedule(
        self, n: int | None, timesteps: torch.Tensor | None, sigmas: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        timesteps, sigmas = super()._schedule(n, timesteps, sigmas)
        if self._continuous_v:
            timesteps = 0.25 * sigmas[:-1].log()
        return timesteps, sigmas

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        timesteps, sigmas = self._schedule(num_inference_steps, timesteps, sigmas)
        # Log-linear sigmas make N + 2 of them: the steps end at the (N + 1)th, and the final one is never reached
        # (`sigmas()` shows it, as diffusers' table has it).
        return self._plan_from_tables(timesteps, sigmas[: len(timesteps) + 1].to(dtype))

    @property
    def _unreached_final(self) -> bool:
        """Whether diffusers' sigma table ends with a final sigma no step reaches: log-linear sigmas (N + 1 of them)
        then the final one, for N timesteps."""
        return self.interpolation_type == "log_linear" and not self._spaced

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        current, following = sigmas[:-1], sigmas[1:]
        sigma_hat, churn = common.churned(self, current, len(sigmas) - (0 if self._unreached_final else 1))
        input_scale = (current**2 + 1) ** 0.5
        coefficients = torch.stack(
            [current, sigma_hat, following - sigma_hat, input_scale, -current / input_scale, current**2 + 1, churn],
            dim=-1,
        )
        return single_plan(timesteps, sigmas, coefficients[:, None])

    def sigmas(self, state: Any) -> torch.Tensor:
        table = super().sigmas(state)
        if not self._unreached_final:
            return table
        final = self._final_sigma().to(table.dtype).expand(*table.shape[:-1], 1)
        return torch.cat([table, final], dim=-1)

    def _final_sigma(self) -> torch.Tensor:
        if self.final_sigmas_type == "zero":
            return torch.zeros(())
        return schedules.vp_sigmas(self._training_cumprod()[:1])[0]

    # ------------------------------------------------------------------------------------------------ step
    def _draws_noise(self, state: EulerState) -> bool:
        """Whether this step churns (any row): diffusers draws noise only then."""
        return self.stochastic and bool(self._coefficients(state, state.step_index, self._cursor(state))[CHURN].any())

    def step(
        self,
        state: EulerState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, EulerState] | tuple[torch.Tensor, EulerState, torch.Tensor]:
        """One Euler step of every row: `(prev_sample, new_state)`, or `(prev_sample, new_state, x0)` with
        `denoised=True` (diffusers' `pred_original_sample`). The arithmetic is float32 (float64 for float64 samples),
        the result in `sample`'s dtype. With churn, `noise` (standard normal like the sample, drawn as diffusers
        draws it: in the model output's dtype) is required; steps where gamma is 0 ignore it.
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
            if self.stochastic:
                checks.check_noise(self.name, f"s_churn={self.s_churn:g}", noise, sample)
        c = self._coefficients(state, sample, cursor)
        work = as_dtype(sample, state.plan.coefficients.dtype)
        if self.stochastic and (cursor is None or bool(c[CHURN])):
            eps = noise * self.s_noise if self.s_noise != 1.0 else noise
            work = work + scaled(c[CHURN], eps, tensor_first=True)
        x0 = self._data_prediction(model_output, work, c[SIGMA_HAT], c[V_OUT], c[V_IN])
        derivative = divided(work - x0, c[SIGMA_HAT])
        prev_sample = plus(scaled(c[DT], derivative), work, eager=cursor is not None)
        new_state = state.replace(**self._advanced(state, cursor))
        if denoised:
            return as_dtype(prev_sample, sample.dtype), new_state, as_dtype(x0, sample.dtype)
        return as_dtype(prev_sample, sample.dtype), new_state


# Columns of Euler ancestral's coefficient table: the step's sigma, the Euler step's length sigma_down - sigma, the
# fresh noise's scale sigma_up, and the model input's and v-prediction's factors (as Euler's).
A_SIGMA, A_DT, A_UP, A_INPUT_SCALE, A_V_OUT, A_V_IN = range(6)


@record(host=("cursor",))
class EulerAncestralState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class EulerAncestralDiscrete(SigmaDiscreteScheduler):
    """Ancestral Euler steps ("Euler a"): from sigma to the next sigma s', an Euler step of the probability-flow ODE
    down to sigma_down = sqrt(s'^2 - sigma_up^2), then fresh noise of standard deviation
    sigma_up = sqrt(s'^2 (sigma^2 - s'^2) / sigma^2): a step of the reverse SDE. Stochastic at every step (`noise=`
    is required; diffusers draws it even for the last step, where sigma_up is 0).

    Implements k-diffusion's `sample_euler_ancestral` (Crowson), the ancestral form of Algorithm 2 of Karras et al.
    (2022), "Elucidating the Design Space of Diffusion-Based Generative Models", with diffusers 0.42.1's options and
    schedule.
    """

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    beta_start: float = common.BETA_START
    beta_end: float = common.BETA_END
    beta_schedule: str = common.BETA_SCHEDULE
    trained_betas: tuple[float, ...] | None = common.TRAINED_BETAS
    # diffusers raises NotImplementedError in `step` for "sample" (and ValueError for "original_sample").
    prediction_type: str = Option("epsilon", Choice("epsilon", "v_prediction"))
    timestep_spacing: str = common.TIMESTEP_SPACING
    steps_offset: int = common.STEPS_OFFSET
    rescale_betas_zero_snr: bool = common.RESCALE_BETAS_ZERO_SNR

    state_type: ClassVar[type] = EulerAncestralState
    diffusers_name: ClassVar[str] = "EulerAncestralDiscreteScheduler"
    plan_columns: ClassVar[int] = A_V_IN + 1
    _input_column: ClassVar[int] = A_INPUT_SCALE

    @property
    def stochastic(self) -> bool:
        """Always: every step adds fresh noise."""
        return True

    def _step_options(self) -> tuple[Any, ...]:
        return (self.prediction_type,)

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        # Each scalar as diffusers forms it in `step`, in the plan's dtype (diffusers': float32).
        sigma_from, sigma_to = sigmas[:-1], sigmas[1:]
        sigma_up = (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
        sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
        input_scale = (sigma_from**2 + 1) ** 0.5
        coefficients = torch.stack(
            [sigma_from, sigma_down - sigma_from, sigma_up, input_scale, -sigma_from / input_scale, sigma_from**2 + 1],
            dim=-1,
        )
        return single_plan(timesteps, sigmas, coefficients[:, None])

    def step(
        self,
        state: EulerAncestralState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, EulerAncestralState] | tuple[torch.Tensor, EulerAncestralState, torch.Tensor]:
        """One ancestral Euler step of every row: `(prev_sample, new_state)`, or `(prev_sample, new_state, x0)` with
        `denoised=True` (diffusers' `pred_original_sample`). `noise` is required: standard normal like the sample,
        drawn as diffusers draws it, in the model output's dtype
        (`functional_sched.randn_tensor(shape, generator=g, dtype=model_output.dtype)`). The arithmetic is float32
        (float64 for float64 samples), the result in `sample`'s dtype.
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
            checks.check_noise(self.name, "ancestral sampling (every step)", noise, sample)
        c = self._coefficients(state, sample, cursor)
        prev_sample, x0 = self._drift(state, c, model_output, sample, cursor)
        prev_sample = plus(scaled(c[A_UP], noise, tensor_first=True), prev_sample, eager=cursor is not None)
        new_state = state.replace(**self._advanced(state, cursor))
        if denoised:
            return as_dtype(prev_sample, sample.dtype), new_state, as_dtype(x0, sample.dtype)
        return as_dtype(prev_sample, sample.dtype), new_state

    def _drift(
        self,
        state: EulerAncestralState,
        c: tuple[torch.Tensor, ...],
        model_output: torch.Tensor,
        sample: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The Euler step down to sigma_down, in the plan's dtype, and its x0."""
        work = as_dtype(sample, state.plan.coefficients.dtype)
        x0 = self._data_prediction(model_output, work, c[A_SIGMA], c[A_V_OUT], c[A_V_IN])
        derivative = divided(work - x0, c[A_SIGMA])
        return plus(scaled(c[A_DT], derivative), work, eager=cursor is not None), x0

    def _transition(
        self, state: EulerAncestralState, model_output: torch.Tensor, sample: torch.Tensor, cursor: host.Cursor | None
    ) -> tuple[torch.Tensor, torch.Tensor, EulerAncestralState]:
        """`step`'s Gaussian transition in closed form (`functional_sched.step_transition`): the Euler step to
        sigma_down, the noise's scale sigma_up per row, the state after."""
        c = self._coefficients(state, sample, cursor)
        mean = self._drift(state, c, model_output, sample, cursor)[0]
        return as_dtype(mean, sample.dtype), c[A_UP], state.replace(**self._advanced(state, cursor))
