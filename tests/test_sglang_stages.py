"""The pattern stages that model sglang's pipelines, run with the schedulers those pipelines use and held to loops
written with sglang's own scheduler objects (sglang 0.5.23, `multimodal_gen`), every step, bit for bit in float32.

- `TwoExperts` is Wan 2.2 A14B's loop (sglang's `DenoisingStage`): `FlowUniPCMultistepScheduler(shift=flow_shift)`,
  `set_timesteps(n)`, the expert chosen per step by `int(t) >= boundary_ratio * num_train_timesteps`, CFG
  `neg + scale * (pos - neg)` with `guidance_scale` (high noise) or `guidance_scale_2` (low noise), `step(...)`, one
  solver history across the switch. sglang truncates its timesteps where diffusers' UniPC flow mode's grid is
  another, which moves the switch at some step counts: those are tested, and each test checks it moves there.
- `PairedDenoise` is MOVA's loop (`MOVATimestepPreparationStage`, `MOVADenoisingStage`): one
  `FlowMatchPairScheduler`, `set_timesteps(n, denoising_strength=1.0, shift=sigma_shift)`,
  `set_pair_postprocess_by_name("dual_sigma_shift", ...)`, one joint call per step (its video DiT switched at
  t_video >= 900), one guidance scale for both outputs, then `step_from_to` per modality on its own column.

sglang's classes are loaded with `functional_sched.adapters.sglang.sglang_class` (never `import sglang`); the module
is skipped where sglang's wheel is not installed (`pip install --no-deps sglang==0.5.23`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import diffusers
import pytest
import torch
from test_patterns import _per_row, conditioned_model, request

import functional_sched as fs
from functional_sched.adapters import from_sglang, sglang
from functional_sched.stages import PairedDenoise, PrepareTimesteps, Req, TwoExperts, handoff
from functional_sched.stages.paired import AUDIO_LATENTS, AUDIO_SHAPE, AUDIO_STATE
from functional_sched.testing import latents

pytestmark = pytest.mark.skipif(
    not sglang.available(), reason="sglang's wheel is not installed: pip install --no-deps sglang==0.5.23"
)

WAN_SHAPE = (2, 3, 4, 4)  # per row: channels, frames, height, width (the toys are elementwise)


# ------------------------------------------------------------------------------------------- Wan 2.2 (TwoExperts)
@attrs.frozen
class Wan22:
    """A Wan 2.2 A14B config of sglang 0.5.23 (configs/pipeline_configs/wan.py, configs/sample/wan.py)."""

    flow_shift: float
    boundary_ratio: float
    guidance_scale: float
    guidance_scale_2: float


T2V = Wan22(flow_shift=12.0, boundary_ratio=0.875, guidance_scale=4.0, guidance_scale_2=3.0)
I2V = Wan22(flow_shift=5.0, boundary_ratio=0.9, guidance_scale=3.5, guidance_scale_2=3.5)


def low_noise_expert(sample: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor | None) -> torch.Tensor:
    """The low-noise expert: another elementwise function of the input, the timestep and the embeddings."""
    t = _per_row(timestep, sample)
    out = 0.8 * sample - 0.3 * torch.cos(sample + t)
    return out if embeds is None else out + 0.15 * torch.tanh(embeds - t)


def in_dtype(model: Any, dtype: torch.dtype) -> Any:
    """`model` run in `dtype` (its input and embeddings cast, its output in `dtype`), as sglang runs Wan's DiT in
    bfloat16 on float32 latents."""
    if dtype == torch.float32:
        return model

    def run(sample: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor | None) -> torch.Tensor:
        cast = None if embeds is None else embeds.to(dtype)
        return model(sample.to(dtype), timestep, cast).to(dtype)

    return run


def wan_experts(dtype: torch.dtype) -> dict[str, Any]:
    return {"high": in_dtype(conditioned_model, dtype), "low": in_dtype(low_noise_expert, dtype)}


class Recorder:
    """Which expert each model call went to, with the timesteps it saw."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, torch.Tensor]] = []

    def expert(self, name: str, model: Any) -> Any:
        def call(sample: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor | None) -> torch.Tensor:
            self.calls.append((name, timestep))
            return model(sample, timestep, embeds)

        return call


def sglang_unipc(config: Wan22) -> Any:
    """sglang's Wan scheduler as its Wan pipelines build it (wan_pipeline.py, wan_i2v_pipeline.py)."""
    return sglang.sglang_class("FlowUniPCMultistepScheduler")(shift=config.flow_shift)


