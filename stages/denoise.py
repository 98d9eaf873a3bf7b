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

#: model(latent_model_input [R, ...], timestep [R], prompt_embeds [R, ...] or None) -> an output like the latents.
Model = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def stochastic(scheduler: Any) -> bool:
    """Whether the scheduler's step takes fresh noise."""
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


def guided_output(
    model: Model, reqs: Sequence[Req], model_input: torch.Tensor, timestep: torch.Tensor, scales: Sequence[float]
) -> torch.Tensor:
    """The model's output for the rows of `reqs` (concatenated in order), with classifier-free guidance.

    Guided requests call the model once on the unconditional and conditional halves together (negative embeddings
    first) and combine them as diffusers does, `uncond + scale * (cond - uncond)` with each request's `scales[i]`,
    then `rescale_noise_cfg` where a request asks for `guidance_rescale`.
    """
    guided = {req.guided for req in reqs}
    if len(guided) > 1:
        raise ValueError("guided_output: requests with and without guidance cannot share a model call.")
    embeds = _cat_embeds([req.prompt_embeds for req in reqs], "prompt_embeds")
    if not guided.pop():
        return model(model_input, timestep, embeds)
    counts = [req.rows for req in reqs]
    negative = _cat_embeds([req.negative_prompt_embeds for req in reqs], "negative_prompt_embeds")
    both = model(torch.cat([model_input, model_input]), torch.cat([timestep, timestep]), torch.cat([negative, embeds]))
    uncond, cond = both.chunk(2)
    output = uncond + _per_row(scales, counts, cond) * (cond - uncond)
    if any(req.guidance_rescale > 0 for req in reqs):
        output = _rescale(output, cond, _per_row([req.guidance_rescale for req in reqs], counts, cond))
    return output


def _cat_embeds(embeds: Sequence[torch.Tensor | None], name: str) -> torch.Tensor | None:
    present = [value is not None for value in embeds]
    if not any(present):
        return None
    if not all(present):
        raise ValueError(f"guided_output: some requests have {name} and some none; they cannot share a model call.")
    return torch.cat(list(embeds))  # type: ignore[arg-type]


def scheduler_of(req: Req, default: Any, stage: str) -> Any:
    """The request's own scheduler (a per-request sampler choice), else the stage's."""
    scheduler = req.scheduler if req.scheduler is not None else default
    if scheduler is None:
        raise ValueError(f"{stage}: no scheduler; give the stage one, or the request (Req(scheduler=...)).")
    return scheduler


def _shape(value: torch.Tensor | None) -> tuple[Any, ...] | None:
    return None if value is None else (tuple(value.shape[1:]), value.dtype, value.device)


@attrs.frozen
class Denoise:
    """Holds a model and a default scheduler, nothing per request (a request may bring its own scheduler)."""

    model: Model
    scheduler: Any = None

    def done(self, req: Req) -> bool:
        """Whether every row of the request has taken all its steps."""
        return scheduler_of(req, self.scheduler, type(self).__name__).steps_left(req.state) == 0

    def forward(self, req: Req) -> Req:
        """The whole denoising loop of one request (until every row has taken all its steps)."""
        while not self.done(req):
            req = self.step(req)
        return req

    def forward_many(self, reqs: Sequence[Req]) -> list[Req]:
        """Every request to its end, the unfinished ones stepped together each round (see `step_many`)."""
        reqs = list(reqs)
        while True:
            active = [index for index, req in enumerate(reqs) if not self.done(req)]
            if not active:
                return reqs
            for index, req in zip(active, self.step_many([reqs[index] for index in active]), strict=True):
                reqs[index] = req

    def step(self, req: Req) -> Req:
        """One step of one request."""
        return self.step_many([req])[0]

    def step_many(self, reqs: Sequence[Req]) -> list[Req]:
        """One step of each request, in order. Requests that can share a batch (one scheduler config, guided or not,
        latents and embeddings alike but for their rows) take one model call and one scheduler call together,
        whatever their steps and step counts; each comes out as it would alone."""
        reqs = list(reqs)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, req in enumerate(reqs):
            if req.state is None or req.latents is None:
                raise ValueError(
                    f"{type(self).__name__}: the request has no scheduler state or no latents yet; run "
                    "PrepareTimesteps and PrepareLatents first."
                )
            sched = scheduler_of(req, self.scheduler, type(self).__name__)
            key = (
                sched,
                _shape(req.latents),
                _shape(req.prompt_embeds),
                _shape(req.negative_prompt_embeds),
                _shape(req.state.plan.timesteps),
            )
            groups.setdefault(key, []).append(index)
        stepped: list[Req | None] = [None] * len(reqs)
        for key, members in groups.items():
            for index, req in zip(members, self._step_batch(key[0], [reqs[i] for i in members]), strict=True):
                stepped[index] = req
        return stepped  # type: ignore[return-value]

    def _step_batch(self, sched: Any, reqs: list[Req]) -> list[Req]:
        counts = [req.rows for req in reqs]
        state = batching.stack([req.state for req in reqs])
        latents = torch.cat([req.latents for req in reqs])
        model_input = sched.scale_model_input(state, latents)
        output = self.predict(reqs, model_input, sched.timestep(state))
        noise = torch.cat([step_noise(sched, req) for req in reqs]) if stochastic(sched) else None
        latents, state = sched.step(state, output, latents, noise=noise)
        pieces = batching.split(state, counts)
        rows = latents.split(counts)
        return [req.evolve(latents=row, state=piece) for req, row, piece in zip(reqs, rows, pieces, strict=True)]

    def predict(self, reqs: Sequence[Req], model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The (guided) model output for the requests' rows; stages with other model choices override this."""
        return guided_output(self.model, reqs, model_input, timestep, [req.guidance_scale for req in reqs])


def _rescale(output: torch.Tensor, cond: torch.Tensor, rescale: torch.Tensor) -> torch.Tensor:
    """diffusers' `rescale_noise_cfg`, per row (Lin et al. 2023, section 3.4)."""
    dims = list(range(1, cond.dim()))
    rescaled = output * (cond.std(dim=dims, keepdim=True) / output.std(dim=dims, keepdim=True))
    return rescale * rescaled + (1 - rescale) * output


def step_noise(scheduler: Any, req: Req) -> torch.Tensor:
    """The request's noise for its current step, from a generator seeded by (seed, step): the same whether the
    request is stepped alone or batched, in this process or after a handoff."""
    step = scheduler.steps_taken(req.state)
    generator = torch.Generator().manual_seed((req.seed * 1_000_003 + step) % (1 << 63))
    noise = randn_tensor(tuple(req.latents.shape), generator=generator, dtype=torch.float32)
    return noise.to(req.latents.device)
