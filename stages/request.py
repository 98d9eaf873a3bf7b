"""`Req`: one request as an immutable record; stages map a request to a new one (`req.evolve(...)`)."""

from __future__ import annotations

from typing import Any

import attrs
import torch


@attrs.frozen(eq=False)
class Req:
    """One request: its latents [R, ...], its scheduler state (R rows), its conditioning and guidance settings.

    Classifier-free guidance runs when `negative_prompt_embeds` is given: the model sees the negative and the
    positive embeddings and the outputs are combined with `guidance_scale` (and `guidance_rescale`, as diffusers'
    `rescale_noise_cfg`). `seed` seeds the per-step noise of stochastic schedulers (one generator per step).
    """

    latents: torch.Tensor
    state: Any
    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None = None
    guidance_scale: float = 1.0
    guidance_rescale: float = 0.0
    seed: int = 0

    @property
    def rows(self) -> int:
        return self.latents.shape[0]

    @property
    def guided(self) -> bool:
        return self.negative_prompt_embeds is not None

    def evolve(self, **changes: Any) -> Req:
        """A copy with some fields replaced."""
        return attrs.evolve(self, **changes)
