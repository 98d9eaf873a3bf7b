"""Log-probabilities of stochastic steps, for RL fine-tuning (DDPO, Flow-GRPO and their kin).

Every stochastic step of the core adds its noise affinely: `step(state, model_output, sample, noise=z)` is
`mean + std * z` elementwise, where mean and std depend on the state, the model output and the sample but not on `z`,
a fresh standard normal. Given the model output, the step is then the Gaussian transition N(mean, std^2), and its
log-density is what a policy gradient differentiates. Nothing here restates a solver: the transition is read off the
step itself, the mean as the step at zero noise and the std as its derivative with respect to the noise (one
forward-mode pass, `torch.func.jvp`: `transition_by_jvp`), so it cannot drift from `step` and needs no code per class.
The classes RL fine-tunes with (DDIM, DDPM, Euler a, stochastic flow-match Euler, FlowMatchSDE) also give it in
closed form, from the very expressions their step uses (`Scheduler._transition`, optional): the same values (held to
the read-off ones in the tests), their std one number per row, which the log-density then takes once per row instead
of once per element; eager, that costs what DDPO's and Flow-GRPO's own functions cost, or less. A class whose noise
is no fresh standard normal given the state says why in `Scheduler._not_gaussian` (DPMSolverSDE's Brownian-tree
noise, shared between the two calls of an interval).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from . import checks, host
from .plan import as_dtype
from .scheduler import Scheduler, check_scheduler

REDUCTIONS = ("sum", "mean", "none")
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


def step_transition(
    scheduler: Scheduler, state: Any, model_output: torch.Tensor, sample: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's Gaussian transition, `(mean, std)`, both shaped like `sample`, in its dtype: `scheduler.step(state,
    model_output, sample, noise=z)` is `mean + std * z`, bit for bit for most classes (within 2 ulps where the step
    forms its noise term in another order, a few more where the noise enters before the update, as Euler's churn).

    Pure and per row (each row's transition depends on that row alone); differentiable with respect to the model
    output (the mean, and the std where the model predicts a variance: DDPM's learned variance types); composes with
    `torch.func` transforms and `torch.compile(fullgraph=True)`. Elements the step adds no noise to (a last step, a
    step outside Euler's churn window) have std 0: their next value is determined by the model output.
    """
    _check_gaussian(scheduler, "step_transition")
    cursor = scheduler._cursor(state)
    if checks.checking(eager=cursor is not None):
        scheduler._check_step_rows(state, model_output, sample, cursor, None, False)
    closed_form = _closed_form(scheduler, state, model_output, sample, cursor)
    if closed_form is None:
        return transition_by_jvp(scheduler, state, model_output, sample)
    mean, std, _ = closed_form
    return mean, torch.broadcast_to(as_dtype(std, sample.dtype).to(sample.device), sample.shape).contiguous()


