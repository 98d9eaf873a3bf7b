"""`denoise`: a whole sampling loop as one function of its inputs, the way research code wants it.

    x0 = functional_sched.denoise(sched, model_fn, noise, num_inference_steps=25)
    run = functional_sched.denoise(sched, model_fn, noise, num_inference_steps=25,
                                   trajectory=(0, 10, 25), denoised=True, return_state=True)
    run.sample, run.state, run.trajectory[i], run.denoised[k]

`model_fn(model_input, timestep) -> model_output` is called once per step, with `scale_model_input`'s output and
the rows' timesteps [R] (close over conditioning and guidance). Nothing is kept between calls: the same inputs give
the same result, eagerly, under `torch.compile(fullgraph=True)`, `torch.func.vmap` (map the latents and, for a
stochastic scheduler, the noise tensor: one request or seed per mapped entry), `torch.func.grad`/`vjp`/`jvp` and
autograd, with respect to the latents, the noise or the model's parameters.

`checkpoint=K` recomputes each run of K steps during backward (`torch.utils.checkpoint`, non-reentrant): backward
holds the activations of K steps and one sample per run, not those of every step. That is what reward fine-tuning
through the sampler needs (DRaFT: Clark et al., 2023, "Directly Fine-Tuning Diffusion Models on Differentiable
Rewards"; AlignProp: Prabhudesai et al., 2023).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.utils.checkpoint
from torch._functorch.pyfunctorch import TransformType, retrieve_all_functorch_interpreters

from . import host
from .noise import loop_noise
from .plan import working_dtype
from .record import record
from .scheduler import check_scheduler

#: model_fn(model_input [R, ...], timestep [R]) -> model output like model_input.
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: Which steps to keep: all (True), none (False), or the step counts to keep, in increasing order.
Chosen = bool | Sequence[int]


@record
class Denoising:
    """What `denoise` returns when asked for more than the final sample (a pytree: vmap and export return it)."""

    sample: torch.Tensor  # after the last step
    state: Any  # after the last step: resume it, hand it over, inspect it
    trajectory: torch.Tensor | None  # [kept, *sample.shape]: the sample after k steps, for each kept k
    denoised: torch.Tensor | None  # [kept, *sample.shape]: step k's x0 estimate (`step(..., denoised=True)`)


def denoise(
    scheduler: Any,
    model_fn: ModelFn,
    sample: torch.Tensor,
    *,
    num_inference_steps: int | None = None,
    timesteps: Sequence[float] | torch.Tensor | None = None,
    sigmas: Sequence[float] | torch.Tensor | None = None,
    mu: float | None = None,
    begin_index: int = 0,
    state: Any = None,
    steps: int | None = None,
    noise: torch.Tensor | torch.Generator | None = None,
    trajectory: Chosen = False,
    denoised: Chosen = False,
    return_state: bool = False,
    checkpoint: int | None = None,
) -> torch.Tensor | Denoising:
    """Run `steps` steps (default: the rest of the schedule) from `sample` and return the sample after them.

    The loop starts from a fresh state (the schedule as `init` takes it, from `begin_index`) or from `state`, a
    request begun elsewhere (an img2img start, a request handed over mid-loop), at the step it is at. A stochastic
    scheduler takes `noise`: [steps, *sample.shape] (under vmap: mapped with the latents), or a `torch.Generator`.

    `trajectory` keeps the sample after k steps (k = 0 is `sample`) for the chosen k in [0, steps], `denoised`
    step k's x0 estimate for the chosen k in [0, steps): True keeps every one. With either, or `return_state`, the
    result is a `Denoising` record; otherwise the final sample.

    `steps` is needed only where the host cannot know a given state's steps left without reading the device: under
    a transform or compile, for a state that came in as the transform's input (its cursor dropped).
    """
    owner = "denoise"
    check_scheduler(owner, scheduler)
    if not callable(model_fn):
        raise TypeError(f"{owner}: model_fn must be callable as model_fn(model_input, timestep), got {model_fn!r}.")
    segment = _checkpoint_length(owner, checkpoint)
    if state is None:
        if not isinstance(sample, torch.Tensor) or not sample.is_floating_point():
            raise TypeError(f"{owner}: sample must be a floating-point tensor with a leading rows dim.")
        schedule = scheduler.schedule(num_inference_steps, timesteps=timesteps, sigmas=sigmas, mu=mu)
        plan = scheduler._host_plan(schedule, working_dtype(sample))
        left = plan.steps - scheduler._check_begin_index(plan, begin_index)
    else:
        schedule = (num_inference_steps, timesteps, sigmas, mu)
        if any(value is not None for value in schedule) or begin_index != 0:
            raise ValueError(f"{owner}: give a schedule (and begin_index) or a state to resume from, not both.")
        left = _steps_left(scheduler, state)
    steps = _steps(owner, steps, left)
    keep_samples = _chosen(owner, "trajectory", trajectory, steps + 1)
    keep_estimates = _chosen(owner, "denoised", denoised, steps)
    noise = loop_noise(owner, scheduler, noise, steps, sample)
    if state is None:
        state = scheduler.init(
            num_inference_steps, sample=sample, timesteps=timesteps, sigmas=sigmas, mu=mu, begin_index=begin_index
        )

    samples, estimates = ([sample] if 0 in keep_samples else []), []
    for start in range(0, steps, segment or max(steps, 1)):
        stop = min(start + (segment or steps), steps)

        def run(state: Any, sample: torch.Tensor, noise: torch.Tensor | None, start: int = start, stop: int = stop):
            return _run(scheduler, model_fn, state, sample, noise, range(start, stop), keep_samples, keep_estimates)

        if segment is None:
            sample, state, kept, x0s = run(state, sample, noise)
        else:
            sample, state, kept, x0s = torch.utils.checkpoint.checkpoint(run, state, sample, noise, use_reentrant=False)
        samples += kept
        estimates += x0s
    if not (keep_samples or keep_estimates or return_state):
        return sample
    return Denoising(
        sample=sample,
        state=state,
        trajectory=torch.stack(samples) if keep_samples else None,
        denoised=torch.stack(estimates) if keep_estimates else None,
    )


def _run(
    scheduler: Any,
    model_fn: ModelFn,
    state: Any,
    sample: torch.Tensor,
    noise: torch.Tensor | None,
    steps: range,
    keep_samples: frozenset[int],
    keep_estimates: frozenset[int],
) -> tuple[torch.Tensor, Any, list[torch.Tensor], list[torch.Tensor]]:
    """Steps `steps` of the loop (indices from the loop's start); the samples and x0 estimates kept among them."""
    samples, estimates = [], []
    for index in steps:
        output = model_fn(scheduler.scale_model_input(state, sample), scheduler.timestep(state))
        step_noise = None if noise is None else noise[index]
        if index in keep_estimates:
            sample, state, estimate = scheduler.step(state, output, sample, noise=step_noise, denoised=True)
            estimates.append(estimate)
        else:
            sample, state = scheduler.step(state, output, sample, noise=step_noise)
        if index + 1 in keep_samples:
            samples.append(sample)
    return sample, state, samples, estimates


def _steps_left(scheduler: Any, state: Any) -> int | None:
    """A given state's steps left, if the host knows them (its cursor) or may read them (no transform running)."""
    cursor = scheduler._described(state)
    if cursor is not None:
        return max(cursor.owned.host.steps - cursor.step, 0)
    return None if host.tracing() else scheduler.steps_left(state)


def _steps(owner: str, steps: int | None, left: int | None) -> int:
    if steps is None:
        if left is None:
            raise ValueError(
                f"{owner}: the steps left of a state given as a transform's or compiled function's input are not "
                "known on the host; pass steps= (how many to take)."
            )
        return left
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0 or (left is not None and steps > left):
        bound = f"[0, {left}] (the steps left)" if left is not None else "a non-negative integer"
        raise ValueError(f"{owner}: steps must be in {bound}, got {steps!r}.")
    return steps


def _chosen(owner: str, name: str, value: Chosen, count: int) -> frozenset[int]:
    """The kept indices in [0, count) of a `trajectory`/`denoised` argument."""
    if isinstance(value, bool):
        return frozenset(range(count)) if value else frozenset()
    indices = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if indices is None or any(isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < count for k in indices):
        raise ValueError(f"{owner}: {name} must be True, False or step counts in [0, {count}), got {value!r}.")
    if indices != sorted(set(indices)):
        raise ValueError(f"{owner}: {name} must list each step count once, in increasing order, got {value!r}.")
    return frozenset(indices)


def _checkpoint_length(owner: str, checkpoint: int | None) -> int | None:
    if checkpoint is None:
        return None
    if isinstance(checkpoint, bool) or not isinstance(checkpoint, int) or checkpoint < 1:
        raise ValueError(f"{owner}: checkpoint must be a positive number of steps per recomputed run, or None.")
    if any(interpreter.key() == TransformType.Grad for interpreter in retrieve_all_functorch_interpreters()):
        raise ValueError(
            f"{owner}: checkpoint= recomputes through autograd's saved-tensor hooks, which torch.func.grad and vjp do "
            "not support; differentiate with autograd (loss.backward(), torch.autograd.grad) or drop checkpoint."
        )
    return checkpoint
