"""SA-Solver: diffusers' `SASolverScheduler`, a stochastic Adams predictor-corrector (PixArt's and others' choice).

Each step first corrects the sample it is given with the new model output (SA-Corrector, an implicit Adams step from
the previous sample over the previous interval, reusing the previous step's noise), then predicts the next sample
(SA-Predictor, an explicit Adams step). Both are the same planned linear combination:

    x_next = a x + g_0 m_0 + g_1 m_1 + ... + g_{p-1} m_{p-1} + c z

where m_0 is the newest converted model output, m_k the one k steps older, z the noise. The Adams coefficients
(exponentially weighted integrals of the Lagrange polynomials through the history's lambdas) depend only on the
schedule, tau and the order, so `init` computes them once per (step, warm-up level), with diffusers' operations in
its precision, and a step is a gather and the sum above, added up in diffusers' order.

`tau_func`, the stochasticity tau(t) (a callable in diffusers), is a value here, so that a config stays hashable,
comparable and serialisable: None is diffusers' default, tau = 1 on 200 <= t <= 800 and 0 elsewhere (what
diffusers' config holds for it too); a number c >= 0, or `ConstantTau(c)`, is a constant tau (0: the diffusion ODE,
1: the diffusion SDE, the two diffusers documents). A callable given (as from a diffusers config) is evaluated at
every integer timestep a schedule of the config can reach (diffusers' timesteps are integers, and tau only matters
there) and becomes the default or a constant where its values are those; any other callable is refused, naming
`tau_func`. `ConstantTau` is itself a callable, so diffusers built from our config (`to_diffusers_config`) steps
with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import torch

from ..machinery import checks, host, options
from ..machinery.options import Choice, Integer, Option, Optional, Real
from ..machinery.plan import Plan, as_dtype, by_warmup, scaled, single_plan
from ..machinery.record import record
from ..machinery.schedule import Schedule
from ..machinery.scheduler import Scheduler
from ..math import predictions
from . import common
from .dpm_solver import VARIANCE_TYPES, DPMSolverBase, solver_schedule
from .multistep import ALPHA, RAW_SIGMA, SIGMA, MultistepScheduler

ALGORITHMS = ("data_prediction", "noise_prediction")
MAX_ORDER = 4

# Columns per (step, warm-up): the conversion of step i, whether it corrects, the training alpha_bar at its timestep
# (`add_noise`), then the predictor's block and the corrector's block, each `a, g_0 .. g_3, noise, order`.
CORRECTS, ALPHA_BAR = RAW_SIGMA + 1, RAW_SIGMA + 2
HEADER = ALPHA_BAR + 1
A, G0, NOISE, ORDER = 0, 1, 1 + MAX_ORDER, 2 + MAX_ORDER
BLOCK = ORDER + 1
PREDICTOR, CORRECTOR = HEADER, HEADER + BLOCK

#: diffusers' default tau_func: `lambda t: 1 if t >= 200 and t <= 800 else 0`.
DEFAULT_TAU_WINDOW = (200, 800)


@attrs.frozen
class ConstantTau:
    """A constant tau(t) = value: a value (hashable, compared by value) that diffusers can call as its `tau_func`."""

    value: float

    def __call__(self, timestep: Any) -> float:
        return self.value


def default_tau(timestep: Any) -> int:
    """diffusers' default tau_func (`SASolverScheduler.__init__`)."""
    low, high = DEFAULT_TAU_WINDOW
    return 1 if timestep >= low and timestep <= high else 0


@attrs.frozen
class TauFunction(Optional):
    """None (diffusers' default), a number >= 0 (a constant tau), a `ConstantTau`, or a callable, which the scheduler
    turns into one of these (`SASolver._check_options`) or refuses."""

    def check(self, owner: str, name: str, value: Any) -> Any:
        if value is None or isinstance(value, ConstantTau):
            return value if value is None else ConstantTau(self.inner.check(owner, name, value.value))
        if callable(value):
            return value  # evaluated on the schedule's timesteps by the scheduler, which knows them
        return ConstantTau(self.inner.check(owner, name, value))


