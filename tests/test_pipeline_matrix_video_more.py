"""More drop-ins inside diffusers' video and audio pipelines: tiny random components, one seed, bit-equal output.

The same check as `test_pipeline_matrix_video.py` (whose `_SKYREELS_DF_ALIASING` reason and `_assert_same` it reuses),
extended to LTX-2, the image/video-to-video variants of HunyuanVideo, SkyReels-V2, Wan, Kandinsky 5, Sana-Video,
EasyAnimate and Cosmos 2, and the Stable Audio 3, LongCat AudioDiT and ACE-Step audio pipelines built in
`_tiny_video_matrix_more`: each case runs the pipeline once with diffusers' scheduler and once with `as_diffusers(...)`
of the same scheduler, both from `torch.Generator().manual_seed(0)`, and requires every output latent (LTX-2's audio
latents, stepped on a deep copy of the scheduler, included) to be equal bit for bit and the two schedulers to end at
the same step index. Strict xfails: SkyReels-V2's diffusion-forcing variants (diffusers' UniPC aliases a view of
latents the pipeline overwrites; bit-equal once each sample is cloned, checked below). Stable Audio 3 audio-to-audio
below `init_noise_level` 1 steps from sigmas out of order (its first two, on purpose), which flow-match Euler takes.
Pipelines that could not be run are reported as skips with the reason. Every case is `slow`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import _tiny_video_matrix_more as more
import diffusers
import pytest
import test_pipeline_matrix_video as first
import torch

from functional_sched.adapters import drop_in
from functional_sched.adapters.drop_in import as_diffusers

diffusers.utils.logging.set_verbosity_error()

_SKYREELS_DF_XFAIL = pytest.mark.xfail(strict=True, raises=AssertionError, reason=first._SKYREELS_DF_ALIASING)

#: name -> (builder, extra marks). Every case is also `slow`.
CASES: dict[str, tuple[Callable[[], more.Case], list[Any]]] = {
    "LTX2Pipeline": (more.ltx2, []),
    "LTX2ImageToVideoPipeline": (more.ltx2_image_to_video, []),
    "LTX2ConditionPipeline": (more.ltx2_condition, []),
    "LTXI2VLongMultiPromptPipeline": (more.ltx_i2v_long_multi_prompt, []),
    "HunyuanVideoImageToVideoPipeline": (more.hunyuan_video_image_to_video, []),
    "HunyuanSkyreelsImageToVideoPipeline": (more.hunyuan_skyreels_image_to_video, []),
    "HunyuanVideoFramepackPipeline": (more.hunyuan_video_framepack, []),
    "HunyuanVideo15Pipeline": (more.hunyuan_video15, []),
    "HunyuanVideo15ImageToVideoPipeline": (more.hunyuan_video15_image_to_video, []),
    "SkyReelsV2ImageToVideoPipeline": (more.skyreels_v2_image_to_video, []),
    "SkyReelsV2DiffusionForcingImageToVideoPipeline": (
        more.skyreels_v2_diffusion_forcing_image_to_video,
        [_SKYREELS_DF_XFAIL],
    ),
    "SkyReelsV2DiffusionForcingVideoToVideoPipeline": (
        more.skyreels_v2_diffusion_forcing_video_to_video,
        [_SKYREELS_DF_XFAIL],
    ),
    "WanAnimatePipeline (animate)": (more.wan_animate, []),
    "WanAnimatePipeline (replace)": (lambda: more.wan_animate("replace"), []),
    "Kandinsky5I2VPipeline": (more.kandinsky5_image_to_video, []),
    "SanaImageToVideoPipeline": (more.sana_image_to_video, []),
    "EasyAnimateInpaintPipeline": (more.easyanimate_inpaint, []),
    "Cosmos2VideoToWorldPipeline": (more.cosmos2_video_to_world, []),
    "StableAudio3Pipeline (Euler)": (more.stable_audio3, []),
    "StableAudio3Pipeline (ping-pong)": (lambda: more.stable_audio3(stochastic_sampling=True), []),
    "StableAudio3AudioToAudioPipeline (Euler, init_noise_level 1)": (
        lambda: more.stable_audio3_audio_to_audio(init_noise_level=1.0),
        [],
    ),
    "StableAudio3AudioToAudioPipeline (ping-pong, init_noise_level 1)": (
        lambda: more.stable_audio3_audio_to_audio(stochastic_sampling=True, init_noise_level=1.0),
        [],
    ),
    "StableAudio3AudioToAudioPipeline (Euler, init_noise_level 0.6)": (
        more.stable_audio3_audio_to_audio,
        [],
    ),
    "StableAudio3AudioToAudioPipeline (ping-pong, init_noise_level 0.6)": (
        lambda: more.stable_audio3_audio_to_audio(stochastic_sampling=True),
        [],
    ),
    "StableAudio3InpaintPipeline (Euler)": (more.stable_audio3_inpaint, []),
    "StableAudio3InpaintPipeline (ping-pong)": (lambda: more.stable_audio3_inpaint(stochastic_sampling=True), []),
    "LongCatAudioDiTPipeline": (more.longcat_audio_dit, []),
    "AceStepPipeline": (more.ace_step, []),
}


def _run(case: more.Case, scheduler: Any) -> tuple[Any, ...]:
    """Every output of the pipeline's tuple (video latents, and audio latents where it makes them)."""
    pipe = case.factory(scheduler)
    torch.manual_seed(first.SEED)  # for pipelines that also draw from the global RNG
    outputs = pipe(**case.call, generator=torch.Generator().manual_seed(first.SEED), return_dict=False)
    return tuple(output for output in outputs if output is not None)


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(name, marks=marks) for name, (_, marks) in CASES.items()])
def test_pipeline_bit_equal(name: str) -> None:
    case = CASES[name][0]()
    reference_scheduler = copy.deepcopy(case.scheduler)
    ours_scheduler = as_diffusers(copy.deepcopy(case.scheduler))
    assert drop_in.is_drop_in(ours_scheduler)
    assert type(ours_scheduler).__name__ == type(case.scheduler).__name__

    reference = _run(case, reference_scheduler)
    ours = _run(case, ours_scheduler)

    assert ours_scheduler.num_inference_steps is not None  # the pipeline planned on the drop-in
    assert ours_scheduler.step_index == reference_scheduler.step_index
    assert len(reference) == len(ours)
    for reference_output, our_output in zip(reference, ours, strict=True):  # LTX-2: video and audio latents
        first._assert_same(reference_output, our_output)


