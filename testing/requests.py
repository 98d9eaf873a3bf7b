"""Requests as the suite's columns drive them: start one, draw its next step's inputs, run it for some steps, compare
states. Nothing here asserts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree

from .parity import latents, step_noise, toy_model
from .spec import Case

SHAPE = (2, 4, 8, 8)


def start(
    case: Case,
    *,
    shape: Sequence[int] = SHAPE,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    steps: int | None = None,
) -> tuple[Any, Any, torch.Tensor]:
    """(scheduler, state, sample) of a fresh request: standard normal latents times `init_noise_sigma`."""
    sched = case.scheduler()
    noise = latents(shape, dtype, seed)
    state = sched.init(sample=noise, **case.init_kwargs(steps))
    scale = sched.init_noise_sigma(state).to(dtype).view(-1, *([1] * (noise.dim() - 1)))
    return sched, state, noise * scale


def step_inputs(case: Case, sched: Any, state: Any, sample: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
    """The model output (and noise, for stochastic configs) of the next step, as keyword arguments."""
    inputs = {"model_output": toy_model(sched.scale_model_input(state, sample), sched.timestep(state))}
    if sched.stochastic:
        inputs["noise"] = step_noise(case, sample.shape, generator)
    return inputs


def run_loop(
    case: Case,
    sched: Any,
    state: Any,
    sample: torch.Tensor,
    steps: int,
    *,
    generator: torch.Generator,
    step_fn: Callable[..., Any] | None = None,
) -> tuple[list[torch.Tensor], Any]:
    """`steps` steps with the toy model; returns the sample after each step, and the last state."""
    step_fn = step_fn or sched.step
    samples = []
    for _ in range(steps):
        sample, state = step_fn(state, sample=sample, **step_inputs(case, sched, state, sample, generator))
        samples.append(sample)
    return samples, state


def tensor_leaves(state: Any) -> list[tuple[str, torch.Tensor]]:
    """(path, tensor) for every tensor of a state, plans included."""
    flat, _ = pytree.tree_flatten_with_path(state)
    return [(pytree.keystr(path), leaf) for path, leaf in flat]


def same_state(a: Any, b: Any) -> bool:
    """Equal pytree structure and bit-equal leaves of equal dtype and shape."""
    if a is b:
        return True
    leaves_a, spec_a = pytree.tree_flatten(a)
    leaves_b, spec_b = pytree.tree_flatten(b)
    return spec_a == spec_b and all(
        x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(leaves_a, leaves_b, strict=True)
    )
