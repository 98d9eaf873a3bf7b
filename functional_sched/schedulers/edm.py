"""EDM: the preconditioned parametrisation of Karras et al. (2022) that diffusers' EDM classes share (`EDMScheduler`),
and its Euler sampler, diffusers' `EDMEulerScheduler` (Cosmos 1.0).

The model sees c_in x and the noise condition c_noise as its timestep, and its output F gives the data prediction

    x0 = c_skip x + c_out F,   c_in = 1 / sqrt(sigma^2 + sigma_data^2),
    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2),
    c_out = +-sigma sigma_data / sqrt(sigma^2 + sigma_data^2)   (+ for "epsilon", - for "v_prediction"),

with c_noise = 0.25 log(sigma) (the cosine variant: 2 atan(sigma) / pi). x = x0 + sigma eps: alpha is 1. The sigmas
are Karras' rho-spaced ones or exponential ones from sigma_max down to sigma_min. Each plan holds c_in, c_skip and
c_out of every step, each computed as diffusers computes it (0-d float32 tensors against Python floats).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Choice, Option, Real
from ..machinery.plan import Plan, as_dtype, coefficient_views, divided, gather_rows, plus, scaled, single_plan
from ..machinery.record import record
from ..machinery.schedule import Schedule
from ..machinery.scheduler import Scheduler
from . import common

# Options every EDM class declares (diffusers' names and defaults; the cosine class has its own defaults).
SIGMA_MIN = Option(0.002, Real(above=0), examples=(0.3,))
SIGMA_MAX = Option(80.0, Real(above=0), examples=(500.0,))
SIGMA_DATA = Option(0.5, Real(above=0), examples=(1.0,))
SIGMA_SCHEDULE = Option("karras", Choice("karras", "exponential"))
RHO = Option(7.0, Real(above=0), examples=(5.0,))
# diffusers' preconditioning raises ValueError for any other prediction type (in `step`).
PREDICTION_TYPE = Option("epsilon", Choice("epsilon", "v_prediction"))


def karras_sigmas(ramp: torch.Tensor, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """Karras et al. (2022), eq. 5, at the ramp's positions (0: sigma_max, 1: sigma_min), in the ramp's dtype."""
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """n sigmas evenly spaced in log sigma from sigma_max down to sigma_min, float32 (k-diffusion's)."""
    return torch.linspace(math.log(sigma_min), math.log(sigma_max), n, dtype=torch.float32).exp().flip(0)


class EDMScheduler(Scheduler):
    """Base of the EDM classes: the sigma schedule, the preconditioning and what the model is fed. A subclass
    declares the options (`sigma_min`, `sigma_max`, `sigma_data`, `sigma_schedule`, `num_train_timesteps`,
    `prediction_type`, `rho`, `final_sigmas_type` at least) and its plan columns of c_in, c_skip and c_out."""

    #: The dtype diffusers spaces its ramp in: float64 for EDM Euler, float32 for the DPM-Solver classes.
    _ramp_dtype: ClassVar[torch.dtype] = torch.float32
    #: Whether a final sigma of type "sigma_min" is the config's sigma_min (DPM-Solver), not the last spaced sigma.
    _final_is_configured: ClassVar[bool] = True
    #: The plan column of c_in (what `scale_model_input` multiplies by).
    _input_column: ClassVar[int]

    def _check_options(self) -> None:
        common.check_sigma_range(self)

    # ------------------------------------------------------------------ the schedule
    def _check_schedule(self, schedule: Schedule) -> None:
        if schedule.timesteps is not None or schedule.sigmas is not None:
            raise ValueError(
                f"{self.name}: custom timesteps or sigmas are not supported (diffusers' EDM schedulers space their "
                "own sigmas between sigma_max and sigma_min; set those, rho or sigma_schedule instead)."
            )
        if schedule.num_inference_steps is None:
            raise ValueError(f"{self.name}: give num_inference_steps.")
        if schedule.mu is not None:
            raise ValueError(f"{self.name}: mu is not used by this scheduler (it has no dynamic shifting).")
        super()._check_schedule(schedule)

    def _custom_range(self, name: str) -> tuple[float, float, bool]:
        return (0.0, math.inf, False)  # never read: custom tables are refused above

    def _noise_condition(self, sigmas: torch.Tensor) -> torch.Tensor:
        """c_noise, the timestep the model is conditioned on: 0.25 log(sigma)."""
        return 0.25 * torch.log(sigmas)

    def _schedule(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(timesteps [N], float32; sigmas [N + 1], float32, with the final one), as `set_timesteps` makes them."""
        if self.sigma_schedule == "karras":
            ramp = torch.linspace(0, 1, n, dtype=self._ramp_dtype)
            sigmas = karras_sigmas(ramp, self.sigma_min, self.sigma_max, self.rho)
        else:
            sigmas = exponential_sigmas(n, self.sigma_min, self.sigma_max)
        sigmas = sigmas.to(torch.float32)
        if self.final_sigmas_type == "zero":
            final = torch.zeros(1)
        elif self._final_is_configured:
            final = torch.tensor([self.sigma_min], dtype=torch.float32)
        else:
            final = sigmas[-1:]
        return self._noise_condition(sigmas), torch.cat([sigmas, final])

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        assert num_inference_steps is not None  # no custom tables (`_check_schedule`)
        timesteps, sigmas = self._schedule(num_inference_steps)
        return self._plan_from_tables(timesteps, sigmas.to(dtype))

    # ------------------------------------------------------------------ the preconditioning
    def _preconditioning(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_in, c_skip, c_out) at each sigma, each formed as diffusers forms it."""
        sigma_data = self.sigma_data
        c_in = 1 / ((sigma**2 + sigma_data**2) ** 0.5)
        c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
        signed = sigma if self.prediction_type == "epsilon" else -sigma
        c_out = signed * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
        return c_in, c_skip, c_out

    def _preconditioned(
        self, model_output: torch.Tensor, sample: torch.Tensor, c_skip: torch.Tensor, c_out: torch.Tensor
    ) -> torch.Tensor:
        """diffusers' `precondition_outputs`: x0 = c_skip x + c_out F."""
        return scaled(c_skip, sample) + scaled(c_out, model_output)

    def _network_output(self, state: Any, sample: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The network output F whose preconditioned x0 at the model's sigma is `x0` (the Gaussian problem's exact
        model, `functional_sched.testing.gaussian`): (x0 - c_skip x) / c_out."""
        _, c_skip, c_out = self._preconditioning(self._model_sigma(state)[:, None].to(sample.dtype))
        return (x0 - c_skip * sample) / c_out

    # ------------------------------------------------------------------ the model's side
    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ones_like(sigma), sigma  # x = x0 + sigma eps

    def init_noise_sigma(self, state: Any) -> torch.Tensor:
        """diffusers' `init_noise_sigma`, sqrt(sigma_max^2 + 1), per row (what its pipelines scale the noise by;
        Cosmos scales by sigma_max itself)."""
        self._require_state(state, "init_noise_sigma")
        value = (self.sigma_max**2 + 1) ** 0.5
        return torch.full(state.step_index.shape, value, dtype=state.plan.sigmas.dtype, device=state.step_index.device)

    def scale_model_input(self, state: Any, sample: torch.Tensor) -> torch.Tensor:
        """The model's input: `sample * c_in` at each row's current sigma, as diffusers' `precondition_inputs`."""
        if checks.checking():
            self._require_state(state, "scale_model_input")
            checks.check_rows(f"{self.name}.scale_model_input", "sample", sample, *self._rows_and_device(state))
        cursor = self._cursor(state)
        if cursor is not None:
            if cursor.step >= cursor.owned.host.steps:
                checks.raise_finished(self.name, state)
            c_in = cursor.owned.host.entry(cursor.step, cursor.level)[self._input_column]
        else:
            column = state.plan.coefficients[:, :, 0, self._input_column]
            (c_in,) = coefficient_views(gather_rows(column, state.step_index)[:, None], sample)
        return scaled(c_in, sample, tensor_first=True)


# Columns of EDM Euler's coefficient table: the step's sigma, sigma_hat = sigma (1 + gamma) (churned), the step's
# length from sigma_hat, c_in at sigma, c_skip and c_out at sigma_hat, and the churn noise's scale.
SIGMA, SIGMA_HAT, DT, C_IN, C_SKIP, C_OUT, CHURN = range(7)


@record(host=("cursor",))
class EDMEulerState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class EDMEuler(EDMScheduler):
    """Euler steps of the probability-flow ODE dx/dsigma = (x - x0(x, sigma)) / sigma with EDM's preconditioned x0,
    and optional churn: before the step, noise raises sigma to sigma_hat = sigma (1 + gamma) where
    s_tmin <= sigma <= s_tmax, gamma = min(s_churn / N, sqrt(2) - 1) (`noise=` then required, standard normal in the
    model output's dtype; diffusers draws it whenever gamma > 0).

    Implements Algorithm 2 of Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based Generative
    Models", with diffusers 0.42.1's options and schedule (the churn options are `step()` arguments there, static
    config here).
    """

    sigma_min: float = SIGMA_MIN
    sigma_max: float = SIGMA_MAX
    sigma_data: float = SIGMA_DATA
    sigma_schedule: str = SIGMA_SCHEDULE
    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    prediction_type: str = PREDICTION_TYPE
    rho: float = RHO
    final_sigmas_type: str = common.FINAL_SIGMAS_TYPE
    # Karras' churn: diffusers' `step()` arguments.
    s_churn: float = common.S_CHURN
    s_tmin: float = common.S_TMIN
    s_tmax: float = common.S_TMAX
    s_noise: float = common.S_NOISE

    state_type: ClassVar[type] = EDMEulerState
    diffusers_name: ClassVar[str] = "EDMEulerScheduler"
    plan_columns: ClassVar[int] = CHURN + 1
    _input_column: ClassVar[int] = C_IN
    _ramp_dtype: ClassVar[torch.dtype] = torch.float64
    _final_is_configured: ClassVar[bool] = False

    @property
    def stochastic(self) -> bool:
        """Whether `step` takes noise: with churn (`s_churn > 0`)."""
        return self.s_churn > 0

    def _step_options(self) -> tuple[Any, ...]:
        return (self.stochastic, self.s_noise)

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        current, following = sigmas[:-1], sigmas[1:]
        sigma_hat, churn = common.churned(self, current, len(sigmas) - 1)
        c_in = self._preconditioning(current)[0]
        _, c_skip, c_out = self._preconditioning(sigma_hat)
        coefficients = torch.stack([current, sigma_hat, following - sigma_hat, c_in, c_skip, c_out, churn], dim=-1)
        return single_plan(timesteps, sigmas, coefficients[:, None])

    def _draws_noise(self, state: EDMEulerState) -> bool:
        """Whether this step churns (any row): diffusers draws noise only then."""
        return self.stochastic and bool(self._coefficients(state, state.step_index, self._cursor(state))[CHURN].any())

    def step(
        self,
        state: EDMEulerState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
        pred_original_sample: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, EDMEulerState] | tuple[torch.Tensor, EDMEulerState, torch.Tensor]:
        """One Euler step of every row: `(prev_sample, new_state)`, or `(prev_sample, new_state, x0)` with
        `denoised=True` (diffusers' `pred_original_sample`). The arithmetic is float32 (float64 for float64 samples),
        the result in `sample`'s dtype. With churn, `noise` (standard normal like the sample, drawn in the model
        output's dtype as diffusers draws it) is required; steps where gamma is 0 ignore it.

        `pred_original_sample`: an x0 to step with in place of the model output's (as diffusers' argument: Cosmos
        guides the preconditioned x0 of both halves of its batch, then steps with the result; `model_output` is then
        read for nothing but its checks). `denoised=True` then returns it as the x0.
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
        if pred_original_sample is None:
            x0 = self._preconditioned(model_output, work, c[C_SKIP], c[C_OUT])
        else:
            if checks.checking(eager=cursor is not None):
                checks.check_like(f"{self.name}.step", "pred_original_sample", pred_original_sample, sample, "sample")
            x0 = pred_original_sample
        derivative = divided(work - x0, c[SIGMA_HAT])
        prev_sample = plus(scaled(c[DT], derivative), work, eager=cursor is not None)
        new_state = state.replace(**self._advanced(state, cursor))
        if denoised:
            x0 = as_dtype(x0, sample.dtype)
            return as_dtype(prev_sample, sample.dtype), new_state, x0.clone() if x0 is pred_original_sample else x0
        return as_dtype(prev_sample, sample.dtype), new_state
