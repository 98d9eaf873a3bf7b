"""IPNDM: diffusers' `IPNDMScheduler`, improved pseudo numerical methods (fourth-order pseudo linear multistep).

diffusers keeps its own schedule, not a training table: on t = linspace(1, 0, n + 1), the noise level
sigma_t = sin(pi t / 2)^2 (its `betas`), alpha_t = sqrt(1 - sigma_t^2) (its `alphas`), and the timesteps
atan2(sigma, alpha) * 2 / pi (float32, in [0, 1]). The model predicts v (x = alpha x0 + sigma eps,
v = alpha eps - sigma x0): each call converts it to epsilon, e = sigma x + alpha v (diffusers' `ets`), combines the
newest e with the ones before by Adams-Bashforth weights of order 1, 2, 3, then 4 (warm-up), and transfers x by
DDIM's formula with the combination E:

    x0 = (x - sigma E) / max(alpha, 1e-8),    x_prev = alpha_prev x0 + sigma_prev E.

The plan holds one row per (step, warm-up level): the level's weights and the step's scalars; the state keeps the
three previous e as fixed buffers shaped like the sample (zero at first, diffusers' `ets` list), newest last. The
first step of the default schedule is at alpha = 0: there e = x and x0 = 0 whatever the model says. Each term is
formed in diffusers' order, so float32 steps reproduce diffusers bit for bit; an eager step whose host knows the
level multiplies by diffusers' own Python weights and skips the zero terms.

Implements Zhang & Chen (2023), "Fast Sampling of Diffusion Models with Exponential Integrator" (iPNDM, the improved
pseudo numerical method of their section 5 and appendix), after Liu et al. (2022), "Pseudo Numerical Methods for
Diffusion Models on Manifolds" (formula (9)'s transfer), with diffusers 0.42.1's schedule and warm-up.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Numbers, Option, Optional
from ..machinery.plan import Plan, as_dtype, divided, plus, scaled, single_plan
from ..machinery.record import record
from ..machinery.schedule import Schedule
from ..machinery.scheduler import Scheduler
from ..math import predictions
from . import common
from .pndm import _opmath

#: The Adams-Bashforth combinations of diffusers' warm-up, by level (outputs kept before this call): the weights of
#: the newest e and the history's, newest first, then the divisor and the factor, as its `step` writes them.
PHASES = (
    ((1, 0, 0, 0), 1, 1),
    ((3, -1, 0, 0), 2, 1),
    ((23, -16, 5, 0), 12, 1),
    ((55, -59, 37, -9), 1, 1 / 24),
)
HISTORY = 3  # the previous e an order-4 step reads

# Columns of the coefficient table: the level's weights, divisor and factor; the step's sigma, alpha, max(alpha,
# 1e-8), the next level's alpha and sigma; and whether diffusers' x0 is exactly 0 (a first step at alpha = 0,
# sigma = 1, where E = x: x0 = (x - E) / 1e-8 = 0, taken as 0 so that derivatives do not cancel terms of 1e8).
W0, W1, W2, W3, DIVISOR, FACTOR, SIGMA, ALPHA, ALPHA_FLOOR, ALPHA_PREV, SIGMA_PREV, AT_NOISE = range(12)


@record(host=("cursor",))
class IPNDMState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    lower_order_nums: torch.Tensor  # [R], int64: steps taken since init, capped at 3 (the warm-up level)
    history: tuple[torch.Tensor, ...]  # 3 x [R, ...]: the previous steps' e, newest last (diffusers' `ets`)
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class IPNDM(Scheduler):
    """Improved pseudo linear multistep (iPNDM): Adams-Bashforth of order up to 4 on the epsilon of a v-prediction
    model, DDIM's transfer, on diffusers' sin^2 schedule.

    Implements Zhang & Chen (2023), "Fast Sampling of Diffusion Models with Exponential Integrator" (iPNDM), with
    diffusers 0.42.1's schedule, warm-up and arithmetic.
    """

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    # The noise level sigma of each point of the schedule (diffusers names them betas), the last one's included: the
    # schedule has one step fewer than values, whatever num_inference_steps says (as diffusers' set_timesteps).
    trained_betas: tuple[float, ...] | None = Option(
        None, Optional(Numbers()), examples=(tuple(1 - index / 10 for index in range(11)),)
    )

    state_type: ClassVar[type] = IPNDMState
    diffusers_name: ClassVar[str] = "IPNDMScheduler"
    plan_columns: ClassVar[int] = AT_NOISE + 1
    #: What the model predicts: the velocity (diffusers' step reads `sample * sigma + model_output * alpha` as eps).
    prediction_type: ClassVar[str] = "v_prediction"

    def _step_options(self) -> tuple[Any, ...]:
        return ()

    def _check_options(self) -> None:
        betas = self.trained_betas
        if betas is not None and any(abs(beta) > 1 for beta in betas):
            raise ValueError(
                f"{self.name}: trained_betas are noise levels sigma in [-1, 1] (alpha = sqrt(1 - sigma^2)), got "
                f"{[beta for beta in betas if abs(beta) > 1][:3]}; diffusers takes the square root of a negative "
                "number and returns NaN."
            )
        if betas is not None and len(betas) < 2:
            raise ValueError(
                f"{self.name}: trained_betas needs at least two values (a step goes from one to the next), got "
                f"{len(betas)}."
            )

    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (1 - sigma**2) ** 0.5, sigma

    # ------------------------------------------------------------------------------------------------ plan
    def _check_schedule(self, schedule: Schedule) -> None:
        for name in ("timesteps", "sigmas"):
            if getattr(schedule, name) is not None:
                raise ValueError(f"{self.name}: custom {name} are not supported (diffusers' set_timesteps takes none).")
        if schedule.num_inference_steps is None:
            raise ValueError(f"{self.name}: give num_inference_steps.")
        super()._check_schedule(schedule)

    def _custom_range(self, name: str) -> tuple[float, float, bool]:
        return 0.0, 1.0, False  # none is taken (`_check_schedule`); the timesteps lie in [0, 1]

    def _levels(self, n: int, dtype: torch.dtype) -> torch.Tensor:
        """diffusers' `betas` of an n-step schedule: sin(pi t / 2)^2 on t = linspace(1, 0, n + 1), the last t 0; or
        the trained ones."""
        if self.trained_betas is not None:
            return torch.tensor(self.trained_betas, dtype=torch.float32).to(dtype)
        steps = torch.linspace(1, 0, n + 1, dtype=dtype)[:-1]
        steps = torch.cat([steps, torch.tensor([0.0], dtype=dtype)])
        return torch.sin(steps * math.pi / 2) ** 2

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        assert num_inference_steps is not None
        sigmas = self._levels(num_inference_steps, dtype)
        alphas = (1.0 - sigmas**2) ** 0.5
        timesteps = (torch.atan2(sigmas, alphas) / math.pi * 2)[:-1].to(torch.float32)
        return self._plan_from_tables(timesteps, sigmas)

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        alphas = (1.0 - sigmas**2) ** 0.5
        steps, dtype = timesteps.shape[0], sigmas.dtype
        per_step = torch.stack([sigmas[:-1], alphas[:-1], alphas[:-1].clamp(min=1e-8), alphas[1:], sigmas[1:]], dim=-1)
        phases = torch.tensor([[*weights, divisor, factor] for weights, divisor, factor in PHASES], dtype=dtype)
        at_noise = torch.zeros(steps, len(PHASES), 1, dtype=dtype)
        at_noise[:, 0, 0] = ((alphas[:-1] == 0) & (sigmas[:-1] == 1)).to(dtype)
        coefficients = torch.cat(
            [phases[None].expand(steps, -1, -1), per_step[:, None].expand(-1, len(PHASES), -1), at_noise], dim=-1
        )
        return single_plan(timesteps, sigmas, coefficients)

    # ------------------------------------------------------------------------------------------------ step
    def _start(
        self,
        plan: Plan,
        sample: torch.Tensor,
        step_index: torch.Tensor,
        level: torch.Tensor,
        fingerprint: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> IPNDMState:
        # Three allocations, not slices of one: a buffer of three small latents passes the allocator's mmap threshold,
        # and its pages, faulted in and unmapped within the first steps, cost an eager loop a fifth of its time.
        zeros = tuple(torch.zeros_like(sample, memory_format=torch.contiguous_format) for _ in range(HISTORY))
        return IPNDMState(
            plan=plan,
            step_index=step_index,
            lower_order_nums=level,
            history=zeros,
            fingerprint=fingerprint,
            cursor=cursor,
        )

    def _warmup(self, state: Any) -> torch.Tensor | None:
        return state.lower_order_nums

    def step(
        self,
        state: IPNDMState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, IPNDMState] | tuple[torch.Tensor, IPNDMState, torch.Tensor]:
        """One call of diffusers' `step` for every row: `(prev_sample, new_state)`, prev_sample in `sample`'s dtype.

        `model_output` is the model's v prediction. `denoised=True` also returns the x0 of this call's output at the
        sample it was given, alpha x - sigma v (diffusers returns none): `(prev_sample, new_state, x0)`. `noise` is
        ignored (IPNDM is deterministic).
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
            checks.check_sample_matches_state(self.name, sample, state.history[0].shape, state.history[0].dtype)
        c = self._coefficients(state, sample, cursor)
        # diffusers' `ets`: sample * sigma + model_output * alpha, each product in its tensor's dtype.
        eager = cursor is not None
        e = plus(
            scaled(c[ALPHA], model_output, tensor_first=True), scaled(c[SIGMA], sample, tensor_first=True), eager=eager
        )
        if cursor is not None:
            combined = _known_level(e, state.history, PHASES[cursor.level])
        else:
            combined = _any_level(e, tuple(as_dtype(entry, e.dtype) for entry in state.history[::-1]), c)
        if cursor is not None and cursor.level == 0 and bool(c[AT_NOISE]):  # only a first step can be at alpha = 0
            x0 = torch.zeros_like(combined)
        else:
            x0 = divided(sample - scaled(c[SIGMA], combined), c[ALPHA_FLOOR])
            if cursor is None:
                x0 = torch.where(c[AT_NOISE] > 0, torch.zeros_like(x0), x0)
        prev_sample = plus(scaled(c[SIGMA_PREV], combined, tensor_first=True), scaled(c[ALPHA_PREV], x0), eager=eager)
        kept = as_dtype(e, sample.dtype)
        new_state = state.replace(**self._advanced(state, cursor), history=(*state.history[1:], kept))
        prev_sample = as_dtype(prev_sample, sample.dtype)
        if denoised:
            x0 = predictions.to_data("v_prediction", model_output, sample, c[ALPHA], c[SIGMA], c[SIGMA])
            return prev_sample, new_state, as_dtype(x0, sample.dtype)
        return prev_sample, new_state


def _known_level(e: torch.Tensor, history: tuple[torch.Tensor, ...], phase: tuple[Any, ...]) -> torch.Tensor:
    """The eager combination, where the host knows the level: diffusers' operations with its Python weights, the
    zero terms skipped (`history` oldest first, as the state keeps it)."""
    weights, divisor, factor = phase
    combined = e if weights[0] == 1 else weights[0] * e
    for back, weight in enumerate(weights[1:], start=1):
        if not weight:
            continue
        term = as_dtype(history[-back], e.dtype)
        if weight == -1:
            combined = combined - term
        else:
            combined = combined + weight * term if weight > 0 else combined - (-weight) * term
    if divisor != 1:
        combined = combined / divisor
    return combined if factor == 1 else factor * combined


def _any_level(e: torch.Tensor, history: tuple[torch.Tensor, ...], c: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The combination of any level, per row: every term with its row's weight (a zero weight adds an exact zero, the
    buffers being zero before they are filled); branch-free, so it compiles and steps rows at different levels."""
    combined = _opmath(c[W0], e)
    for weight, term in zip((W1, W2, W3), history, strict=True):
        combined = combined + _opmath(c[weight], term)
    return _opmath(c[FACTOR], divided(combined, c[DIVISOR]))