def high_noise_steps(timesteps: torch.Tensor, config: Wan22) -> int:
    return sum(int(t) >= config.boundary_ratio * 1000 for t in timesteps.tolist())


def diffusers_high_noise_steps(config: Wan22, steps: int) -> int:
    """The high-noise step count of diffusers' UniPC in flow mode (what `from_diffusers` and diffusers' WanPipeline
    run) at the same shift."""
    reference = diffusers.UniPCMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=config.flow_shift
    )
    reference.set_timesteps(steps)
    return high_noise_steps(reference.timesteps, config)


def sglang_wan_loop(
    config: Wan22, req: Req, recorder: Recorder | None = None, dtype: torch.dtype = torch.float32
) -> list[torch.Tensor]:
    """sglang's DenoisingStage loop for one request, written with sglang's scheduler object: the latents after each
    step (the experts run in `dtype`)."""
    scheduler = sglang_unipc(config)
    scheduler.set_timesteps(req.num_inference_steps)
    boundary = config.boundary_ratio * scheduler.config.num_train_timesteps  # _handle_boundary_ratio
    x, trajectory = req.latents, []
    for t in scheduler.timesteps:
        high = int(t.item()) >= boundary  # _select_and_manage_model
        name = "high" if high else "low"
        model = wan_experts(dtype)[name]
        if recorder is not None:
            model = recorder.expert(name, model)
        scale = req.guidance_scale if high else req.extras["guidance_scale_2"]
        timestep = t.repeat(x.shape[0])  # expand_timestep_before_forward
        positive = model(x, timestep, req.prompt_embeds)
        negative = model(x, timestep, req.negative_prompt_embeds)
        noise_pred = negative + scale * (positive - negative)  # CFGPolicy.combine
        x = scheduler.step(model_output=noise_pred, timestep=t, sample=x, return_dict=False)[0]
        trajectory.append(x)
    return trajectory


def wan_stage(
    scheduler: Any, config: Wan22, recorder: Recorder | None = None, dtype: torch.dtype = torch.float32
) -> TwoExperts:
    high, low = wan_experts(dtype).values()
    if recorder is not None:
        high, low = recorder.expert("high", high), recorder.expert("low", low)
    return TwoExperts(high, scheduler, low_noise_model=low, boundary_ratio=config.boundary_ratio)


def wan_request(scheduler: Any, config: Wan22, index: int, steps: int, rows: int = 2) -> Req:
    req = request(index, (rows, *WAN_SHAPE), guided=True).evolve(
        guidance_scale=config.guidance_scale, num_inference_steps=steps
    )
    return PrepareTimesteps(scheduler).forward(req.with_extras(guidance_scale_2=config.guidance_scale_2))


def stepped(stage: Any, req: Req) -> list[Req]:
    """The request after each of its steps (`stage.step`)."""
    trajectory = []
    while not stage.done(req):
        req = stage.step(req)
        trajectory.append(req)
    return trajectory