@pytest.mark.slow
@pytest.mark.parametrize(
    "build",
    [more.skyreels_v2_diffusion_forcing_image_to_video, more.skyreels_v2_diffusion_forcing_video_to_video],
    ids=["image-to-video", "video-to-video"],
)
def test_skyreels_diffusion_forcing_equal_without_aliasing(
    monkeypatch: pytest.MonkeyPatch, build: Callable[[], more.Case]
) -> None:
    """The SkyReels-V2 diffusion-forcing xfails are diffusers' aliasing, not the drop-in's stepping: with diffusers'
    UniPC handed a copy of each sample, both variants are bit-equal."""
    case = build()
    step = diffusers.UniPCMultistepScheduler.step

    def step_on_a_copy(
        self: Any, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *args: Any, **kw: Any
    ) -> Any:
        return step(self, model_output, timestep, sample.clone(), *args, **kw)

    monkeypatch.setattr(diffusers.UniPCMultistepScheduler, "step", step_on_a_copy)
    reference = _run(case, copy.deepcopy(case.scheduler))
    monkeypatch.undo()
    ours = _run(case, as_diffusers(copy.deepcopy(case.scheduler)))
    for reference_output, our_output in zip(reference, ours, strict=True):
        first._assert_same(reference_output, our_output)


@pytest.mark.slow
def test_what_is_not_run_names_a_real_pipeline_and_why() -> None:
    """Each pipeline recorded as not run is a diffusers pipeline, with the reason it is not."""
    for name, reason in more.CANNOT_RUN_OFFLINE.items():
        assert hasattr(diffusers, name) and reason.strip(), name
