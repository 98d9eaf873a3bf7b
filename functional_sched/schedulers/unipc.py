"""UniPC: diffusers' `UniPCMultistepScheduler` (Wan 2.1/2.2, and a common SD/SDXL choice).

Each step first corrects the sample it is given with the new model output (UniC, from the previous step's
predictor order), then predicts the next one (UniP). Both are the same planned linear combination:

    x_next = a x - b m0 - g (r0 (m1 - m0) / k1 + r1 (m2 - m0) / k2 [+ r_last (m_new - m0)])

with coefficients per (step, order) computed once, in diffusers' order of operations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Choice, Flag, Integers, Option, Optional, Real
from ..machinery.plan import Plan, as_dtype, by_warmup, divided, scaled
from ..machinery.record import record
from ..machinery.schedule import Schedule
from ..math import predictions, schedules
from . import common
from .multistep import ALPHA, RAW_SIGMA, SIGMA, MultistepScheduler

SOLVER_TYPES = ("bh1", "bh2")

# Columns, per (step, warm-up): the conversion of step i and whether it corrects, then the predictor's block and
# the corrector's block (the corrector repeats the previous step's predictor order, min(its cap, warm-up)).
CORRECTS = RAW_SIGMA + 1
HEADER = CORRECTS + 1
# RHO_LAST: the corrector's weight of the new model output; ORDER: the block's order (1, 2 or 3).
A, B, G, RHO0, RHO1, RHO_LAST, K1, K2, ORDER = range(9)
BLOCK = 9
PREDICTOR, CORRECTOR = HEADER, HEADER + BLOCK


@record(host=("cursor",))
class UniPCState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    lower_order_nums: torch.Tensor  # [R], int64: steps taken, capped at solver_order (the warm-up level)
    history: tuple[torch.Tensor, ...]  # solver_order x [R, ...]: converted model outputs, newest last
    last_sample: torch.Tensor  # [R, ...]: the (corrected) sample the last predictor started from
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class UniPCMultistep(MultistepScheduler):
    """UniPC predictor-corrector multistep solver of orders 1-3 (B(h) = h or e^h - 1).

    Implements Zhao et al. (2023), "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
    Diffusion Models", with diffusers 0.42.1's options and schedule.
    """

    predict_x0: bool = Option(True, Flag())
    solver_type: str = Option("bh2", Choice(*SOLVER_TYPES))
    lower_order_final: bool = common.LOWER_ORDER_FINAL
    # Steps (by index) whose corrector is skipped; diffusers' list, kept as a tuple.
    disable_corrector: tuple[int, ...] = Option((), Integers(), examples=((0,), (0, 1, 2, 5)))
    use_karras_sigmas: bool = common.USE_KARRAS_SIGMAS
    use_exponential_sigmas: bool = common.USE_EXPONENTIAL_SIGMAS
    use_beta_sigmas: bool = common.USE_BETA_SIGMAS
    use_flow_sigmas: bool = common.USE_FLOW_SIGMAS
    flow_shift: float = common.FLOW_SHIFT
    timestep_spacing: str = common.TIMESTEP_SPACING
    steps_offset: int = common.STEPS_OFFSET
    final_sigmas_type: str = common.FINAL_SIGMAS_TYPE
    rescale_betas_zero_snr: bool = common.RESCALE_BETAS_ZERO_SNR
    use_dynamic_shifting: bool = common.USE_DYNAMIC_SHIFTING
    time_shift_type: str = common.TIME_SHIFT_TYPE
    # The range of Karras/exponential/beta sigmas, when not the training schedule's.
    sigma_min: float | None = Option(None, Optional(Real(above=0)), examples=(0.0292, 0.1))
    sigma_max: float | None = Option(None, Optional(Real(above=0)), examples=(14.6, 80.0))
    shift_terminal: float | None = common.SHIFT_TERMINAL

    state_type: ClassVar[type] = UniPCState
    diffusers_name: ClassVar[str] = "UniPCMultistepScheduler"
    plan_columns: ClassVar[int] = CORRECTOR + BLOCK
    _vp_spacings = ("use_exponential_sigmas", "use_beta_sigmas")  # Karras sigmas it maps to flow ones (s / (s + 1))

    def _check_options(self) -> None:
        super()._check_options()
        owner = self.name
        self._check_prediction(self.predict_x0, f"predict_x0={self.predict_x0}")
        common.check_sigma_range(self)
        if self.final_sigmas_type == "zero" and (self.solver_type == "bh1" or not self.predict_x0):
            raise ValueError(
                f"{owner}: solver_type={self.solver_type!r} with predict_x0={self.predict_x0} and "
                "final_sigmas_type='zero' makes B(h) infinite at the last step, and diffusers 0.42.1 returns NaN "
                "there; use final_sigmas_type='sigma_min' (or solver_type='bh2' with predict_x0=True)."
            )
        if self.final_sigmas_type == "zero" and not self.lower_order_final and self.solver_order > 1:
            raise ValueError(
                f"{owner}: lower_order_final=False with final_sigmas_type='zero' runs the last step at order "
                f"{self.solver_order} into sigma = 0, where the step ratios vanish and diffusers 0.42.1 returns inf; "
                "keep lower_order_final=True or use final_sigmas_type='sigma_min'."
            )
        if self.shift_terminal is not None and not self.use_flow_sigmas:
            raise ValueError(f"{owner}: shift_terminal is only supported with use_flow_sigmas=True (as in diffusers).")

    def _solver_step_options(self) -> tuple[Any, ...]:
        return (self.predict_x0,)

    # ------------------------------------------------------------------------------------------------ plan
    def _check_schedule(self, schedule: Schedule) -> None:
        owner = self.name
        if schedule.timesteps is not None:
            raise ValueError(f"{owner}: custom timesteps are not supported (diffusers' set_timesteps takes none).")
        if self.use_dynamic_shifting and schedule.mu is None:
            raise ValueError(f"{owner}: use_dynamic_shifting=True needs mu; pass init(..., mu=...).")
        if schedule.sigmas is not None and not self.use_flow_sigmas:
            raise ValueError(f"{owner}: custom sigmas need use_flow_sigmas=True (as in diffusers).")
        if schedule.num_inference_steps is None and schedule.sigmas is None:
            raise ValueError(f"{owner}: give num_inference_steps or custom sigmas.")
        super()._check_schedule(schedule)

    def _schedule(
        self, n: int | None, timesteps: torch.Tensor | None, custom_sigmas: torch.Tensor | None, mu: float | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if custom_sigmas is not None:
            n = len(custom_sigmas)
        train = self.num_train_timesteps
        train_sigmas = schedules.vp_sigmas(self._training_cumprod())
        timesteps = schedules.spaced_timesteps(self.timestep_spacing, n, train, self.steps_offset, train)
        converted = self.use_karras_sigmas or self.use_exponential_sigmas or self.use_beta_sigmas
        if converted:
            base = custom_sigmas if custom_sigmas is not None else train_sigmas
            log_sigmas = torch.log(base)
            smallest = self.sigma_min if self.sigma_min is not None else base[0].item()
            largest = self.sigma_max if self.sigma_max is not None else base[-1].item()
            if self.use_karras_sigmas:
                sigmas = schedules.karras_sigmas(smallest, largest, n)
            elif self.use_exponential_sigmas:
                sigmas = schedules.exponential_sigmas(smallest, largest, n)
            else:
                sigmas = schedules.beta_sigmas(smallest, largest, n)
            if self.use_karras_sigmas and self.use_flow_sigmas:
                sigmas = sigmas / (sigmas + 1)
                timesteps = sigmas * train
            else:
                timesteps = schedules.sigma_to_t(sigmas, log_sigmas)
                timesteps = timesteps.round() if self.use_karras_sigmas else timesteps
            final = sigmas[-1]
        elif self.use_flow_sigmas:
            sigmas = self._flow_sigmas(n, custom_sigmas, mu)
            timesteps = sigmas * train
            final = sigmas[-1]
        else:
            sigmas = train_sigmas[timesteps.clamp(0, train - 1)].to(torch.float64)  # np.interp at integers
            final = train_sigmas[0]
        final = final if self.final_sigmas_type == "sigma_min" else torch.zeros(())
        sigmas = torch.cat([sigmas.to(torch.float32), final.reshape(1).to(torch.float32)])
        return timesteps.to(torch.int64), sigmas

    def _flow_sigmas(self, n: int, custom_sigmas: torch.Tensor | None, mu: float | None) -> torch.Tensor:
        """The steps' flow sigmas (float64, no final one) of `use_flow_sigmas`: diffusers 0.42.1's grid (a hook:
        sglang's copy of this class spaces them as diffusers 0.35 did, `flow_unipc.SglangUniPCMultistep`)."""
        train = self.num_train_timesteps
        sigmas = custom_sigmas if custom_sigmas is not None else schedules.np_linspace(1, 1 / train, n + 1)[:-1]
        if self.use_dynamic_shifting:
            sigmas = schedules.time_shift(sigmas, mu, self.time_shift_type)
        else:
            sigmas = schedules.shift_sigmas(sigmas, self.flow_shift)
        if self.shift_terminal:
            sigmas = schedules.stretch_to_terminal(sigmas, self.shift_terminal)
        if math.fabs(sigmas[0].item() - 1) < 1e-6:
            sigmas = torch.cat([sigmas[:1] - 1e-6, sigmas[1:]])  # diffusers' eps: keeps log(sigma_t) finite
        return sigmas

    def _corrector_rhos(self, ratio: torch.Tensor, weights: list[torch.Tensor], solved: torch.Tensor) -> torch.Tensor:
        """The order-2 corrector's rhos [N, 2] by step: diffusers' `linalg.solve` (`solved`; a hook: Wan's original
        UniPC solves the 2x2 system by Cramer's rule from the step ratio `ratio` and the weights b_1, b_2)."""
        return solved

    def _corrector_weights_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype an order-2 corrector weighs the earlier output's difference in, for samples of `dtype`: the
        sample's, as diffusers casts its rhos (a hook: Wan's original UniPC keeps them float32)."""
        return dtype

    def _orders(self, n: int) -> torch.Tensor:
        """The highest order each step may use (the warm-up is applied at step time)."""
        if not self.lower_order_final:
            return torch.full((n,), self.solver_order, dtype=torch.int64)
        return torch.clamp(n - torch.arange(n), max=self.solver_order)

    def _table(self, sigmas: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        return _coefficients(self, sigmas, orders)

    _zero_fields: ClassVar[tuple[str, ...]] = ("last_sample",)

    # ------------------------------------------------------------------------------------------------ step
    def step(
        self,
        state: UniPCState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, UniPCState] | tuple[torch.Tensor, UniPCState, torch.Tensor]:
        """Correct `sample` with `model_output`, then predict the next sample: `(prev_sample, new_state)`.

        UniPC is deterministic: `noise` is accepted, like every scheduler's step takes it, and not used.
        `denoised=True` also returns the x0 estimate of the model's output for `sample` (diffusers' `x0_pred`):
        `(prev_sample, new_state, x0)`.
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check(state, model_output, sample, noise, denoised, cursor)
        c = self._coefficients(state, sample, cursor)
        m_new = self._convert(model_output, sample, c)
        corrector, given = c[CORRECTOR : CORRECTOR + BLOCK], sample
        # The state keeps the sample it was given only as its own copy: the caller may reuse that buffer.
        sample = _pick(c[CORRECTS] > 0, lambda: self._update(corrector, state.last_sample, state.history, m_new), given)
        sample = sample.clone() if sample is given else sample
        history = (*state.history[1:], self._kept(m_new, sample))
        prev_sample = self._update(c[PREDICTOR : PREDICTOR + BLOCK], sample, history, None, m_new.dtype)
        new_state = state.replace(**self._advanced(state, cursor), history=history, last_sample=sample)
        if denoised:
            return prev_sample, new_state, self._denoised(m_new, history[-1], given, c)
        return prev_sample, new_state

    def _update(
        self,
        c: tuple[torch.Tensor, ...],
        x: torch.Tensor,
        history: tuple[torch.Tensor, ...],
        m_new: torch.Tensor | None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """`a x - b m0 - g residual`: UniP when `m_new` is None (m0 is the newest output), else UniC.

        The history entries take the converted outputs' dtype (`m_new`'s, or `dtype`), as diffusers keeps them.
        """
        dtype = m_new.dtype if m_new is not None else dtype
        m0 = as_dtype(history[-1], dtype)
        # Every coefficient of the update rounds as a device coefficient in diffusers' UniPC (cast to a half-precision
        # sample's dtype before the product: measured on an H100), unlike its model-output conversion.
        base = scaled(c[A], x, on_host=False) - scaled(c[B], m0, on_host=False)
        # The weighted differences of the earlier outputs (diffusers' einsum, absent at order 1)...
        weighted = None
        if self.solver_order >= 2:
            d1 = divided(as_dtype(history[-2], dtype) - m0, c[K1])
            if self.solver_order == 3:
                d2 = divided(as_dtype(history[-3], dtype) - m0, c[K2])
                weighted = _weighted_sum(c[RHO0], d1, c[RHO1], d2)
            else:  # the einsum promotes to its weights' dtype, the sample's: a bf16 difference is weighed in float32
                weights_dtype = x.dtype if m_new is None else self._corrector_weights_dtype(x.dtype)
                weighted = scaled(c[RHO0], as_dtype(d1, weights_dtype), on_host=False)
        if m_new is None:
            residual = weighted if weighted is not None else torch.zeros_like(m0)
            return base - scaled(c[G], residual, on_host=False)
        # ... and, for the corrector, the new output's weight; diffusers adds them, or, at order 1, adds a Python 0,
        # so that with float32 latents and a bf16 model the order-1 residual stays bf16 and the others do not.
        latest = scaled(c[RHO_LAST], m_new - m0, on_host=False)
        if weighted is None:
            return base - scaled(c[G], latest, on_host=False)
        correction = scaled(c[G], weighted + latest, on_host=False)
        if latest.dtype != weighted.dtype:
            correction = _pick(c[ORDER] == 1, lambda: scaled(c[G], latest, on_host=False), correction)
        return as_dtype(base - correction, x.dtype) if weighted.dtype != x.dtype else base - correction

    def _integrates_data(self) -> bool:
        return self.predict_x0

    def _converts_by_identity(self) -> bool:
        if self.predict_x0:
            return self.prediction_type == "sample" and not self.thresholding
        return self.prediction_type == "epsilon"

    def _convert(self, model_output: torch.Tensor, sample: torch.Tensor, c: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """diffusers' `convert_model_output`: x0 with `predict_x0`, else epsilon."""
        alpha, sigma, raw_sigma = c[ALPHA], c[SIGMA], c[RAW_SIGMA]
        if self.predict_x0:
            return self._data_prediction(model_output, sample, (alpha, sigma, raw_sigma))
        return predictions.to_noise(self.prediction_type, model_output, sample, alpha, sigma)


def _pick(condition: torch.Tensor, if_true: Callable[[], torch.Tensor], otherwise: torch.Tensor) -> torch.Tensor:
    """`if_true()` where `condition`, else `otherwise`: per row with `torch.where` for per-row coefficients,
    branch-free; for one host scalar (the eager fast path), `if_true` runs only if the condition holds."""
    if condition.dim() > 0:
        return torch.where(condition, if_true(), otherwise)
    return if_true() if bool(condition) else otherwise


def _weighted_sum(w0: torch.Tensor, d0: torch.Tensor, w1: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
    """`w0 d0 + w1 d1` rounded as diffusers' `einsum("k,bk...")` rounds it: once, from float32, for half types."""
    if d0.dtype in (torch.float32, torch.float64):
        return scaled(w0, d0, on_host=False) + scaled(w1, d1, on_host=False)
    w0, w1 = w0.to(d0.dtype).float(), w1.to(d1.dtype).float()  # the weights are cast to the sample's dtype first
    return (scaled(w0, d0.float(), on_host=False) + scaled(w1, d1.float(), on_host=False)).to(d0.dtype)


def _coefficients(scheduler: UniPCMultistep, sigmas: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """The [N, order + 1, HEADER + 2 * BLOCK] table by (step, warm-up); each scalar formed as diffusers does."""
    n, max_order = len(sigmas) - 1, scheduler.solver_order
    alpha, sigma = scheduler._alpha_sigma(sigmas)
    lam = torch.log(alpha) - torch.log(sigma)
    index = torch.arange(n)
    t, s0 = index + 1, index
    h = lam[t] - lam[s0]
    # k1, k2: the ratios r_k = (lambda_{s_k} - lambda_{s0}) / h of the two steps before; 1 where there are none.
    ratios = [(lam[(index - k).clamp(min=0)] - lam[s0]) / h for k in (1, 2)]
    hh = -h if scheduler.predict_x0 else h
    h_phi_1 = torch.expm1(hh)
    b_h = hh if scheduler.solver_type == "bh1" else torch.expm1(hh)
    alpha_t, sigma_t = alpha[t], sigma[t]
    if scheduler.predict_x0:
        a, b, g = sigma_t / sigma[s0], alpha_t * h_phi_1, alpha_t * b_h
    else:
        a, b, g = alpha_t / alpha[s0], sigma_t * h_phi_1, sigma_t * b_h
    # b_j = j! h phi_j(hh) / B(h), j = 1..order (UniPC, eq. 8), by diffusers' recurrence.
    weights, h_phi_k, factorial = [], h_phi_1 / hh - 1, 1
    for j in range(1, max_order + 1):
        weights.append(h_phi_k * factorial / b_h)
        factorial *= j + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    one, zero = torch.ones_like(h), torch.zeros_like(h)

    def block(order, rho0, rho1, rho_last, k1, k2):
        return torch.stack([a, b, g, rho0, rho1, rho_last, k1, k2, torch.full_like(h, order)], dim=-1)

    def solve(size: int, last_ratio_is_one: bool) -> torch.Tensor:
        """diffusers' rhos: solve R rho = b, R_jk = r_k^j, with r = (r_1, ..., 1); identity where unusable."""
        columns = [*ratios[: size - 1], one] if last_ratio_is_one else ratios[:size]
        matrix = torch.stack([torch.stack([torch.pow(r, j) for r in columns], dim=-1) for j in range(size)], dim=-2)
        usable = torch.minimum(orders, index + 1) >= (size if last_ratio_is_one else size + 1)
        matrix = torch.where(usable[:, None, None], matrix, torch.eye(size, dtype=matrix.dtype))
        return torch.linalg.solve(matrix, torch.stack(weights[:size], dim=-1))

    half = torch.full_like(h, 0.5)
    ones_k = [torch.where(torch.isfinite(r) & (r != 0), r, one) for r in ratios]
    predictor = [block(1, zero, zero, zero, one, one), block(2, half, zero, zero, ones_k[0], one)]
    corrector = [block(1, zero, zero, half, one, one)]
    if max_order >= 2:
        rho = scheduler._corrector_rhos(ratios[0], weights, solve(2, last_ratio_is_one=True))
        corrector.append(block(2, rho[:, 0], zero, rho[:, 1], ones_k[0], one))
    if max_order >= 3:
        rho = solve(2, last_ratio_is_one=False)
        predictor.append(block(3, rho[:, 0], rho[:, 1], zero, ones_k[0], ones_k[1]))
        rho = solve(3, last_ratio_is_one=True)
        corrector.append(block(3, rho[:, 0], rho[:, 1], rho[:, 2], ones_k[0], ones_k[1]))
    steps = torch.arange(n)
    predictor_table = by_warmup(torch.stack(predictor[:max_order], dim=1), orders)
    # The corrector of step i repeats the predictor of step i - 1 (same sigmas) at that step's order, which is
    # min(its cap, warm-up): the table of step i - 1 one warm-up level down. Step 0 and warm-up 0 never correct.
    previous = by_warmup(torch.stack(corrector[:max_order], dim=1), orders)
    corrector_table = torch.zeros_like(previous)
    corrector_table[1:, 1:] = previous[:-1, :-1]
    enabled = torch.tensor([i > 0 and (i - 1) not in scheduler.disable_corrector for i in range(n)])
    warmup = torch.arange(max_order + 1)
    corrects = enabled[:, None] & (warmup[None, :] >= 1) & (warmup[None, :] <= steps[:, None])
    corrector_table = torch.where(corrects[..., None], corrector_table, torch.zeros_like(corrector_table))
    # A block a step never applies is zero but for its ratios, which are 1: a branch-free step (the device path)
    # computes the update it then discards, and a zero ratio there would divide by zero: inf in the discarded
    # branch, and NaN in the gradient through `torch.where`.
    for table in (predictor_table, corrector_table):
        ratios = table[..., K1 : K2 + 1]
        ratios.copy_(torch.where(ratios == 0, torch.ones_like(ratios), ratios))
    header = torch.stack([alpha[:n], sigma[:n], sigmas[:n]], dim=-1)[:, None].expand(-1, max_order + 1, -1)
    return torch.cat([header, corrects[..., None].to(sigmas.dtype), predictor_table, corrector_table], dim=-1)
