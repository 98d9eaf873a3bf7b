"""DEIS: diffusers' `DEISMultistepScheduler` (log-rho multistep DEIS of orders 1-3).

The solver integrates the noise prediction eps in rho = sigma / alpha, fitting a Lagrange polynomial in log rho
through the last `order` outputs. Every order is one planned linear combination per (step, warm-up level):

    x_next = o ((a x) / d + c0 m0 + c1 m1 + c2 m2)

where m0, m1, m2 are the newest converted outputs. The first order is DPM-Solver's (DDIM): o = d = 1,
a = alpha_t / alpha_s, c0 = -sigma_t (e^h - 1); the higher orders are diffusers' `alpha_t (x / alpha_s0 + sum c_k m_k)`:
a = 1, d = alpha_s0, o = alpha_t. Factors of 1 and terms of 0 are exact, so the one expression reproduces each
order of diffusers bit for bit; an eager step skips them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from ..machinery import checks, host, options
from ..machinery.options import Choice, Option
from ..machinery.plan import Plan, as_dtype, by_warmup, divided, scaled
from ..machinery.record import record
from ..machinery.schedule import Schedule
from . import common
from .dpm_solver import exponential_weights, solver_schedule
from .multistep import ALPHA, RAW_SIGMA, SIGMA, MultistepScheduler

# Columns, per (step, warm-up level): the conversion of step i, then the order used and the update's coefficients.
ORDER, A, D, C0, C1, C2, OUTER = range(RAW_SIGMA + 1, RAW_SIGMA + 8)


@record(host=("cursor",))
class DEISState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    lower_order_nums: torch.Tensor  # [R], int64: steps taken, capped at solver_order (the warm-up level)
    history: tuple[torch.Tensor, ...]  # solver_order x [R, ...]: converted outputs (epsilon), newest last
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class DEISMultistep(MultistepScheduler):
    """Log-rho multistep DEIS of orders 1-3 for VP or flow schedules.

    Implements Zhang & Chen (2023), "Fast Sampling of Diffusion Models with Exponential Integrator" (DEIS, the
    log-rho AB variant), with diffusers 0.42.1's options and schedule.
    """

    # diffusers takes "dpmsolver"/"dpmsolver++" (and midpoint/heun/bh1/bh2) and registers "deis"/"logrho" instead.
    algorithm_type: str = Option("deis", Choice("deis"))
    solver_type: str = Option("logrho", Choice("logrho"))
    lower_order_final: bool = common.LOWER_ORDER_FINAL
    use_karras_sigmas: bool = common.USE_KARRAS_SIGMAS
    use_exponential_sigmas: bool = common.USE_EXPONENTIAL_SIGMAS
    use_beta_sigmas: bool = common.USE_BETA_SIGMAS
    use_flow_sigmas: bool = common.USE_FLOW_SIGMAS
    flow_shift: float = common.FLOW_SHIFT
    timestep_spacing: str = common.TIMESTEP_SPACING
    steps_offset: int = common.STEPS_OFFSET
    use_dynamic_shifting: bool = common.USE_DYNAMIC_SHIFTING
    # diffusers 0.42.1 asserts "exponential" where it reads this (set_timesteps with mu).
    time_shift_type: str = common.TIME_SHIFT_TYPE.but(domain=Choice("exponential"))
    sigma_min: float | None = common.REGISTERED_SIGMA_MIN
    sigma_max: float | None = common.REGISTERED_SIGMA_MAX

    #: diffusers' DEIS has no zero-SNR rescaling (the multistep base reads it for the training schedule).
    rescale_betas_zero_snr: ClassVar[bool] = False

    state_type: ClassVar[type] = DEISState
    diffusers_name: ClassVar[str] = "DEISMultistepScheduler"
    plan_columns: ClassVar[int] = OUTER + 1
    _vp_spacings = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")

    def _check_options(self) -> None:
        super()._check_options()
        self._check_prediction(True, "algorithm_type='deis'")  # converts through x0: any prediction type
        common.check_sigma_range(self)

    def _solver_step_options(self) -> tuple[Any, ...]:
        return ()

    # ------------------------------------------------------------------------------------------------ plan
    def _check_schedule(self, schedule: Schedule) -> None:
        owner = self.name
        if schedule.timesteps is not None or schedule.sigmas is not None:
            raise ValueError(
                f"{owner}: custom timesteps or sigmas are not supported (diffusers' set_timesteps takes none)."
            )
        if schedule.num_inference_steps is None:
            raise ValueError(f"{owner}: give num_inference_steps.")
        if schedule.mu is not None and not self.use_dynamic_shifting:
            raise ValueError(f"{owner}: mu is only used with use_dynamic_shifting=True.")
        super()._check_schedule(schedule)

    def _schedule(
        self, n: int | None, timesteps: torch.Tensor | None, sigmas: torch.Tensor | None, mu: float | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        spaced = self.use_karras_sigmas or self.use_exponential_sigmas or self.use_beta_sigmas or self.use_flow_sigmas
        return solver_schedule(
            self,
            n,
            None,
            mu,
            spacing=self.timestep_spacing,
            steps_offset=self.steps_offset,
            final="last" if spaced else "sigma_min",
        )

    def _orders(self, n: int) -> torch.Tensor:
        """The highest order each step may use (the warm-up is applied at step time)."""
        orders = torch.full((n,), self.solver_order, dtype=torch.int64)
        if self.lower_order_final and n < 15:
            if n >= 2:
                orders[n - 2] = min(self.solver_order, 2)
            orders[n - 1] = 1
        return orders

    def _table(self, sigmas: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        return _coefficients(self, sigmas, orders)

    # ------------------------------------------------------------------------------------------------ step
    def step(
        self,
        state: DEISState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, DEISState] | tuple[torch.Tensor, DEISState, torch.Tensor]:
        """One multistep DEIS update of every row: `(prev_sample, new_state)`, prev_sample in `sample`'s dtype.

        DEIS is deterministic: `noise` is accepted, like every scheduler's step takes it, and not used.
        `denoised=True` also returns the x0 estimate of the model's output for `sample`: `(prev_sample, new_state, x0)`.
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check(state, model_output, sample, noise, denoised, cursor)
        c = self._coefficients(state, sample, cursor)
        m0 = self._convert(model_output, sample, c)
        history = (*state.history[1:], self._kept(m0, sample))
        outputs = [m0, *(as_dtype(entry, m0.dtype) for entry in reversed(history[:-1]))]  # m0, m1, m2
        order = int(c[ORDER]) if cursor is not None else None  # the host knows it: skip the exact no-op terms
        if order == 1:
            x = scaled(c[A], sample) + scaled(c[C0], m0)
        else:
            x = sample if order is not None else scaled(c[A], sample)
            x = divided(x, c[D])
            for weight, output in zip((C0, C1, C2)[: order or self.solver_order], outputs, strict=False):
                x = x + scaled(c[weight], output)
            x = scaled(c[OUTER], x)
        new_state = state.replace(**self._advanced(state, cursor), history=history)
        if denoised:
            return as_dtype(x, sample.dtype), new_state, self._denoised(m0, history[-1], sample, c)
        return as_dtype(x, sample.dtype), new_state

    def _integrates_data(self) -> bool:
        return False

    def _converts_by_identity(self) -> bool:
        return False  # epsilon is always recomputed from x0

    def _convert(self, model_output: torch.Tensor, sample: torch.Tensor, c: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """diffusers' `convert_model_output`: x0 (thresholded if configured), then the epsilon it implies.

        For flow prediction diffusers divides by the schedule's sigma (it reassigns `sigma_t`)."""
        x0 = self._data_prediction(model_output, sample, (c[ALPHA], c[SIGMA], c[RAW_SIGMA]))
        sigma = c[RAW_SIGMA] if self.prediction_type == "flow_prediction" else c[SIGMA]
        return divided(sample - scaled(c[ALPHA], x0), sigma)


def _coefficients(scheduler: DEISMultistep, sigmas: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """The [N, order + 1, 10] table by (step, warm-up); each scalar formed as diffusers forms it in `step` (its
    logarithms of rho are numpy's, as diffusers calls `np.log` on them)."""
    n = len(sigmas) - 1
    alpha, sigma = scheduler._alpha_sigma(sigmas)
    lam = torch.log(alpha) - torch.log(sigma)
    rho = sigma / alpha
    log_rho = torch.from_numpy(np.log(rho.numpy()))
    index = torch.arange(n)
    t, s0, s1, s2 = index + 1, index, (index - 1).clamp(min=0), (index - 2).clamp(min=0)
    one, zero = torch.ones(n, dtype=sigmas.dtype), torch.zeros(n, dtype=sigmas.dtype)
    a, first, *_ = exponential_weights(False, False, alpha[t], sigma[t], alpha[s0], sigma[s0], lam[t] - lam[s0])

    def second(at: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return rho[at] * (-log_rho[c] + log_rho[at] - 1) / (log_rho[b] - log_rho[c])

    def third(at: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        lt, lc, ld = log_rho[at], log_rho[c], log_rho[d]
        numerator = rho[at] * (lc * (ld - lt + 1) - ld * lt + ld + lt**2 - 2 * lt + 2)
        return numerator / ((log_rho[b] - lc) * (log_rho[b] - ld))

    def block(order: int, a, d, c0, c1, c2, outer):
        return torch.stack([torch.full_like(one, order), a, d, c0, c1, c2, outer], dim=-1)

    blocks = [block(1, a, one, first, zero, zero, one)]
    if scheduler.solver_order >= 2:
        c0 = second(t, s0, s1) - second(s0, s0, s1)
        c1 = second(t, s1, s0) - second(s0, s1, s0)
        blocks.append(block(2, one, alpha[s0], c0, c1, zero, alpha[t]))
    if scheduler.solver_order == 3:
        c0 = third(t, s0, s1, s2) - third(s0, s0, s1, s2)
        c1 = third(t, s1, s2, s0) - third(s0, s1, s2, s0)
        c2 = third(t, s2, s0, s1) - third(s0, s2, s0, s1)
        blocks.append(block(3, one, alpha[s0], c0, c1, c2, alpha[t]))
    table = by_warmup(torch.stack(blocks, dim=1), orders)
    conversion = torch.stack([alpha[:n], sigma[:n], sigmas[:n]], dim=-1)
    return torch.cat([conversion[:, None].expand(-1, table.shape[1], -1), table], dim=-1)