def transition_by_jvp(
    scheduler: Scheduler, state: Any, model_output: torch.Tensor, sample: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`step_transition` read off the step, for any class (no checks): the step at zero noise and, by one
    forward-mode pass, its derivative with respect to the noise. The fallback where a class has no closed form, and
    the tests' oracle for the closed forms."""

    def produced(noise: torch.Tensor) -> torch.Tensor:
        return scheduler.step(state, model_output, sample, noise=noise)[0]

    zero, one = torch.zeros_like(sample), torch.ones_like(sample)
    mean, std = torch.func.jvp(produced, (zero,), (one,))
    return mean, std


def step_log_prob(
    scheduler: Scheduler,
    state: Any,
    model_output: torch.Tensor,
    sample: torch.Tensor,
    *,
    noise: torch.Tensor | None = None,
    next_sample: torch.Tensor | None = None,
    reduce: str = "sum",
) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """One stochastic step and the log-probability of its result under the step's Gaussian transition:
    `(next_sample, new_state, log_prob)`, `log_prob` one value per row ([R]).

    Sampling: pass `noise` (as `step` takes it); `next_sample` is then `step`'s own result, bit for bit. Training
    (DDPO's and Flow-GRPO's second pass): pass the `next_sample` recorded at sampling time instead; it comes back as
    given, and the log-probability is the one sampling gave wherever the model output is the same. Either way
    `log_prob` is differentiable with respect to the model output (`next_sample` is detached: it is data) and
    `new_state` is the state after the step.

    `reduce`: over each row's elements, "sum" (the log-density of the row's sample), "mean" (DDPO's and Flow-GRPO's
    convention: their PPO clip ranges are tuned for it) or "none" (elementwise, shaped like the sample). Computed in
    float32 (float64 for float64 samples): -(x - mean)^2 / (2 std^2) - log std - log sqrt(2 pi), as both compute it
    (for a std per row, the closed forms', its log and factor once per row). Elements with std 0 (no noise added
    there) are not random given the model output and contribute 0.
    """
    _check_gaussian(scheduler, "step_log_prob")
    if reduce not in REDUCTIONS:
        raise ValueError(f"step_log_prob: reduce must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduce!r}.")
    if (noise is None) == (next_sample is None):
        raise ValueError(
            "step_log_prob: give noise= (sampling: the step draws with it) or next_sample= (training: the recorded "
            "result of this step), exactly one of them."
        )
    cursor = scheduler._cursor(state)
    if noise is not None:  # sampling: the step's own result (and its checks)
        next_sample, new_state = scheduler.step(state, model_output, sample, noise=noise)[:2]
        closed_form = _closed_form(scheduler, state, model_output, sample, cursor)
    else:
        if checks.checking(eager=cursor is not None):
            scheduler._check_step_rows(state, model_output, sample, cursor, None, False)
            checks.check_like(f"{scheduler.name}.step_log_prob", "next_sample", next_sample, sample, "sample")
        closed_form = _closed_form(scheduler, state, model_output, sample, cursor)
        if closed_form is None:
            new_state = scheduler.step(state, model_output, sample, noise=torch.zeros_like(sample))[1]
        else:
            new_state = closed_form[2]
    if closed_form is None:
        mean, std = transition_by_jvp(scheduler, state, model_output, sample)
    else:
        mean, std = closed_form[0], as_dtype(closed_form[1], sample.dtype)
    return next_sample, new_state, log_density(next_sample, mean, std, reduce)


def log_density(next_sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """log N(next_sample; mean, std^2) elementwise, reduced over all but the rows dim (`step_log_prob`'s `reduce`);
    `next_sample` detached, elements with std 0 contributing 0 (with no NaN in any gradient). `std` broadcasts
    against the sample: one per element, or one per row ([R, 1, ..., 1], or 0-d for all rows), for which the log and
    the division are taken once per row and a row's sum is -sum((x - mean)^2) / (2 std^2) - n log(std sqrt(2 pi))."""
    dtype = torch.float64 if torch.float64 in (next_sample.dtype, mean.dtype) else torch.float32
    residual = as_dtype(next_sample.detach(), dtype) - as_dtype(mean, dtype)
    std = as_dtype(std, dtype)
    if std.dim() == 0 or (std.dim() == residual.dim() and all(size == 1 for size in std.shape[1:])):
        return _per_row_density(residual, std, reduce)
    deterministic = std == 0
    scale = std.masked_fill(deterministic, 1.0)  # no 0 divides or logs, not even in a discarded branch
    elementwise = -(residual**2) / (2 * scale**2) - torch.log(scale) - _LOG_SQRT_2PI
    elementwise = elementwise.masked_fill(deterministic, 0.0)
    if reduce == "none":
        return elementwise
    dims = tuple(range(1, elementwise.dim()))
    return elementwise.sum(dims) if reduce == "sum" else elementwise.mean(dims)


def _per_row_density(residual: torch.Tensor, std: torch.Tensor, reduce: str) -> torch.Tensor:
    """`log_density` for a std per row (or one for all rows), of the residual `next_sample - mean`: each row's
    factor -1 / (2 std^2) and offset log(std sqrt(2 pi)) in float64, rounded once to the residual's dtype (the same
    numbers whether the host knows them or a graph computes them), then one pass over the elements."""
    count = math.prod(residual.shape[1:])
    divisor = count if reduce == "mean" else 1
    if std.dim() == 0 and std.is_cpu and not std.requires_grad and not host.tracing() and std.item() > 0:
        # An eager step's host scalar: its factor and offset as Python numbers, no dispatch for them.
        value = std.item()
        factor, offset = -0.5 / value**2 / divisor, math.log(value) + _LOG_SQRT_2PI
        if reduce == "none":
            return residual.square().mul_(factor).sub_(offset)
        return residual.square().sum(tuple(range(1, residual.dim()))).mul_(factor).sub_(offset * count / divisor)
    std = std.to(device=residual.device, dtype=torch.float64)
    deterministic = std == 0
    scale = std.masked_fill(deterministic, 1.0)  # no 0 divides or logs, not even in a discarded branch
    factor, offset = -0.5 / scale**2 / divisor, torch.log(scale) + _LOG_SQRT_2PI
    if reduce != "none":
        offset = offset * count / divisor
        if std.dim():
            deterministic, factor, offset = deterministic.flatten(), factor.flatten(), offset.flatten()
        residual = residual.square().sum(tuple(range(1, residual.dim())))
    else:
        residual = residual.square()
    value = residual * factor.to(residual.dtype) - offset.to(residual.dtype)
    return torch.where(deterministic, 0.0, value)


def _closed_form(
    scheduler: Scheduler, state: Any, model_output: torch.Tensor, sample: torch.Tensor, cursor: host.Cursor | None
) -> tuple[torch.Tensor, torch.Tensor, Any] | None:
    """The class's closed-form transition `(mean, std, new_state)` (std one per row, broadcastable, in any float
    dtype), or None where it has none (for this config)."""
    transition = getattr(scheduler, "_transition", None)
    return None if transition is None else transition(state, model_output, sample, cursor)


def _check_gaussian(scheduler: Any, method: str) -> None:
    """A scheduler whose step is a Gaussian transition given its inputs, in a stochastic config."""
    check_scheduler(method, scheduler)
    why = scheduler._not_gaussian
    if why is not None:
        raise NotImplementedError(
            f"{method}: {scheduler.name}'s step is no Gaussian transition given its inputs: {why}"
        )
    if not scheduler.stochastic:
        raise ValueError(
            f"{method}: this {scheduler.name} config is deterministic (its step takes no noise), so its step has no "
            "transition density; use a stochastic config (DDIM's eta > 0, FlowMatchEulerDiscrete's "
            "stochastic_sampling, FlowMatchSDE's noise_level > 0, an SDE algorithm_type, ...)."
        )
    if scheduler._resizes:
        raise NotImplementedError(
            f"{method}: this {scheduler.name} config changes the sample's size between steps (scale_factors): its "
            "noise is not shaped like the sample."
        )
