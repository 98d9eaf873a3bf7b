"""SEEDS-2 and SEEDS-3 (stochastic explicit exponential derivative-free solvers, data prediction) as ComfyUI runs
them (`sample_seeds_2`, `sample_seeds_3` of comfy/k_diffusion/sampling.py), one `step` per model call: two or three
calls per interval, the last interval (into sigma 0) one call that returns x0.

The model output is a denoiser's x0 at the sample's sigma, the sample unscaled (x = x0 + sigma eps: ComfyUI's
eps-prediction and VE models, lambda = -log sigma), on k-diffusion's sigma table (`KDiffusionScheduler`). Every
coefficient is made once in the plan with ComfyUI's float32 operations, so float32 steps reproduce its loop bit for
bit (tests/test_seeds.py, against recorded trajectories).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Choice, Option, Real
from ..machinery.plan import Plan, as_dtype, single_plan
from ..machinery.record import record
from .k_samplers import RHO, SIGMA_MAX, SIGMA_MIN, KDiffusionScheduler, any_row_at

# Columns of the call table, one row per model call: the multiplier of the interval's start sample; that of x0
# (a first call), of the combination P x0_first + Q x0 (a later call), or of lerp(x0_first, x0, fac) (SEEDS-2's
# phi_1 second call); P and Q; the noise's decay of the interval's running noise, the fresh draw's factor, and the
# sigma it is scaled by; whether the call adds noise; the call's kind.
A, B, P, Q, DECAY, FRESH, NOISE_SIGMA, ADDS_NOISE, KIND = range(9)
#: Kinds: an interval's first call (its sample, x0 and noise are kept), a later call of a combination, SEEDS-2's
#: phi_1 second call (a lerp of the two x0), and a call into sigma 0 (returns x0).
FIRST, COMBINATION, LERP, FINAL = 0.0, 1.0, 2.0, 3.0


def _phi_1(h: torch.Tensor) -> torch.Tensor:
    """h phi_1(h) of exponential integrators (ComfyUI's `ei_h_phi_1`)."""
    return torch.expm1(h)


def _phi_2(h: torch.Tensor) -> torch.Tensor:
    """h phi_2(h) of exponential integrators (ComfyUI's `ei_h_phi_2`)."""
    return (torch.expm1(h) - h) / h


@record(host=("cursor",))
class SEEDSState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64: calls taken (2 or 3 per interval, 1 into sigma 0)
    interval_start: torch.Tensor  # [R, ...], the sample's dtype: the sample the current interval started from
    first_x0: torch.Tensor  # [R, ...], the sample's dtype: the model's x0 at the interval's start
    interval_noise: torch.Tensor  # [R, ...], the sample's dtype: the interval's running noise (ComfyUI's sde_noise)
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


class _SEEDS(KDiffusionScheduler):
    """What SEEDS-2 and SEEDS-3 share: the call table (`_interval_calls` gives an interval's rows), the state, and
    the step of any kind."""

    sigma_min: float
    sigma_max: float
    rho: float
    eta: float
    s_noise: float

    state_type: ClassVar[type] = SEEDSState
    reference_library: ClassVar[str] = "comfyui"
    plan_columns: ClassVar[int] = KIND + 1

    @property
    def stochastic(self) -> bool:
        return self.eta > 0 and self.s_noise > 0

    def _step_options(self) -> tuple[Any, ...]:
        return (self.s_noise,)

    def _interval_calls(
        self, sigma: torch.Tensor, sigma_next: torch.Tensor, zero: torch.Tensor
    ) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """An interval into a positive sigma: each call's (model sigma, table row)."""
        raise NotImplementedError

    def _plan_from_intervals(self, sigmas: torch.Tensor) -> Plan:
        """Two or three rows per interval (one into sigma 0); the timestep of a call is the sigma the model sees,
        the call table of sigmas those and the final one."""
        zero = torch.zeros((), dtype=sigmas.dtype)
        rows, model_sigmas = [], []
        for i in range(len(sigmas) - 1):
            if sigmas[i + 1] == 0:
                rows.append([*[zero] * KIND, zero + FINAL])
                model_sigmas.append(sigmas[i])
                continue
            for model_sigma, row in self._interval_calls(sigmas[i], sigmas[i + 1], zero):
                rows.append(row)
                model_sigmas.append(model_sigma)
        table = torch.stack([*model_sigmas, sigmas[-1]])
        coefficients = torch.stack([torch.stack(row) for row in rows])
        return single_plan(table[:-1].to(torch.float32), table, coefficients[:, None])

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        raise NotImplementedError(f"{self.name}: its call table is made from k-diffusion's sigmas (init(sigmas=...)).")

    def _row(
        self,
        kind: float,
        a: torch.Tensor,
        b: torch.Tensor,
        noise: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        zero: torch.Tensor,
        p: torch.Tensor | None = None,
        q: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        adds = zero + float(self.stochastic)
        return [a, b, zero if p is None else p, zero if q is None else q, *noise, adds, zero + kind]

    def _draws_noise(self, state: Any) -> bool:
        """Whether any row is at a call that adds noise (every call but one into sigma 0, where noise is on)."""
        return any_row_at(self, state, ADDS_NOISE)

    def _start(
        self,
        plan: Plan,
        sample: torch.Tensor,
        step_index: torch.Tensor,
        level: torch.Tensor,
        fingerprint: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> SEEDSState:
        zeros = torch.zeros((3, *sample.shape), dtype=sample.dtype, device=sample.device).unbind(0)
        return SEEDSState(
            plan=plan,
            step_index=step_index,
            interval_start=zeros[0],
            first_x0=zeros[1],
            interval_noise=zeros[2],
            fingerprint=fingerprint,
            cursor=cursor,
        )

    def _buffer(self, state: Any) -> torch.Tensor:
        return state.interval_start

    def _fac(self) -> float:
        """SEEDS-2's lerp weight 1 / (2 r) (SEEDS-3 has no lerp call)."""
        return 1.0

    def step(
        self,
        state: SEEDSState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> Any:
        """One model call of every row: `(next_sample, new_state)`, or `(next_sample, new_state, x0)` with
        `denoised=True`. `model_output` is the denoiser's x0 at the sample; `noise` standard normal like the sample
        (ComfyUI's draw of this call's sub-interval) where the config adds noise. The arithmetic is ComfyUI's, in the
        promoted dtype of the sample and the output; the result in the sample's dtype."""
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check(state, model_output, sample, noise, denoised, cursor)
        c = self._coefficients(state, sample, cursor)
        x0 = model_output
        if cursor is not None:
            prev_sample, kept = self._known_kind(state, sample, x0, noise, c, float(c[KIND]))
        else:
            prev_sample, kept = self._any_kind(state, sample, x0, noise, c)
        start, first_x0, interval_noise = (as_dtype(tensor, sample.dtype) for tensor in kept)
        new_state = state.replace(
            **self._advanced(state, cursor),
            interval_start=start,
            first_x0=first_x0,
            interval_noise=interval_noise,
        )
        prev_sample = as_dtype(prev_sample, sample.dtype)
        if denoised:
            return prev_sample, new_state, as_dtype(x0, sample.dtype).clone()
        return prev_sample, new_state

    def _noised(self, x: torch.Tensor, running: torch.Tensor, c: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """ComfyUI's `x + sde_noise * sigma * s_noise` (the product by s_noise = 1 is exact: skipped)."""
        scaled = running * c[NOISE_SIGMA]
        return x + (scaled if self.s_noise == 1.0 else scaled * self.s_noise)

    def _known_kind(
        self,
        state: SEEDSState,
        sample: torch.Tensor,
        x0: torch.Tensor,
        noise: Any,
        c: tuple[torch.Tensor, ...],
        kind: float,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The eager call, where the host knows its kind: ComfyUI's own operations only."""
        if kind == FINAL:
            return x0.clone(), (state.interval_start, state.first_x0, state.interval_noise)
        if kind == FIRST:
            start, first_x0 = sample, x0
            x = c[A] * start - c[B] * x0
        else:
            start, first_x0 = state.interval_start, state.first_x0
            if kind == LERP:
                x = c[A] * start - c[B] * torch.lerp(first_x0, x0, self._fac())
            else:
                x = c[A] * start - c[B] * (c[P] * first_x0 + c[Q] * x0)
        running = state.interval_noise
        if float(c[ADDS_NOISE]) > 0:
            fresh = c[FRESH] * noise
            running = fresh if kind == FIRST else running * c[DECAY] + fresh
            x = self._noised(x, running, c)
        if kind == FIRST:  # the request's own copies (a caller may reuse its buffers)
            return x, (start.clone(), first_x0.clone(), running)
        return x, (start, first_x0, running)

    def _any_kind(
        self,
        state: SEEDSState,
        sample: torch.Tensor,
        x0: torch.Tensor,
        noise: Any,
        c: tuple[torch.Tensor, ...],
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The call of any kind, per row: every update, chosen by the row's kind (branch-free: compiles, and steps
        rows at different calls together)."""
        first = c[KIND] == FIRST
        start = torch.where(first, sample, state.interval_start)
        first_x0 = torch.where(first, x0, state.first_x0)
        combined = torch.where(c[KIND] == LERP, torch.lerp(first_x0, x0, self._fac()), c[P] * first_x0 + c[Q] * x0)
        x = c[A] * start - c[B] * torch.where(first, x0, combined)
        running = state.interval_noise
        if self.stochastic:
            fresh = c[FRESH] * noise
            running = torch.where(first, fresh, running * c[DECAY] + fresh)
            x = self._noised(x, running, c)
        final = c[KIND] == FINAL
        kept = (
            torch.where(final, state.interval_start, start),
            torch.where(final, state.first_x0, first_x0),
            torch.where(final, state.interval_noise, running),
        )
        return torch.where(final, x0.to(x.dtype), x), kept


@options.config
class SEEDS2(_SEEDS):
    """SEEDS-2: per interval [sigma_i, sigma_(i+1)], lambda = -log sigma, h = lambda_t - lambda_s,
    h_eta = (1 + eta) h and lambda_1 = lambda_s + r h: a first call at sigma_i steps to sigma_1,
    x_2 = (sigma_1 / sigma_i) e^(-r h eta) x - alpha_1 expm1(-r h_eta) x0 plus sigma_1 s_noise n_1 with
    n_1 = sqrt(-expm1(-2 r h eta)) z_1; a second call at sigma_1 steps the interval's start to sigma_(i+1) with
    x0_d = lerp(x0, x0_2, 1 / (2 r)) ("phi_1") or phi_2's weights b_2 = phi_2(-h_eta) / r, b_1 = phi_1(-h_eta) - b_2,
    plus sigma_(i+1) s_noise n_2, n_2 = e^((r - 1) h eta) n_1 + sqrt(-expm1(2 (r - 1) h eta)) z_2 (the noise of the
    two sub-intervals correlated as one Brownian path). The last interval, into sigma 0, is one call that returns x0.
    eta = 0 is the deterministic exponential midpoint/Heun method (ComfyUI's `exp_heun_2_x0` at phi_2, r = 1).

    `noise=` (standard normal, like the sample: ComfyUI's default Gaussian noise sampler) is required where eta > 0
    and s_noise > 0: every call but one into sigma 0 reads it. `begin_index` should be an interval's first call.

    Implements ComfyUI's `sample_seeds_2` (its `SamplerSEEDS2` node's options), SEEDS-2 of Gonzalez et al. (2023),
    "SEEDS: Exponential SDE Solvers for Fast High-Quality Sampling from Diffusion Models".
    """

    sigma_min: float = Option(SIGMA_MIN, Real(above=0), examples=(0.002,))
    sigma_max: float = Option(SIGMA_MAX, Real(above=0), examples=(80.0,))
    rho: float = Option(RHO, Real(above=0), examples=(1.0, 3.0))
    eta: float = Option(1.0, Real(at_least=0), examples=(0.0, 0.5))
    s_noise: float = Option(1.0, Real(at_least=0), examples=(0.0, 1.003))
    r: float = Option(0.5, Real(above=0, at_most=1), examples=(1.0, 0.4))
    solver_type: str = Option("phi_1", Choice("phi_1", "phi_2"))

    diffusers_name: ClassVar[str] = "sample_seeds_2"
    _noise_reason: ClassVar[str] = "SEEDS-2 with eta > 0 and s_noise > 0 (each call's Gaussian draw)"

    def _fac(self) -> float:
        return 1 / (2 * self.r)

    def _interval_calls(
        self, sigma: torch.Tensor, sigma_next: torch.Tensor, zero: torch.Tensor
    ) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        eta, r = self.eta, self.r
        lambda_s, lambda_t = sigma.log().neg(), sigma_next.log().neg()
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1 = torch.lerp(lambda_s, lambda_t, r)
        sigma_s_1 = lambda_s_1.neg().exp()
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigma_next * lambda_t.exp()
        first = self._row(
            FIRST,
            sigma_s_1 / sigma * (-r * h * eta).exp(),
            alpha_s_1 * _phi_1(-r * h_eta),
            (zero, (-2 * r * h * eta).expm1().neg().sqrt(), sigma_s_1),
            zero,
        )
        segment = (r - 1) * h * eta
        noise = (segment.exp(), segment.mul(2).expm1().neg().sqrt(), sigma_next)
        a = sigma_next / sigma * (-h * eta).exp()
        if self.solver_type == "phi_1":
            second = self._row(LERP, a, alpha_t * _phi_1(-h_eta), noise, zero)
        else:
            b2 = _phi_2(-h_eta) / r
            second = self._row(COMBINATION, a, alpha_t, noise, zero, _phi_1(-h_eta) - b2, b2)
        return [(sigma, first), (sigma_s_1, second)]


@options.config
class SEEDS3(_SEEDS):
    """SEEDS-3: per interval, with lambda_k = lambda_s + r_k h: a first call at sigma_i steps to sigma_1 as SEEDS-2's;
    a second at sigma_1 steps the interval's start to sigma_2 with x0 weights a_2 = (r_2 / r_1) phi_2(-r_2 h_eta),
    a_1 = phi_1(-r_2 h_eta) - a_2; a third at sigma_2 steps it to sigma_(i+1) with b_3 = phi_2(-h_eta) / r_2,
    b_1 = phi_1(-h_eta) - b_3 on (x0, x0_3); each adds the sub-interval's noise, correlated as one Brownian path
    (n_k = e^((r_(k-1) - r_k) h eta) n_(k-1) + sqrt(-expm1(2 (r_(k-1) - r_k) h eta)) z_k), times its end sigma and
    s_noise. The last interval, into sigma 0, is one call that returns x0.

    `noise=` (standard normal, like the sample: ComfyUI's default Gaussian noise sampler) is required where eta > 0
    and s_noise > 0: every call but one into sigma 0 reads it. `begin_index` should be an interval's first call.

    Implements ComfyUI's `sample_seeds_3`, SEEDS-3 of Gonzalez et al. (2023), "SEEDS: Exponential SDE Solvers for
    Fast High-Quality Sampling from Diffusion Models".
    """

    sigma_min: float = Option(SIGMA_MIN, Real(above=0), examples=(0.002,))
    sigma_max: float = Option(SIGMA_MAX, Real(above=0), examples=(80.0,))
    rho: float = Option(RHO, Real(above=0), examples=(1.0, 3.0))
    eta: float = Option(1.0, Real(at_least=0), examples=(0.0, 0.5))
    s_noise: float = Option(1.0, Real(at_least=0), examples=(0.0, 1.003))
    r_1: float = Option(1.0 / 3, Real(above=0, below=1), examples=(0.25,))
    r_2: float = Option(2.0 / 3, Real(above=0, at_most=1), examples=(0.6, 0.75))

    diffusers_name: ClassVar[str] = "sample_seeds_3"
    _noise_reason: ClassVar[str] = "SEEDS-3 with eta > 0 and s_noise > 0 (each call's Gaussian draw)"

    def _check_options(self) -> None:
        super()._check_options()
        if not self.r_1 < self.r_2:
            raise ValueError(f"{self.name}: r_1={self.r_1!r} must be less than r_2={self.r_2!r} (the stages' order).")

    def _interval_calls(
        self, sigma: torch.Tensor, sigma_next: torch.Tensor, zero: torch.Tensor
    ) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        eta, r_1, r_2 = self.eta, self.r_1, self.r_2
        lambda_s, lambda_t = sigma.log().neg(), sigma_next.log().neg()
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1 = torch.lerp(lambda_s, lambda_t, r_1)
        lambda_s_2 = torch.lerp(lambda_s, lambda_t, r_2)
        sigma_s_1, sigma_s_2 = lambda_s_1.neg().exp(), lambda_s_2.neg().exp()
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_s_2 = sigma_s_2 * lambda_s_2.exp()
        alpha_t = sigma_next * lambda_t.exp()
        first = self._row(
            FIRST,
            sigma_s_1 / sigma * (-r_1 * h * eta).exp(),
            alpha_s_1 * _phi_1(-r_1 * h_eta),
            (zero, (-2 * r_1 * h * eta).expm1().neg().sqrt(), sigma_s_1),
            zero,
        )
        a3_2 = r_2 / r_1 * _phi_2(-r_2 * h_eta)
        segment = (r_1 - r_2) * h * eta
        second = self._row(
            COMBINATION,
            sigma_s_2 / sigma * (-r_2 * h * eta).exp(),
            alpha_s_2,
            (segment.exp(), segment.mul(2).expm1().neg().sqrt(), sigma_s_2),
            zero,
            _phi_1(-r_2 * h_eta) - a3_2,
            a3_2,
        )
        b3 = _phi_2(-h_eta) / r_2
        segment = (r_2 - 1) * h * eta
        third = self._row(
            COMBINATION,
            sigma_next / sigma * (-h * eta).exp(),
            alpha_t,
            (segment.exp(), segment.mul(2).expm1().neg().sqrt(), sigma_next),
            zero,
            _phi_1(-h_eta) - b3,
            b3,
        )
        return [(sigma, first), (sigma_s_1, second), (sigma_s_2, third)]