def assert_trajectory(ours: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> None:
    assert len(ours) == len(reference)
    for step, (mine, theirs) in enumerate(zip(ours, reference, strict=True)):
        assert torch.equal(mine, theirs), f"step {step}: max abs diff {(mine - theirs).abs().max().item():.3g}"


# (config, steps, whether sglang's truncated grid moves the switch against diffusers' UniPC flow grid): the moved
# step counts are from the notes' scan (n = 19, 38, ... at shift 12 / 0.875; 14, 28, ... at shift 5 / 0.9), checked
# again in the test; 40 is the pipelines' default.
WAN_CASES = [
    pytest.param(T2V, 19, True, id="t2v-a14b-19"),
    pytest.param(T2V, 38, True, id="t2v-a14b-38"),
    pytest.param(T2V, 40, False, id="t2v-a14b-40"),
    pytest.param(I2V, 14, True, id="i2v-a14b-14"),
    pytest.param(I2V, 28, True, id="i2v-a14b-28"),
    pytest.param(I2V, 40, False, id="i2v-a14b-40"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32-model", "bf16-model"])
@pytest.mark.parametrize(("config", "steps", "moved"), WAN_CASES)
def test_two_experts_equal_sglang_wan22_loop(config: Wan22, steps: int, moved: bool, dtype: torch.dtype) -> None:
    """Every step's float32 latents bit-identical to sglang's loop, each step on the same expert at the same
    timestep, and the expert switch where sglang's truncated timesteps put it (not diffusers' grid, at the moved
    step counts); the experts' outputs float32, or bfloat16 as sglang's Wan DiT gives them."""
    template = sglang_unipc(config)
    scheduler = from_sglang(template)  # the stage scheduler sglang's pipeline holds, mapped
    assert scheduler == fs.FlowUniPCMultistep(shift=config.flow_shift)
    template.set_timesteps(steps)
    high = high_noise_steps(template.timesteps, config)
    assert (high != diffusers_high_noise_steps(config, steps)) == moved

    theirs, ours = Recorder(), Recorder()
    req = wan_request(scheduler, config, 0, steps)
    reference = sglang_wan_loop(config, req, theirs, dtype)
    assert_trajectory([step.latents for step in stepped(wan_stage(scheduler, config, ours, dtype), req)], reference)
    assert reference[-1].dtype == torch.float32
    assert [name for name, _ in theirs.calls] == ["high"] * (2 * high) + ["low"] * (2 * (steps - high))
    # One guided call per step (both halves at once) on the expert sglang called twice, at its timestep.
    assert [name for name, _ in ours.calls] == [name for name, _ in theirs.calls[::2]]
    for (_, mine), (_, t) in zip(ours.calls, theirs.calls[::2], strict=True):
        assert torch.equal(mine, torch.cat([t, t]))


def test_two_experts_step_many_at_different_steps_equal_sglang() -> None:
    """Requests at different steps of different step counts, stepped together (`step_many`, one model call per
    expert): each request's every step equals its own sglang loop; some rounds hold both experts' requests."""
    config = T2V
    scheduler = fs.FlowUniPCMultistep(shift=config.flow_shift)
    recorder = Recorder()
    stage = wan_stage(scheduler, config, recorder)
    plan = [(19, 0, 1), (40, 20, 2), (38, 5, 1), (19, 12, 2)]  # (steps, steps taken alone first, rows)
    reqs = [wan_request(scheduler, config, index, steps, rows) for index, (steps, _, rows) in enumerate(plan)]
    reqs[1] = reqs[1].evolve(guidance_scale=5.0).with_extras(guidance_scale_2=2.5)
    references = [sglang_wan_loop(config, req) for req in reqs]
    trajectories: list[list[torch.Tensor]] = [[] for _ in reqs]
    for index, (_, alone, _) in enumerate(plan):
        for _ in range(alone):
            reqs[index] = stage.step(reqs[index])
            trajectories[index].append(reqs[index].latents)
    both_sides = 0
    while live := [index for index, req in enumerate(reqs) if not stage.done(req)]:
        recorder.calls.clear()
        for index, req in zip(live, stage.step_many([reqs[index] for index in live]), strict=True):
            reqs[index] = req
            trajectories[index].append(req.latents)
        both_sides += {name for name, _ in recorder.calls} == {"high", "low"}
    assert both_sides > 0
    for trajectory, reference in zip(trajectories, references, strict=True):
        assert_trajectory(trajectory, reference)


@pytest.mark.parametrize(
    ("config", "steps"), [pytest.param(T2V, 19, id="t2v-a14b-19"), pytest.param(I2V, 14, id="i2v-a14b-14")]
)
def test_two_experts_handed_over_mid_loop_equal_sglang(config: Wan22, steps: int) -> None:
    """Handed over (`handoff.dumps`/`loads`) after the first step and around the switch (before the last high-noise
    step, between the experts, after the first low-noise step), the request finishes on sglang's numbers: the
    solver history travels across the switch."""
    scheduler = from_sglang(sglang_unipc(config))
    stage = wan_stage(scheduler, config)
    req = wan_request(scheduler, config, 3, steps)
    reference = sglang_wan_loop(config, req)
    template = sglang_unipc(config)
    template.set_timesteps(steps)
    switch = high_noise_steps(template.timesteps, config)
    undisturbed = stepped(stage, req)
    for taken in (1, switch - 1, switch, switch + 1):
        resumed = handoff.loads(handoff.dumps(undisturbed[taken - 1], scheduler), scheduler)
        assert_trajectory([step.latents for step in stepped(stage, resumed)], reference[taken:])


# --------------------------------------------------------------------------------------------- MOVA (PairedDenoise)
MOVA_BOUNDARY = 0.9  # configs/pipeline_configs/mova.py: the video DiT switches at t_video >= 900
AUDIO_SHAPE_PER_ROW = (5, 6)


@attrs.frozen
class Mova:
    """MOVA's sampling options (configs/sample/mova.py) and its scheduler's constructor shift."""

    steps: int
    # The scheduler's constructor shift (sglang's own MOVA test builds FlowMatchPairScheduler(shift=5.0)), which the
    # stage's set_timesteps(shift=sigma_shift) repeats: MOVA's sigma_shift is 5.0 too.
    shift: float = 5.0
    visual_shift: float = 5.0
    audio_shift: float = 5.0
    guidance_scale: float = 5.0


def mova_joint(
    video_expert: Any,
    video: torch.Tensor,
    audio: torch.Tensor,
    video_t: torch.Tensor,
    audio_t: torch.Tensor,
    embeds: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A joint toy with one video expert: each output also reads the other modality; elementwise per row."""
    assert embeds is not None
    e = embeds[:, 0]
    video_out = video_expert(video, video_t, e.view(-1, 1, 1, 1, 1)) + 0.1 * audio[:, 0, 0].view(-1, 1, 1, 1, 1)
    audio_out = torch.tanh(audio) * (0.4 + _per_row(audio_t, audio)) - 0.2 * audio + 0.1 * torch.cos(e.view(-1, 1, 1))
    return video_out, audio_out + 0.1 * video[:, 0, 0, 0, 0].view(-1, 1, 1)


def mova_model(
    video: torch.Tensor, audio: torch.Tensor, video_t: torch.Tensor, audio_t: torch.Tensor, embeds: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The stage's joint model: MOVA's expert switch in the closure, each row's video from video_dit (the high-noise
    expert) where its video timestep is >= 900, else from video_dit_2."""
    high = (video_t >= MOVA_BOUNDARY * 1000).view(-1, 1, 1, 1, 1)
    video_high, audio_out = mova_joint(conditioned_model, video, audio, video_t, audio_t, embeds)
    video_low, _ = mova_joint(low_noise_expert, video, audio, video_t, audio_t, embeds)
    return torch.where(high, video_high, video_low), audio_out


def sglang_pair(config: Mova) -> Any:
    """The stage scheduler after MOVATimestepPreparationStage (mova.py:143-159)."""
    scheduler = sglang.sglang_class("FlowMatchPairScheduler")(shift=config.shift)
    scheduler.set_timesteps(config.steps, denoising_strength=1.0, shift=config.shift)
    scheduler.set_pair_postprocess_by_name(
        "dual_sigma_shift", visual_shift=config.visual_shift, audio_shift=config.audio_shift
    )
    return scheduler


def sglang_mova_loop(config: Mova, req: Req, seen: list[tuple[torch.Tensor, ...]] | None = None) -> list[Any]:
    """MOVADenoisingStage's loop with sglang's scheduler object (one for both modalities): (video, audio) after each
    step. The model sees the pair's float32 timesteps, one per row."""
    scheduler = sglang_pair(config)
    pairs = scheduler.get_pairs()
    video, audio, rows = req.latents, req.extras[AUDIO_LATENTS], req.rows
    trajectory = []
    for index in range(pairs.shape[0]):
        timestep, audio_timestep = pairs[index]
        video_t, audio_t = (t.expand(rows) for t in pairs[index].unsqueeze(-1))
        if seen is not None:
            seen.append((video_t, audio_t))
        high = timestep.item() >= MOVA_BOUNDARY * scheduler.num_train_timesteps  # _select_visual_dit
        expert = conditioned_model if high else low_noise_expert
        positive = mova_joint(expert, video, audio, video_t, audio_t, req.prompt_embeds)
        negative = mova_joint(expert, video, audio, video_t, audio_t, req.negative_prompt_embeds)
        scale = req.guidance_scale
        video_pred = negative[0] + scale * (positive[0] - negative[0])  # _cfg_combine
        audio_pred = negative[1] + scale * (positive[1] - negative[1])
        following = pairs[index + 1] if index + 1 < pairs.shape[0] else (None, None)
        video = scheduler.step_from_to(video_pred, timestep, following[0], video)
        audio = scheduler.step_from_to(audio_pred, audio_timestep, following[1], audio)
        trajectory.append((video, audio))
    return trajectory


def mova_schedulers(config: Mova) -> tuple[Any, Any]:
    """Ours: the pair scheduler mapped (`from_sglang`), once per modality."""
    video = from_sglang(sglang_pair(config))
    return video, attrs.evolve(video, modality="audio")


def mova_request(video_scheduler: Any, config: Mova, index: int, rows: int = 2) -> Req:
    req = Req(
        latents=latents((rows, *WAN_SHAPE), torch.float32, seed=100 + index),
        prompt_embeds=latents((rows, 1), torch.float32, seed=200 + index),
        negative_prompt_embeds=latents((rows, 1), torch.float32, seed=300 + index),
        guidance_scale=config.guidance_scale,
        seed=index,
        num_inference_steps=config.steps,
    )
    return PrepareTimesteps(video_scheduler).forward(req).with_extras(**{AUDIO_SHAPE: (rows, *AUDIO_SHAPE_PER_ROW)})


def paired_trajectory(steps: Sequence[Req]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(req.latents, req.extras[AUDIO_LATENTS]) for req in steps]


def assert_paired(ours: Sequence[Any], reference: Sequence[Any]) -> None:
    assert_trajectory([video for video, _ in ours], [video for video, _ in reference])
    assert_trajectory([audio for _, audio in ours], [audio for _, audio in reference])


MOVA_CASES = [
    pytest.param(Mova(steps=50), id="mova-50"),
    pytest.param(Mova(steps=8), id="mova-8"),
    # Columns of their own (not MOVA's defaults): each modality steps on its column, looked up on one grid.
    pytest.param(Mova(steps=20, shift=3.0, visual_shift=8.0, audio_shift=2.0), id="shifts-8-2-grid-3"),
]


@pytest.mark.parametrize("config", MOVA_CASES)
def test_paired_denoise_equals_sglang_mova_loop(config: Mova) -> None:
    """Both latents bit-identical to MOVA's loop at every step; the joint model sees the pair's timesteps."""
    video_scheduler, audio_scheduler = mova_schedulers(config)
    assert video_scheduler == fs.FlowMatchPair(
        shift=config.shift,
        pair_postprocess="dual_sigma_shift",
        visual_shift=config.visual_shift,
        audio_shift=config.audio_shift,
    )
    assert audio_scheduler.modality == "audio"
    seen: list[tuple[torch.Tensor, ...]] = []

    def recording(video: Any, audio: Any, video_t: Any, audio_t: Any, embeds: Any) -> Any:
        seen.append((video_t, audio_t))
        return mova_model(video, audio, video_t, audio_t, embeds)

    stage = PairedDenoise(recording, video_scheduler, audio_scheduler)
    req = stage.prepare(mova_request(video_scheduler, config, 0))
    expected: list[tuple[torch.Tensor, ...]] = []
    reference = sglang_mova_loop(config, req, expected)
    steps = stepped(stage, req)
    assert_paired(paired_trajectory(steps), reference)
    assert audio_scheduler.steps_left(steps[-1].extras[AUDIO_STATE]) == 0
    assert len(seen) == len(expected) == config.steps
    for (video_t, audio_t), (their_video_t, their_audio_t) in zip(seen, expected, strict=True):
        assert torch.equal(video_t, torch.cat([their_video_t, their_video_t]))  # guided: both halves in one call
        assert torch.equal(audio_t, torch.cat([their_audio_t, their_audio_t]))
    if config.visual_shift != config.audio_shift:
        assert not torch.equal(seen[1][0], seen[1][1])  # the columns differ: the test tells them apart
    high = sum(t[0].item() >= MOVA_BOUNDARY * 1000 for t, _ in expected)
    assert 0 < high < config.steps  # both video experts ran


def test_paired_step_many_at_different_steps_equals_sglang() -> None:
    """MOVA requests of different step counts at different steps, stepped together: each one's every step equals
    its own sglang loop, the video expert switch per row in the joint call."""
    configs = [Mova(steps=8), Mova(steps=50), Mova(steps=12), Mova(steps=50)]
    video_scheduler, audio_scheduler = mova_schedulers(configs[0])
    stage = PairedDenoise(mova_model, video_scheduler, audio_scheduler)
    reqs = [
        stage.prepare(mova_request(video_scheduler, config, index, rows=1 + index % 2))
        for index, config in enumerate(configs)
    ]
    references = [sglang_mova_loop(config, req) for config, req in zip(configs, reqs, strict=True)]
    trajectories: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in reqs]
    for index, alone in enumerate((0, 3, 1, 30)):
        for _ in range(alone):
            reqs[index] = stage.step(reqs[index])
            trajectories[index].append((reqs[index].latents, reqs[index].extras[AUDIO_LATENTS]))
    while live := [index for index, req in enumerate(reqs) if not stage.done(req)]:
        for index, req in zip(live, stage.step_many([reqs[index] for index in live]), strict=True):
            reqs[index] = req
            trajectories[index].append((req.latents, req.extras[AUDIO_LATENTS]))
    for trajectory, reference in zip(trajectories, references, strict=True):
        assert_paired(trajectory, reference)