@record(host=("cursor",))
class SASolverState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    lower_order_nums: torch.Tensor  # [R], int64: steps taken, capped at max(predictor_order, corrector_order - 1)
    history: tuple[torch.Tensor, ...]  # max(predictor_order, corrector_order - 1) x [R, ...]: converted outputs
    last_sample: torch.Tensor  # [R, ...]: the (corrected) sample the last predictor started from
    last_noise: torch.Tensor  # [R, ...]: the noise the last predictor added (the corrector adds it again)
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class SASolver(Scheduler):
    """SA-Solver: stochastic Adams predictor (orders 1-4) and corrector (orders 1-4), data or noise prediction, on VP
    schedules (linspace/leading/trailing, Karras, exponential or beta sigmas) or flow sigmas.

    `tau_func`: None (diffusers' default window), a constant >= 0, or a callable equal to one of those on the
    schedule's timesteps (see the module docstring for why callables are not kept). `step` takes `noise` at every
    step, drawn as diffusers draws it (in the model output's dtype), even where tau is 0 (the ODE), as diffusers
    draws it there too.

    Implements Xue et al. (2023), "SA-Solver: Stochastic Adams Solver for Fast Sampling of Diffusion Models", with
    diffusers 0.42.1's options and schedule.
    """

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    beta_start: float = common.BETA_START
    beta_end: float = common.BETA_END
    beta_schedule: str = common.BETA_SCHEDULE
    trained_betas: tuple[float, ...] | None = common.TRAINED_BETAS
    predictor_order: int = Option(2, Integer(minimum=1, maximum=MAX_ORDER), examples=(1, 3, 4))
    corrector_order: int = Option(2, Integer(minimum=1, maximum=MAX_ORDER), examples=(1, 3, 4))
    prediction_type: str = common.PREDICTION_TYPE
    tau_func: ConstantTau | None = Option(
        None, TauFunction(Real(at_least=0)), examples=(ConstantTau(0.0), ConstantTau(1.0))
    )
    thresholding: bool = common.THRESHOLDING
    dynamic_thresholding_ratio: float = common.DYNAMIC_THRESHOLDING_RATIO
    sample_max_value: float = common.SAMPLE_MAX_VALUE
    algorithm_type: str = Option("data_prediction", Choice(*ALGORITHMS))
    lower_order_final: bool = common.LOWER_ORDER_FINAL
    use_karras_sigmas: bool = common.USE_KARRAS_SIGMAS
    use_exponential_sigmas: bool = common.USE_EXPONENTIAL_SIGMAS
    use_beta_sigmas: bool = common.USE_BETA_SIGMAS
    use_flow_sigmas: bool = common.USE_FLOW_SIGMAS
    flow_shift: float = common.FLOW_SHIFT
    lambda_min_clipped: float = Option(-math.inf, Real(below=math.inf, allow_inf=True), examples=(-5.1,))
    variance_type: str | None = Option(None, Choice(*VARIANCE_TYPES))
    timestep_spacing: str = common.TIMESTEP_SPACING
    steps_offset: int = common.STEPS_OFFSET

    state_type: ClassVar[type] = SASolverState
    diffusers_name: ClassVar[str] = "SASolverScheduler"
    plan_columns: ClassVar[int] = CORRECTOR + BLOCK
    _alpha_bar_column: ClassVar[int | None] = ALPHA_BAR
    _vp_spacings = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
    # What the DPM-Solver schedule reads and this class has no option for.
    sigma_min = None
    sigma_max = None
    rescale_betas_zero_snr = False

    # ------------------------------------------------------------------------------------------------ options
    @property
    def solver_order(self) -> int:
        """The history's length: the outputs the predictor and the corrector reach back to."""
        return max(self.predictor_order, self.corrector_order - 1)

    @property
    def data_prediction(self) -> bool:
        return self.algorithm_type == "data_prediction"

    @property
    def stochastic(self) -> bool:
        """Always: diffusers draws noise at every step, whatever tau (its generator advances alike, and its
        `last_noise` holds the draw), so `step` takes `noise` at every step; where tau is 0 its weight is 0."""
        return True

    def _check_options(self) -> None:
        MultistepScheduler._check_options(self)
        condition = f"algorithm_type={self.algorithm_type!r}"
        MultistepScheduler._check_prediction(self, self.data_prediction, condition)
        if self.thresholding and not self.data_prediction:
            raise ValueError(
                f"{self.name}: thresholding=True with algorithm_type='noise_prediction': diffusers 0.42.1 indexes its "
                "training tables with a missing timestep there and fails in step; use algorithm_type="
                "'data_prediction' to threshold."
            )
        if callable(self.tau_func) and not isinstance(self.tau_func, ConstantTau):
            object.__setattr__(self, "tau_func", self._recognised_tau(self.tau_func))

    def _recognised_tau(self, tau_func: Callable[[Any], Any]) -> ConstantTau | None:
        """The value of a callable tau_func: evaluated, as a pipeline calls it (a 0-d int64 tensor), at every timestep
        a schedule of this config can reach (integers below num_train_timesteps + steps_offset)."""
        values = []
        for timestep in range(self.num_train_timesteps + self.steps_offset):
            value = tau_func(torch.tensor(timestep))
            if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"{self.name}: tau_func returned {checks.shown(value)} at timestep {timestep}; tau_func must "
                    "return a Python number >= 0 (diffusers computes with it as one)."
                )
            values.append(value)
        if len(set(values)) == 1:
            return ConstantTau(float(values[0]))
        if values == [default_tau(timestep) for timestep in range(len(values))]:
            return None
        raise ValueError(
            f"{self.name}: tau_func {checks.shown(tau_func)} is neither diffusers' default (1 on [200, 800], else 0) "
            "nor a constant on this config's timesteps; only those are supported (a config holds tau as a value: "
            "tau_func=None, a number, or ConstantTau)."
        )

    def _tau(self, timestep: int) -> float:
        """tau at one of the schedule's timesteps, as diffusers' tau_func returns it."""
        return default_tau(timestep) if self.tau_func is None else self.tau_func.value

    def _step_options(self) -> tuple[Any, ...]:
        conversion = (self.prediction_type, self.thresholding, self.dynamic_thresholding_ratio, self.sample_max_value)
        orders = (self.predictor_order, self.corrector_order)
        return (*orders, *conversion, self.algorithm_type, self.variance_type)

    _training_cumprod = MultistepScheduler._training_cumprod
    _alpha_sigma = MultistepScheduler._alpha_sigma
    _data_prediction = MultistepScheduler._data_prediction
    _custom_range = MultistepScheduler._custom_range
    _steps_limit_reason = MultistepScheduler._steps_limit_reason
    _kept = MultistepScheduler._kept
    _denoised = MultistepScheduler._denoised
    _warmup = MultistepScheduler._warmup
    _output_like_sample = DPMSolverBase._output_like_sample

    @property
    def _takes_repeats(self) -> bool:  # type: ignore[override]
        return self.predictor_order == 1 and self.corrector_order == 1

    # ------------------------------------------------------------------------------------------------ plan
    def _check_schedule(self, schedule: Schedule) -> None:
        owner = self.name
        if schedule.timesteps is not None or schedule.sigmas is not None or schedule.mu is not None:
            raise ValueError(f"{owner}: diffusers' set_timesteps takes num_inference_steps alone (no tables, no mu).")
        if schedule.num_inference_steps is None:
            raise ValueError(f"{owner}: give num_inference_steps.")
        if self.trained_betas is not None and len(self.trained_betas) != self.num_train_timesteps:
            raise ValueError(
                f"{owner}: trained_betas has {len(self.trained_betas)} values but num_train_timesteps="
                f"{self.num_train_timesteps}; give one beta per training timestep."
            )
        super()._check_schedule(schedule)

    @property
    def max_inference_steps(self) -> int:
        return min(super().max_inference_steps, self.num_train_timesteps)

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        converted = self.use_karras_sigmas or self.use_exponential_sigmas or self.use_beta_sigmas
        timesteps, sigmas = solver_schedule(
            self,
            num_inference_steps,
            None,
            None,
            spacing=self.timestep_spacing,
            steps_offset=self.steps_offset,
            lambda_min_clipped=self.lambda_min_clipped,
            final="last" if converted or self.use_flow_sigmas else "sigma_min",
        )
        return self._plan_from_tables(timesteps, sigmas.to(dtype))

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        taus = [self._tau(int(timestep)) for timestep in timesteps.tolist()]
        alpha_bar = self._training_cumprod()[timesteps.clamp(0, self.num_train_timesteps - 1)].to(sigmas.dtype)
        return single_plan(timesteps, sigmas, _coefficients(self, sigmas, taus, alpha_bar))

    def _start(
        self,
        plan: Plan,
        sample: torch.Tensor,
        step_index: torch.Tensor,
        level: torch.Tensor,
        fingerprint: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> SASolverState:
        order = self.solver_order
        zeros = torch.zeros((order + 2, *sample.shape), dtype=sample.dtype, device=sample.device).unbind(0)
        return SASolverState(
            plan=plan,
            step_index=step_index,
            lower_order_nums=level,
            history=zeros[:order],
            last_sample=zeros[order],
            last_noise=zeros[order + 1],
            fingerprint=fingerprint,
            cursor=cursor,
        )

    # ------------------------------------------------------------------------------------------------ step
    def step(
        self,
        state: SASolverState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, SASolverState] | tuple[torch.Tensor, SASolverState, torch.Tensor]:
        """Correct `sample` with `model_output`, then predict the next sample: `(prev_sample, new_state)`.

        Stochastic configs need `noise` (standard normal, the sample's shape): draw it with
        `functional_sched.randn_tensor(model_output.shape, generator=g, dtype=model_output.dtype)` to match diffusers,
        which draws at every step. `denoised=True` also returns the x0 estimate of the model's output for `sample`:
        `(prev_sample, new_state, x0)`.
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
            checks.check_sample_matches_state(self.name, sample, state.history[0].shape, state.history[0].dtype)
            self._check_inputs(model_output, sample, noise)
        c = self._coefficients(state, sample, cursor)
        m_new = self._convert(model_output, sample, c)
        given = sample
        corrector = c[CORRECTOR : CORRECTOR + BLOCK]
        last_noise = as_dtype(state.last_noise, noise.dtype)

        def corrected() -> torch.Tensor:
            return self._update(corrector, state.last_sample, (m_new, *state.history[::-1]), last_noise)

        if c[CORRECTS].dim() > 0:
            sample = torch.where(c[CORRECTS] > 0, corrected(), given)
        elif bool(c[CORRECTS]):
            sample = corrected()
        # The state keeps the sample it was given only as its own copy: the caller may reuse that buffer.
        sample = sample.clone() if sample is given else sample
        history = (*state.history[1:], self._kept(m_new, sample))
        prev_sample = self._update(c[PREDICTOR : PREDICTOR + BLOCK], sample, (m_new, *history[-2::-1]), noise)
        new_state = state.replace(
            **self._advanced(state, cursor),
            history=history,
            last_sample=sample,
            last_noise=noise.to(sample.dtype, copy=True),
        )
        if denoised:
            return prev_sample, new_state, self._denoised(m_new, history[-1], given, c)
        return prev_sample, new_state

    def _update(
        self,
        c: tuple[torch.Tensor, ...],
        x: torch.Tensor,
        outputs: tuple[torch.Tensor, ...],
        noise: torch.Tensor,
    ) -> torch.Tensor:
        """`a x + sum_k g_k m_k + c z`, summed as diffusers sums it: the gradient part from zeros in `x`'s dtype (its
        `+=` rounds each partial sum there), then `a x + gradient + noise`, cast back to `x`'s dtype. `outputs` are
        the converted outputs, newest first; an eager step (host coefficients) adds only the block's order of them and
        skips a noise term scaled by zero, which adds +-0."""
        eager = c[ORDER].dim() == 0
        order = int(c[ORDER]) if eager else MAX_ORDER
        dtype = outputs[0].dtype
        gradient = None
        for k, output in enumerate(outputs[:order]):
            term = scaled(c[G0 + k], as_dtype(output, dtype))
            gradient = as_dtype(term if gradient is None else gradient + term, x.dtype)
        result = scaled(c[A], x) + gradient
        if not (eager and float(c[NOISE]) == 0.0):
            result = result + scaled(c[NOISE], noise)
        return as_dtype(result, x.dtype)

    def _convert(self, model_output: torch.Tensor, sample: torch.Tensor, c: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """diffusers' `convert_model_output`: x0 for data prediction, epsilon for noise prediction."""
        alpha, sigma, raw_sigma = c[ALPHA], c[SIGMA], c[RAW_SIGMA]
        if self.variance_type is not None and self.prediction_type == "epsilon":
            model_output = model_output[:, :3]  # the learned variance channels follow the first three
        if self.data_prediction:
            return self._data_prediction(model_output, sample, (alpha, sigma, raw_sigma))
        return predictions.to_noise(self.prediction_type, model_output, sample, alpha, sigma)

    def _integrates_data(self) -> bool:
        return self.data_prediction

    def _converts_by_identity(self) -> bool:
        identity = "sample" if self.data_prediction else "epsilon"
        return self.prediction_type == identity and not self.thresholding

    def _check_inputs(self, model_output: torch.Tensor, sample: torch.Tensor, noise: torch.Tensor | None) -> None:
        if not self._output_like_sample() and (model_output.dim() < 2 or model_output[:, :3].shape != sample.shape):
            raise ValueError(
                f"{self.name}: with variance_type={self.variance_type!r} the model output holds the sample's 3 "
                f"channels, then the variance's: its first 3 channels must be shaped like the sample "
                f"{tuple(sample.shape)}, got model_output {tuple(model_output.shape)}."
            )
        checks.check_noise(self.name, "SA-Solver draws noise at every step (as diffusers does) and", noise, sample)


