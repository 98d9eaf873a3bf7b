"""`PairedDenoise`: video and audio latents denoised together, one joint model call and two schedules per step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch

from functional_sched import batching
from functional_sched.machinery import checks

from .denoise import (
    batch_signature,
    cat_embeds,
    check_state,
    combine_guidance,
    require_prepared,
    step_noise,
    steps_left,
)
from .prepare import PrepareLatents
from .request import Req, shape
from .stepping import Stepped, is_callable, is_scheduler, labelled, request, step_grouped, stream_seed

#: model(video_in [R, ...], audio_in [R, ...], video_timestep [R], audio_timestep [R], prompt_embeds or None)
#: -> (video_out, audio_out), each like its input.
JointModel = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]
]

#: extras keys: the audio latents, their scheduler state, and the audio latent shape (rows first) to draw them from.
AUDIO_LATENTS = "audio_latents"
AUDIO_STATE = "audio_state"
AUDIO_SHAPE = "audio_shape"
#: The noise stream of the audio latents (initial noise and stochastic steps); the video draws stream 0.
AUDIO_STREAM = 1


@attrs.frozen
class PairedDenoise(Stepped):
    """Paired audio/video denoising, as MOVA samples: each step calls the joint model once on both latents, each at
    its own timestep, then steps each with its own scheduler. The video lives in `latents`/`state` (from
    PrepareTimesteps and PrepareLatents with `video_scheduler`), the audio in `extras[AUDIO_LATENTS]` and
    `extras[AUDIO_STATE]`; `prepare` draws missing audio latents from `extras[AUDIO_SHAPE]` (noise stream 1) and
    builds a missing audio state with the video's step count.

    The pairing: the two schedules step in lockstep, so they must have the same number of steps left at every step
    (checked); anything else may differ: the shift, the sigma spacing, the scheduler class (e.g. UniPC for the video
    and SDE DPM-Solver++ for the audio). MOVA pairs two flow schedules of equal step counts with different shifts
    (its "dual sigma shift"). Classifier-free guidance applies the request's `guidance_scale` (and
    `guidance_rescale`) to both outputs, from one joint call on the negative and the positive embeddings (one scale;
    MOVA's dual CFG adds a second guidance term, which this stage does not).

    sglang (0.5.23) serves MOVA with one `FlowMatchPairScheduler` (`set_timesteps(50, shift=5.0)`, then
    `set_pair_postprocess_by_name("dual_sigma_shift", visual_shift=5.0, audio_shift=5.0)`) stepping each modality
    with `step_from_to` on its column, one guidance scale for both outputs, and its video DiT switched at
    t_video >= 900 (boundary_ratio 0.9): this stage with two `FlowMatchPair` schedulers, `from_sglang(pair)` for the
    video and `attrs.evolve(it, modality="audio")` for the audio, and the switch inside `model` (which gets the video
    timestep). Both latents are bit-identical to sglang's loop at every step (`tests/test_sglang_stages.py`).

    Implements the joint sampling loop of MOVA (SII-OpenMOSS Team, 2026, "MOVA: Towards Scalable and Synchronized
    Video-Audio Generation").
    """

    model: JointModel = attrs.field(validator=is_callable)
    video_scheduler: Any = attrs.field(validator=is_scheduler)
    audio_scheduler: Any = attrs.field(validator=is_scheduler)

    def prepare(self, req: Req) -> Req:
        """The request with audio latents and an audio state (each kept where the request has one)."""
        label = "PairedDenoise.prepare"
        request(label, req)
        self.check(label, req)
        return self._prepared(label, req)

    def _prepared(self, label: str, req: Req) -> Req:
        audio = req.extras.get(AUDIO_LATENTS)
        if audio is None:
            draw = req.evolve(
                latents=None, state=None, latent_shape=req.extras[AUDIO_SHAPE], seed=stream_seed(req.seed, AUDIO_STREAM)
            )
            audio = PrepareLatents(self.audio_scheduler).forward_as(label, draw).latents
        state = req.extras.get(AUDIO_STATE)
        if state is None:
            video = self.video_scheduler
            taken = video.steps_taken(req.state)
            steps = taken + video.steps_left(req.state)
            state = labelled(label, lambda: self.audio_scheduler.init(steps, sample=audio, begin_index=taken))
        return req.with_extras(**{AUDIO_LATENTS: audio, AUDIO_STATE: state})

    def done(self, req: Req) -> bool:
        return req.state is not None and steps_left("PairedDenoise.done", self.video_scheduler, req.state) == 0

    def check(self, label: str, req: Req) -> None:
        """Before the joint model runs: no scheduler of the request's own; the video latents and state (a state of
        `video_scheduler`'s); the audio latents, or their shape to draw them, and any audio state (a state of
        `audio_scheduler`'s), with the video's rows."""
        if req.scheduler is not None:
            raise ValueError(
                f"{label}: the request brings its own scheduler, but this stage pairs its video_scheduler and "
                "audio_scheduler; leave Req.scheduler None (or build a PairedDenoise with the schedulers you want)."
            )
        require_prepared(req, label, "video state or latents", " with the video scheduler")
        check_state(label, "state", req.state, self.video_scheduler, req.latents)
        audio = req.extras.get(AUDIO_LATENTS)
        if audio is not None:
            source = f"extras[{AUDIO_LATENTS!r}]"
            if checks.tensor(label, source, audio).dim() == 0:
                raise ValueError(f"{label}: {source} must have a leading rows dim, got a 0-d tensor.")
            rows = audio.shape[0]
        elif req.extras.get(AUDIO_SHAPE) is not None:
            source = f"extras[{AUDIO_SHAPE!r}]"
            rows = shape(label, source, req.extras[AUDIO_SHAPE])[0]
        else:
            raise ValueError(
                f"{label}: the request has neither extras[{AUDIO_LATENTS!r}] nor extras[{AUDIO_SHAPE!r}]; give the "
                "audio latents, or their shape (rows first) to draw them, with req.with_extras(...)."
            )
        if rows != req.rows:
            raise ValueError(
                f"{label}: {source} has {rows} rows but latents {req.rows}; give the audio the video's rows (leading "
                "dim), one audio row per video row."
            )
        state = req.extras.get(AUDIO_STATE)
        if state is not None:
            like, of = (req.latents, "latents") if audio is None else (audio, source)
            check_state(label, f"extras[{AUDIO_STATE!r}]", state, self.audio_scheduler, like, of)

    def _step(self, reqs: list[Req], labels: list[str]) -> list[Req]:
        """One step of each request (audio prepared first where missing); the requests that can share a batch
        (guided or not, latents and embeddings alike but for their rows) in one joint model call and one call of
        each scheduler, whatever their steps and step counts."""
        paired = [self._paired(label, req) for req, label in zip(reqs, labels, strict=True)]
        return step_grouped(paired, labels, _batch_key, self._step_batch)

    def _step_batch(self, _key: Any, reqs: list[Req], _labels: list[str]) -> list[Req]:
        video, audio = self.video_scheduler, self.audio_scheduler
        counts = [req.rows for req in reqs]
        video_state = batching.stack([req.state for req in reqs])
        audio_state = batching.stack([req.extras[AUDIO_STATE] for req in reqs])
        video_latents = torch.cat([req.latents for req in reqs])
        audio_latents = torch.cat([req.extras[AUDIO_LATENTS] for req in reqs])
        video_out, audio_out = self.predict(
            reqs,
            video.scale_model_input(video_state, video_latents),
            audio.scale_model_input(audio_state, audio_latents),
            video.timestep(video_state),
            audio.timestep(audio_state),
        )
        video_noise = torch.cat([step_noise(video, req) for req in reqs]) if video.stochastic else None
        audio_noise = None
        if audio.stochastic:
            audio_noise = torch.cat([step_noise(audio, _audio_view(req), stream=AUDIO_STREAM) for req in reqs])
        video_latents, video_state = video.step(video_state, video_out, video_latents, noise=video_noise)
        audio_latents, audio_state = audio.step(audio_state, audio_out, audio_latents, noise=audio_noise)
        return [
            req.evolve(latents=video_row, state=video_piece).with_extras(
                **{AUDIO_LATENTS: audio_row, AUDIO_STATE: audio_piece}
            )
            for req, video_row, video_piece, audio_row, audio_piece in zip(
                reqs,
                video_latents.split(counts),
                batching.split(video_state, counts),
                audio_latents.split(counts),
                batching.split(audio_state, counts),
                strict=True,
            )
        ]

    def predict(
        self,
        reqs: Sequence[Req],
        video_in: torch.Tensor,
        audio_in: torch.Tensor,
        video_t: torch.Tensor,
        audio_t: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The joint model's outputs for the requests' rows, guided (all of them, or none) as `guided_output`
        guides one output."""
        embeds = cat_embeds([req.prompt_embeds for req in reqs], "prompt_embeds")
        negative = cat_embeds([req.negative_prompt_embeds for req in reqs], "negative_prompt_embeds")
        if negative is None:
            return self.model(video_in, audio_in, video_t, audio_t, embeds)
        both = self.model(
            torch.cat([video_in, video_in]),
            torch.cat([audio_in, audio_in]),
            torch.cat([video_t, video_t]),
            torch.cat([audio_t, audio_t]),
            torch.cat([negative, embeds]),
        )
        scales = [req.guidance_scale for req in reqs]
        return combine_guidance(both[0], reqs, scales), combine_guidance(both[1], reqs, scales)

    def _paired(self, label: str, req: Req) -> Req:
        """The request checked, prepared, and checked to be pairable."""
        self.check(label, req)
        if req.extras.get(AUDIO_LATENTS) is None or req.extras.get(AUDIO_STATE) is None:
            req = self._prepared(label, req)
        video_left = self.video_scheduler.steps_left(req.state)
        audio_left = self.audio_scheduler.steps_left(req.extras[AUDIO_STATE])
        if video_left != audio_left:
            raise ValueError(
                f"{label}: the video schedule has {video_left} steps left and the audio schedule {audio_left}; "
                "paired schedules step in lockstep (one joint model call each), so give them equal step counts."
            )
        return req


def _batch_key(req: Req) -> tuple[Any, ...]:
    """Requests with equal keys can share a joint model call: their tensors agree but for their rows."""
    tensors = (req.latents, req.extras[AUDIO_LATENTS], req.prompt_embeds, req.negative_prompt_embeds)
    return tuple(batch_signature(value) for value in tensors)


def _audio_view(req: Req) -> Req:
    """The request as its audio stream: the audio latents and state in place of the video's."""
    return req.evolve(latents=req.extras[AUDIO_LATENTS], state=req.extras[AUDIO_STATE])
