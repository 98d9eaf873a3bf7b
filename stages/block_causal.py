"""`BlockCausalDenoise`: a video denoised chunk after chunk, each chunk conditioned on the chunks before it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch

from functional_sched.machinery import checks

from .denoise import Denoise, guided_output, scheduler_of
from .prepare import PrepareTimesteps
from .request import Req
from .stepping import Stepped, integer_option, is_callable, is_optional_scheduler, step_grouped, stream_seed

#: model(chunk_input [R, chunk_frames, ...], timestep [R], prompt_embeds or None, context [R, c * chunk_frames, ...]
#: or None) -> an output like chunk_input; context is the chunks denoised so far, None for the first chunk.
ChunkModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None], torch.Tensor]

#: extras key: the index of the chunk being denoised (the number of chunks once the video is done).
CHUNK = "chunk"
#: extras key of the chunk views `_ChunkDenoise` steps: the request's finished chunks, or None.
_CONTEXT = "context"


def _with_context(model: ChunkModel, context: torch.Tensor | None) -> Callable[..., torch.Tensor]:
    """`model` as `guided_output` calls it, (input, timestep, embeds), with `context` for the input's rows; a guided
    call stacks the rows twice (unconditional, then conditional), and so the context."""

    def call(model_input: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor | None) -> torch.Tensor:
        doubled = context is not None and model_input.shape[0] == 2 * context.shape[0]
        return model(model_input, timestep, embeds, torch.cat([context, context]) if doubled else context)

    return call


@attrs.frozen
class _ChunkDenoise(Denoise):
    """`Denoise` over chunk views of requests, whose model also takes each request's context (`extras[_CONTEXT]`)."""

    def predict(
        self, reqs: Sequence[Req], model_input: torch.Tensor, timestep: torch.Tensor, labels: Sequence[str]
    ) -> torch.Tensor:
        contexts = [req.extras[_CONTEXT] for req in reqs]
        context = None if contexts[0] is None else torch.cat(contexts)
        model = _with_context(self.model, context)
        return guided_output(model, reqs, model_input, timestep, [req.guidance_scale for req in reqs])


