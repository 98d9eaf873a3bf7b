"""Randomness as an argument: draw the noise a stochastic step takes the way diffusers draws it."""

from __future__ import annotations

from collections.abc import Sequence

import torch


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
    shape = tuple(shape)
    device = torch.device(device) if device is not None else torch.device("cpu")
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
