"""Singlestep DPM-Solver: diffusers' `DPMSolverSinglestepScheduler` (DPM++ 2S/3S, its SDE variant, Karras sigmas).

A singlestep solver of order k spends k model calls on one step of the solver: it starts from the sample x_s of the
step's first call (kept in the state, diffusers' `sample`), and each of the k calls of diffusers' `step` goes from
x_s to the next point with the outputs gathered since, the last one to the step's end. Which order each call uses is
diffusers' order list (`get_order_list`: 1, 2, 3, 1, 2, 3, ...), capped by the outputs gathered (a run that begins
mid-schedule), so it is planned per (step, warm-up level), and each call is one linear combination:

    D0 = m_{k-1},  D1_1 = p0 (m0 - D0),  D1_0 = p1 (m1 - m2),  D1 = (r0 D1_0 - r1 D1_1) / den,
    D2 = 2 (D1_1 - D1_0) / den,  x_next = a x_s + b0 D0 + b1 D1 + b2 D2 (+ c noise)

where m0, m1, m2 are the newest converted outputs. Orders below 3 (and third-order midpoint) take r0 = 0, r1 = -1,
den = 1, which makes D1 = D1_1 exactly; zero weights add exact zeros, so every call reproduces diffusers bit for bit.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Choice, Option, Real
from ..machinery.plan import Plan, as_dtype, by_warmup, divided, scaled
from ..machinery.record import record
from . import common
from .dpm_solver import SOLVER_TYPES, VARIANCE_TYPES, DPMSolverBase, exponential_weights, solver_schedule
from .multistep import RAW_SIGMA

ALGORITHMS = ("dpmsolver++", "sde-dpmsolver++", "dpmsolver")

# Columns, per (step, warm-up level): the conversion of step i, then the order used and the update's coefficients.
ORDER, A, B0, B1, B2, P0, P1, R0, R1, DEN, NOISE = range(RAW_SIGMA + 1, RAW_SIGMA + 12)


@record(host=("cursor",))
class DPMSolverSinglestepState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    lower_order_nums: torch.Tensor  # [R], int64: steps taken, capped at solver_order (the warm-up level)
    history: tuple[torch.Tensor, ...]  # solver_order x [R, ...]: converted model outputs, newest last
    start_sample: torch.Tensor  # [R, ...]: the sample the current singlestep started from (diffusers' `sample`)
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class DPMSolverSinglestep(DPMSolverBase):
    """Singlestep DPM-Solver(++) of orders 1-3, deterministic or SDE (DPM++ 2S/3S), for VP or flow schedules.

    Implements Lu et al. (2022), "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in
    Around 10 Steps" (its singlestep DPM-Solver-2/3), and Lu et al. (2022), "DPM-Solver++: Fast Solver for Guided
    Sampling of Diffusion Probabilistic Models", with diffusers 0.42.1's options, schedule and order list.
    """

    algorithm_type: str = Option("dpmsolver++", Choice(*ALGORITHMS))
    solver_type: str = Option("midpoint", Choice(*SOLVER_TYPES))
    # diffusers sets it True (in its config, for good) where the steps are no multiple of the order, or the last
    # sigma is zero; the plan does the same for each schedule.
    lower_order_final: bool = common.LOWER_ORDER_FINAL.but(default=False)
    use_karras_sigmas: bool = common.USE_KARRAS_SIGMAS
    use_exponential_sigmas: bool = common.USE_EXPONENTIAL_SIGMAS
    use_beta_sigmas: bool = common.USE_BETA_SIGMAS
    use_flow_sigmas: bool = common.USE_FLOW_SIGMAS
    flow_shift: float = common.FLOW_SHIFT
    final_sigmas_type: str = common.FINAL_SIGMAS_TYPE
    # Timesteps whose lambda = log(alpha / sigma) lies below this are clipped (DeepFloyd IF uses -5.1).
    lambda_min_clipped: float = Option(-math.inf, Real(below=math.inf, allow_inf=True), examples=(-5.1,))
    # Learned-variance models (DeepFloyd IF) output extra channels, which the step ignores.
    variance_type: str | None = Option(None, Choice(*VARIANCE_TYPES))
    use_dynamic_shifting: bool = common.USE_DYNAMIC_SHIFTING
    # diffusers 0.42.1 asserts "exponential" where it reads this (set_timesteps with mu).
    time_shift_type: str = common.TIME_SHIFT_TYPE.but(domain=Choice("exponential"))
    sigma_min: float | None = common.REGISTERED_SIGMA_MIN
    sigma_max: float | None = common.REGISTERED_SIGMA_MAX

    #: What diffusers' singlestep class lacks of the multistep base's schedule (linspace timesteps, no offset, no
    #: zero-SNR rescaling, no Lu lambdas).
    timestep_spacing: ClassVar[str] = "linspace"
    steps_offset: ClassVar[int] = 0
    rescale_betas_zero_snr: ClassVar[bool] = False
    use_lu_lambdas: ClassVar[bool] = False

    state_type: ClassVar[type] = DPMSolverSinglestepState
    diffusers_name: ClassVar[str] = "DPMSolverSinglestepScheduler"
    plan_columns: ClassVar[int] = NOISE + 1
    _vp_spacings = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
    _zero_fields: ClassVar[tuple[str, ...]] = ("start_sample",)
    # With flow sigmas diffusers takes custom timesteps for their count alone (its flow schedule replaces them).
    _spacings_without_custom_timesteps = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")

    def _check_options(self) -> None:
        super()._check_options()
        if self.algorithm_type == "dpmsolver" and self.thresholding:
            raise ValueError(
                f"{self.name}: thresholding=True with algorithm_type='dpmsolver': diffusers 0.42.1 indexes its "
                "training table with the step's timestep, which its step does not pass, and fails with a shape "
                "error; use algorithm_type='dpmsolver++' (which thresholds x0 directly)."
            )

    # ------------------------------------------------------------------------------------------------ plan
    def _schedule(
        self, n: int | None, timesteps: torch.Tensor | None, sigmas: torch.Tensor | None, mu: float | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return solver_schedule(
            self, n, timesteps, mu, lambda_min_clipped=self.lambda_min_clipped, final=self.final_sigmas_type
        )

    def _lowers_final_order(self, n: int) -> bool:
        """Whether a schedule of n steps ends in lower orders: `lower_order_final`, or what makes diffusers set it
        (steps no multiple of the order, or a final sigma of zero)."""
        return self.lower_order_final or n % self.solver_order != 0 or self.final_sigmas_type == "zero"

    def order_list(self, n: int) -> list[int]:
        """diffusers' `get_order_list`: the order of each of n steps (before the warm-up caps it)."""
        order, cycles = self.solver_order, n // self.solver_order
        if not self._lowers_final_order(n) or order == 1:
            orders = [*range(1, order + 1)] * cycles
        elif order == 3:
            tail = {0: [1, 2, 1], 1: [1], 2: [1, 2]}[n % 3]
            orders = [1, 2, 3] * (cycles - (n % 3 == 0)) + tail
        else:
            orders = [1, 2] * (cycles - (n % 2 == 0)) + ([1, 1] if n % 2 == 0 else [1])
        if self.final_sigmas_type == "zero":
            orders[-1] = 1
        return orders

    def _orders(self, n: int) -> torch.Tensor:
        return torch.tensor(self.order_list(n), dtype=torch.int64)

    def _table(self, sigmas: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        return _coefficients(self, sigmas, orders)

    # ------------------------------------------------------------------------------------------------ step
    def step(
        self,
        state: DPMSolverSinglestepState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, DPMSolverSinglestepState] | tuple[torch.Tensor, DPMSolverSinglestepState, torch.Tensor]:
        """One call of the singlestep solver for every row: `(prev_sample, new_state)`, in `sample`'s dtype.

        `sde-dpmsolver++` needs `noise` (standard normal, `sample`'s shape); draw it with
        `functional_sched.randn_tensor(sample.shape, generator=g, dtype=torch.float32)` to match diffusers.
        `denoised=True` also returns the x0 estimate of the model's output for `sample`: `(prev_sample, new_state, x0)`.
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check(state, model_output, sample, noise, denoised, cursor)
        c = self._coefficients(state, sample, cursor)
        m0 = self._convert(model_output, sample, c)
        history = (*state.history[1:], self._kept(m0, sample))
        m = [m0, *(as_dtype(entry, m0.dtype) for entry in reversed(history[:-1]))]  # m0, m1, m2
        order = int(c[ORDER]) if cursor is not None else None  # the host knows it: skip the terms that are zero
        if order is not None:
            start = sample.clone() if order == 1 else state.start_sample  # the state's own: buffers get reused
            d0 = m[order - 1]
        else:  # every row its own order: the start and D0 picked per row; the higher terms add exact zeros
            first = c[ORDER] == 1
            start = torch.where(first, sample, state.start_sample)
            d0 = m0 if self.solver_order == 1 else torch.where(first, m0, m[1])
            d0 = torch.where(c[ORDER] == 3, m[2], d0) if self.solver_order == 3 else d0
        x = scaled(c[A], start) + scaled(c[B0], d0)
        reach = order if order is not None else self.solver_order
        if reach >= 2:
            d1_1 = scaled(c[P0], m0 - d0)
            if reach == 3 and self.solver_type == "heun":
                d1_0 = scaled(c[P1], m[1] - m[2])
                d1 = divided(scaled(c[R0], d1_0) - scaled(c[R1], d1_1), c[DEN])
                d2 = divided(2.0 * (d1_1 - d1_0), c[DEN])
                x = x + scaled(c[B1], d1) + scaled(c[B2], d2)
            else:
                x = x + scaled(c[B1], d1_1)
        if self.stochastic:
            x = x + scaled(c[NOISE], as_dtype(noise, x.dtype))
        new_state = state.replace(**self._advanced(state, cursor), history=history, start_sample=start)
        if denoised:
            return as_dtype(x, sample.dtype), new_state, self._denoised(m0, history[-1], sample, c)
        return as_dtype(x, sample.dtype), new_state


def _coefficients(scheduler: DPMSolverSinglestep, sigmas: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """The [N, order + 1, 14] table by (step, warm-up); each scalar formed as diffusers forms it in `step`."""
    n = len(sigmas) - 1
    alpha, sigma = scheduler._alpha_sigma(sigmas)
    lam = torch.log(alpha) - torch.log(sigma)
    index = torch.arange(n)
    t, s0, s1, s2 = index + 1, index, (index - 1).clamp(min=0), (index - 2).clamp(min=0)
    one, zero = torch.ones(n, dtype=sigmas.dtype), torch.zeros(n, dtype=sigmas.dtype)
    heun = scheduler.solver_type == "heun"

    def block(order: int, start: torch.Tensor) -> torch.Tensor:
        """The call of `order` at each step, from the step's start `start` (an index of sigmas) to t."""
        h = lam[t] - lam[start]
        a, first, midpoint, heun_weight, third, noise = exponential_weights(
            scheduler.data_prediction, scheduler.stochastic, alpha[t], sigma[t], alpha[start], sigma[start], h
        )
        p0, p1, b1, b2, r0, r1, den = zero, zero, zero, zero, zero, -one, one
        if order == 2:
            p0, b1 = 1.0 / ((lam[s0] - lam[s1]) / h), heun_weight if heun else midpoint
        elif order == 3:
            ratio0, ratio1 = (lam[s0] - lam[s2]) / h, (lam[s1] - lam[s2]) / h
            p0, p1, b1 = 1.0 / ratio0, 1.0 / ratio1, heun_weight
            if heun:
                b2, r0, r1, den = third, ratio0, ratio1, ratio0 - ratio1
        columns = [torch.full_like(one, order), a, first, b1, b2, p0, p1, r0, r1, den, noise]
        return torch.stack(columns, dim=-1)

    blocks = [block(1, s0), block(2, s1), block(3, s2)][: scheduler.solver_order]
    table = by_warmup(torch.stack(blocks, dim=1), orders)
    conversion = torch.stack([alpha[:n], sigma[:n], sigmas[:n]], dim=-1)
    return torch.cat([conversion[:, None].expand(-1, table.shape[1], -1), table], dim=-1)
