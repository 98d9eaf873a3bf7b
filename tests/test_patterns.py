"""The pattern stages of the seed pipelines: distilled stepping (DMD), a distilled schedule swapped in mid-request,
block-causal chunks (self-forcing) and paired audio/video schedules (MOVA).

For each: the stage equals a loop of the pattern written out by hand; many requests stepped interleaved (`step`) or
together (`step_many`) end bit-identical to each run alone (`forward`); inputs are never written; misuse raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
import torch.utils._pytree as pytree

import functional_sched as fs
from functional_sched.stages import Denoise, PrepareTimesteps, Req
from functional_sched.stages.block_causal import CHUNK, BlockCausalDenoise
from functional_sched.stages.distilled import DistilledDenoise
from functional_sched.stages.paired import AUDIO_LATENTS, AUDIO_SHAPE, AUDIO_STATE, PairedDenoise
from functional_sched.stages.stepping import stream_seed
from functional_sched.stages.swap import PARKED_STATE, ScheduleSwap
from functional_sched.testing import latents
from functional_sched.testing.requests import same_state

FLOW = fs.FlowMatchEulerDiscrete
DMD = FLOW(shift=5.0, stochastic_sampling=True)  # self-forcing's warped four-step sampler


# ------------------------------------------------------------------------------------------------- toy models
def _per_row(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float32).view(-1, *([1] * (like.dim() - 1))) / 1000.0


def conditioned_model(sample: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor | None) -> torch.Tensor:
    """Deterministic and elementwise per row (so batching cannot change a row), conditioned on t and embeds."""
    t = _per_row(timestep, sample)
    out = torch.tanh(sample) * (0.5 + t) - 0.1 * sample
    return out if embeds is None else out + 0.2 * torch.sin(embeds + t)


def distilled_model(sample: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor | None) -> torch.Tensor:
    """A different toy for the distilled steps (ignores the embeddings, as a guidance-distilled model may)."""
    t = _per_row(timestep, sample)
    return 0.8 * sample - 0.3 * torch.cos(sample + t)


def chunk_model(
    sample: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor | None, context: torch.Tensor | None
) -> torch.Tensor:
    """`conditioned_model` plus the context's first and last frames and its length (indexing only: batch-invariant)."""
    out = conditioned_model(sample, timestep, embeds)
    if context is None:
        return out
    return out + 0.3 * torch.tanh(context[:, -1:]) + 0.02 * context.shape[1] * context[:, :1]


