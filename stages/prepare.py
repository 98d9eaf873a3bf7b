"""The stages around denoising: the scheduler state (`PrepareTimesteps`), the initial noise (`PrepareLatents`) and
decoding (`Decode`), each a pure map from a request to a new one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch

from functional_sched import randn_tensor
from functional_sched.math.schedules import np_linspace

from .denoise import scheduler_of
from .request import Req


def calculate_shift(
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """The resolution shift `mu` of Flux and Qwen-Image: linear in the image sequence length (diffusers' function)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    b = base_shift - m * base_seq_len
    return image_seq_len * m + b


def packed_seq_len(shape: tuple[int, ...]) -> int:
    """The image sequence length of packed latents [B, L, C] (Flux, Qwen-Image): L."""
    return shape[1]


def _template(req: Req) -> torch.Tensor:
    """The latents, or a stand-in with their shape, dtype and device that allocates nothing."""
    if req.latents is not None:
        return req.latents
    if req.latent_shape is None:
        raise ValueError("PrepareTimesteps: the request needs latents or a latent_shape (rows first).")
    return torch.zeros((), dtype=req.dtype, device=req.device).expand(req.latent_shape)


@attrs.frozen
class PrepareTimesteps:
    """Builds the request's scheduler state from its schedule settings, as diffusers' pipelines call `set_timesteps`.

    `num_inference_steps` (or the request's own) sets the length. `flux_sigmas=True` passes
    `linspace(1, 1/N, N)` as custom sigmas, as the Flux and Qwen-Image pipelines do (unless the scheduler uses flow
    sigmas of its own, or the request brings sigmas). For a dynamically shifted schedule with no `mu` in the
    request, `mu = calculate_shift(image_seq_len(latent shape), ...)` with the scheduler's `base_image_seq_len`,
    `max_image_seq_len`, `base_shift` and `max_shift` (diffusers' defaults 256, 4096, 0.5, 1.15 where it has none).
    """

    scheduler: Any = None
    num_inference_steps: int | None = None
    flux_sigmas: bool = False
    image_seq_len: Callable[[tuple[int, ...]], int] = packed_seq_len

    def mu(self, req: Req, shape: tuple[int, ...]) -> float | None:
        sched = scheduler_of(req, self.scheduler, "PrepareTimesteps")
        if req.mu is not None or not getattr(sched, "use_dynamic_shifting", False):
            return req.mu
        return calculate_shift(
            self.image_seq_len(shape),
            getattr(sched, "base_image_seq_len", 256),
            getattr(sched, "max_image_seq_len", 4096),
            getattr(sched, "base_shift", None) or 0.5,
            getattr(sched, "max_shift", None) or 1.15,
        )

    def forward(self, req: Req) -> Req:
        sched = scheduler_of(req, self.scheduler, "PrepareTimesteps")
        steps = req.num_inference_steps if req.num_inference_steps is not None else self.num_inference_steps
        sigmas = req.sigmas
        if sigmas is None and req.timesteps is None and self.flux_sigmas:
            if steps is None:
                raise ValueError(
                    "PrepareTimesteps: flux_sigmas needs num_inference_steps (the stage's or the request's)."
                )
            if not getattr(sched, "use_flow_sigmas", False):
                sigmas = tuple(np_linspace(1.0, 1 / steps, steps).tolist())
        if steps is None and sigmas is None and req.timesteps is None:
            raise ValueError(
                "PrepareTimesteps: no schedule; give num_inference_steps (to the stage or the request), or the "
                "request's timesteps or sigmas."
            )
        template = _template(req)
        mu = self.mu(req, tuple(template.shape))
        state = sched.init(
            steps if sigmas is None and req.timesteps is None else None,
            sample=template,
            timesteps=req.timesteps,
            sigmas=sigmas,
            mu=mu,
        )
        # The schedule as resolved here travels with the request (a handoff rebuilds the same cached plan from it).
        return req.evolve(state=state, mu=mu, num_inference_steps=steps, sigmas=sigmas)


@attrs.frozen
class PrepareLatents:
    """The initial latents: standard normal noise from a CPU generator seeded by the request's `seed`, drawn as
    diffusers' `randn_tensor` draws it, times the scheduler's `init_noise_sigma` (1 for the flow and multistep
    schedulers). `pack` reshapes the noise (Flux's 2x2 patch packing) before it becomes the latents. A request that
    brings its own latents keeps them."""

    scheduler: Any = None
    pack: Callable[[torch.Tensor], torch.Tensor] | None = None

    def forward(self, req: Req) -> Req:
        if req.latents is not None:
            return req
        if req.latent_shape is None:
            raise ValueError("PrepareLatents: the request needs a latent_shape (rows first) or latents of its own.")
        generator = torch.Generator().manual_seed(req.seed)
        noise = randn_tensor(req.latent_shape, generator=generator, device=req.device, dtype=req.dtype)
        latents = noise if self.pack is None else self.pack(noise)
        if req.state is not None:
            sigma = scheduler_of(req, self.scheduler, "PrepareLatents").init_noise_sigma(req.state).to(latents.dtype)
            latents = latents * sigma.view(-1, *([1] * (latents.dim() - 1)))
        return req.evolve(latents=latents)


@attrs.frozen
class Decode:
    """The decoded output, `decoder(latents)` (a VAE, a post-processor); without a decoder, the latents."""

    decoder: Callable[[torch.Tensor], Any] | None = None

    def forward(self, req: Req) -> Req:
        if req.latents is None:
            raise ValueError("Decode: the request has no latents yet.")
        return req.evolve(output=req.latents if self.decoder is None else self.decoder(req.latents))


def _describe(stage: Any) -> str:
    return type(stage).__name__


@attrs.frozen
class Pipeline:
    """Stages chained: `forward(req)` passes the request through each stage's `forward` in order.

    `forward_many(reqs)` runs each stage over all the requests; a stage with a `forward_many` of its own (the
    denoising stages) advances them together, one model call per step for all of them.
    """

    stages: tuple[Any, ...] = attrs.field(converter=tuple)

    def __attrs_post_init__(self) -> None:
        for stage in self.stages:
            if not callable(getattr(stage, "forward", None)):
                raise TypeError(f"Pipeline: every stage needs a forward(req) method; {_describe(stage)} has none.")

    def forward(self, req: Req) -> Req:
        for stage in self.stages:
            req = stage.forward(req)
        return req

    __call__ = forward

    def forward_many(self, reqs: list[Req]) -> list[Req]:
        reqs = list(reqs)
        for stage in self.stages:
            many = getattr(stage, "forward_many", None)
            reqs = list(many(reqs)) if many is not None else [stage.forward(req) for req in reqs]
        return reqs


__all__ = ["Decode", "Pipeline", "PrepareLatents", "PrepareTimesteps", "calculate_shift", "packed_seq_len"]
