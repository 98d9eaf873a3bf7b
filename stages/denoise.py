"""`Denoise`: the denoising stage, one step at a time for one request (`step`) or for many at once (`step_many`).

`step_many` stacks the requests' states (`functional_sched.batching`), calls the model once and the scheduler
once for all of them, and splits the result back; each request comes out as it would from `step` alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch

from functional_sched import batching, randn_tensor

from .request import Req

#: model(latent_model_input [R, ...], timestep [R], prompt_embeds [R, ...]) -> model output like the latents.
Model = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _stochastic(scheduler: Any) -> bool:
    return bool(getattr(scheduler, "stochastic_sampling", False)) or str(
        getattr(scheduler, "algorithm_type", "")
    ).startswith("sde")


def _per_row(values: Sequence[float], counts: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """One value per row, [R, 1, ..., 1] in `like`'s dtype."""
    column = torch.tensor(
        [value for value, count in zip(values, counts, strict=True) for _ in range(count)],
        dtype=like.dtype,
        device=like.device,
    )
    return column.view(-1, *([1] * (like.dim() - 1)))


@attrs.frozen
class Denoise:
    """Holds a model and a scheduler, nothing per request."""

    model: Model
    scheduler: Any

    def forward(self, req: Req) -> Req:
        """The whole denoising loop of one request (until every row has taken all its steps)."""
        remaining = int((req.state.plan.num_steps.max() - req.state.step_index.max()).item())
        for _ in range(remaining):
            req = self.step(req)
        return req

    def step(self, req: Req) -> Req:
        """One step of one request."""
        return self.step_many([req])[0]

    def step_many(self, reqs: Sequence[Req]) -> list[Req]:
        """One step of each request, all in one model call and one scheduler call."""
        reqs = list(reqs)
        if not reqs:
            return []
        guided = {req.guided for req in reqs}
        if len(guided) > 1:
            raise ValueError("Denoise.step_many: requests with and without guidance cannot share a model call.")
        sched = self.scheduler
        counts = [req.rows for req in reqs]
        state = batching.stack([req.state for req in reqs])
        latents = torch.cat([req.latents for req in reqs])
        embeds = torch.cat([req.prompt_embeds for req in reqs])
        model_input = sched.scale_model_input(state, latents)
        timestep = sched.timestep(state)
        if guided.pop():
            negative = torch.cat([req.negative_prompt_embeds for req in reqs])
            both = self.model(
                torch.cat([model_input, model_input]), torch.cat([timestep, timestep]), torch.cat([negative, embeds])
            )
            uncond, cond = both.chunk(2)
            scale = _per_row([req.guidance_scale for req in reqs], counts, cond)
            output = uncond + scale * (cond - uncond)
            if any(req.guidance_rescale > 0 for req in reqs):
                output = _rescale(output, cond, _per_row([req.guidance_rescale for req in reqs], counts, cond))
        else:
            output = self.model(model_input, timestep, embeds)
        noise = None
        if _stochastic(sched):
            noise = torch.cat([_step_noise(req) for req in reqs])
        latents, state = sched.step(state, output, latents, noise=noise)
        pieces = batching.split(state, counts)
        rows = latents.split(counts)
        return [req.evolve(latents=row, state=piece) for req, row, piece in zip(reqs, rows, pieces, strict=True)]


def _rescale(output: torch.Tensor, cond: torch.Tensor, rescale: torch.Tensor) -> torch.Tensor:
    """diffusers' `rescale_noise_cfg`, per row (Lin et al. 2023, section 3.4)."""
    dims = list(range(1, cond.dim()))
    rescaled = output * (cond.std(dim=dims, keepdim=True) / output.std(dim=dims, keepdim=True))
    return rescale * rescaled + (1 - rescale) * output


def _step_noise(req: Req) -> torch.Tensor:
    """The request's noise for its current step: a generator seeded by (seed, step), independent of batching."""
    step = int(req.state.step_index[0])
    generator = torch.Generator().manual_seed(hash((req.seed, step)) & ((1 << 63) - 1))
    noise = randn_tensor(tuple(req.latents.shape), generator=generator, dtype=torch.float32)
    return noise.to(req.latents.device)
