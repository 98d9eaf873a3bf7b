"""`Req`: one request as an immutable record; stages map a request to a new one (`req.evolve(...)`)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs
import torch


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


def _optional_floats(value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().reshape(-1).tolist()
    return tuple(float(item) for item in value)


def _optional_shape(value: Any) -> tuple[int, ...] | None:
    return None if value is None else tuple(int(size) for size in value)


@attrs.frozen(eq=False, kw_only=True)
class Req:
    """One request, its inputs and what the stages made of it so far; every field is keyword-only.

    Inputs: the conditioning (`prompt_embeds`, and `negative_prompt_embeds` for classifier-free guidance, combined
    with `guidance_scale` and `guidance_rescale` as diffusers' `rescale_noise_cfg`), `seed` (the initial noise, and
    one generator per step for stochastic schedulers), the schedule (`num_inference_steps`, or custom `timesteps` /
    `sigmas`, and `mu` for dynamically shifted schedules; left `None`, the timestep stage computes it from the image
    sequence length) and the latents' `latent_shape`, `dtype` and `device` (rows first). `scheduler` is the request's
    own sampler choice, used by every stage instead of the stage's.
    Made by the stages: `latents` and the scheduler `state` (R rows each), and the decoded `output`.
    `extras` holds what a particular stage needs beyond these (a second guidance scale, audio latents, ...): a
    read-only mapping, replaced as a whole with `req.with_extras(...)`.
    """

    prompt_embeds: torch.Tensor | None = None
    negative_prompt_embeds: torch.Tensor | None = None
    guidance_scale: float = 1.0
    guidance_rescale: float = 0.0
    seed: int = 0
    num_inference_steps: int | None = None
    timesteps: tuple[float, ...] | None = attrs.field(default=None, converter=_optional_floats)
    sigmas: tuple[float, ...] | None = attrs.field(default=None, converter=_optional_floats)
    mu: float | None = None
    latent_shape: tuple[int, ...] | None = attrs.field(default=None, converter=_optional_shape)
    dtype: torch.dtype = torch.float32
    device: torch.device = attrs.field(default="cpu", converter=torch.device)
    scheduler: Any = None
    latents: torch.Tensor | None = None
    state: Any = None
    output: Any = None
    extras: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)

    @property
    def rows(self) -> int:
        if self.latents is not None:
            return self.latents.shape[0]
        if self.latent_shape is None:
            raise ValueError("Req.rows: the request has neither latents nor a latent_shape.")
        return self.latent_shape[0]

    @property
    def guided(self) -> bool:
        return self.negative_prompt_embeds is not None

    def evolve(self, **changes: Any) -> Req:
        """A copy with some fields replaced."""
        return attrs.evolve(self, **changes)

    def with_extras(self, **values: Any) -> Req:
        """A copy whose `extras` has these entries added or replaced."""
        return attrs.evolve(self, extras={**self.extras, **values})