# ---------------------------------------------------------------------------------------------------- coefficients
# diffusers' SASolverScheduler methods of the same names, on tensors of steps (elementwise: the same values as its
# 0-d tensors), tau a Python number as its tau_func returns it.
def _exponential_negative(order: int, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """The integral of exp(-x) x^order over [start, end]."""
    if order == 0:
        return torch.exp(-end) * (torch.exp(end - start) - 1)
    if order == 1:
        return torch.exp(-end) * ((start + 1) * torch.exp(end - start) - (end + 1))
    if order == 2:
        return torch.exp(-end) * ((start**2 + 2 * start + 2) * torch.exp(end - start) - (end**2 + 2 * end + 2))
    return torch.exp(-end) * (
        (start**3 + 3 * start**2 + 6 * start + 6) * torch.exp(end - start) - (end**3 + 3 * end**2 + 6 * end + 6)
    )


def _exponential_positive(order: int, start: torch.Tensor, end: torch.Tensor, tau: float) -> torch.Tensor:
    """The integral of exp(x (1 + tau^2)) x^order over [start, end]."""
    end_cov, start_cov = (1 + tau**2) * end, (1 + tau**2) * start
    decay = torch.exp(-(end_cov - start_cov))
    if order == 0:
        return torch.exp(end_cov) * (1 - decay) / (1 + tau**2)
    if order == 1:
        return torch.exp(end_cov) * ((end_cov - 1) - (start_cov - 1) * decay) / ((1 + tau**2) ** 2)
    if order == 2:
        return (
            torch.exp(end_cov)
            * ((end_cov**2 - 2 * end_cov + 2) - (start_cov**2 - 2 * start_cov + 2) * decay)
            / ((1 + tau**2) ** 3)
        )
    return (
        torch.exp(end_cov)
        * (
            (end_cov**3 - 3 * end_cov**2 + 6 * end_cov - 6)
            - (start_cov**3 - 3 * start_cov**2 + 6 * start_cov - 6) * decay
        )
        / ((1 + tau**2) ** 4)
    )


def _lagrange(lambdas: list[torch.Tensor]) -> list[list[Any]]:
    """The expanded coefficients (highest power first) of the Lagrange basis polynomials through `lambdas`."""
    order = len(lambdas) - 1
    if order == 0:
        return [[1]]
    basis = []
    for i in range(order + 1):
        others = [lambdas[j] for j in range(order + 1) if j != i]
        denominator = lambdas[i] - others[0]
        for other in others[1:]:
            denominator = denominator * (lambdas[i] - other)
        if order == 1:
            row = [1 / denominator, -others[0] / denominator]
        elif order == 2:
            row = [1 / denominator, (-others[0] - others[1]) / denominator, others[0] * others[1] / denominator]
        else:
            a, b, d = others
            row = [
                1 / denominator,
                (-a - b - d) / denominator,
                (a * b + a * d + b * d) / denominator,
                (-a * b * d) / denominator,
            ]
        basis.append(row)
    return basis


def _gradient_coefficients(
    data_prediction: bool, start: torch.Tensor, end: torch.Tensor, lambdas: list[torch.Tensor], tau: float
) -> list[torch.Tensor]:
    """diffusers' `get_coefficients_fn`: the weight of each of the `len(lambdas)` outputs."""
    order = len(lambdas)
    basis = _lagrange(lambdas)
    coefficients = []
    for i in range(order):
        coefficient: Any = 0
        for j in range(order):
            if data_prediction:
                integral = _exponential_positive(order - 1 - j, start, end, tau)
            else:
                integral = _exponential_negative(order - 1 - j, start, end)
            coefficient = coefficient + basis[i][j] * integral
        coefficients.append(coefficient)
    return coefficients


def _block(
    scheduler: SASolver,
    sigma: torch.Tensor,
    alpha: torch.Tensor,
    lam: torch.Tensor,
    s0: torch.Tensor,
    t: torch.Tensor,
    nodes: list[torch.Tensor],
    tau: float,
    corrector: bool,
) -> torch.Tensor:
    """One order's [N, BLOCK] coefficients of an update from index s0 to index t (per step), interpolating the outputs
    at the indices `nodes` (newest first), formed as diffusers' `stochastic_adams_bashforth_update` (or, `corrector`,
    `stochastic_adams_moulton_update`) forms them."""
    data = scheduler.data_prediction
    alpha_t, sigma_t, alpha_s0, sigma_s0 = alpha[t], sigma[t], alpha[s0], sigma[s0]
    lambda_t, lambda_s0 = lam[t], lam[s0]
    h = lambda_t - lambda_s0
    order = len(nodes)
    gradient = _gradient_coefficients(data, lambda_s0, lambda_t, [lam[node] for node in nodes], tau)
    if data and order == 2:
        # diffusers' O(h^3) modification of second-order steps (UniPC-like), predictor and corrector differently.
        k = 1 + tau**2
        if corrector:
            extra = 1.0 * torch.exp(k * lambda_t) * (h / 2 - (h * k - 1 + torch.exp(k * (-h))) / (k**2 * h))
        else:
            extra = (1.0 * torch.exp(k * lambda_t) * (h**2 / 2 - (h * k - 1 + torch.exp(k * (-h))) / (k**2))) / (
                lambda_s0 - lam[nodes[1]]
            )
        gradient = [gradient[0] + extra, gradient[1] - extra]
    if data:
        weights = [(1 + tau**2) * sigma_t * torch.exp(-(tau**2) * lambda_t) * g for g in gradient]
        noise = sigma_t * torch.sqrt(1 - torch.exp(-2 * tau**2 * h))
        a = torch.exp(-(tau**2) * h) * (sigma_t / sigma_s0)
    else:
        weights = [-(1 + tau**2) * alpha_t * g for g in gradient]
        noise = tau * sigma_t * torch.sqrt(torch.exp(2 * h) - 1)
        a = alpha_t / alpha_s0
    zero = torch.zeros_like(h)
    weights += [zero] * (MAX_ORDER - order)
    return torch.stack([a, *weights, noise, torch.full_like(h, order)], dim=-1)


def _coefficients(
    scheduler: SASolver, sigmas: torch.Tensor, taus: list[float], alpha_bar: torch.Tensor
) -> torch.Tensor:
    """The [N, K + 1, HEADER + 2 * BLOCK] table by (step, warm-up), K = max(predictor_order, corrector_order - 1)."""
    n, levels = len(sigmas) - 1, scheduler.solver_order
    alpha, sigma = scheduler._alpha_sigma(sigmas)
    lam = torch.log(alpha) - torch.log(sigma)
    index = torch.arange(n)
    steps_left = n - index
    lower_final = scheduler.lower_order_final
    p_cap = torch.clamp(steps_left, max=scheduler.predictor_order) if lower_final else None
    # The corrector of step i runs at the order step i - 1 planned: min(its cap there, warm-up + 1).
    c_cap = torch.clamp(steps_left + 2, max=scheduler.corrector_order) if lower_final else None
    p_cap = p_cap if p_cap is not None else torch.full((n,), scheduler.predictor_order)
    c_cap = c_cap if c_cap is not None else torch.full((n,), scheduler.corrector_order)
    tau_of_step = torch.tensor(taus, dtype=torch.float64)
    tau_before = torch.cat([tau_of_step[:1], tau_of_step[:-1]])
    predictor = corrector = None
    for tau in dict.fromkeys(taus):
        # Nodes before the schedule's start are clamped: those (step, order) entries are never reachable.
        def nodes(newest: torch.Tensor, order: int) -> list[torch.Tensor]:
            return [(newest - k).clamp(min=0) for k in range(order)]

        with torch.no_grad():
            p_blocks = [
                _block(scheduler, sigma, alpha, lam, index, index + 1, nodes(index, o), tau, corrector=False)
                for o in range(1, scheduler.predictor_order + 1)
            ]
            previous = (index - 1).clamp(min=0)
            c_blocks = [
                _block(scheduler, sigma, alpha, lam, previous, index, nodes(index, o), tau, corrector=True)
                for o in range(1, scheduler.corrector_order + 1)
            ]
        p_table = _by_level(p_blocks, p_cap, levels)
        c_table = _by_level(c_blocks, c_cap, levels)
        p_pick, c_pick = (tau_of_step == tau)[:, None, None], (tau_before == tau)[:, None, None]
        predictor = p_table if predictor is None else torch.where(p_pick, p_table, predictor)
        corrector = c_table if corrector is None else torch.where(c_pick, c_table, corrector)
    warmup = torch.arange(levels + 1)
    corrects = (warmup[None, :] >= 1) & (warmup[None, :] <= index[:, None])
    corrector = torch.where(corrects[..., None], corrector, torch.zeros_like(corrector))
    header = torch.stack([alpha[:n], sigma[:n], sigmas[:n]], dim=-1)[:, None].expand(-1, levels + 1, -1)
    extra = torch.stack([corrects.to(sigmas.dtype), alpha_bar[:, None].expand(-1, levels + 1)], dim=-1)
    return torch.cat([header, extra, predictor, corrector], dim=-1)


def _by_level(blocks: list[torch.Tensor], caps: torch.Tensor, levels: int) -> torch.Tensor:
    """[N, levels + 1, BLOCK]: warm-up level w uses order min(caps[i], w + 1) <= levels + 1 (unreachable levels
    zero)."""
    blocks = blocks + [torch.zeros_like(blocks[0])] * (levels + 1 - len(blocks))
    return by_warmup(torch.stack(blocks, dim=1), caps)[:, : levels + 1]