def joint_model(
    video: torch.Tensor, audio: torch.Tensor, video_t: torch.Tensor, audio_t: torch.Tensor, embeds: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each output depends on both modalities (one element of the other, per row) and on its own timestep."""
    e = embeds[:, 0]
    video_out = conditioned_model(video, video_t, e.view(-1, 1, 1, 1)) + 0.1 * audio[:, 0, 0].view(-1, 1, 1, 1)
    audio_out = torch.tanh(audio) * (0.4 + _per_row(audio_t, audio)) - 0.2 * audio + 0.1 * torch.cos(e.view(-1, 1, 1))
    return video_out, audio_out + 0.1 * video[:, 0, 0, 0].view(-1, 1, 1)


# ---------------------------------------------------------------------------------------------------- helpers
def drawn_noise(seed: int, step: int, shape: Sequence[int]) -> torch.Tensor:
    """The stages' noise contract: N(0, 1) from a CPU generator seeded by (seed, step), drawn as diffusers draws."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + step) % (1 << 63))
    return fs.randn_tensor(tuple(shape), generator=generator, dtype=torch.float32)


def cfg_output(model: Callable[..., Any], req: Req, *args: Any) -> Any:
    """The model's classifier-free-guided output for one request, written out: uncond + s (cond - uncond)."""
    if not req.guided:
        return model(*args, req.prompt_embeds)
    uncond, cond = model(*args, req.negative_prompt_embeds), model(*args, req.prompt_embeds)
    if isinstance(cond, tuple):
        return tuple(u + req.guidance_scale * (c - u) for u, c in zip(uncond, cond, strict=True))
    return uncond + req.guidance_scale * (cond - uncond)


def tensors(req: Req) -> list[torch.Tensor]:
    """Every tensor a request holds (its states' included)."""
    fields = [req.latents, req.prompt_embeds, req.negative_prompt_embeds, req.state, dict(req.extras)]
    return [leaf for leaf in pytree.tree_leaves(fields) if isinstance(leaf, torch.Tensor)]


def assert_untouched(reqs: Sequence[Req], run: Callable[[], Any]) -> None:
    """`run()` writes none of the requests' tensors (their `_version` and values stay)."""
    before = [(tensor, tensor._version, tensor.clone()) for req in reqs for tensor in tensors(req)]
    run()
    for tensor, version, copy in before:
        assert tensor._version == version and torch.equal(tensor, copy)


def assert_same(ours: Req, ref: Req) -> None:
    """Bit-equal latents, states and extras."""
    assert torch.equal(ours.latents, ref.latents)
    assert same_state(ours.state, ref.state)
    assert ours.extras.keys() == ref.extras.keys()
    for key, value in ours.extras.items():
        other = ref.extras[key]
        assert same_state(value, other) if isinstance(value, torch.Tensor) or hasattr(value, "plan") else value == other


def advanced(stage: Any, req: Req, steps: int) -> Req:
    """The request after `steps` steps, or at its end if that comes first."""
    for _ in range(steps):
        if stage.done(req):
            break
        req = stage.step(req)
    return req


def assert_interleaving_is_serial(stage: Any, reqs: Sequence[Req]) -> None:
    """Round-robin `step`s, and `forward_many` (`step_many`) over requests at different steps, end bit-identical
    to each request run alone with `forward`."""
    alone = [stage.forward(req) for req in reqs]
    robin = list(reqs)
    while not all(stage.done(req) for req in robin):
        robin = [req if stage.done(req) else stage.step(req) for req in robin]
    together = stage.forward_many([advanced(stage, req, index % 3) for index, req in enumerate(reqs)])
    for ref, ours_robin, ours_together in zip(alone, robin, together, strict=True):
        assert_same(ours_robin, ref)
        assert_same(ours_together, ref)


def request(index: int, shape: Sequence[int], guided: bool = False, **fields: Any) -> Req:
    """A request with seeded latents and embeddings of `shape` (rows first)."""
    return Req(
        latents=latents(shape, torch.float32, seed=100 + index),
        prompt_embeds=latents(shape, torch.float32, seed=200 + index),
        negative_prompt_embeds=latents(shape, torch.float32, seed=300 + index) if guided else None,
        guidance_scale=3.0 + index,
        seed=index,
        **fields,
    )


def test_stream_seeds_are_distinct() -> None:
    """Stream 0 is the request's seed (`step_noise`'s); every (seed, stream) gets a seed of its own, stably."""
    assert [stream_seed(seed, 0) for seed in range(5)] == list(range(5))
    seeds = {stream_seed(seed, stream) for seed in range(50) for stream in range(4)}
    assert len(seeds) == 200 and all(0 <= seed < 1 << 63 for seed in seeds)
    assert stream_seed(7, 1) == stream_seed(7, 1) != stream_seed(7, 2)


# ------------------------------------------------------------------------------------------------ distilled (DMD)
def dmd_reference(req: Req, timesteps: Sequence[float], shift: float) -> torch.Tensor:
    """DMD's sampling loop from its formula: x0 = x - sigma v, then x = (1 - sigma') x0 + sigma' z; x0 at the end."""
    warped = [shift * (t / 1000) / (1 + (shift - 1) * (t / 1000)) for t in timesteps]
    x = req.latents
    for step, sigma in enumerate(warped):
        v = conditioned_model(x, torch.full((x.shape[0],), 1000 * sigma), req.prompt_embeds)
        x0 = x - sigma * v
        following = warped[step + 1] if step + 1 < len(warped) else None
        x = x0 if following is None else (1 - following) * x0 + following * drawn_noise(req.seed, step, x.shape)
    return x


@pytest.mark.parametrize("shift", [1.0, 5.0])
def test_distilled_is_x0_then_renoise(shift: float) -> None:
    """The stage's result is DMD's loop of the formula over the warped list, and the model sees 1000 sigma."""
    seen: list[torch.Tensor] = []

    def recording(sample: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor | None) -> torch.Tensor:
        seen.append(timestep)
        return conditioned_model(sample, timestep, embeds)

    stage = DistilledDenoise(recording, FLOW(shift=shift, stochastic_sampling=True))
    req = request(1, (2, 3, 4, 4))
    out = stage.forward(req)
    torch.testing.assert_close(out.latents, dmd_reference(req, stage.timesteps, shift), rtol=1e-6, atol=1e-6)
    warped = [1000 * shift * (t / 1000) / (1 + (shift - 1) * (t / 1000)) for t in stage.timesteps]
    torch.testing.assert_close(torch.stack([t[0] for t in seen]), torch.tensor(warped), rtol=1e-6, atol=0.0)
    if shift == 1.0:
        assert [t[0].item() for t in seen] == [1000.0, 750.0, 500.0, 250.0]


def test_distilled_last_step_is_x0() -> None:
    """The last step returns x0 = x - sigma v itself, no noise added."""
    stage = DistilledDenoise(conditioned_model, DMD, timesteps=(1000, 500))
    req = stage.step(request(2, (1, 2, 4, 4)))
    sigma = stage.scheduler.sigmas(req.state)[1]
    x0 = req.latents - sigma * conditioned_model(req.latents, stage.scheduler.timestep(req.state), req.prompt_embeds)
    assert torch.equal(stage.step(req).latents, x0)


def test_distilled_interleaved_equals_serial() -> None:
    stage = DistilledDenoise(conditioned_model, DMD)
    lists = [None, (1000, 500), (1000, 800, 600, 400, 200), (900, 250), None, (1000,), (1000, 750, 500), None]
    reqs = [request(i, (1 + i % 2, 2, 4, 4), timesteps=lst) for i, lst in enumerate(lists)]
    assert_interleaving_is_serial(stage, reqs)


def test_distilled_writes_no_input() -> None:
    stage = DistilledDenoise(conditioned_model, DMD)
    reqs = [stage.prepare(request(i, (2, 2, 4, 4))) for i in range(3)]
    assert_untouched(reqs, lambda: (stage.forward_many(reqs), stage.forward(reqs[0])))


def test_distilled_misuse() -> None:
    with pytest.raises(ValueError, match=r"FlowMatchEulerDiscrete\(stochastic_sampling=True\)"):
        DistilledDenoise(conditioned_model, FLOW())
    with pytest.raises(ValueError, match=r"FlowMatchEulerDiscrete\(stochastic_sampling=True\)"):
        DistilledDenoise(conditioned_model, fs.UniPCMultistep())
    with pytest.raises(ValueError, match="must decrease strictly"):
        DistilledDenoise(conditioned_model, DMD, timesteps=(500, 750))
    stage = DistilledDenoise(conditioned_model, DMD)
    with pytest.raises(ValueError, match="must decrease strictly"):
        stage.step(request(0, (1, 2, 4, 4), timesteps=(1000, 1200)))
    with pytest.raises(ValueError, match=r"FlowMatchEulerDiscrete\(stochastic_sampling=True\)"):
        stage.step(request(0, (1, 2, 4, 4), scheduler=FLOW()))  # a request's own scheduler must renoise too
    with pytest.raises(ValueError, match="run PrepareLatents first"):
        stage.step(Req(latent_shape=(1, 2, 4, 4)))
    with pytest.raises(IndexError, match="already took all 4 steps"):
        stage.step(stage.forward(request(0, (1, 2, 4, 4))))


# ---------------------------------------------------------------------------------------------- schedule swap
WINDOW = (0.8, 0.55, 0.4)  # distilled sigmas from the regular sigma at step 2 to the one at step 4
REGULAR_SIGMAS = [
    (1.0, 0.9, 0.8, 0.6, 0.4, 0.3, 0.2, 0.1),
    (1.0, 0.85, 0.8, 0.7, 0.4, 0.25, 0.1),
    (0.95, 0.9, 0.8, 0.5, 0.4, 0.2),
]


def swap_stage(**changes: Any) -> ScheduleSwap:
    settings: dict[str, Any] = {
        "regular": Denoise(conditioned_model, FLOW()),
        "distilled": Denoise(distilled_model, FLOW(stochastic_sampling=True)),
        "sigmas": WINDOW,
        "swap_at": 2,
        "resume_at": 4,
    }
    return ScheduleSwap(**{**settings, **changes})


def swap_request(index: int, sigmas: Sequence[float], rows: int = 1, guided: bool = True) -> Req:
    req = request(index, (rows, 2, 4, 4), guided=guided, sigmas=tuple(sigmas))
    return PrepareTimesteps(FLOW()).forward(req)


def swap_reference(stage: ScheduleSwap, req: Req) -> torch.Tensor:
    """The swap written out: regular Euler steps to swap_at, distilled steps over the window (no guidance, noise
    stream 1), then the regular schedule restarted at resume_at (`init(begin_index=...)`) to its end."""
    regular, distilled = FLOW(), FLOW(stochastic_sampling=True)
    x, state = req.latents, req.state
    for _ in range(stage.swap_at):
        x, state = regular.step(state, cfg_output(conditioned_model, req, x, regular.timestep(state)), x)
    state = distilled.init(sample=x, sigmas=WINDOW)
    for step in range(len(WINDOW) - 1):
        noise = drawn_noise(stream_seed(req.seed, 1), step, x.shape)
        x, state = distilled.step(state, distilled_model(x, distilled.timestep(state), None), x, noise=noise)
    state = regular.init(sample=x, sigmas=req.sigmas, begin_index=stage.resume_at)
    while regular.steps_left(state):
        x, state = regular.step(state, cfg_output(conditioned_model, req, x, regular.timestep(state)), x)
    return x


@pytest.mark.parametrize("sigmas", REGULAR_SIGMAS)
def test_swap_is_regular_distilled_regular(sigmas: Sequence[float]) -> None:
    stage = swap_stage()
    req = swap_request(3, sigmas, rows=2)
    assert torch.equal(stage.forward(req).latents, swap_reference(stage, req))


def test_swap_record_and_guidance_option() -> None:
    """In the window the regular state is parked in extras; the distilled model is guided only if asked."""
    guided_distilled = Denoise(conditioned_model, FLOW(stochastic_sampling=True))
    stage = swap_stage(distilled=guided_distilled, distilled_guidance=True)
    req = advanced(stage, swap_request(4, REGULAR_SIGMAS[0]), 3)
    assert PARKED_STATE in req.extras and stage.regular.scheduler.steps_taken(req.extras[PARKED_STATE]) == 2
    unguided = advanced(swap_stage(distilled=guided_distilled), swap_request(4, REGULAR_SIGMAS[0]), 3)
    assert not torch.equal(req.latents, unguided.latents)
    after = advanced(stage, req, 2)
    assert PARKED_STATE not in after.extras and stage.regular.scheduler.steps_taken(after.state) == 5


def test_swap_interleaved_equals_serial() -> None:
    stage = swap_stage()
    reqs = [swap_request(i, REGULAR_SIGMAS[i % 3], rows=1 + i % 2, guided=i % 4 != 3) for i in range(8)]
    assert_interleaving_is_serial(stage, reqs)


def test_swap_writes_no_input() -> None:
    stage = swap_stage()
    reqs = [swap_request(i, REGULAR_SIGMAS[i % 3]) for i in range(3)]
    assert_untouched(reqs, lambda: (stage.forward_many(reqs), stage.forward(advanced(stage, reqs[0], 3))))


def test_swap_misuse() -> None:
    with pytest.raises(ValueError, match="regular scheduler must be FlowMatchEulerDiscrete, got UniPCMultistep"):
        swap_stage(regular=Denoise(conditioned_model, fs.UniPCMultistep()))
    with pytest.raises(ValueError, match="takes them as given"):
        swap_stage(distilled=Denoise(distilled_model, FLOW(shift=3.0)))
    with pytest.raises(ValueError, match="swap_at < resume_at"):
        swap_stage(swap_at=4, resume_at=4)
    with pytest.raises(ValueError, match="at least 2 values"):
        swap_stage(sigmas=(0.8,))
    stage = swap_stage()
    with pytest.raises(ValueError, match="regular scheduler must be FlowMatchEulerDiscrete, got DPMSolverMultistep"):
        stage.step(swap_request(0, REGULAR_SIGMAS[0]).evolve(scheduler=fs.DPMSolverMultistep()))
    with pytest.raises(ValueError, match=r"last distilled sigma is 0.4, but the request's regular sigma at step 4"):
        stage.forward(swap_request(0, (1.0, 0.9, 0.8, 0.6, 0.45, 0.2)))
    with pytest.raises(ValueError, match=r"first distilled sigma is 0.8, but the request's regular sigma at step 2"):
        stage.forward(swap_request(0, (1.0, 0.9, 0.7, 0.6, 0.4, 0.2)))
    with pytest.raises(ValueError, match="has 4 steps, so it cannot resume at step 4"):
        stage.step(swap_request(0, (1.0, 0.9, 0.8, 0.6)))
    inside = swap_request(0, REGULAR_SIGMAS[0])
    inside = inside.evolve(state=FLOW().init(sample=inside.latents, sigmas=inside.sigmas, begin_index=3))
    with pytest.raises(ValueError, match=r"inside the swapped window \(2, 4\)"):
        stage.step(inside)
    with pytest.raises(ValueError, match="run PrepareTimesteps and PrepareLatents first"):
        stage.step(Req(latent_shape=(1, 2, 4, 4)))
    with pytest.raises(IndexError, match="already took all 8 steps"):
        stage.step(stage.forward(swap_request(0, REGULAR_SIGMAS[0])))


# ------------------------------------------------------------------------------------------ block-causal chunks
VIDEO = (2, 3, 2, 2)  # per-row [frames per chunk, C, H, W]; F = chunks * 2
CHUNK_SCHEDULERS = [
    pytest.param(DMD, {"sigmas": (1.0, 0.75, 0.5, 0.25)}, id="self-forcing-dmd"),
    pytest.param(
        fs.UniPCMultistep(use_flow_sigmas=True, flow_shift=5.0, prediction_type="flow_prediction"),
        {"num_inference_steps": 5},
        id="unipc-flow",
    ),
    pytest.param(fs.DPMSolverMultistep(algorithm_type="sde-dpmsolver++"), {"num_inference_steps": 4}, id="dpm-sde"),
]


def video_request(index: int, chunks: int, rows: int = 1, guided: bool = True, **schedule: Any) -> Req:
    """Video latents [R, F, C, H, W] with embeddings [R, 1, C, H, W] (one frame, broadcast over any chunk)."""
    frames, *rest = VIDEO
    embeds = request(index, (rows, 1, *rest), guided=guided)
    return embeds.evolve(latents=latents((rows, frames * chunks, *rest), torch.float32, seed=400 + index), **schedule)


def block_reference(sched: Any, req: Req, chunk_frames: int) -> torch.Tensor:
    """Self-forcing's rollout written out: chunk by chunk, a fresh state each, the finished chunks as context."""
    finished: list[torch.Tensor] = []
    for chunk in range(req.latents.shape[1] // chunk_frames):
        x = req.latents[:, chunk * chunk_frames : (chunk + 1) * chunk_frames]
        steps = None if req.sigmas is not None else req.num_inference_steps
        state = sched.init(steps, sample=x, sigmas=req.sigmas)
        context = torch.cat(finished, dim=1) if finished else None
        with_context = lambda x, t, embeds, context=context: chunk_model(x, t, embeds, context)  # noqa: E731
        for step in range(sched.steps_left(state)):
            output = cfg_output(with_context, req, x, sched.timestep(state))
            noise = drawn_noise(stream_seed(req.seed, chunk), step, x.shape) if sched.stochastic else None
            x, state = sched.step(state, output, x, noise=noise)
        finished.append(x)
    return torch.cat(finished, dim=1)


@pytest.mark.parametrize(("sched", "schedule"), CHUNK_SCHEDULERS)
def test_block_causal_is_chunk_by_chunk(sched: Any, schedule: dict[str, Any]) -> None:
    stage = BlockCausalDenoise(chunk_model, sched, chunk_frames=VIDEO[0])
    req = video_request(5, chunks=3, rows=2, **schedule)
    out = stage.forward(req)
    assert out.extras[CHUNK] == 3
    assert torch.equal(out.latents, block_reference(sched, req, VIDEO[0]))


@pytest.mark.parametrize(("sched", "schedule"), CHUNK_SCHEDULERS)
def test_block_causal_interleaved_equals_serial(sched: Any, schedule: dict[str, Any]) -> None:
    stage = BlockCausalDenoise(chunk_model, sched, chunk_frames=VIDEO[0])
    steps = schedule.get("num_inference_steps")
    reqs = [
        video_request(
            i,
            chunks=1 + i % 3,
            rows=1 + i % 2,
            guided=i % 4 != 3,
            **(schedule if steps is None else {"num_inference_steps": steps + i % 3}),
        )
        for i in range(8)
    ]
    assert_interleaving_is_serial(stage, reqs)


def test_block_causal_steps_one_chunk_at_a_time() -> None:
    """Each step is one step of the current chunk: the frames after it keep their initial noise."""
    stage = BlockCausalDenoise(chunk_model, DMD, chunk_frames=2)
    req = video_request(6, chunks=3, sigmas=(1.0, 0.5))
    after = advanced(stage, req, 3)  # chunk 0 done (2 steps), chunk 1 one step in
    assert after.extras[CHUNK] == 1 and DMD.steps_taken(after.state) == 1
    assert torch.equal(after.latents[:, 4:], req.latents[:, 4:])
    assert not torch.equal(after.latents[:, 2:4], req.latents[:, 2:4])


def test_block_causal_writes_no_input() -> None:
    stage = BlockCausalDenoise(chunk_model, DMD, chunk_frames=2)
    reqs = [video_request(i, chunks=2, sigmas=(1.0, 0.5)) for i in range(3)]
    assert_untouched(reqs, lambda: (stage.forward_many(reqs), stage.forward(advanced(stage, reqs[0], 3))))


def test_block_causal_misuse() -> None:
    with pytest.raises(ValueError, match="chunk_frames must be >= 1, got 0"):
        BlockCausalDenoise(chunk_model, DMD, chunk_frames=0)
    stage = BlockCausalDenoise(chunk_model, DMD, chunk_frames=2)
    with pytest.raises(ValueError, match=r"latents \(1, 5, 3, 2, 2\) do not split into chunks of 2 frames"):
        stage.step(request(0, (1, 5, 3, 2, 2), sigmas=(1.0, 0.5)))
    with pytest.raises(ValueError, match="run PrepareLatents first"):
        stage.step(Req(latent_shape=(1, 4, 3, 2, 2)))
    with pytest.raises(ValueError, match="no schedule"):
        stage.step(video_request(0, chunks=2))
    with pytest.raises(IndexError, match="already denoised all its 2 chunks"):
        stage.step(stage.forward(video_request(0, chunks=2, sigmas=(1.0, 0.5))))


# ---------------------------------------------------------------------------------------------- paired (MOVA)
VIDEO_LATENT = (2, 3, 4)  # per row
AUDIO_LATENT = (5, 3)
PAIRS = [
    pytest.param(FLOW(shift=5.0), FLOW(shift=1.0, stochastic_sampling=True), id="flow-dual-shift"),
    pytest.param(
        fs.UniPCMultistep(use_flow_sigmas=True, flow_shift=5.0, prediction_type="flow_prediction"),
        fs.DPMSolverMultistep(
            algorithm_type="sde-dpmsolver++", use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction"
        ),
        id="unipc-video-dpm-sde-audio",
    ),
]


def paired_request(video_sched: Any, index: int, steps: int, rows: int = 1, **fields: Any) -> Req:
    req = Req(
        latents=latents((rows, *VIDEO_LATENT), torch.float32, seed=100 + index),
        prompt_embeds=latents((rows, 1), torch.float32, seed=200 + index),
        negative_prompt_embeds=latents((rows, 1), torch.float32, seed=300 + index),
        guidance_scale=2.0 + index,
        seed=index,
        num_inference_steps=steps,
        **fields,
    )
    return PrepareTimesteps(video_sched).forward(req).with_extras(**{AUDIO_SHAPE: (rows, *AUDIO_LATENT)})


def paired_reference(video_sched: Any, audio_sched: Any, req: Req) -> tuple[torch.Tensor, torch.Tensor]:
    """MOVA's loop written out: one guided joint call, then a step of each schedule (audio noise on stream 1)."""
    audio_seed = stream_seed(req.seed, 1)
    shape = req.extras[AUDIO_SHAPE]
    audio = fs.randn_tensor(shape, generator=torch.Generator().manual_seed(audio_seed), dtype=torch.float32)
    video, video_state = req.latents, req.state
    audio_state = audio_sched.init(req.num_inference_steps, sample=audio)
    for step in range(req.num_inference_steps):
        video_t, audio_t = video_sched.timestep(video_state), audio_sched.timestep(audio_state)
        video_out, audio_out = cfg_output(joint_model, req, video, audio, video_t, audio_t)
        video_noise = drawn_noise(req.seed, step, video.shape) if video_sched.stochastic else None
        audio_noise = drawn_noise(audio_seed, step, audio.shape) if audio_sched.stochastic else None
        video, video_state = video_sched.step(video_state, video_out, video, noise=video_noise)
        audio, audio_state = audio_sched.step(audio_state, audio_out, audio, noise=audio_noise)
    return video, audio


@pytest.mark.parametrize(("video_sched", "audio_sched"), PAIRS)
def test_paired_is_joint_call_then_both_steps(video_sched: Any, audio_sched: Any) -> None:
    stage = PairedDenoise(joint_model, video_sched, audio_sched)
    req = paired_request(video_sched, 7, steps=5, rows=2)
    out = stage.forward(req)
    video, audio = paired_reference(video_sched, audio_sched, req)
    assert torch.equal(out.latents, video)
    assert torch.equal(out.extras[AUDIO_LATENTS], audio)
    assert audio_sched.steps_left(out.extras[AUDIO_STATE]) == 0


@pytest.mark.parametrize(("video_sched", "audio_sched"), PAIRS)
def test_paired_interleaved_equals_serial(video_sched: Any, audio_sched: Any) -> None:
    stage = PairedDenoise(joint_model, video_sched, audio_sched)
    reqs = [
        paired_request(video_sched, i, steps=4 + i % 3, rows=1 + i % 2, guidance_rescale=0.5 * (i % 2))
        for i in range(8)
    ]
    reqs[3] = reqs[3].evolve(negative_prompt_embeds=None)  # unguided: batched apart from the guided ones
    assert_interleaving_is_serial(stage, [stage.prepare(req) for req in reqs])


def test_paired_writes_no_input() -> None:
    video_sched, audio_sched = FLOW(shift=5.0), FLOW(stochastic_sampling=True)
    stage = PairedDenoise(joint_model, video_sched, audio_sched)
    reqs = [stage.prepare(paired_request(video_sched, i, steps=3)) for i in range(3)]
    assert_untouched(reqs, lambda: (stage.forward_many(reqs), stage.forward(stage.step(reqs[0]))))


def test_paired_misuse() -> None:
    video_sched, audio_sched = FLOW(shift=5.0), FLOW()
    stage = PairedDenoise(joint_model, video_sched, audio_sched)
    req = paired_request(video_sched, 0, steps=4)
    with pytest.raises(ValueError, match=r"neither extras\['audio_latents'\] nor extras\['audio_shape'\]"):
        stage.step(req.evolve(extras={}))
    with pytest.raises(ValueError, match="run PrepareTimesteps and PrepareLatents with the video scheduler"):
        stage.step(Req(latent_shape=(1, *VIDEO_LATENT)))
    audio = latents((1, *AUDIO_LATENT), torch.float32, seed=0)
    mismatched = req.with_extras(**{AUDIO_LATENTS: audio, AUDIO_STATE: audio_sched.init(6, sample=audio)})
    with pytest.raises(ValueError, match="4 steps left and the audio schedule 6; paired schedules step in lockstep"):
        stage.step(mismatched)
    with pytest.raises(ValueError, match=r"pairs its video_scheduler and audio_scheduler; leave Req\.scheduler None"):
        stage.step(req.evolve(scheduler=FLOW()))
    with pytest.raises(IndexError, match="already took all 4 steps"):
        stage.step(stage.forward(req))
