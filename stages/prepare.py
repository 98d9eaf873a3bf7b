"""The stages around denoising: the scheduler state (`PrepareTimesteps`), the initial noise (`PrepareLatents`) and
decoding (`Decode`), each a pure map from a request to a new one."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import torch

from functional_sched import randn_tensor
from functional_sched.machinery import checks
from functional_sched.math.schedules import np_linspace

from .denoise import check_state, scheduler_of
from .request import Req
from .stepping import (
    integer_option,
    is_callable,
    is_flag,
    is_optional_callable,
    is_optional_scheduler,
    labelled,
    request,
    requests,
)


def calculate_shift(
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """The resolution shift `mu` of Flux and Qwen-Image: linear in the image sequence length (diffusers' function).

    The line runs through (base_seq_len, base_shift) and (max_seq_len, max_shift), so the two lengths must differ
    (diffusers divides by zero there); every argument is a finite real number."""
    arguments = {
        "image_seq_len": image_seq_len,
        "base_seq_len": base_seq_len,
        "max_seq_len": max_seq_len,
        "base_shift": base_shift,
        "max_shift": max_shift,
    }
    length, base_len, max_len, low, high = (checks.real("calculate_shift", n, v) for n, v in arguments.items())
    if base_len == max_len:
        raise ValueError(
            f"calculate_shift: base_seq_len and max_seq_len are both {base_seq_len!r}; mu is interpolated between "
            "them, so they must differ."
        )
    m = (high - low) / (max_len - base_len)
    b = low - m * base_len
    return length * m + b


def packed_seq_len(shape: tuple[int, ...]) -> int:
    """The image sequence length of packed latents [B, L, C] (Flux, Qwen-Image): L."""
    if len(shape) < 2:
        raise ValueError(
            f"packed_seq_len: latents of shape {tuple(shape)} have no sequence dim (packed latents are [B, L, C]); "
            "give the request its mu, or PrepareTimesteps an image_seq_len for these latents."
        )
    return shape[1]


def _template(label: str, req: Req) -> torch.Tensor:
    """The latents, or a stand-in with their shape, dtype and device that allocates nothing."""
    if req.latents is not None:
        return req.latents
    if req.latent_shape is None:
        raise ValueError(f"{label}: the request needs latents or a latent_shape (rows first).")
    return torch.zeros((), dtype=req.dtype, device=req.device).expand(req.latent_shape)


class _EachRequest:
    """`forward(req)` and `forward_many(reqs)` of a stage that maps each request on its own (`forward_as`); errors
    name the stage, and in `forward_many` the request's index."""

    __slots__ = ()

    def forward_as(self, label: str, req: Req) -> Req:
        """`forward(req)`, its errors begun by `label` (the caller's name for the request)."""
        raise NotImplementedError

    def forward(self, req: Req) -> Req:
        """The request mapped by this stage."""
        label = type(self).__name__
        return self.forward_as(label, request(label, req))

    def forward_many(self, reqs: Sequence[Req]) -> list[Req]:
        """Each request mapped by this stage, in order."""
        reqs, labels = requests(f"{type(self).__name__}.forward_many", reqs)
        return [self.forward_as(label, req) for req, label in zip(reqs, labels, strict=True)]


@attrs.frozen
class PrepareTimesteps(_EachRequest):
    """Builds the request's scheduler state from its schedule settings, as diffusers' pipelines call `set_timesteps`.

    `num_inference_steps` (or the request's own) sets the length. `flux_sigmas=True` passes
    `linspace(1, 1/N, N)` as custom sigmas, as the Flux and Qwen-Image pipelines do (unless the scheduler uses flow
    sigmas of its own, or the request brings sigmas). For a dynamically shifted schedule with no `mu` in the
    request, `mu = calculate_shift(image_seq_len(latent shape), ...)` with the scheduler's `base_image_seq_len`,
    `max_image_seq_len`, `base_shift` and `max_shift` (diffusers' defaults 256, 4096, 0.5, 1.15 where it has none).
    The scheduler checks the schedule (`init`); its refusal names the request.
    """

    scheduler: Any = attrs.field(default=None, validator=is_optional_scheduler)
    num_inference_steps: int | None = attrs.field(
        default=None, converter=integer_option("PrepareTimesteps", "num_inference_steps", 1, optional=True)
    )
    flux_sigmas: bool = attrs.field(default=False, validator=is_flag)
    image_seq_len: Callable[[tuple[int, ...]], int] = attrs.field(default=packed_seq_len, validator=is_callable)

    def mu(self, req: Req, shape: tuple[int, ...], label: str = "PrepareTimesteps") -> float | None:
        sched = scheduler_of(req, self.scheduler, label)
        if req.mu is not None or not getattr(sched, "use_dynamic_shifting", False):
            return req.mu
        options = {name: getattr(sched, name, None) for name in _SHIFT_DEFAULTS}
        values = [_SHIFT_DEFAULTS[name] if value is None else value for name, value in options.items()]
        named = ", ".join(f"{name}={value!r}" for name, value in zip(options, values, strict=True))
        return labelled(
            f"{label}: mu for the image sequence length of latents {shape} and the scheduler's {named} (or give the "
            "request its mu)",
            lambda: calculate_shift(self.image_seq_len(shape), *values),
        )

    def forward_as(self, label: str, req: Req) -> Req:
        sched = scheduler_of(req, self.scheduler, label)
        steps = req.num_inference_steps if req.num_inference_steps is not None else self.num_inference_steps
        sigmas = req.sigmas
        if sigmas is None and req.timesteps is None and self.flux_sigmas:
            if steps is None:
                raise ValueError(f"{label}: flux_sigmas needs num_inference_steps (the stage's or the request's).")
            if not getattr(sched, "use_flow_sigmas", False):
                sigmas = tuple(np_linspace(1.0, 1 / steps, steps).tolist())
        if steps is None and sigmas is None and req.timesteps is None:
            raise ValueError(
                f"{label}: no schedule; give num_inference_steps (to the stage or the request), or the request's "
                "timesteps or sigmas."
            )
        template = _template(label, req)
        mu = self.mu(req, tuple(template.shape), label)
        state = labelled(
            label,
            lambda: sched.init(
                steps if sigmas is None and req.timesteps is None else None,
                sample=template,
                timesteps=req.timesteps,
                sigmas=sigmas,
                mu=mu,
            ),
        )
        # The schedule as resolved here travels with the request (a handoff rebuilds the same cached plan from it).
        return req.evolve(state=state, mu=mu, num_inference_steps=steps, sigmas=sigmas)


#: diffusers' pipelines' defaults for the options of `calculate_shift` that a scheduler may not have (or leave None).
_SHIFT_DEFAULTS = {"base_image_seq_len": 256, "max_image_seq_len": 4096, "base_shift": 0.5, "max_shift": 1.15}


@attrs.frozen
class PrepareLatents(_EachRequest):
    """The initial latents: standard normal noise from a CPU generator seeded by the request's `seed`, drawn as
    diffusers' `randn_tensor` draws it, times the scheduler's `init_noise_sigma` (1 for the flow and multistep
    schedulers). `pack` reshapes the noise (Flux's 2x2 patch packing) before it becomes the latents; it keeps the
    rows. A request that brings its own latents keeps them."""

    scheduler: Any = attrs.field(default=None, validator=is_optional_scheduler)
    pack: Callable[[torch.Tensor], torch.Tensor] | None = attrs.field(default=None, validator=is_optional_callable)

    def forward_as(self, label: str, req: Req) -> Req:
        if req.latents is not None:
            return req
        if req.latent_shape is None:
            raise ValueError(f"{label}: the request needs a latent_shape (rows first) or latents of its own.")
        generator = torch.Generator().manual_seed(req.seed)
        noise = randn_tensor(req.latent_shape, generator=generator, device=req.device, dtype=req.dtype)
        latents = noise if self.pack is None else self._packed(label, noise)
        if req.state is not None:
            sched = scheduler_of(req, self.scheduler, label)
            check_state(label, "state", req.state, sched, latents)
            sigma = sched.init_noise_sigma(req.state).to(latents.dtype)
            latents = latents * sigma.view(-1, *([1] * (latents.dim() - 1)))
        return req.evolve(latents=latents)

    def _packed(self, label: str, noise: torch.Tensor) -> torch.Tensor:
        packed = self.pack(noise)  # type: ignore[misc]
        if not isinstance(packed, torch.Tensor) or not packed.is_floating_point() or packed.dim() == 0:
            raise TypeError(
                f"{label}: pack must return a floating-point tensor with rows first, got {checks.shown(packed)}."
            )
        if packed.shape[0] != noise.shape[0]:
            raise ValueError(
                f"{label}: pack turned noise {tuple(noise.shape)} into {tuple(packed.shape)}; it must keep the rows "
                "(leading dim)."
            )
        return packed


@attrs.frozen
class Decode(_EachRequest):
    """The decoded output, `decoder(latents)` (a VAE, a post-processor); without a decoder, the latents."""

    decoder: Callable[[torch.Tensor], Any] | None = attrs.field(default=None, validator=is_optional_callable)

    def forward_as(self, label: str, req: Req) -> Req:
        if req.latents is None:
            raise ValueError(f"{label}: the request has no latents yet.")
        return req.evolve(output=req.latents if self.decoder is None else self.decoder(req.latents))


def _stages(value: Any) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"Pipeline: stages must be a list of stages, got {checks.shown(value)}.")
    return tuple(value)


@attrs.frozen
class Pipeline:
    """Stages chained: `forward(req)` passes the request through each stage's `forward` in order.

    `forward_many(reqs)` runs each stage over all the requests; a stage with a `forward_many` of its own (the
    denoising stages) advances them together, one model call per step for all of them.
    """

    stages: tuple[Any, ...] = attrs.field(converter=_stages)

    def __attrs_post_init__(self) -> None:
        for index, stage in enumerate(self.stages):
            if not callable(getattr(stage, "forward", None)):
                raise TypeError(
                    f"Pipeline: every stage needs a forward(req) method; stage {index} ({type(stage).__name__}) has "
                    "none."
                )

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
