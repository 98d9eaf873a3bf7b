"""DPM-Solver: diffusers' `DPMSolverMultistepScheduler` (DPM-Solver++ 2M/3M, SDE variants, Sana's flow), and what
its singlestep sibling (`dpm_singlestep.py`) shares with it: the conversion of the model output, the schedule, and
the exponential-integrator weights of each order.

The multistep step is one linear combination, the same for every order, with coefficients planned per (step, order):

    D1_0 = p0 (m0 - m1),  D1_1 = p1 (m1 - m2),  diff = D1_0 - D1_1,  D1 = D1_0 + q diff,  D2 = u diff
    x_next = a x + b0 m0 + b1 D1 + b2 D2 (+ c noise)

where m0, m1, m2 are the newest converted model outputs. A lower order is the same expression with zero
coefficients, and each term is formed in diffusers' order, so float32 steps reproduce diffusers bit for bit.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Choice, Flag, Option, Real
from ..machinery.plan import Plan, as_dtype, by_warmup, divided, scaled
from ..machinery.record import record
from ..machinery.schedule import Schedule
from ..math import predictions, schedules
from . import common
from .multistep import ALPHA, RAW_SIGMA, SIGMA, MultistepScheduler

ALGORITHMS = ("dpmsolver++", "sde-dpmsolver++", "dpmsolver", "sde-dpmsolver")
SOLVER_TYPES = ("midpoint", "heun")
VARIANCE_TYPES = (None, "learned", "learned_range")

# Columns of the coefficient table: the conversion of step i, then the update of the order the warm-up allows.
A, B0, B1, B2, P0, P1, Q, U, NOISE = range(RAW_SIGMA + 1, RAW_SIGMA + 10)


@record(host=("cursor",))
class DPMSolverState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    lower_order_nums: torch.Tensor  # [R], int64: steps taken, capped at solver_order (the warm-up level)
    history: tuple[torch.Tensor, ...]  # solver_order x [R, ...]: converted model outputs, newest last
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class DPMSolverBase(MultistepScheduler):
    """What the DPM-Solver classes share beyond the multistep base: the algorithm (data or noise prediction, ODE or
    SDE), the conversion of the model output, the rules between these options, and custom timesteps."""

    @property
    def stochastic(self) -> bool:
        """Whether `step` takes fresh noise: the SDE variants."""
        return self.algorithm_type.startswith("sde-")

    @property
    def data_prediction(self) -> bool:
        return self.algorithm_type.endswith("++")

    def _check_options(self) -> None:
        super()._check_options()
        self._check_prediction(self.data_prediction, f"algorithm_type={self.algorithm_type!r}")
        common.check_sigma_range(self)
        if not self.data_prediction and self.final_sigmas_type == "zero":
            raise ValueError(
                f"{self.name}: final_sigmas_type='zero' needs a data-prediction algorithm (dpmsolver++ or "
                f"sde-dpmsolver++); with algorithm_type={self.algorithm_type!r} use final_sigmas_type='sigma_min'."
            )

    def _solver_step_options(self) -> tuple[Any, ...]:
        return (self.algorithm_type, self.variance_type)

    #: The spacings that diffusers refuses custom timesteps with.
    _spacings_without_custom_timesteps: ClassVar[tuple[str, ...]] = (
        "use_karras_sigmas",
        "use_lu_lambdas",
        "use_exponential_sigmas",
        "use_beta_sigmas",
        "use_flow_sigmas",
    )

    def _check_schedule(self, schedule: Schedule) -> None:
        owner = self.name
        if schedule.sigmas is not None:
            raise ValueError(f"{owner}: custom sigmas are not supported (diffusers' set_timesteps takes none).")
        if schedule.num_inference_steps is None and schedule.timesteps is None:
            raise ValueError(f"{owner}: give num_inference_steps or custom timesteps.")
        if schedule.num_inference_steps is not None and schedule.timesteps is not None:
            raise ValueError(f"{owner}: give num_inference_steps or custom timesteps, not both.")
        if schedule.timesteps is not None:
            for option in self._spacings_without_custom_timesteps:
                if getattr(self, option):
                    raise ValueError(f"{owner}: custom timesteps cannot be used with {option}=True.")
        if schedule.mu is not None and not self.use_dynamic_shifting:
            raise ValueError(f"{owner}: mu is only used with use_dynamic_shifting=True.")
        super()._check_schedule(schedule)

    def _integrates_data(self) -> bool:
        return self.data_prediction

    def _converts_by_identity(self) -> bool:
        identity = "sample" if self.data_prediction else "epsilon"
        return self.prediction_type == identity and not self.thresholding

    def _convert(self, model_output: torch.Tensor, sample: torch.Tensor, c: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """diffusers' `convert_model_output`: x0 for DPM-Solver++, epsilon for DPM-Solver."""
        alpha, sigma, raw_sigma = c[ALPHA], c[SIGMA], c[RAW_SIGMA]
        if self.variance_type is not None and self.prediction_type == "epsilon":
            model_output = model_output[:, :3]  # the learned variance channels follow the first three
        if self.data_prediction:
            return self._data_prediction(model_output, sample, (alpha, sigma, raw_sigma))
        epsilon = predictions.to_noise(self.prediction_type, model_output, sample, alpha, sigma)
        if self.thresholding:
            x0 = divided(sample - scaled(sigma, epsilon), alpha)
            x0 = predictions.threshold(x0, self.dynamic_thresholding_ratio, self.sample_max_value)
            epsilon = divided(sample - scaled(alpha, x0), sigma)
        return epsilon

    def _output_like_sample(self) -> bool:
        # A learned variance adds channels after the first three, which an epsilon model's step reads alone.
        return self.variance_type is None or self.prediction_type != "epsilon"

    def _check_inputs(self, model_output: torch.Tensor, sample: torch.Tensor, noise: torch.Tensor | None) -> None:
        if not self._output_like_sample() and (model_output.dim() < 2 or model_output[:, :3].shape != sample.shape):
            raise ValueError(
                f"{self.name}: with variance_type={self.variance_type!r} the model output holds the sample's 3 "
                f"channels, then the variance's: its first 3 channels must be shaped like the sample "
                f"{tuple(sample.shape)}, got model_output {tuple(model_output.shape)}."
            )
        if self.stochastic:
            checks.check_noise(self.name, f"algorithm_type={self.algorithm_type!r} is stochastic and", noise, sample)


