"""`BlockCausalDenoise`: a video denoised chunk after chunk, each chunk conditioned on the chunks before it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch

from functional_sched import FlowMatchEulerDiscrete, SelfForcingFlowMatch, SglangFlowMatch
from functional_sched.machinery import checks

from .denoise import Denoise, guided_output, scheduler_of
from .prepare import PrepareTimesteps
from .request import Req
from .stepping import (
    Stepped,
    integer_option,
    is_callable,
    is_flag,
    is_optional_scheduler,
    labelled,
    step_grouped,
    stream_seed,
)

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


def _denoising_steps(value: Any) -> tuple[int, ...] | None:
    """The converter of `dmd_denoising_steps`: None, or a non-empty list of integers (sglang casts them to int64)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.tolist() if value.dim() == 1 else value
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(
            "BlockCausalDenoise: dmd_denoising_steps must be a non-empty list of integers (e.g. LingBot-World's "
            f"[1000, 821, 642, 321]), got {checks.shown(value)}."
        )
    return tuple(
        checks.integer("BlockCausalDenoise", f"dmd_denoising_steps[{index}]", item) for index, item in enumerate(value)
    )


#: The schedulers whose table the causal DMD steps warp: flow sigmas (x = (1 - sigma) x0 + sigma noise) with
#: timesteps `num_train_timesteps * sigma`.
_DMD_TABLES = (SelfForcingFlowMatch, SglangFlowMatch, FlowMatchEulerDiscrete)


def _table_scheduler(label: str, scheduler: Any) -> Any:
    if not isinstance(scheduler, _DMD_TABLES):
        raise ValueError(
            f"{label}: dmd_denoising_steps warps a flow-match table: the scheduler must be a SelfForcingFlowMatch "
            f"(LingBot-World's), SglangFlowMatch or FlowMatchEulerDiscrete; got {checks.shown(scheduler)}."
        )
    return scheduler


