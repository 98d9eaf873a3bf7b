"""k-diffusion's DPM-Solver samplers beyond diffusers: DPM-Solver++ 2S ancestral, DPM-Solver++ 3M SDE and
DPM-Solver-fast (k-diffusion 0.1.1.post1's `sample_dpmpp_2s_ancestral`, `sample_dpmpp_3m_sde`, `sample_dpm_fast`), one
`step` per model call.

k-diffusion's samplers are whole loops over a sigma table that ends in 0, calling a denoiser `model(x, sigma) -> x0`.
Here the model output is that denoiser's: the data prediction x0 at the sample's sigma (`prediction_type` "sample":
a noise-predicting network's output converts as x0 = x - sigma eps, the input unscaled, as k-diffusion's
`CompVisDenoiser` wraps one; the model's `timestep` is the sigma it sees). The schedule is a custom sigma table
(`init(sigmas=...)`, with its final sigma, as k-diffusion takes it) or `num_inference_steps` of the Karras schedule
of the config's `sigma_min`, `sigma_max` and `rho` (k-diffusion's `get_sigmas_karras`, SD 1.5's range by default);
DPM-Solver-fast spaces its own intervals between `sigma_min` and `sigma_max` for a number of model calls.
Every coefficient is the 0-d computation of k-diffusion's loop in the plan's dtype, made once in the plan, and each
product is formed in the loop's order, so float32 steps reproduce it bit for bit. The sample's initial noise is
`init_noise_sigma` (the table's first sigma) times a standard normal draw, as k-diffusion's callers scale it.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.brownian import Query
from ..machinery.options import Integer, Option, Optional, Real
from ..machinery.plan import Plan, as_dtype, divided, single_plan
from ..machinery.record import record
from ..machinery.schedule import Schedule
from .k_samplers import (
    RHO,
    SIGMA_MAX,
    SIGMA_MIN,
    KDiffusionMultistep,
    KDiffusionScheduler,
    ancestral_step,
    any_row_at,
)

# ==================================================================================================== 2S ancestral
# Columns of 2S ancestral's table, one row per call: the multipliers of the start sample and of x0 (`x' = a x - b x0`),
# the noise's scale sigma_up, whether the call adds noise (an interval's last call into sigma > 0), the Euler call's
# sigma and length, and the call's phase.
A, B, UP, ADDS_NOISE, SIGMA, DT, PHASE = range(7)
#: Phases: an interval's first call (to the midpoint; its sample is kept), its second, and an Euler call (where the
#: ancestral step ends at sigma_down = 0: into sigma 0, or with an eta that large).
FIRST, SECOND, EULER = 0.0, 1.0, 2.0


@record(host=("cursor",))
class DPMSolverPlusPlus2SAncestralState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64: calls taken (two per interval but an Euler one)
    interval_start: torch.Tensor  # [R, ...], the sample's dtype: the sample the current interval started from
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class DPMSolverPlusPlus2SAncestral(KDiffusionScheduler):
    """Ancestral sampling with DPM-Solver++(2S) steps. Per interval [sigma_i, sigma_(i+1)], with (sigma_down,
    sigma_up) of the ancestral step (eta), t = -log sigma, h = t(sigma_down) - t(sigma_i) and the midpoint
    s = t + h / 2: a first call at sigma_i steps to the midpoint, x_2 = (sigma_s / sigma_t) x - expm1(-h / 2) x0; a
    second call at sigma_s steps the interval's start to sigma_down, x' = (sigma_down / sigma_t) x - expm1(-h) x0_2,
    then adds s_noise sigma_up z. Where sigma_down is 0 (the last interval) the interval is one Euler call.

    `noise=` (standard normal, like the sample) is required; only an interval's last call into a positive sigma reads
    it (`_draws_noise`; k-diffusion draws `randn_like` there, eta = 0 included). `begin_index` should be an interval's
    first call: from a second call the kept sample is the one given.

    Implements `sample_dpmpp_2s_ancestral` of k-diffusion (Crowson), the ancestral variant of DPM-Solver++(2S) from
    Lu et al. (2022), "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models".
    """

    sigma_min: float = Option(SIGMA_MIN, Real(above=0), examples=(0.002,))
    sigma_max: float = Option(SIGMA_MAX, Real(above=0), examples=(80.0,))
    rho: float = Option(RHO, Real(above=0), examples=(1.0, 3.0))
    eta: float = Option(1.0, Real(at_least=0), examples=(0.0, 0.5))
    s_noise: float = Option(1.0, Real(at_least=0), examples=(0.5, 1.003))

    state_type: ClassVar[type] = DPMSolverPlusPlus2SAncestralState
    diffusers_name: ClassVar[str] = "sample_dpmpp_2s_ancestral"
    plan_columns: ClassVar[int] = PHASE + 1
    _noise_reason: ClassVar[str] = "DPM-Solver++(2S) ancestral (the noise of each interval's last call)"

    def _step_options(self) -> tuple[Any, ...]:
        return (self.s_noise,)

    def _plan_from_intervals(self, sigmas: torch.Tensor) -> Plan:
        """One or two rows per interval; the timestep of a call is the sigma the model sees (the sample's sigma: the
        interval's start, or its midpoint at a second call), the call table of sigmas those and the final one."""
        rows, model_sigmas = [], []
        zero = torch.zeros((), dtype=sigmas.dtype)
        for i in range(len(sigmas) - 1):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            sigma_down, sigma_up = ancestral_step(sigma, sigma_next, self.eta)
            adds = zero + float(sigma_next > 0)
            if sigma_down == 0:
                rows.append([zero, zero, sigma_up, adds, sigma, sigma_down - sigma, zero + EULER])
                model_sigmas.append(sigma)
                continue
            t, t_next = sigma.log().neg(), sigma_down.log().neg()
            h = t_next - t
            s = t + 0.5 * h
            sigma_s, sigma_t = s.neg().exp(), t.neg().exp()
            rows.append([sigma_s / sigma_t, (-h * 0.5).expm1(), zero, zero, sigma, zero, zero + FIRST])
            rows.append([t_next.neg().exp() / sigma_t, (-h).expm1(), sigma_up, adds, sigma_s, zero, zero + SECOND])
            model_sigmas += [sigma, sigma_s]
        table = torch.stack([*model_sigmas, sigmas[-1]])
        coefficients = torch.stack([torch.stack(row) for row in rows])
        return single_plan(table[:-1].to(torch.float32), table, coefficients[:, None])

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        raise NotImplementedError(f"{self.name}: its call table is made from k-diffusion's sigmas (init(sigmas=...)).")

    def _draws_noise(self, state: Any) -> bool:
        """Whether any row is at an interval's last call into a positive sigma, where k-diffusion draws noise."""
        return any_row_at(self, state, ADDS_NOISE)

    def _start(
        self,
        plan: Plan,
        sample: torch.Tensor,
        step_index: torch.Tensor,
        level: torch.Tensor,
        fingerprint: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> DPMSolverPlusPlus2SAncestralState:
        return DPMSolverPlusPlus2SAncestralState(
            plan=plan,
            step_index=step_index,
            interval_start=sample.detach().clone(),
            fingerprint=fingerprint,
            cursor=cursor,
        )

    def step(
        self,
        state: DPMSolverPlusPlus2SAncestralState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> Any:
        """One model call of every row: `(next_sample, new_state)`, or `(next_sample, new_state, x0)` with
        `denoised=True`. `model_output` is the denoiser's x0 at the sample; `noise` standard normal like the sample
        (read at an interval's last call into a positive sigma). The arithmetic is k-diffusion's, in the promoted
        dtype of the sample and the output; the result in the sample's dtype."""
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check(state, model_output, sample, noise, denoised, cursor)
        c = self._coefficients(state, sample, cursor)
        x0 = model_output
        if cursor is not None:
            prev_sample, kept = self._known_phase(state, sample, x0, noise, c, float(c[PHASE]))
        else:
            prev_sample, kept = self._any_phase(state, sample, x0, noise, c)
        new_state = state.replace(**self._advanced(state, cursor), interval_start=kept)
        prev_sample = as_dtype(prev_sample, sample.dtype)
        if denoised:
            return prev_sample, new_state, as_dtype(x0, sample.dtype).clone()
        return prev_sample, new_state

    def _buffer(self, state: Any) -> torch.Tensor:
        return state.interval_start

    def _noise_term(self, noise: torch.Tensor, c: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """k-diffusion's `noise * s_noise * sigma_up` (the product by s_noise = 1 is exact: skipped)."""
        return (noise if self.s_noise == 1.0 else noise * self.s_noise) * c[UP]

    def _known_phase(
        self,
        state: DPMSolverPlusPlus2SAncestralState,
        sample: torch.Tensor,
        x0: torch.Tensor,
        noise: Any,
        c: tuple[torch.Tensor, ...],
        phase: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The eager call, where the host knows its phase: k-diffusion's own operations only."""
        if phase == FIRST:
            return c[A] * sample - c[B] * x0, sample.clone()  # the request's own copy (a caller may reuse its buffer)
        if phase == EULER:
            prev_sample = sample + divided(sample - x0, c[SIGMA]) * c[DT]
        else:
            prev_sample = c[A] * state.interval_start - c[B] * x0
        if float(c[ADDS_NOISE]) > 0:
            prev_sample = prev_sample + self._noise_term(noise, c)
        return prev_sample, state.interval_start

    def _any_phase(
        self,
        state: DPMSolverPlusPlus2SAncestralState,
        sample: torch.Tensor,
        x0: torch.Tensor,
        noise: Any,
        c: tuple[torch.Tensor, ...],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The call of any phase, per row: every update, chosen by the row's phase (branch-free: compiles, and steps
        rows at different calls together)."""
        first = c[PHASE] == FIRST
        start = torch.where(first, sample, state.interval_start)
        solver = c[A] * start - c[B] * x0
        euler = sample + divided(sample - x0, c[SIGMA]) * c[DT]
        prev_sample = torch.where(c[PHASE] == EULER, euler, solver)
        prev_sample = torch.where(c[ADDS_NOISE] > 0, prev_sample + self._noise_term(noise, c), prev_sample)
        return prev_sample, torch.where(first, as_dtype(sample, state.interval_start.dtype), state.interval_start)


# ==================================================================================================== 3M SDE
# Columns of 3M SDE's table, one row per (call, warm-up level): the multipliers of the sample and of x0
# (exp(-h_eta), -expm1(-h_eta)); the ratios of the previous steps' lengths to this one's, r0 = h_1 / h,
# r1 = h_2 / h, and r0 + r1; phi_2 and phi_3; the noise's two factors (sigma_next, sqrt(-expm1(-2 h eta))); the order
# the call uses at this level (0 for the last call into sigma 0, which returns x0).
C_SAMPLE, C_DENOISED, R0, R1, R_SUM, PHI_2, PHI_3, SIGMA_NEXT, NOISE_SCALE, ORDER = range(10)
SOLVER_ORDER = 3


@options.config
class DPMSolverPlusPlus3MSDE(KDiffusionMultistep):
    """DPM-Solver++(3M) SDE: per interval, with t = -log sigma_i, h = t(sigma_(i+1)) - t and h_eta = (1 + eta) h,
    x' = exp(-h_eta) x - expm1(-h_eta) x0 plus the second- and third-order corrections from the last two x0 (finite
    differences over the previous steps' lengths h_1, h_2; phi_2 = expm1(-h_eta) / h_eta + 1, phi_3 = phi_2 / h_eta
    - 1/2), plus s_noise sigma_(i+1) sqrt(-expm1(-2 eta h)) z. The last interval, into sigma 0, returns x0. The
    order warms up from 1 over the first two steps after `init` (a request's history starts empty).

    `noise=` is required where eta > 0: z is the Brownian increment over [sigma_(i+1), sigma_i] over its root length,
    as k-diffusion's `BrownianTreeNoiseSampler` draws it (`functional_sched.brownian_noise(sched, state, like, seed)`,
    seed defaulting to `noise_sampler_seed`; the tree spans the schedule's sigma range); any standard normal noise
    gives the same law. eta = 0 is the deterministic DPM-Solver++(3M) and takes no noise.

    Implements `sample_dpmpp_3m_sde` of k-diffusion (Crowson), after Lu et al. (2022), "DPM-Solver++: Fast Solver for
    Guided Sampling of Diffusion Probabilistic Models", and Gonzalez et al. (2023), "SEEDS".
    """

    sigma_min: float = Option(SIGMA_MIN, Real(above=0), examples=(0.002,))
    sigma_max: float = Option(SIGMA_MAX, Real(above=0), examples=(80.0,))
    rho: float = Option(RHO, Real(above=0), examples=(1.0, 3.0))
    eta: float = Option(1.0, Real(at_least=0), examples=(0.0, 0.5))
    s_noise: float = Option(1.0, Real(at_least=0), examples=(0.5, 1.003))
    noise_sampler_seed: int | None = Option(None, Optional(Integer(minimum=0)), examples=(0, 1234))

    _kept: ClassVar[int] = 2
    diffusers_name: ClassVar[str] = "sample_dpmpp_3m_sde"
    plan_columns: ClassVar[int] = ORDER + 1
    _noise_reason: ClassVar[str] = "DPM-Solver++(3M) SDE with eta > 0 (Brownian noise: functional_sched.brownian_noise)"

    @property
    def stochastic(self) -> bool:
        return self.eta > 0

    def _step_options(self) -> tuple[Any, ...]:
        return (self.eta, self.s_noise)

    def _plan_from_intervals(self, sigmas: torch.Tensor) -> Plan:
        """One row per interval, three warm-up levels each (level w uses order min(w, i) + 1 at step i)."""
        steps = len(sigmas) - 1
        if steps > 0 and sigmas[1] == 0:
            # k-diffusion's loop reads the step length of a call into sigma 0 that it never computed (an
            # UnboundLocalError) where the first interval ends at 0.
            raise ValueError(
                f"{self.name}: the first interval ends at sigma 0 (a one-step schedule): k-diffusion 0.1.1.post1's "
                "sample_dpmpp_3m_sde fails there (UnboundLocalError); give two steps or more."
            )
        zero, one = (torch.full((), value, dtype=sigmas.dtype) for value in (0.0, 1.0))
        lengths: list[torch.Tensor] = []
        rows = []
        for i in range(steps):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            if sigma_next == 0:  # x0 returned; the ratios 1, so the branch-free step divides by none of them
                rows.append([[zero, zero, one, one, one, *[zero] * (ORDER - R_SUM)]] * SOLVER_ORDER)
                lengths.append(zero)
                continue
            t, s = -sigma.log(), -sigma_next.log()
            h = s - t
            h_eta = h * (self.eta + 1)
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            phi_3 = phi_2 / h_eta - 0.5
            head = [torch.exp(-h_eta), (-h_eta).expm1().neg()]
            tail = [sigma_next, (-2 * h * self.eta).expm1().neg().sqrt()]
            levels = []
            for level in range(SOLVER_ORDER):
                order = min(level, i)  # corrections the loop adds: none, a second-order one, or the third-order one
                if order == 0:
                    ratios = [one, one, one, zero, zero]
                elif order == 1:
                    ratios = [lengths[i - 1] / h, one, one, phi_2, zero]
                else:
                    r0, r1 = lengths[i - 1] / h, lengths[i - 2] / h
                    ratios = [r0, r1, r0 + r1, phi_2, phi_3]
                levels.append([*head, *ratios, *tail, zero + order + 1])
            rows.append(levels)
            lengths.append(h)
        coefficients = torch.stack([torch.stack([torch.stack(level) for level in row]) for row in rows])
        return single_plan(sigmas[:-1].to(torch.float32), sigmas, coefficients)

    def _draws_noise(self, state: Any) -> bool:
        """Whether k-diffusion draws noise at this call of any row: where eta > 0, at every call but the last into
        sigma 0."""
        return self.stochastic and any(query is not None for query in self._brownian_queries(state))

    def _brownian_queries(self, state: Any) -> list[Query | None]:
        """Per row, where k-diffusion queries its tree at this call: the tree's range (the schedule's smallest
        positive and largest sigma) and the interval (sigma_i, sigma_(i+1)); None where it draws none. Host reads."""
        self._require_state(state, "brownian_noise")
        cursor = self._cursor(state)
        if cursor is not None:
            if cursor.step >= cursor.owned.host.steps:
                checks.raise_finished(self.name, state)
            sigmas = cursor.owned.host.plan.sigmas[0]
            return [self._query(sigmas, cursor.step)] * cursor.owned.rows
        with host.plain():
            sigmas, steps = state.plan.sigmas.detach().cpu(), state.step_index.detach().cpu().tolist()
            lengths = state.plan.num_steps.detach().cpu().tolist()
        rows = []
        for row, step in enumerate(steps):
            plan_row = row if sigmas.shape[0] > 1 else 0
            if not 0 <= step < lengths[plan_row]:
                checks.raise_finished(self.name, state)
            rows.append(self._query(sigmas[plan_row], step))
        return rows

    def _query(self, sigmas: torch.Tensor, step: int) -> Query | None:
        if not self.eta or sigmas[step + 1] == 0:
            return None
        low, high = float(sigmas[sigmas > 0].min()), float(sigmas.max())
        return Query(low, high, sigmas[step], sigmas[step + 1])

    def _noise_term(self, noise: torch.Tensor, c: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """k-diffusion's `noise * sigma_next * sqrt(-expm1(-2 h eta)) * s_noise` (s_noise = 1: exact, skipped)."""
        scaled = noise * c[SIGMA_NEXT] * c[NOISE_SCALE]
        return scaled if self.s_noise == 1.0 else scaled * self.s_noise

    def _known_call(
        self, sample: torch.Tensor, x0: torch.Tensor, history: tuple[torch.Tensor, ...], noise: Any, c: Any
    ) -> torch.Tensor:
        """The eager call, where the host knows its order: k-diffusion's own operations only."""
        (newer, older), order = history, int(c[ORDER])
        if order == 0:
            return x0.clone()
        x = c[C_SAMPLE] * sample + c[C_DENOISED] * x0
        if order == 3:
            d1_0 = (x0 - newer) / c[R0]
            d1_1 = (newer - older) / c[R1]
            d1 = d1_0 + (d1_0 - d1_1) * c[R0] / c[R_SUM]
            d2 = (d1_0 - d1_1) / c[R_SUM]
            x = x + c[PHI_2] * d1 - c[PHI_3] * d2
        elif order == 2:
            x = x + c[PHI_2] * ((x0 - newer) / c[R0])
        if self.eta:
            x = x + self._noise_term(noise, c)
        return x

    def _any_call(
        self, sample: torch.Tensor, x0: torch.Tensor, history: tuple[torch.Tensor, ...], noise: Any, c: Any
    ) -> torch.Tensor:
        """The call of any order, per row: the third-order update whose unused terms the plan zeroes (phi_3 = 0 at
        second order, phi_2 = 0 at first; the ratios 1 there, so nothing divides by zero), x0 where the order is 0.
        Branch-free: compiles, and steps rows at different steps together."""
        newer, older = history
        d1_0 = (x0 - newer) / c[R0]
        d1_1 = (newer - older) / c[R1]
        third = c[ORDER] == 3
        d1 = torch.where(third, d1_0 + (d1_0 - d1_1) * c[R0] / c[R_SUM], d1_0)
        d2 = (d1_0 - d1_1) / c[R_SUM]
        x = c[C_SAMPLE] * sample + c[C_DENOISED] * x0
        x = torch.where(c[ORDER] > 1, x + c[PHI_2] * d1 - c[PHI_3] * d2, x)
        if self.eta:
            x = x + self._noise_term(noise, c)
        return torch.where(c[ORDER] == 0, x0.to(x.dtype), x)


# ==================================================================================================== DPM-Solver fast
# Columns of DPM-Solver-fast's table, one row per call: the sigma the model sees (eps = (x - x0) / sigma), the
# multipliers of the interval's first eps and of the current eps's difference from it (`x' = start - p eps_0 -
# q (eps - eps_0)`), whether the call starts its interval (its sample and eps are kept), whether it ends it, and the
# noise's scale (su s_noise) added there.
SIGMA_IN, P, Q, STARTS, ENDS, NOISE_UP = range(6)


@record(host=("cursor",))
class DPMSolverFastState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64: calls taken (1, 2 or 3 per interval)
    interval_start: torch.Tensor  # [R, ...], the sample's dtype: the sample the current interval started from
    first_eps: torch.Tensor  # [R, ...], the sample's dtype: the noise prediction at the interval's start
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class DPMSolverFast(KDiffusionScheduler):
    """DPM-Solver-fast: `num_inference_steps` model calls (k-diffusion's `n`, the NFE) spread over
    m = floor(n / 3) + 1 intervals uniform in t = -log sigma from sigma_max to sigma_min, each a singlestep
    DPM-Solver step of order 3 (calls at t, t + h / 3, t + 2h / 3), the last ones of order 2 and 1 (or n mod 3) so
    the calls add up to n. With eta > 0 each interval steps to the ancestral step's sigma_down and adds
    s_noise sigma_up z at its last call. The schedule ends at sigma_min (no step into sigma 0).

    `noise=` (standard normal, like the sample) is required; the last call of each interval reads it (k-diffusion
    draws `randn_like` there, eta = 0 included, and adds it times 0).

    Implements `sample_dpm_fast` of k-diffusion (Crowson), DPM-Solver-fast of Lu et al. (2022), "DPM-Solver: A Fast
    ODE Solver for Diffusion Probabilistic Model Sampling in Around 10 Steps".
    """

    sigma_min: float = Option(SIGMA_MIN, Real(above=0), examples=(0.002,))
    sigma_max: float = Option(SIGMA_MAX, Real(above=0), examples=(80.0,))
    eta: float = Option(0.0, Real(at_least=0), examples=(0.5, 1.0))
    s_noise: float = Option(1.0, Real(at_least=0), examples=(0.5, 1.003))

    state_type: ClassVar[type] = DPMSolverFastState
    diffusers_name: ClassVar[str] = "sample_dpm_fast"
    plan_columns: ClassVar[int] = NOISE_UP + 1
    _noise_reason: ClassVar[str] = "DPM-Solver-fast (the noise of each interval's last call)"

    def _check_schedule(self, schedule: Schedule) -> None:
        if schedule.sigmas is not None:
            raise ValueError(
                f"{self.name}: custom sigmas are not supported; k-diffusion's sample_dpm_fast spaces its own between "
                "sigma_min and sigma_max (num_inference_steps is its number of model calls)."
            )
        super()._check_schedule(schedule)

    def _step_options(self) -> tuple[Any, ...]:
        return ()

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        """k-diffusion's intervals, orders and every coefficient in float32 0-d operations (then cast to `dtype`)."""
        assert num_inference_steps is not None
        nfe = num_inference_steps
        # float32 as k-diffusion (its 0-d tensors of the Python floats); float64 plans in float64.
        t_start, t_end = (torch.tensor(value, dtype=dtype).log().neg() for value in (self.sigma_max, self.sigma_min))
        m = math.floor(nfe / 3) + 1
        ts = torch.linspace(t_start, t_end, m + 1, dtype=dtype)
        orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
        sigma = lambda t: t.neg().exp()  # noqa: E731
        zero, one = torch.zeros((), dtype=dtype), torch.ones((), dtype=dtype)
        rows, model_sigmas = [], []
        for i, order in enumerate(orders):
            t, t_next = ts[i], ts[i + 1]
            if self.eta:
                sigma_down = ancestral_step(sigma(t), sigma(t_next), self.eta)[0]
                t_next_ = torch.minimum(t_end, sigma_down.log().neg())
                up = (sigma(t_next) ** 2 - sigma(t_next_) ** 2) ** 0.5 * self.s_noise
            else:
                t_next_, up = t_next, zero
            h = t_next_ - t
            end = sigma(t_next_)
            if order == 1:
                calls = [(sigma(t), end * h.expm1(), zero)]
            elif order == 2:
                r1 = 1 / 2
                s1 = t + r1 * h
                calls = [
                    (sigma(t), sigma(s1) * (r1 * h).expm1(), zero),
                    (sigma(s1), end * h.expm1(), end / (2 * r1) * h.expm1()),
                ]
            else:
                r1, r2 = 1 / 3, 2 / 3
                s1, s2 = t + r1 * h, t + r2 * h
                calls = [
                    (sigma(t), sigma(s1) * (r1 * h).expm1(), zero),
                    (
                        sigma(s1),
                        sigma(s2) * (r2 * h).expm1(),
                        sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1),
                    ),
                    (sigma(s2), end * h.expm1(), end / r2 * (h.expm1() / h - 1)),
                ]
            for k, (sigma_in, p, q) in enumerate(calls):
                last = k == len(calls) - 1
                rows.append([sigma_in, p, q, one if k == 0 else zero, one if last else zero, up if last else zero])
                model_sigmas.append(sigma_in)
        table = torch.stack([*model_sigmas, sigma(ts[-1])])
        coefficients = torch.stack([torch.stack(row) for row in rows])
        return single_plan(table[:-1].to(torch.float32), table, coefficients[:, None])

    def _plan_from_intervals(self, sigmas: torch.Tensor) -> Plan:
        raise NotImplementedError  # the call table is made from the step count directly (`_build_plan`)

    def init_noise_sigma(self, state: Any) -> torch.Tensor:
        """The initial noise's standard deviation per row, [R]: `sigma_max` (k-diffusion's callers draw
        `randn * sigma_max`; the first call's sigma is exp(log sigma_max), which may round apart)."""
        self._require_state(state, "init_noise_sigma")
        dtype = state.plan.sigmas.dtype
        return torch.full(state.step_index.shape, self.sigma_max, dtype=dtype, device=state.step_index.device)

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        raise NotImplementedError(f"{self.name}: its call table is made from the step count (init(n)).")

    def _draws_noise(self, state: Any) -> bool:
        """Whether any row is at an interval's last call, where k-diffusion draws noise."""
        return any_row_at(self, state, ENDS)

    def _start(
        self,
        plan: Plan,
        sample: torch.Tensor,
        step_index: torch.Tensor,
        level: torch.Tensor,
        fingerprint: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> DPMSolverFastState:
        zeros = torch.zeros((2, *sample.shape), dtype=sample.dtype, device=sample.device).unbind(0)
        return DPMSolverFastState(
            plan=plan,
            step_index=step_index,
            interval_start=zeros[0],
            first_eps=zeros[1],
            fingerprint=fingerprint,
            cursor=cursor,
        )

    def _buffer(self, state: Any) -> torch.Tensor:
        return state.interval_start

    def step(
        self,
        state: DPMSolverFastState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> Any:
        """One model call of every row: `(next_sample, new_state)`, or with `denoised=True` also x0. `model_output`
        is the denoiser's x0; the update works with k-diffusion's eps = (x - x0) / sigma."""
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check(state, model_output, sample, noise, denoised, cursor)
        c = self._coefficients(state, sample, cursor)
        eps = (sample - model_output) / c[SIGMA_IN]
        if cursor is not None:
            starts, ends = float(c[STARTS]) > 0, float(c[ENDS]) > 0
            start, first_eps = (sample, eps) if starts else (state.interval_start, state.first_eps)
            prev_sample = start - c[P] * first_eps
            if not starts:
                prev_sample = prev_sample - c[Q] * (eps - first_eps)
            if ends and float(c[NOISE_UP]) != 0:
                prev_sample = prev_sample + c[NOISE_UP] * noise
            kept = (sample.clone(), as_dtype(eps, sample.dtype)) if starts else (state.interval_start, state.first_eps)
        else:
            starts = c[STARTS] > 0
            start = torch.where(starts, sample, state.interval_start)
            first_eps = torch.where(starts, eps, state.first_eps)
            prev_sample = start - c[P] * first_eps - c[Q] * (eps - first_eps)
            prev_sample = prev_sample + c[NOISE_UP] * noise
            kept = (start.to(sample.dtype), first_eps.to(sample.dtype))
        new_state = state.replace(**self._advanced(state, cursor), interval_start=kept[0], first_eps=kept[1])
        prev_sample = as_dtype(prev_sample, sample.dtype)
        if denoised:
            return prev_sample, new_state, as_dtype(model_output, sample.dtype).clone()
        return prev_sample, new_state
