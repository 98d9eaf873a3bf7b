"""Randomness as an argument: draw the noise a stochastic step takes the way diffusers draws it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import checks


def randn_tensor(
    shape: Sequence[int],
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Standard normal noise drawn exactly as `diffusers.utils.torch_utils.randn_tensor` draws it.

    A CPU generator draws on the CPU and moves the result to `device`; a list of generators draws one row each.
    So `step(..., noise=randn_tensor(...))` reproduces a diffusers run seeded with the same generators.
    """
    shape, device = _checked(shape, generator, device, dtype)
    rand_device = device
    generators = list(generator) if isinstance(generator, Sequence) else None
    if generators is not None and len(generators) == 1:
        generator, generators = generators[0], None
    if generators is not None and len(generators) != shape[0]:
        raise ValueError(f"randn_tensor: {len(generators)} generators for {shape[0]} rows; give one per row.")
    first = generators[0] if generators is not None else generator
    if first is not None and first.device.type != device.type:
        if first.device.type != "cpu":
            raise ValueError(f"randn_tensor: cannot draw a {device} tensor from a {first.device.type} generator.")
        rand_device = torch.device("cpu")
    if generators is not None:
        rows = [torch.randn((1, *shape[1:]), generator=g, device=rand_device, dtype=dtype) for g in generators]
        return torch.cat(rows, dim=0).to(device)
    return torch.randn(shape, generator=generator, device=rand_device, dtype=dtype).to(device)


def loop_noise(
    owner: str, scheduler: Any, noise: torch.Tensor | torch.Generator | None, steps: int, latents: torch.Tensor
) -> torch.Tensor | None:
    """The noise of each of a loop's `steps` steps, [steps, *latents.shape], from what a loop's caller gives: None for
    a deterministic scheduler; for a stochastic one a tensor of that shape, or a `torch.Generator` to draw it from
    step by step as `randn_tensor` does (in the latents' dtype)."""
    if scheduler._resizes:
        raise ValueError(
            f"{owner}: this {scheduler.name} changes the sample's shape between steps (scale_factors); a loop over one "
            "latents shape cannot run it. Call step yourself, with noise shaped as noise_shape(state, sample)."
        )
    if not scheduler.stochastic:
        if noise is not None:
            raise ValueError(f"{owner}: {scheduler.name} is deterministic; it takes no noise.")
        return None
    if noise is None:
        raise ValueError(
            f"{owner}: this {scheduler.name} draws fresh noise each step; pass noise= (a tensor "
            f"[{steps}, *latents.shape] or a torch.Generator)."
        )
    if isinstance(noise, torch.Generator):
        shape = tuple(latents.shape)
        return torch.stack(
            [randn_tensor(shape, generator=noise, device=latents.device, dtype=latents.dtype) for _ in range(steps)]
        )
    expected = (steps, *latents.shape)
    if not isinstance(noise, torch.Tensor):
        raise TypeError(f"{owner}: noise must be a tensor or a torch.Generator, got {checks.shown(noise)}.")
    if tuple(noise.shape) != expected or noise.dtype != latents.dtype or noise.device != latents.device:
        raise ValueError(
            f"{owner}: noise must be {list(expected)} {latents.dtype} on {latents.device} (one draw per step), got "
            f"{list(noise.shape)} {noise.dtype} on {noise.device}."
        )
    return noise


def _checked(shape: Any, generator: Any, device: Any, dtype: Any) -> tuple[tuple[int, ...], torch.device]:
    """`randn_tensor`'s shape as a tuple and its device, each argument checked first; the common call (a torch.Size
    or tuple of ints, one generator or none) in a few type tests, since stochastic loops draw every step."""
    owner = "randn_tensor"
    if not (
        type(shape) is torch.Size or (type(shape) is tuple and all(type(size) is int and size >= 0 for size in shape))
    ):
        if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
            raise TypeError(f"{owner}: shape must be a sequence of sizes, got {checks.shown(shape)}.")
        shape = tuple(checks.integer(owner, f"shape[{index}]", size, 0) for index, size in enumerate(shape))
    device = checks.device(owner, "device", device) if device is not None else torch.device("cpu")
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"{owner}: dtype must be a floating-point torch.dtype, got {checks.shown(dtype)}.")
    if generator is None or isinstance(generator, torch.Generator):
        return tuple(shape), device
    if not isinstance(generator, Sequence) or not all(isinstance(item, torch.Generator) for item in generator):
        raise TypeError(
            f"{owner}: generator must be a torch.Generator or a list of them, got {checks.shown(generator)}."
        )
    if len(generator) > 1 and not shape:
        raise ValueError(f"{owner}: a list of generators draws one row each; give a shape with rows.")
    return tuple(shape), device