def dmd_table(label: str, scheduler: Any, steps: tuple[int, ...], warp: bool) -> tuple[list[float], list[float]]:
    """The model timesteps and sigmas of sglang's causal DMD steps on `scheduler`'s table (sglang 0.5.23's
    `DMDTimestepPreparationStage` and `pred_noise_to_pred_video`, host-side).

    The table is the scheduler's for `num_train_timesteps` steps (sglang's `set_timesteps(num_train_timesteps)`).
    With `warp`, step t becomes the table's timestep at index T - t (a 0 appended at index T); without, t itself.
    Each timestep's sigma is the table's at its nearest timestep (sglang's `argmin(|timesteps - t|)`, the first on
    ties), which for a warped step is the sigma at index T - t."""
    train = _table_scheduler(label, scheduler).num_train_timesteps
    if any(not 0 < t <= train for t in steps):
        raise ValueError(f"{label}: dmd_denoising_steps {list(steps)} must lie in (0, {train}].")
    plan = labelled(f"{label}: the {scheduler.name} table of {train} steps", lambda: scheduler.plan(train))
    timesteps, sigmas = plan.timesteps[0], plan.sigmas[0, : plan.timesteps.shape[1]]
    if not bool((timesteps[1:] < timesteps[:-1]).all()):
        raise ValueError(
            f"{label}: dmd_denoising_steps warps a falling table, but the {scheduler.name} table does not fall "
            "(inverse_timesteps or reverse_sigmas)."
        )
    chosen = torch.tensor(steps, dtype=torch.int64)
    if warp:
        chosen = torch.cat([timesteps, timesteps.new_zeros(1)])[train - chosen]
    # sglang compares in float64 for x0 (float32 for add_noise): the same nearest entry, as these differences are exact
    nearest = (timesteps.double()[None] - chosen.double()[:, None]).abs().argmin(dim=1)
    return chosen.double().tolist(), sigmas[nearest].double().tolist()


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

    sglang's block-causal pipelines (sglang 0.5.23 `multimodal_gen`):
    - LongLive2 (`FlowUniPCMultistepScheduler(shift=1)`, `set_timesteps(4, shift=5.0)` per chunk, `step` per step):
      `BlockCausalDenoise(model, FlowUniPCMultistep(shift=1.0, set_shift=5.0), chunk_frames=...,
      num_inference_steps=4)`.
    - LingBot-World's causal DMD (sglang's causal DMD denoising stage, `causal_denoising.py`): `dmd_denoising_steps`
      (sglang's name, e.g. [1000, 821, 642, 321]) with the scheduler sglang builds,
      `SelfForcingFlowMatch(num_inference_steps=1000, shift=10.0 or 5.0, sigma_min=0.0, extra_one_step=True)`: its
      table is warped as sglang's `warp_denoising_step` warps it (`dmd_table`), and each chunk runs x0 = x - sigma v,
      then renoises to the next step's sigma, `(1 - sigma') x0 + sigma' noise` (sglang's `add_noise`), returning x0
      at the last step: the steps of `FlowMatchEulerDiscrete(shift=1.0, stochastic_sampling=True)` over the warped
      table (`chunk_scheduler`). sglang forms x0 in float64 and rounds it once; here it is float32 arithmetic (about an
      ulp apart a step); its renoising noise comes from one generator across chunks, here from chunk c's stream.
      The request's own schedule fields must be None then (the steps are the stage's).

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
    dmd_denoising_steps: tuple[int, ...] | None = attrs.field(default=None, kw_only=True, converter=_denoising_steps)
    warp_denoising_step: bool = attrs.field(default=True, kw_only=True, validator=is_flag)

    def __attrs_post_init__(self) -> None:
        if self.dmd_denoising_steps is not None:
            if self.num_inference_steps is not None:
                raise ValueError(
                    "BlockCausalDenoise: give num_inference_steps or dmd_denoising_steps, not both (the causal DMD "
                    "steps are the schedule)."
                )
            if self.scheduler is not None:
                dmd_table("BlockCausalDenoise", self.scheduler, self.dmd_denoising_steps, self.warp_denoising_step)

    def chunk_scheduler(self, req: Req | None = None) -> Any:
        """The scheduler that steps a chunk's state (the one to pass `handoff.dumps` and `loads` mid-chunk): the
        request's own scheduler or the stage's; with `dmd_denoising_steps`, the x0-then-renoise
        `FlowMatchEulerDiscrete(shift=1.0, stochastic_sampling=True)` over the warped table of that scheduler."""
        label = "BlockCausalDenoise.chunk_scheduler"
        return self._stepper(label, scheduler_of(req if req is not None else Req(), self.scheduler, label))

    def _stepper(self, label: str, sched: Any) -> Any:
        if self.dmd_denoising_steps is None:
            return sched
        train = _table_scheduler(label, sched).num_train_timesteps
        return FlowMatchEulerDiscrete(num_train_timesteps=train, shift=1.0, stochastic_sampling=True)

    def _view(self, label: str, req: Req, **changes: Any) -> Req:
        """`req` as `_ChunkDenoise` steps it: with the scheduler that steps its chunk."""
        if self.dmd_denoising_steps is None:
            return req.evolve(**changes) if changes else req
        return req.evolve(scheduler=self._stepper(label, scheduler_of(req, self.scheduler, label)), **changes)

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
        if self.dmd_denoising_steps is not None:
            own = [name for name in ("num_inference_steps", "timesteps", "sigmas") if getattr(req, name) is not None]
            if own:
                raise ValueError(
                    f"{label}: the stage runs the causal DMD steps {list(self.dmd_denoising_steps)}; the request's "
                    f"own {', '.join(own)} would be ignored: leave it None."
                )
        if chunk is not None:
            checks.integer(label, f"extras[{CHUNK!r}]", chunk, minimum=0, maximum=chunks)
            if chunk < chunks:
                self._denoise.check(label, self._view(label, req))

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
        if self.dmd_denoising_steps is None:
            prepare = PrepareTimesteps(self.scheduler, self.num_inference_steps)
            state = prepare.forward_as(label, req.evolve(latents=sample, state=None)).state
        else:
            sched = scheduler_of(req, self.scheduler, label)
            timesteps, sigmas = dmd_table(label, sched, self.dmd_denoising_steps, self.warp_denoising_step)
            stepper = self._stepper(label, sched)
            state = labelled(label, lambda: stepper.init(sample=sample, timesteps=timesteps, sigmas=sigmas))
        return req.evolve(state=state).with_extras(**{CHUNK: chunk})

    def _step_chunk(self, chunk: int, reqs: list[Req], labels: list[str]) -> list[Req]:
        """One step of requests at the same chunk: `Denoise.step_many` over views of the chunk's frames, each with its
        context (the frames before the chunk) and its chunk's noise stream."""
        begin, end = chunk * self.chunk_frames, (chunk + 1) * self.chunk_frames
        views = [
            self._view(
                label,
                req,
                latents=req.latents[:, begin:end],
                seed=stream_seed(req.seed, chunk),
                extras={_CONTEXT: req.latents[:, :begin] if chunk else None},
            )
            for req, label in zip(reqs, labels, strict=True)
        ]
        stepped = []
        for req, label, view, part in zip(reqs, labels, views, self._denoise._step(views, labels), strict=True):
            latents = torch.cat([req.latents[:, :begin], part.latents, req.latents[:, end:]], dim=1)
            req = req.evolve(latents=latents, state=part.state)
            if scheduler_of(view, self.scheduler, label).steps_left(part.state) == 0:
                following = chunk + 1
                req = (
                    self._begin(label, req, following)
                    if following < self.chunks(req, label)
                    else req.with_extras(**{CHUNK: following})
                )
            stepped.append(req)
        return stepped