@options.config
class DPMSolverMultistep(DPMSolverBase):
    """Multistep DPM-Solver(++) of orders 1-3, deterministic or SDE, for VP or flow schedules.

    Implements Lu et al. (2022), "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in
    Around 10 Steps", and Lu et al. (2022), "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
    Probabilistic Models", with diffusers 0.42.1's options and schedule.
    """

    algorithm_type: str = Option("dpmsolver++", Choice(*ALGORITHMS))
    solver_type: str = Option("midpoint", Choice(*SOLVER_TYPES))
    lower_order_final: bool = common.LOWER_ORDER_FINAL
    euler_at_final: bool = Option(False, Flag())
    use_karras_sigmas: bool = common.USE_KARRAS_SIGMAS
    use_exponential_sigmas: bool = common.USE_EXPONENTIAL_SIGMAS
    use_beta_sigmas: bool = common.USE_BETA_SIGMAS
    sigma_min: float | None = common.REGISTERED_SIGMA_MIN
    sigma_max: float | None = common.REGISTERED_SIGMA_MAX
    use_lu_lambdas: bool = Option(False, Flag())
    use_flow_sigmas: bool = common.USE_FLOW_SIGMAS
    flow_shift: float = common.FLOW_SHIFT
    final_sigmas_type: str = common.FINAL_SIGMAS_TYPE
    # Timesteps whose lambda = log(alpha / sigma) lies below this are clipped (DeepFloyd IF uses -5.1).
    # (+inf would clip every timestep.)
    lambda_min_clipped: float = Option(-math.inf, Real(below=math.inf, allow_inf=True), examples=(-5.1,))
    # Learned-variance models (DeepFloyd IF) output extra channels, which the step ignores.
    variance_type: str | None = Option(None, Choice(*VARIANCE_TYPES))
    timestep_spacing: str = common.TIMESTEP_SPACING
    steps_offset: int = common.STEPS_OFFSET
    rescale_betas_zero_snr: bool = common.RESCALE_BETAS_ZERO_SNR
    use_dynamic_shifting: bool = common.USE_DYNAMIC_SHIFTING
    # diffusers 0.42.1 asserts "exponential" where it reads this (set_timesteps with mu).
    time_shift_type: str = common.TIME_SHIFT_TYPE.but(domain=Choice("exponential"))

    state_type: ClassVar[type] = DPMSolverState
    diffusers_name: ClassVar[str] = "DPMSolverMultistepScheduler"
    plan_columns: ClassVar[int] = NOISE + 1
    _vp_spacings = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas")
    #: Whether diffusers' step upcasts the sample to float32 before the update (its inverse class does not).
    _upcasts_sample: ClassVar[bool] = True

    def _check_options(self) -> None:
        super()._check_options()
        if self.algorithm_type == "sde-dpmsolver" and self.solver_order == 3:
            raise ValueError(
                f"{self.name}: algorithm_type='sde-dpmsolver' has no third-order update (diffusers has none either); "
                "use solver_order <= 2 or algorithm_type='sde-dpmsolver++'."
            )

    # ------------------------------------------------------------------------------------------------ plan
    def _schedule(
        self, n: int | None, timesteps: torch.Tensor | None, sigmas: torch.Tensor | None, mu: float | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return solver_schedule(
            self,
            n,
            timesteps,
            mu,
            spacing=self.timestep_spacing,
            steps_offset=self.steps_offset,
            lambda_min_clipped=self.lambda_min_clipped,
            lu_lambdas=self.use_lu_lambdas,
            round_karras=self.beta_schedule != "squaredcos_cap_v2",
            final=self.final_sigmas_type,
        )

    def _orders(self, n: int) -> torch.Tensor:
        """The highest order each step may use (the warm-up is applied at step time)."""
        few_steps = self.lower_order_final and n < 15
        orders = torch.full((n,), self.solver_order, dtype=torch.int64)
        if few_steps and n >= 2:
            orders[n - 2] = min(self.solver_order, 2)
        if self.euler_at_final or few_steps or self.final_sigmas_type == "zero":
            orders[n - 1] = 1
        return orders

    def _table(self, sigmas: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        return _coefficients(self, sigmas, orders)

    # ------------------------------------------------------------------------------------------------ step
    def step(
        self,
        state: DPMSolverState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, DPMSolverState] | tuple[torch.Tensor, DPMSolverState, torch.Tensor]:
        """One multistep update of every row: `(prev_sample, new_state)`, prev_sample in `sample`'s dtype.

        The SDE algorithms need `noise` (standard normal, `sample`'s shape); draw it with
        `functional_sched.randn_tensor(sample.shape, generator=g, dtype=torch.float32)` to match diffusers.
        `denoised=True` also returns the step's x0 estimate (diffusers' `x0_pred`): `(prev_sample, new_state, x0)`.
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check(state, model_output, sample, noise, denoised, cursor)
        c = self._coefficients(state, sample, cursor)
        m0 = self._convert(model_output, sample, c)
        # The history keeps the state's dtype; the arithmetic runs in the converted output's, as diffusers keeps
        # its outputs (bf16 ones when a bf16 model predicts x0 for float32 latents; exact in either direction).
        history = (*state.history[1:], self._kept(m0, sample))
        work = as_dtype(sample, state.plan.coefficients.dtype) if self._upcasts_sample else sample
        x = scaled(c[A], work) + scaled(c[B0], m0)
        if self.solver_order >= 2:
            m1 = as_dtype(history[-2], m0.dtype)
            d1 = scaled(c[P0], m0 - m1)
            if self.solver_order == 3:
                diff = d1 - scaled(c[P1], m1 - as_dtype(history[-3], m0.dtype))
                d1, d2 = d1 + scaled(c[Q], diff), scaled(c[U], diff)
            x = x + scaled(c[B1], d1)
            if self.solver_order == 3:
                x = x + scaled(c[B2], d2)
        if self.stochastic:
            x = x + scaled(c[NOISE], as_dtype(noise, x.dtype))
        new_state = state.replace(**self._advanced(state, cursor), history=history)
        if denoised:
            return as_dtype(x, sample.dtype), new_state, self._denoised(m0, history[-1], sample, c)
        return as_dtype(x, sample.dtype), new_state


def solver_schedule(
    scheduler: Any,
    n: int | None,
    timesteps: torch.Tensor | None,
    mu: float | None,
    *,
    spacing: str = "linspace",
    steps_offset: int = 0,
    lambda_min_clipped: float = -math.inf,
    lu_lambdas: bool = False,
    round_karras: bool = True,
    final: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps (int64) and sigmas (float32, with the final one) of the VP-trained DPM-Solver family (DPM-Solver
    multistep and singlestep, DEIS), as diffusers' `set_timesteps` makes them; the spacings are the scheduler's
    options. `final`: "zero", "sigma_min" (the training schedule's smallest) or "last" (the last sigma repeated)."""
    train = scheduler.num_train_timesteps
    cumulative = scheduler._training_cumprod()
    lambdas = torch.log(torch.sqrt(cumulative)) - torch.log(torch.sqrt(1 - cumulative))
    train_sigmas = schedules.vp_sigmas(cumulative)
    log_sigmas = torch.log(train_sigmas)
    if timesteps is not None:
        timesteps, n = timesteps.to(torch.float64).to(torch.int64), len(timesteps)
    else:
        clipped = int(torch.searchsorted(torch.flip(lambdas, [0]), lambda_min_clipped))
        timesteps = schedules.spaced_timesteps(spacing, n, train, steps_offset, train - clipped)

    # A pipeline's registered range (Cosmos 2's) in place of the training schedule's ends, as diffusers reads it.
    smallest = scheduler.sigma_min if scheduler.sigma_min is not None else train_sigmas[0].item()
    largest = scheduler.sigma_max if scheduler.sigma_max is not None else train_sigmas[-1].item()
    if scheduler.use_karras_sigmas:
        sigmas = schedules.karras_sigmas(smallest, largest, n)
        timesteps = schedules.sigma_to_t(sigmas, log_sigmas)
        timesteps = timesteps.round() if round_karras else timesteps
    elif lu_lambdas:
        sigmas = torch.exp(schedules.lu_log_sigmas(log_sigmas[0].item(), log_sigmas[-1].item(), n))
        timesteps = schedules.sigma_to_t(sigmas, log_sigmas)
        timesteps = timesteps.round() if round_karras else timesteps
    elif scheduler.use_exponential_sigmas:
        sigmas = schedules.exponential_sigmas(smallest, largest, n)
        timesteps = schedules.sigma_to_t(sigmas, log_sigmas)
    elif scheduler.use_beta_sigmas:
        sigmas = schedules.beta_sigmas(smallest, largest, n)
        timesteps = schedules.sigma_to_t(sigmas, log_sigmas)
    elif scheduler.use_flow_sigmas:
        shift = math.exp(mu) if mu is not None else scheduler.flow_shift
        sigmas = 1.0 - schedules.np_linspace(1, 1 / train, n + 1)
        sigmas = schedules.shift_sigmas(sigmas, shift).flip(0)[:-1]
        timesteps = sigmas * train
    else:
        sigmas = train_sigmas[timesteps.clamp(0, train - 1)].to(torch.float64)  # np.interp at integers
    last = {"sigma_min": train_sigmas[0], "zero": torch.zeros(()), "last": sigmas[-1]}[final]
    sigmas = torch.cat([sigmas.to(torch.float32), last.reshape(1).to(torch.float32)])
    return timesteps.to(torch.int64), sigmas


def exponential_weights(
    data_prediction: bool,
    stochastic: bool,
    alpha_t: torch.Tensor,
    sigma_t: torch.Tensor,
    alpha_s: torch.Tensor,
    sigma_s: torch.Tensor,
    h: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """The weights of one DPM-Solver update from s to t over h = lambda_t - lambda_s, each formed as diffusers forms
    it: (a, first, midpoint, heun, third, noise) for x_t = a x_s + first D0 + (midpoint or heun) D1 + third D2
    + noise z. Signs are folded in (diffusers subtracts some terms: `x - c D` equals `x + (-c) D` bit for bit)."""
    if data_prediction:
        a = sigma_t / sigma_s
        if stochastic:
            a = a * torch.exp(-h)
            first = alpha_t * (1 - torch.exp(-2.0 * h))
            heun = alpha_t * ((1.0 - torch.exp(-2.0 * h)) / (-2.0 * h) + 1.0)
            third = alpha_t * ((1.0 - torch.exp(-2.0 * h) - 2.0 * h) / (2.0 * h) ** 2 - 0.5)
            noise = sigma_t * torch.sqrt(1.0 - torch.exp(-2 * h))
        else:
            first = -(alpha_t * (torch.exp(-h) - 1.0))
            heun = alpha_t * ((torch.exp(-h) - 1.0) / h + 1.0)
            third = -(alpha_t * ((torch.exp(-h) - 1.0 + h) / h**2 - 0.5))
            noise = torch.zeros_like(h)
        midpoint = 0.5 * first
    else:
        a = alpha_t / alpha_s
        first = -(sigma_t * (torch.exp(h) - 1.0))
        heun = -(sigma_t * ((torch.exp(h) - 1.0) / h - 1.0))
        third = -(sigma_t * ((torch.exp(h) - 1.0 - h) / h**2 - 0.5))
        if stochastic:
            first, heun = 2.0 * first, 2.0 * heun
            midpoint = -(sigma_t * (torch.exp(h) - 1.0))
            noise = sigma_t * torch.sqrt(torch.exp(2 * h) - 1.0)
        else:
            midpoint = 0.5 * first
            noise = torch.zeros_like(h)
    return a, first, midpoint, heun, third, noise


def _coefficients(scheduler: DPMSolverMultistep, sigmas: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """The [N, order + 1, 12] table by (step, warm-up); each scalar formed as diffusers forms it in `step`."""
    n = len(sigmas) - 1
    alpha, sigma = scheduler._alpha_sigma(sigmas)
    lam = torch.log(alpha) - torch.log(sigma)
    index = torch.arange(n)
    # Step i goes from sigmas[i] (s0) to sigmas[i + 1] (t); s1, s2 are the steps before (clamped where unused).
    t, s0, s1, s2 = index + 1, index, (index - 1).clamp(min=0), (index - 2).clamp(min=0)
    h, h_0, h_1 = lam[t] - lam[s0], lam[s0] - lam[s1], lam[s1] - lam[s2]
    r0, r1 = h_0 / h, h_1 / h
    zero = torch.zeros_like(h)
    a, first, midpoint, heun, third, noise = exponential_weights(
        scheduler.data_prediction, scheduler.stochastic, alpha[t], sigma[t], alpha[s0], sigma[s0], h
    )
    second = heun if scheduler.solver_type == "heun" else midpoint

    def block(b1, b2, p0, p1, q, u):
        return torch.stack([a, first, b1, b2, p0, p1, q, u, noise], dim=-1)

    blocks = [
        block(zero, zero, zero, zero, zero, zero),
        block(second, zero, 1.0 / r0, zero, zero, zero),
        block(heun, third, 1.0 / r0, 1.0 / r1, r0 / (r0 + r1), 1.0 / (r0 + r1)),
    ][: scheduler.solver_order]
    table = by_warmup(torch.stack(blocks, dim=1), orders)  # [N, order + 1, update columns]
    conversion = torch.stack([alpha[:n], sigma[:n], sigmas[:n]], dim=-1)
    return torch.cat([conversion[:, None].expand(-1, table.shape[1], -1), table], dim=-1)
