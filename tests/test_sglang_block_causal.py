"""`BlockCausalDenoise` against sglang 0.5.23's own block-causal loops, written with sglang's scheduler objects.

- LingBot-World's causal DMD (`pipelines/lingbot_world_causal_dmd_pipeline.py`, `DMDTimestepPreparationStage` in
  `pipelines_core/stages/timestep_preparation.py`, the chunk loop of `pipelines_core/stages/causal_denoising.py`):
  `SelfForcingFlowMatchScheduler(num_inference_steps=1000, shift, sigma_min=0.0, extra_one_step=True)`, its table
  warped to the DMD steps, per step x0 from the flow prediction in float64 (`pred_noise_to_pred_video`), then
  `add_noise` to the next step with noise from the request's one generator (here: the noise our stage draws, fed in
  sglang's order), x0 at the last step.
- LongLive2 (`pipelines/longlive2_pipeline.py`, `pipelines_core/stages/model_specific_stages/longlive2.py`):
  `FlowUniPCMultistepScheduler(shift=1)`, `set_timesteps(4, shift=5.0)` per chunk, `step` per step, guided as
  `uncond + g (cond - uncond)`.

Every step of every chunk is compared, the model's timesteps too; so are requests at different chunks stepped in
one `step_many` and a request handed to another worker mid-chunk. Needs sglang's wheel installed alone (`pip install
--no-deps sglang==0.5.23`); skipped without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

import functional_sched as fs
from functional_sched.adapters import from_sglang
from functional_sched.adapters import sglang as sglang_adapter
from functional_sched.stages import Req, handoff
from functional_sched.stages.block_causal import CHUNK, BlockCausalDenoise
from functional_sched.stages.stepping import stream_seed
from functional_sched.testing import latents

pytestmark = pytest.mark.skipif(
    not sglang_adapter.available(), reason="sglang's wheel is not installed: pip install --no-deps sglang==0.5.23"
)

CHUNK_FRAMES = 2
FRAME = (3, 4, 4)  # C, H, W of one latent frame
# sglang forms x0 in float64 and rounds it once (`pred_noise_to_pred_video`); the stage's x0 is float32 arithmetic
# (sigma v rounded, then the difference), so x0 may differ by an ulp or so (with x0 formed in float32, sglang's loop is
# bit-identical to ours: `test_lingbot_differs_only_by_x0_rounding`). Relative to each step's largest value:
# one step from the same video, at most two float32 ulps (measured <= 1.07e-7 over 12 requests x 3 configs); a
# rollout of 3 chunks, where each chunk's model reads the chunks before it, compounds them (measured <= 2.0e-7),
# far within the 1e-5 float32 bound of the parity suite.
STEP_BOUND = 2.0**-22
ROLLOUT_BOUND = 1e-6


# ------------------------------------------------------------------------------------------------ toy chunk model
class ChunkModel:
    """Deterministic, elementwise per row, conditioned on t and the embeddings, reading its context (the finished
    chunks: their last frame and their count). Records the timesteps it is called with, per row."""

    def __init__(self) -> None:
        self.timesteps: list[float] = []
        self.calls = 0

    def __call__(
        self, sample: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor | None, context: torch.Tensor | None
    ) -> torch.Tensor:
        self.calls += 1
        self.timesteps.extend(timestep.tolist())
        t = timestep.to(torch.float32).view(-1, 1, 1, 1, 1) / 1000.0
        out = torch.tanh(sample) * (0.5 + t) - 0.1 * sample
        if embeds is not None:
            out = out + 0.2 * torch.sin(embeds + t)
        if context is not None:
            out = out + 0.3 * torch.tanh(context[:, -1:]) + 0.02 * context.shape[1] * context[:, :1]
        return out


def video(index: int, chunks: int, rows: int = 1, guided: bool = False, **fields: Any) -> Req:
    """Video latents [R, F, C, H, W]; embeddings [R, 1, C, H, W] (broadcast over a chunk's frames)."""
    return Req(
        latents=latents((rows, CHUNK_FRAMES * chunks, *FRAME), torch.float32, seed=500 + index),
        prompt_embeds=latents((rows, 1, *FRAME), torch.float32, seed=600 + index),
        negative_prompt_embeds=latents((rows, 1, *FRAME), torch.float32, seed=700 + index) if guided else None,
        guidance_scale=3.0,
        seed=index,
        **fields,
    )


def stage_noise(seed: int, chunk: int, step: int, shape: torch.Size) -> torch.Tensor:
    """The noise the stage draws for a chunk's step (`step_noise` on chunk `chunk`'s stream, `stream_seed`)."""
    generator = torch.Generator().manual_seed((stream_seed(seed, chunk) * 1_000_003 + step) % (1 << 63))
    return fs.randn_tensor(tuple(shape), generator=generator, dtype=torch.float32)


# ------------------------------------------------------------------------------------------- sglang's loops
def spliced(video: torch.Tensor, start: int, chunk: torch.Tensor) -> torch.Tensor:
    """The video with the chunk at `start` replaced (a copy: sglang's scheduler may hold the chunk's views)."""
    return torch.cat([video[:, :start], chunk, video[:, start + chunk.shape[1] :]], dim=1)


def lingbot_scheduler(shift: float) -> Any:
    """LingBot-World's scheduler, as its pipeline builds it (`initialize_pipeline`)."""
    cls = sglang_adapter.sglang_class("SelfForcingFlowMatchScheduler")
    return cls(num_inference_steps=1000, shift=shift, sigma_min=0.0, extra_one_step=True)


def sglang_causal_dmd(
    scheduler: Any,
    steps: list[int],
    warp: bool,
    req: Req,
    model: ChunkModel,
    replay: list[torch.Tensor] | None = None,
    x0_dtype: torch.dtype = torch.float64,
) -> list[torch.Tensor]:
    """sglang's causal DMD rollout of `req` (one row, as its realtime stage runs), the video after every step; with
    `replay` (another rollout's videos), each step starts from the video `replay` holds before it (one step each).
    `x0_dtype` float32 forms x0 in float32 where sglang upcasts to float64 (to show that is the only difference)."""
    # DMDTimestepPreparationStage.forward
    train = int(scheduler.num_train_timesteps)
    scheduler.set_timesteps(train)
    timesteps = torch.tensor(steps, dtype=torch.long).cpu()
    if warp:
        table = torch.cat((scheduler.timesteps.cpu(), torch.tensor([0], dtype=torch.float32)))
        timesteps = table[train - timesteps]
    # the request's one generator, drawn from in order (chunk by chunk, step by step): the stage's noise instead
    frames = req.latents.shape[1]
    noises: Iterator[torch.Tensor] = iter(
        [
            stage_noise(req.seed, chunk, step, torch.Size((1, CHUNK_FRAMES, *FRAME)))
            for chunk in range(frames // CHUNK_FRAMES)
            for step in range(len(steps) - 1)
        ]
    )
    video, trajectory = req.latents.clone(), []
    for start in range(0, frames, CHUNK_FRAMES):
        current = video[:, start : start + CHUNK_FRAMES]  # [B, T, C, H, W]: sglang's btchw
        context = video[:, :start].clone() if start else None
        for i, timestep in enumerate(timesteps):
            if replay is not None and trajectory:
                video = replay[len(trajectory) - 1].clone()
                current, context = video[:, start : start + CHUNK_FRAMES], video[:, :start].clone() if start else None
            pred = model(current, timestep.reshape(1).expand(current.shape[0]), req.prompt_embeds, context)
            # pred_noise_to_pred_video (pipelines_core/diffusion_scheduler_utils.py)
            flat_t = timestep.reshape(1).expand(current.shape[0] * current.shape[1])
            index = torch.argmin((scheduler.timesteps.to(torch.float64)[None] - flat_t[:, None]).abs(), dim=1)
            sigma = scheduler.sigmas.to(x0_dtype)[index].reshape(-1, 1, 1, 1)
            x0 = (current.flatten(0, 1).to(x0_dtype) - sigma * pred.flatten(0, 1).to(x0_dtype)).to(pred.dtype)
            x0 = x0.unflatten(0, current.shape[:2])
            if i < len(timesteps) - 1:  # _add_noise_for_next_timestep
                noise = next(noises)
                renoised = scheduler.add_noise(x0.flatten(0, 1), noise.flatten(0, 1), timesteps[i + 1 : i + 2])
                current = renoised.unflatten(0, x0.shape[:2])
            else:
                current = x0
            trajectory.append(spliced(video, start, current))
        video[:, start : start + CHUNK_FRAMES] = current  # sglang writes the chunk back once it is done
    return trajectory


def sglang_longlive2(scheduler: Any, req: Req, model: ChunkModel, steps: int = 4, shift: float = 5.0) -> list[Any]:
    """sglang's LongLive2 rollout of `req` (`_denoise_causal_dmd_chunk[_cfg]`), the video after every step."""
    frames = req.latents.shape[1]
    video, trajectory = req.latents.clone(), []
    for start in range(0, frames, CHUNK_FRAMES):
        current = video[:, start : start + CHUNK_FRAMES]
        context = video[:, :start].clone() if start else None
        scheduler.set_timesteps(steps, shift=shift)
        for timestep in scheduler.timesteps:
            t = timestep.reshape(1).to(dtype=torch.float32).expand(current.shape[0])
            flow_pred = model(current, t, req.prompt_embeds, context)
            if req.guided:
                uncond = model(current, t, req.negative_prompt_embeds, context)
                flow_pred = uncond + req.guidance_scale * (flow_pred - uncond)
            current = scheduler.step(flow_pred, timestep, current, return_dict=False)[0]
            trajectory.append(spliced(video, start, current))
        video[:, start : start + CHUNK_FRAMES] = current  # sglang writes the chunk back once it is done
    return trajectory


# ------------------------------------------------------------------------------------------------ ours
def rollout(stage: BlockCausalDenoise, req: Req) -> list[torch.Tensor]:
    """The video after every step of the stage."""
    trajectory = []
    while not stage.done(req):
        req = stage.step(req)
        trajectory.append(req.latents)
    return trajectory


def worst(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    """The largest per-step error relative to the step's largest value, over a whole rollout (same length)."""
    assert len(ours) == len(ref)
    return max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(ours, ref, strict=True))


# name, sglang's flow_shift, dmd_denoising_steps, warp_denoising_step (configs/pipeline_configs/lingbot_world.py)
LINGBOT = [
    pytest.param(10.0, [1000, 821, 642, 321], True, id="lingbot-world"),
    pytest.param(5.0, [1000, 750, 500, 250], True, id="lingbot-world-v2"),
    pytest.param(5.0, [1000, 750, 500, 250], False, id="unwarped"),
]


def lingbot_stage(shift: float, steps: list[int], warp: bool, model: ChunkModel) -> BlockCausalDenoise:
    sched = from_sglang(lingbot_scheduler(shift))
    assert sched == fs.SelfForcingFlowMatch(num_inference_steps=1000, shift=shift, sigma_min=0.0, extra_one_step=True)
    return BlockCausalDenoise(
        model, sched, chunk_frames=CHUNK_FRAMES, dmd_denoising_steps=steps, warp_denoising_step=warp
    )


@pytest.mark.parametrize(("shift", "steps", "warp"), LINGBOT)
def test_lingbot_causal_dmd_matches_sglang(shift: float, steps: list[int], warp: bool) -> None:
    ours_model, ref_model = ChunkModel(), ChunkModel()
    stage = lingbot_stage(shift, steps, warp, ours_model)
    req = video(0, chunks=3)
    ours = rollout(stage, req)
    ref = sglang_causal_dmd(lingbot_scheduler(shift), steps, warp, req, ref_model)
    assert len(ours) == 3 * len(steps)
    assert ours_model.timesteps == ref_model.timesteps  # the model sees sglang's (warped) float32 timesteps
    assert worst(ours, ref) <= ROLLOUT_BOUND
    assert worst(ours, sglang_causal_dmd(lingbot_scheduler(shift), steps, warp, req, ChunkModel(), ours)) <= STEP_BOUND


@pytest.mark.parametrize(("shift", "steps", "warp"), LINGBOT)
def test_lingbot_differs_only_by_x0_rounding(shift: float, steps: list[int], warp: bool) -> None:
    """sglang's loop with its x0 formed in float32 instead of float64 equals the stage bit for bit: tables, timesteps,
    the renoising (`add_noise`) and the noise are exact."""
    req = video(3, chunks=3)
    ours = rollout(lingbot_stage(shift, steps, warp, ChunkModel()), req)
    ref = sglang_causal_dmd(lingbot_scheduler(shift), steps, warp, req, ChunkModel(), x0_dtype=torch.float32)
    for a, b in zip(ours, ref, strict=True):
        assert torch.equal(a, b)


def longlive2_stage(model: ChunkModel) -> BlockCausalDenoise:
    """LongLive2's stage; its scheduler from sglang's object (`set_shift(5.0)`: `set_timesteps(shift=5.0)`'s
    schedule, as a config)."""
    template = sglang_adapter.sglang_class("FlowUniPCMultistepScheduler")(
        num_train_timesteps=1000, shift=1, use_dynamic_shifting=False
    )
    template.set_shift(5.0)
    sched = from_sglang(template)
    assert sched == fs.FlowUniPCMultistep(shift=1.0, set_shift=5.0)
    return BlockCausalDenoise(model, sched, chunk_frames=CHUNK_FRAMES, num_inference_steps=4)


def longlive2_scheduler() -> Any:
    cls = sglang_adapter.sglang_class("FlowUniPCMultistepScheduler")
    return cls(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)


@pytest.mark.parametrize("guided", [False, True], ids=["unguided", "guided"])
def test_longlive2_matches_sglang(guided: bool) -> None:
    ours_model, ref_model = ChunkModel(), ChunkModel()
    stage = longlive2_stage(ours_model)
    req = video(1, chunks=3, rows=2, guided=guided)
    ours = rollout(stage, req)
    ref = sglang_longlive2(longlive2_scheduler(), req, ref_model)
    assert len(ours) == 12
    assert sorted(ours_model.timesteps) == sorted(ref_model.timesteps)  # one call per step (both halves in ours)
    for a, b in zip(ours, ref, strict=True):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------- batching and handoff, against sglang
def test_lingbot_requests_at_different_chunks_step_together() -> None:
    """Requests at different chunks and steps, of two shifts (one with its own scheduler), stepped by `step_many`:
    each equals its own sglang rollout at every step, and a step_many call shares model calls."""
    steps = [1000, 821, 642, 321]
    model = ChunkModel()
    stage = lingbot_stage(10.0, steps, True, model)
    own = fs.SelfForcingFlowMatch(num_inference_steps=1000, shift=5.0, sigma_min=0.0, extra_one_step=True)
    reqs = [video(2 + i, chunks=2 + i % 2, scheduler=own if i % 2 else None) for i in range(5)]
    trajectories: list[list[torch.Tensor]] = [[] for _ in reqs]
    for i, ahead in enumerate([0, 3, 5, 9, 2]):
        for _ in range(ahead):
            reqs[i] = stage.step(reqs[i])
            trajectories[i].append(reqs[i].latents)
    at = [None if req.state is None else (req.extras[CHUNK], req.state.step_index.item()) for req in reqs]
    assert at == [None, (0, 3), (1, 1), (2, 1), (0, 2)]
    calls = model.calls
    reqs = stage.step_many(reqs)
    assert model.calls - calls == 3  # one call per chunk: chunk 0's three requests (two shifts, three steps) share one
    for trajectory, req in zip(trajectories, reqs, strict=True):
        trajectory.append(req.latents)
    while not all(stage.done(req) for req in reqs):
        active = [i for i, req in enumerate(reqs) if not stage.done(req)]
        before = len(model.timesteps)
        stepped = stage.step_many([reqs[i] for i in active])
        assert len(model.timesteps) - before == len(active)  # one row per request, no request called twice
        for i, req in zip(active, stepped, strict=True):
            reqs[i] = req
            trajectories[i].append(req.latents)
    for i, trajectory in enumerate(trajectories):
        shift = 5.0 if i % 2 else 10.0
        req = video(2 + i, chunks=2 + i % 2, scheduler=own if i % 2 else None)
        alone = rollout(stage, req)  # the stage on this request alone: bit for bit
        assert len(trajectory) == len(alone) and all(torch.equal(a, b) for a, b in zip(trajectory, alone, strict=True))
        assert worst(trajectory, sglang_causal_dmd(lingbot_scheduler(shift), steps, True, req, ChunkModel())) <= (
            ROLLOUT_BOUND
        )


def test_longlive2_requests_at_different_chunks_step_together() -> None:
    """Requests at different chunks and steps (solver histories of different lengths), guided and not, stepped by
    `step_many`: each equals its own sglang rollout bit for bit at every step."""
    model = ChunkModel()
    stage = longlive2_stage(model)
    reqs = [video(10 + i, chunks=3, guided=i % 2 == 1) for i in range(4)]
    trajectories: list[list[torch.Tensor]] = [[] for _ in reqs]
    for i in range(len(reqs)):
        for _ in range(3 * i):
            reqs[i] = stage.step(reqs[i])
            trajectories[i].append(reqs[i].latents)
    assert [req.extras.get(CHUNK) for req in reqs] == [None, 0, 1, 2]
    while not all(stage.done(req) for req in reqs):
        active = [i for i, req in enumerate(reqs) if not stage.done(req)]
        for i, req in zip(active, stage.step_many([reqs[i] for i in active]), strict=True):
            reqs[i] = req
            trajectories[i].append(req.latents)
    for i, trajectory in enumerate(trajectories):
        ref = sglang_longlive2(longlive2_scheduler(), video(10 + i, chunks=3, guided=i % 2 == 1), ChunkModel())
        assert len(trajectory) == len(ref)
        for a, b in zip(trajectory, ref, strict=True):
            assert torch.equal(a, b)


def handed_off(stage: BlockCausalDenoise, req: Req, steps: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The rollout of `req` uninterrupted, and with a handoff (`dumps`/`loads`) after `steps` steps (mid-chunk)."""
    trajectory = rollout(stage, req)
    for _ in range(steps):
        req = stage.step(req)
    assert stage.chunk_scheduler(req).steps_taken(req.state) > 0  # mid-chunk
    received = handoff.loads(handoff.dumps(req, stage.chunk_scheduler(req)), stage.chunk_scheduler())
    return trajectory, trajectory[:steps] + rollout(stage, received)


def test_lingbot_handoff_mid_chunk() -> None:
    steps = [1000, 821, 642, 321]
    stage = lingbot_stage(10.0, steps, True, ChunkModel())
    req = video(20, chunks=3)
    alone, resumed = handed_off(stage, req, 6)  # chunk 1, two steps in
    for a, b in zip(resumed, alone, strict=True):
        assert torch.equal(a, b)
    assert worst(resumed, sglang_causal_dmd(lingbot_scheduler(10.0), steps, True, req, ChunkModel())) <= ROLLOUT_BOUND


def test_longlive2_handoff_mid_chunk() -> None:
    stage = longlive2_stage(ChunkModel())
    req = video(21, chunks=3, guided=True)
    alone, resumed = handed_off(stage, req, 7)  # chunk 1, three steps in: the solver history travels
    for a, b, c in zip(resumed, alone, sglang_longlive2(longlive2_scheduler(), req, ChunkModel()), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


# ------------------------------------------------------------------------------------------------ misuse
def test_causal_dmd_misuse() -> None:
    model = ChunkModel()
    table = fs.SelfForcingFlowMatch(num_inference_steps=1000, shift=10.0, sigma_min=0.0, extra_one_step=True)
    with pytest.raises(ValueError, match="give num_inference_steps or dmd_denoising_steps, not both"):
        BlockCausalDenoise(model, table, chunk_frames=2, num_inference_steps=4, dmd_denoising_steps=[1000, 500])
    with pytest.raises(ValueError, match="the scheduler must be a SelfForcingFlowMatch"):
        BlockCausalDenoise(model, fs.FlowUniPCMultistep(), chunk_frames=2, dmd_denoising_steps=[1000, 500])
    with pytest.raises(ValueError, match=r"dmd_denoising_steps \[1001, 500\] must lie in \(0, 1000\]"):
        BlockCausalDenoise(model, table, chunk_frames=2, dmd_denoising_steps=[1001, 500])
    with pytest.raises(TypeError, match=r"dmd_denoising_steps\[1\] must be an integer"):
        BlockCausalDenoise(model, table, chunk_frames=2, dmd_denoising_steps=[1000, 500.5])
    with pytest.raises(TypeError, match="non-empty list of integers"):
        BlockCausalDenoise(model, table, chunk_frames=2, dmd_denoising_steps=[])
    stage = BlockCausalDenoise(model, table, chunk_frames=2, dmd_denoising_steps=[1000, 500])
    with pytest.raises(ValueError, match="the request's own sigmas would be ignored"):
        stage.step(video(0, chunks=2, sigmas=(1.0, 0.5)))
    with pytest.raises(ValueError, match="the SelfForcingFlowMatch table does not fall"):
        stage.step(video(0, chunks=2, scheduler=fs.SelfForcingFlowMatch(inverse_timesteps=True, sigma_min=0.0)))
