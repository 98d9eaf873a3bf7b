"""Log-probabilities of stochastic steps, for RL fine-tuning (DDPO, Flow-GRPO and their kin).

Every stochastic step of the core adds its noise affinely: `step(state, model_output, sample, noise=z)` is
`mean + std * z` elementwise, where mean and std depend on the state, the model output and the sample but not on `z`,
a fresh standard normal. Given the model output, the step is then the Gaussian transition N(mean, std^2), and its
log-density is what a policy gradient differentiates. Nothing here restates a solver: the transition is read off the
step itself, the mean as the step at zero noise and the std as its derivative with respect to the noise (one
forward-mode pass, `torch.func.jvp`), so it cannot drift from `step` and needs no code per class. A class whose noise
is no fresh standard normal given the state says why in `Scheduler._not_gaussian` (DPMSolverSDE's Brownian-tree
noise, shared between the two calls of an interval).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from . import checks
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
    if checks.checking():
        scheduler._check_step_rows(state, model_output, sample, scheduler._cursor(state), None, False)

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
    float32 (float64 for float64 samples): -(x - mean)^2 / (2 std^2) - log std - log sqrt(2 pi), as both compute it.
    Elements with std 0 (no noise added there) are not random given the model output and contribute 0.
    """
    _check_gaussian(scheduler, "step_log_prob")
    if reduce not in REDUCTIONS:
        raise ValueError(f"step_log_prob: reduce must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduce!r}.")
    if (noise is None) == (next_sample is None):
        raise ValueError(
            "step_log_prob: give noise= (sampling: the step draws with it) or next_sample= (training: the recorded "
            "result of this step), exactly one of them."
        )
    drawn = noise if noise is not None else torch.zeros_like(sample)
    produced, new_state = scheduler.step(state, model_output, sample, noise=drawn)[:2]
    if next_sample is None:
        next_sample = produced
    elif checks.checking():
        checks.check_like(f"{scheduler.name}.step_log_prob", "next_sample", next_sample, sample, "sample")
    mean, std = step_transition(scheduler, state, model_output, sample)
    return next_sample, new_state, log_density(next_sample, mean, std, reduce)


def log_density(next_sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """log N(next_sample; mean, std^2) elementwise, reduced over all but the rows dim (`step_log_prob`'s `reduce`);
    `next_sample` detached, elements with std 0 contributing 0 (with no NaN in any gradient)."""
    dtype = torch.float64 if torch.float64 in (next_sample.dtype, mean.dtype) else torch.float32
    value, mean, std = next_sample.detach().to(dtype), mean.to(dtype), std.to(dtype)
    deterministic = std == 0
    scale = std.masked_fill(deterministic, 1.0)  # no 0 divides or logs, not even in a discarded branch
    elementwise = -((value - mean) ** 2) / (2 * scale**2) - torch.log(scale) - _LOG_SQRT_2PI
    elementwise = elementwise.masked_fill(deterministic, 0.0)
    if reduce == "none":
        return elementwise
    dims = tuple(range(1, elementwise.dim()))
    return elementwise.sum(dims) if reduce == "sum" else elementwise.mean(dims)


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
