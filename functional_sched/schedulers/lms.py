"""LMS: diffusers' `LMSDiscreteScheduler`, linear multistep (Adams-Bashforth) in sigma, orders 1-4.

The derivative d = (x - x0) / sigma of the probability-flow ODE dx/dsigma = d is interpolated through the last
`order` sigmas s_m by a Lagrange polynomial and integrated over the step:

    x_next = x + sum_j c_j d_j,   c_j = integral from sigma_i to sigma_i+1 of prod_{m != j} (s - s_m) / (s_j - s_m) ds

where d_0 is this step's derivative and d_j the one j steps back. diffusers integrates each polynomial with
`scipy.integrate.quad`, evaluating it in float32, at every step; here the weights are planned once per schedule, one
row per (step, warm-up level), zero where a derivative is not used, and the state keeps a fixed history of the last
four derivatives. A float64 plan holds the exact integrals (closed form, float64); a float32 plan (diffusers' working
precision) diffusers' own numbers, reproduced without scipy, which lie a few float32 ulps from them
(`lagrange_weights`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from ..machinery import checks, host, options
from ..machinery.options import Choice, Integer, Option
from ..machinery.plan import Plan, as_dtype, divided, plus, scaled, single_plan
from ..machinery.record import record
from . import common
from .sigma_discrete import SigmaDiscreteScheduler

#: The most derivatives the history keeps: the highest order.
HISTORY = 4

# Columns, per (step, warm-up level): the step's sigma, the model input's and v-prediction's factors, how many
# derivatives the update uses, then their coefficients (this step's first).
SIGMA, INPUT_SCALE, V_OUT, V_IN, USED = range(5)
C0 = USED + 1


@record(host=("cursor",))
class LMSState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    lower_order_nums: torch.Tensor  # [R], int64: derivatives held from earlier steps, capped at 3 (the warm-up level)
    history: tuple[torch.Tensor, ...]  # 4 x [R, ...]: the last derivatives (x - x0) / sigma, newest last, zero at init
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class LMSDiscrete(SigmaDiscreteScheduler):
    """Linear multistep steps of the probability-flow ODE in Karras' form, dx/dsigma = (x - x0(x, sigma)) / sigma,
    of order min(steps so far + 1, `order`).

    Implements k-diffusion's `sample_lms` (Crowson), the linear multistep method of Karras et al. (2022),
    "Elucidating the Design Space of Diffusion-Based Generative Models", in diffusers 0.42.1's form (its options
    and schedule; `order`, a `step()` argument there, is static config here).
    """

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    beta_start: float = common.BETA_START
    beta_end: float = common.BETA_END
    beta_schedule: str = common.BETA_SCHEDULE
    trained_betas: tuple[float, ...] | None = common.TRAINED_BETAS
    use_karras_sigmas: bool = common.USE_KARRAS_SIGMAS
    use_exponential_sigmas: bool = common.USE_EXPONENTIAL_SIGMAS
    use_beta_sigmas: bool = common.USE_BETA_SIGMAS
    # diffusers' LMS raises ValueError in `step` for "original_sample" (others' old name of "sample").
    prediction_type: str = Option("epsilon", Choice("epsilon", "v_prediction", "sample"))
    timestep_spacing: str = common.TIMESTEP_SPACING
    steps_offset: int = common.STEPS_OFFSET
    # diffusers' `step(order=4)`; above 4 the fixed history would not hold the derivatives.
    order: int = Option(4, Integer(minimum=1, maximum=HISTORY), examples=(1, 2, 3), step_argument=True)

    state_type: ClassVar[type] = LMSState
    diffusers_name: ClassVar[str] = "LMSDiscreteScheduler"
    plan_columns: ClassVar[int] = C0 + HISTORY
    _input_column: ClassVar[int] = INPUT_SCALE

    def _step_options(self) -> tuple[Any, ...]:
        return (self.prediction_type,)

    # ------------------------------------------------------------------------------------------------ plan
    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        n = len(timesteps)
        current = sigmas[:-1]
        input_scale = (current**2 + 1) ** 0.5
        conversion = torch.stack([current, input_scale, -current / input_scale, current**2 + 1], dim=-1)
        weights, used = lagrange_weights(sigmas, self.order)
        update = torch.cat([torch.from_numpy(used)[..., None], torch.from_numpy(weights)], dim=-1).to(sigmas.dtype)
        table = torch.cat([conversion[:, None].expand(-1, HISTORY, -1), update], dim=-1)
        reachable = torch.arange(HISTORY)[None, :] <= torch.arange(n)[:, None]  # no more derivatives than steps
        return single_plan(timesteps, sigmas, torch.where(reachable[..., None], table, torch.zeros_like(table)))

    # ------------------------------------------------------------------------------------------------ step
    def _start(
        self,
        plan: Plan,
        sample: torch.Tensor,
        step_index: torch.Tensor,
        level: torch.Tensor,
        fingerprint: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> LMSState:
        history = torch.zeros((HISTORY, *sample.shape), dtype=sample.dtype, device=sample.device).unbind(0)
        return LMSState(
            plan=plan,
            step_index=step_index,
            lower_order_nums=level,
            history=history,
            fingerprint=fingerprint,
            cursor=cursor,
        )

    def _warmup(self, state: Any) -> torch.Tensor | None:
        return state.lower_order_nums

    def step(
        self,
        state: LMSState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, LMSState] | tuple[torch.Tensor, LMSState, torch.Tensor]:
        """One linear multistep update of every row: `(prev_sample, new_state)`, or `(prev_sample, new_state, x0)`
        with `denoised=True` (diffusers' `pred_original_sample`). The arithmetic runs in `sample`'s dtype, as
        diffusers' (which does not upcast). LMS is deterministic: `noise` is accepted and not used.
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
            checks.check_sample_matches_state(self.name, sample, state.history[0].shape, state.history[0].dtype)
        c = self._coefficients(state, sample, cursor)
        x0 = self._data_prediction(model_output, sample, c[SIGMA], c[V_OUT], c[V_IN])
        derivative = divided(sample - x0, c[SIGMA])
        history = (*state.history[1:], as_dtype(derivative, sample.dtype))
        used = int(c[USED]) if cursor is not None else HISTORY  # the host knows it: skip the terms of weight 0
        # diffusers' `sum(coeff * derivative ...)`, newest first, then added to the sample.
        total = scaled(c[C0], derivative, tensor_first=True)
        for back in range(1, used):
            total = total + scaled(c[C0 + back], as_dtype(history[-1 - back], derivative.dtype), tensor_first=True)
        prev_sample = plus(total, sample, eager=cursor is not None)
        new_state = state.replace(**self._advanced(state, cursor), history=history)
        if denoised:
            return as_dtype(prev_sample, sample.dtype), new_state, as_dtype(x0, sample.dtype)
        return as_dtype(prev_sample, sample.dtype), new_state


def lagrange_weights(sigmas: torch.Tensor, order: int) -> tuple[np.ndarray, np.ndarray]:
    """The linear multistep weights of each step of `sigmas` ([N + 1]) by warm-up level: ([N, 4, 4] weights, [N, 4]
    how many are used), as diffusers' `get_lms_coefficient` gives them.

    Step i integrates the Lagrange polynomial through the last p = min(i + 1, order) sigmas (diffusers' order counts
    the step index, not the derivatives held); at warm-up level w (w derivatives held from earlier steps) it uses the
    first min(w + 1, p) weights. float64 sigmas get the exact integrals (`exact_integrals`); float32 ones diffusers'
    own numbers (`diffusers_integrals`), which they match to a few float32 ulps.
    """
    n = len(sigmas) - 1
    values = sigmas.numpy()
    by_order = exact_integrals(values, order) if sigmas.dtype == torch.float64 else diffusers_integrals(values, order)
    index = np.arange(n)
    orders = np.minimum(index + 1, order)
    used = np.minimum(np.arange(HISTORY)[None, :] + 1, orders[:, None])  # [N, 4]
    weights = by_order[index, orders][:, None, :].repeat(HISTORY, axis=1)  # [N, 4 levels, 4]
    weights = np.where(np.arange(HISTORY)[None, None, :] < used[..., None], weights, 0.0)
    return weights, used.astype(np.float64)


def _nodes(sigmas: np.ndarray) -> np.ndarray:
    """[N, 4]: sigma_i-m of each step i (clamped at the schedule's start, where no order of the step reaches)."""
    index = np.arange(len(sigmas) - 1)
    return np.stack([sigmas[np.maximum(index - m, 0)] for m in range(HISTORY)], axis=-1)


def exact_integrals(sigmas: np.ndarray, order: int) -> np.ndarray:
    """[N, 5, 4] (step, p, j): the integral of the j-th Lagrange basis polynomial through the last p sigmas over the
    step, in closed form in float64. In u = s - sigma_i, with the other nodes r_m = sigma_i-m - sigma_i and
    h = sigma_i+1 - sigma_i, the integral of prod (u - r_m) over [0, h] is sum_k (-1)^k e_k(r) h^(q-k+1) / (q-k+1),
    e_k the elementary symmetric polynomials of the q roots."""
    n = len(sigmas) - 1
    h = sigmas[1:] - sigmas[:-1]
    nodes = _nodes(sigmas) - sigmas[:-1, None]
    by_order = np.zeros((n, HISTORY + 1, HISTORY))
    for p in range(1, order + 1):
        for j in range(p):
            roots = [nodes[:, m] for m in range(p) if m != j]
            symmetric = [np.ones(n)]  # e_0, e_1, ... of the roots, built up root by root
            for root in roots:
                symmetric = [
                    *(symmetric[k] + (root * symmetric[k - 1] if k else 0) for k in range(len(symmetric))),
                    root * symmetric[-1],
                ]
            q = len(roots)
            integral = sum((-1) ** k * symmetric[k] * h ** (q - k + 1) / (q - k + 1) for k in range(q + 1))
            denominator = np.prod([nodes[:, j] - root for root in roots], axis=0)
            with np.errstate(divide="ignore", invalid="ignore"):  # orders a step cannot use: discarded
                by_order[:, p, j] = integral / denominator
    return by_order


# The 21-point Gauss-Kronrod rule (QUADPACK's `dqk21`): the nodes and weights of one half, the centre last.
_KRONROD_NODES = np.array([
    0.995657163025808080735527280689003, 0.973906528517171720077964012084452, 0.930157491355708226001207180059508,
    0.865063366688984510732096688423493, 0.780817726586416897063717578345042, 0.679409568299024406234327365114874,
    0.562757134668604683339000099272694, 0.433395394129247190799265943165784, 0.294392862701460198131126603103866,
    0.148874338981631210884826001129720, 0.0,
])  # fmt: skip
_KRONROD_WEIGHTS = np.array([
    0.011694638867371874278064396062192, 0.032558162307964727478818972459390, 0.054755896574351996031381300244580,
    0.075039674810919952767043140916190, 0.093125454583697605535065465083366, 0.109387158802297641899210590325805,
    0.123491976262065851077208745458401, 0.134709217311473325928054001771707, 0.142775938577060080797094273138717,
    0.147739104901338491374841515972068, 0.149445554002916905664936468389821,
])  # fmt: skip
#: The order `dqk21` adds the node pairs in (its Gauss nodes, then the others).
_KRONROD_ORDER = (1, 3, 5, 7, 9, 0, 2, 4, 6, 8)


def diffusers_integrals(sigmas: np.ndarray, order: int) -> np.ndarray:
    """[N, 5, 4] as `exact_integrals`, as diffusers 0.42.1 computes them: `scipy.integrate.quad` of the Lagrange
    polynomial evaluated on its float32 sigma table in float32 (the node rounded to float32, each factor
    `(tau - s_k) / (s_j - s_k)` and the product in float32). A polynomial of degree 3 passes quad's first 21-point
    Gauss-Kronrod estimate (its float32 noise is far below `epsrel=1e-4`), so that one rule, summed in float64 in
    `dqk21`'s order, reproduces its result bit for bit (checked against diffusers in `tests/test_lms.py`)."""
    n = len(sigmas) - 1
    table, sigmas = sigmas.astype(np.float32), sigmas.astype(np.float64)
    centre = 0.5 * (sigmas[:-1] + sigmas[1:])
    half = 0.5 * (sigmas[1:] - sigmas[:-1])
    nodes = _nodes(table)
    by_order = np.zeros((n, HISTORY + 1, HISTORY))

    def integrand(tau: np.ndarray, p: int, j: int) -> np.ndarray:
        tau, product = tau.astype(np.float32), np.ones(n, dtype=np.float32)
        for k in range(p):
            if k != j:
                product = product * ((tau - nodes[:, k]) / (nodes[:, j] - nodes[:, k]))
        return product.astype(np.float64)

    with np.errstate(divide="ignore", invalid="ignore"):  # orders a step cannot use: discarded
        for p in range(1, order + 1):
            for j in range(p):
                total = _KRONROD_WEIGHTS[10] * integrand(centre, p, j)
                for node in _KRONROD_ORDER:
                    offset = half * _KRONROD_NODES[node]
                    pair = integrand(centre - offset, p, j) + integrand(centre + offset, p, j)
                    total = total + _KRONROD_WEIGHTS[node] * pair
                by_order[:, p, j] = total * half
    return by_order
