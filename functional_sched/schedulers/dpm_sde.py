"""DPM-Solver++ SDE: diffusers' `DPMSolverSDEScheduler` (A1111's "DPM++ SDE Karras"), k-diffusion's `sample_dpmpp_sde`.

Two model calls per sigma interval, as diffusers repeats them: the first at sigma_i steps to the interval's midpoint in
t = -log(sigma), the second at the midpoint steps the interval's start to sigma_{i+1}; each step is ancestral (eta 1),
down to sigma_down with the data prediction, then up by sigma_up of Brownian noise; the last interval (into sigma 0)
is one Euler call. Every coefficient is a 0-d float32 computation of diffusers', made once in the plan.

The noise is an argument: `functional_sched.brownian_noise(sched, state, latents, seed)` gives each step's increment
of a request's own Brownian tree, as diffusers' tree gives it (torchsde, the optional extra `sde`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.brownian import Query
from ..machinery.options import Choice, Integer, Option, Optional, Real
from ..machinery.plan import Plan, divided, gather_rows, plus, scaled, single_plan
from ..machinery.record import record
from ..math import schedules
from . import common
from .sigma_discrete import SigmaDiscreteScheduler

# Columns of the coefficient table, one row per call: the sigma the model sees (the interval's start, or its midpoint
# at a second call), what the model input is divided by, v-prediction's two factors; the ancestral step's factors of
# its start sample and of x0, the noise's scale sigma_up and the noise's interval (start, end); the last call's Euler
# sigma and length; the call's phase.
SIGMA_IN, INPUT_SCALE, V_OUT, V_IN, SAMPLE_COEF, DENOISED_COEF, UP, FROM, TO, SIGMA, DT, PHASE = range(12)
#: Phases: an interval's first call (to its midpoint; its sample is kept), its second (from the kept sample), and an
#: Euler call into sigma 0.
FIRST, SECOND, FINAL = 0.0, 1.0, 2.0
MIDPOINT_RATIO = 0.5


@record(host=("cursor",))
class DPMSolverSDEState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    interval_start: torch.Tensor  # [R, ...], the sample's dtype: the sample the current interval started from
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class DPMSolverSDE(SigmaDiscreteScheduler):
    """DPM-Solver++(2S) as an SDE solver: per interval [sigma_i, sigma_{i+1}], with t = -log(sigma), h = t_{i+1} - t_i
    and s = t_i + h / 2, an ancestral step to s with x0 at sigma_i, then one from the interval's start to t_{i+1} with
    x0 at the midpoint; each ancestral step from sigma_from to sigma_to goes to
    sigma_down = sqrt(sigma_to^2 - sigma_up^2), sigma_up = min(sigma_to, sigma_to sqrt(1 - sigma_to^2 / sigma_from^2)),
    as x' = (sigma_down / sigma_from) x - expm1(t_from - t_down) x0 + s_noise sigma_up z, z the Brownian increment over
    [sigma_to, sigma_from] over its root length (`brownian_noise`). The last interval, into sigma 0, is an Euler step.

    `noise=` is required; the last call ignores it (diffusers draws none there). `begin_index` should be an interval's
    first call, as img2img pipelines set it (`t_start * order`); from a second call the kept sample is the one given
    (diffusers returns NaN there). `noise_sampler_seed` is diffusers' tree seed: `brownian_noise` takes it where no
    seed is given; the step itself never reads it.

    Implements `sample_dpmpp_sde` of k-diffusion (Crowson), the SDE variant of DPM-Solver++(2S) from Lu et al. (2022),
    "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models", with diffusers 0.42.1's
    options and schedule.
    """

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    beta_start: float = common.BETA_START.but(default=0.00085, examples=(0.0001,))
    beta_end: float = common.BETA_END.but(default=0.012, examples=(0.02,))
    beta_schedule: str = common.BETA_SCHEDULE
    trained_betas: tuple[float, ...] | None = common.TRAINED_BETAS
    # diffusers' step raises NotImplementedError for "sample".
    prediction_type: str = Option("epsilon", Choice("epsilon", "v_prediction"))
    use_karras_sigmas: bool = common.USE_KARRAS_SIGMAS
    use_exponential_sigmas: bool = common.USE_EXPONENTIAL_SIGMAS
    use_beta_sigmas: bool = common.USE_BETA_SIGMAS
    noise_sampler_seed: int | None = Option(None, Optional(Integer(minimum=0)), examples=(0, 1234))
    timestep_spacing: str = common.TIMESTEP_SPACING
    steps_offset: int = common.STEPS_OFFSET
    s_noise: float = Option(1.0, Real(at_least=0), examples=(0.5, 1.003), step_argument=True)

    state_type: ClassVar[type] = DPMSolverSDEState
    diffusers_name: ClassVar[str] = "DPMSolverSDEScheduler"
    plan_columns: ClassVar[int] = PHASE + 1
    _input_column: ClassVar[int] = INPUT_SCALE
    _not_gaussian: ClassVar[str | None] = (
        "its noise is a Brownian tree's increments over overlapping intervals (an interval's second call covers the "
        "first's half), so given the state it is no fresh standard normal."
    )

    @property
    def stochastic(self) -> bool:
        return True

    def _step_options(self) -> tuple[Any, ...]:
        return (self.prediction_type, self.s_noise)

    # ------------------------------------------------------------------------------------------------ plan
    def _schedule(
        self, n: int | None, timesteps: torch.Tensor | None, sigmas: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(timesteps [2N - 1], float64: each interval's start and midpoint but the last's; sigmas [2N], float32:
        each call's sigma as diffusers indexes them, s_0, s_1, s_1, ..., s_{N-1}, s_{N-1}, 0)."""
        assert n is not None  # no custom tables (`_takes_custom`)
        train_sigmas = schedules.vp_sigmas(self._training_cumprod())
        log_sigmas = schedules.np_log(train_sigmas)
        train = self.num_train_timesteps
        if self.timestep_spacing == "linspace":  # float64, not rounded to float32 as Euler's
            spaced = schedules.np_linspace(0, train - 1, n).flip(0)
        else:
            spaced = schedules.fractional_timesteps(self.timestep_spacing, n, train, self.steps_offset)
            spaced = spaced.to(torch.float64)  # whole numbers
        sigmas = self._spaced_sigmas(spaced, train_sigmas, n)
        if self.use_karras_sigmas or self.use_exponential_sigmas or self.use_beta_sigmas:
            spaced = schedules.sigma_to_t(sigmas, log_sigmas)
        t = -schedules.np_log(sigmas)
        midpoints = schedules.np_exp(-(t[:-1] + (t[1:] - t[:-1]) * MIDPOINT_RATIO))
        second = schedules.sigma_to_t(midpoints, log_sigmas)
        timesteps = torch.empty(2 * n - 1, dtype=torch.float64)
        timesteps[0::2], timesteps[1::2] = spaced, second
        table = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)]).to(torch.float32)
        return timesteps, torch.cat([table[:1], table[1:-1].repeat_interleave(2), table[-1:]])

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        """Each call's coefficients from diffusers' tables (a call's sigma at its index): the phase follows diffusers'
        state machine from the first call (an interval's first call keeps its sample unless it goes to sigma 0), and
        every value is the 0-d tensor computation of diffusers' `step`, in the tables' dtype."""
        rows, first = [], True
        zero = torch.zeros((), dtype=sigmas.dtype)
        for k in range(len(timesteps)):
            sigma, sigma_next = (sigmas[k], sigmas[k + 1]) if first else (sigmas[k - 1], sigmas[k])
            t, t_next = sigma.log().neg(), sigma_next.log().neg()
            t_proposed = t + (t_next - t) * MIDPOINT_RATIO
            sigma_input = sigma if first else t_proposed.neg().exp()
            scale, square = (sigma_input**2 + 1) ** 0.5, sigma_input**2 + 1
            head = [sigma_input, scale, -sigma_input / scale, square]
            if sigma_next == 0:
                rows.append([*head, zero, zero, zero, zero, zero, sigma, sigma_next - sigma, zero + FINAL])
                continue
            if first:
                t_next = t_proposed
            sigma_from, sigma_to = t.neg().exp(), t_next.neg().exp()
            candidate = (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
            sigma_up = candidate if candidate < sigma_to else sigma_to  # Python's min(sigma_to, candidate)
            sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
            ancestral_t = sigma_down.log().neg()
            sample_coef = ancestral_t.neg().exp() / t.neg().exp()
            denoised_coef = (t - ancestral_t).expm1()
            phase = FIRST if first else SECOND
            rows.append([*head, sample_coef, denoised_coef, sigma_up, sigma_from, sigma_to, sigma, zero, zero + phase])
            first = not first
        coefficients = torch.stack([torch.stack(row) for row in rows])
        return single_plan(timesteps, sigmas, coefficients[:, None])

    # ------------------------------------------------------------------------------------------------ queries
    def _model_sigma(self, state: Any) -> torch.Tensor:
        """The sigma the model sees: the interval's start, or its midpoint at a second call."""
        return gather_rows(state.plan.coefficients[:, :, 0, SIGMA_IN], state.step_index)

    def _draws_noise(self, state: Any) -> bool:
        """Whether diffusers queries its tree at this call (any row): at every call but the Euler one into sigma 0."""
        cursor = self._cursor(state)
        if cursor is not None:
            if cursor.step >= cursor.owned.host.steps:
                return False
            return bool(cursor.owned.host.entry(cursor.step, 0)[PHASE] != FINAL)
        return any(query is not None for query in self._brownian_queries(state))

    def _brownian_queries(self, state: Any) -> list[Query | None]:
        """Per row, where diffusers queries its tree at this call: the tree's range (the schedule's smallest positive
        and largest sigma) and the interval (the call's sigma_from, sigma_to); None at the Euler call. Host reads."""
        self._require_state(state, "brownian_noise")
        cursor = self._cursor(state)
        if cursor is not None:
            table, entry = cursor.owned.host.plan.sigmas[0], cursor.owned.host.entry(cursor.step, 0)
            return [_query(table, entry)] * cursor.owned.rows
        with host.plain():
            sigmas, coefficients = state.plan.sigmas.detach().cpu(), state.plan.coefficients.detach().cpu()
            steps = state.step_index.detach().cpu().tolist()
        rows = []
        for row, step in enumerate(steps):
            plan_row = row if sigmas.shape[0] > 1 else 0
            if not 0 <= step < coefficients.shape[1]:
                checks.raise_finished(self.name, state)
            rows.append(_query(sigmas[plan_row], coefficients[plan_row, step, 0].unbind(0)))
        return rows

    # ------------------------------------------------------------------------------------------------ step
    def _start(
        self,
        plan: Plan,
        sample: torch.Tensor,
        step_index: torch.Tensor,
        level: torch.Tensor,
        fingerprint: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> DPMSolverSDEState:
        # The request's own copy of its sample: what a state started at an interval's second call steps from.
        return DPMSolverSDEState(
            plan=plan,
            step_index=step_index,
            interval_start=sample.detach().clone(),
            fingerprint=fingerprint,
            cursor=cursor,
        )

    def step(
        self,
        state: DPMSolverSDEState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, DPMSolverSDEState] | tuple[torch.Tensor, DPMSolverSDEState, torch.Tensor]:
        """One call of diffusers' `step` for every row: `(prev_sample, new_state)`, or `(prev_sample, new_state, x0)`
        with `denoised=True` (diffusers' `pred_original_sample`). The arithmetic is diffusers' (no upcast: the
        sample's dtype against 0-d float32 coefficients), the result in `sample`'s dtype. `noise` is the step's
        standard normal noise like the sample (`brownian_noise` gives diffusers' Brownian increments); the Euler call
        into sigma 0 ignores it.
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
            buffer = state.interval_start
            checks.check_sample_matches_state(self.name, sample, buffer.shape, buffer.dtype)
            checks.check_noise(
                self.name, "DPM-Solver++ SDE (Brownian noise: functional_sched.brownian_noise)", noise, sample
            )
        c = self._coefficients(state, sample, cursor)
        x0 = self._data_prediction(model_output, sample, c[SIGMA_IN], c[V_OUT], c[V_IN])
        if cursor is not None:
            prev_sample, interval_start = self._known_phase(state, sample, x0, noise, c, float(c[PHASE]))
        else:
            prev_sample, interval_start = self._any_phase(state, sample, x0, noise, c)
        new_state = state.replace(**self._advanced(state, cursor), interval_start=interval_start)
        prev_sample = prev_sample.to(sample.dtype)
        if denoised:
            return prev_sample, new_state, x0.to(sample.dtype)
        return prev_sample, new_state

    def _noise_term(self, noise: torch.Tensor, c: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """diffusers' `noise * s_noise * sigma_up`."""
        if self.s_noise != 1.0:
            noise = noise * self.s_noise
        return scaled(c[UP], noise, tensor_first=True)

    def _euler(self, sample: torch.Tensor, x0: torch.Tensor, c: tuple[torch.Tensor, ...], eager: bool) -> torch.Tensor:
        """diffusers' last call: `sample + (sample - x0) / sigma * (0 - sigma)`."""
        return plus(scaled(c[DT], divided(sample - x0, c[SIGMA]), tensor_first=True), sample, eager=eager)

    def _known_phase(
        self,
        state: DPMSolverSDEState,
        sample: torch.Tensor,
        x0: torch.Tensor,
        noise: Any,
        c: tuple[torch.Tensor, ...],
        phase: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The eager call, where the host knows its phase: diffusers' own operations only."""
        if phase == FINAL:
            return self._euler(sample, x0, c, eager=True), state.interval_start
        start = state.interval_start if phase == SECOND else sample
        prev_sample = scaled(c[SAMPLE_COEF], start) - scaled(c[DENOISED_COEF], x0)
        prev_sample = prev_sample + self._noise_term(noise, c)
        kept = sample.clone() if phase == FIRST else state.interval_start
        return prev_sample, kept

    def _any_phase(
        self,
        state: DPMSolverSDEState,
        sample: torch.Tensor,
        x0: torch.Tensor,
        noise: Any,
        c: tuple[torch.Tensor, ...],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The call of any phase, per row: both updates, chosen by the row's phase (branch-free: compiles, and steps
        rows at different phases together)."""
        start = torch.where(c[PHASE] == SECOND, state.interval_start, sample)
        ancestral = scaled(c[SAMPLE_COEF], start) - scaled(c[DENOISED_COEF], x0) + self._noise_term(noise, c)
        prev_sample = torch.where(c[PHASE] == FINAL, self._euler(sample, x0, c, eager=False), ancestral)
        return prev_sample, torch.where(c[PHASE] == FIRST, sample, state.interval_start)


def _query(sigmas: torch.Tensor, entry: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> Query | None:
    """A row's query of its tree at a call whose coefficients are `entry`, on its sigma table (diffusers' range:
    `sigmas[sigmas > 0].min()`, `sigmas.max()`, as Python floats of 0-d float32 tensors)."""
    if float(entry[PHASE]) == FINAL:
        return None
    low = float(torch.as_tensor(sigmas[sigmas > 0].min().item()))
    high = float(torch.as_tensor(sigmas.max().item()))
    return Query(low, high, entry[FROM], entry[TO])