@attrs.frozen
class BlockCausalDenoise(Stepped):
    """Block-causal video denoising, as self-forcing samples: the latents [R, F, C, H, W] are split along frames into
    F / `chunk_frames` chunks, and each chunk in turn runs a schedule of its own from its initial noise, while the
    model sees the chunks denoised before it as `context` (see `ChunkModel`; a model with a KV cache builds it from
    there). Each chunk's state comes from the request's schedule fields as `PrepareTimesteps(scheduler,
    num_inference_steps)` builds a request's (with the request's own scheduler if it has one; a dynamically shifted
    schedule needs the request's `mu`), so any core scheduler works; self-forcing's four DMD steps are
    FlowMatchEulerDiscrete(shift=5.0, stochastic_sampling=True) with sigmas (1.0, 0.75, 0.5, 0.25). Chunk c's
    stochastic steps draw noise stream c (`stream_seed`); classifier-free guidance is `Denoise`'s.

    The record: `latents` is the whole video (the finished chunks, the current chunk's sample, then the rest's
    initial noise), `extras[CHUNK]` the current chunk and `state` its scheduler state. `step` advances the current
    chunk by one step and starts the next chunk when it finishes; `step_many` steps the requests at the same chunk
    together, batched as `Denoise.step_many` batches.

    Implements the autoregressive rollout of Huang et al. (2025), "Self Forcing: Bridging the Train-Test Gap in
    Autoregressive Video Diffusion" (block-causal chunks as in CausVid, Yin et al., 2025).
    """

    model: ChunkModel = attrs.field(validator=is_callable)
    scheduler: Any = attrs.field(default=None, validator=is_optional_scheduler)
    chunk_frames: int = attrs.field(kw_only=True, converter=integer_option("BlockCausalDenoise", "chunk_frames", 1))
    num_inference_steps: int | None = attrs.field(
        default=None,
        kw_only=True,
        converter=integer_option("BlockCausalDenoise", "num_inference_steps", 1, optional=True),
    )

    def chunks(self, req: Req, label: str = "BlockCausalDenoise") -> int:
        """How many chunks the request's video has."""
        if req.latents is None:
            raise ValueError(f"{label}: the request has no latents yet; run PrepareLatents first.")
        shape = tuple(req.latents.shape)
        if len(shape) < 3 or shape[1] % self.chunk_frames:
            raise ValueError(
                f"{label}: latents {shape} do not split into chunks of {self.chunk_frames} frames; give video latents "
                "[R, F, C, H, W] whose F is a multiple of chunk_frames."
            )
        return shape[1] // self.chunk_frames

    def done(self, req: Req) -> bool:
        chunk = req.extras.get(CHUNK)
        return chunk is not None and bool(chunk == self.chunks(req, "BlockCausalDenoise.done"))

    def check(self, label: str, req: Req) -> None:
        """Before the model runs: latents that split into chunks, and for a request that started, its chunk (at most
        the number of chunks) and a state as `Denoise.check` checks it (one not started gets its state here)."""
        chunks = self.chunks(req, label)
        chunk = req.extras.get(CHUNK)
        if chunk is not None:
            checks.integer(label, f"extras[{CHUNK!r}]", chunk, minimum=0, maximum=chunks)
            if chunk < chunks:
                self._denoise.check(label, req)

    @property
    def _denoise(self) -> _ChunkDenoise:
        return _ChunkDenoise(self.model, self.scheduler)

    def _step(self, reqs: list[Req], labels: list[str]) -> list[Req]:
        """One step of each request (those not started begin their first chunk); the requests at the same chunk
        batched together as `Denoise.step_many` batches."""
        started = [self._started(label, req) for req, label in zip(reqs, labels, strict=True)]
        return step_grouped(started, labels, lambda req: req.extras[CHUNK], self._step_chunk)

    def _started(self, label: str, req: Req) -> Req:
        self.check(label, req)
        chunks = self.chunks(req, label)
        chunk = req.extras.get(CHUNK)
        if chunk is None:
            return self._begin(label, req, 0)
        if chunk >= chunks:
            raise IndexError(f"{label}: the request already denoised all its {chunks} chunks; stop at done(req).")
        return req if type(chunk) is int else req.with_extras(**{CHUNK: int(chunk)})  # a numpy or tensor integer

    def _begin(self, label: str, req: Req, chunk: int) -> Req:
        """The request at the start of `chunk`, with a fresh state for it."""
        sample = req.latents[:, chunk * self.chunk_frames : (chunk + 1) * self.chunk_frames]
        prepare = PrepareTimesteps(self.scheduler, self.num_inference_steps)
        state = prepare.forward_as(label, req.evolve(latents=sample, state=None)).state
        return req.evolve(state=state).with_extras(**{CHUNK: chunk})

    def _step_chunk(self, chunk: int, reqs: list[Req], labels: list[str]) -> list[Req]:
        """One step of requests at the same chunk: `Denoise.step_many` over views of the chunk's frames, each with its
        context (the frames before the chunk) and its chunk's noise stream."""
        begin, end = chunk * self.chunk_frames, (chunk + 1) * self.chunk_frames
        views = [
            req.evolve(
                latents=req.latents[:, begin:end],
                seed=stream_seed(req.seed, chunk),
                extras={_CONTEXT: req.latents[:, :begin] if chunk else None},
            )
            for req in reqs
        ]
        stepped = []
        for req, label, part in zip(reqs, labels, self._denoise._step(views, labels), strict=True):
            latents = torch.cat([req.latents[:, :begin], part.latents, req.latents[:, end:]], dim=1)
            req = req.evolve(latents=latents, state=part.state)
            if scheduler_of(req, self.scheduler, label).steps_left(part.state) == 0:
                following = chunk + 1
                req = (
                    self._begin(label, req, following)
                    if following < self.chunks(req, label)
                    else req.with_extras(**{CHUNK: following})
                )
            stepped.append(req)
        return stepped
