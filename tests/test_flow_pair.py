"""MOVA's sglang schedulers' drop-ins (`FlowMatchScheduler`, `FlowMatchPairScheduler`) against sglang's own objects,
beyond the conformance suite's drop-in columns (which hold them to sglang's classes in every spec config, stepped as
MOVA steps them: tests/specs/self_forcing.py, flow_pair.py): what those cannot express, bit for bit: `set_timesteps`'
other arguments (`denoising_strength`, `shift`, `dynamic_shift_len`), `to_final`, `set_shift`, both modalities of one
pair object through MOVA's loop in bfloat16, and what the pair refuses.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from functional_sched.adapters import drop_in, from_sglang
from functional_sched.adapters import sglang as sglang_adapter
from functional_sched.testing.parity import latents, toy_model

pytestmark = pytest.mark.skipif(
    not sglang_adapter.available(), reason="sglang's wheel is not installed: pip install --no-deps sglang==0.5.23"
)

DTYPES = [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.float32, torch.bfloat16)]
# The suite's columns run MOVA's loop with float32 latents (float32 and bfloat16 model outputs): here bfloat16 latents.
HALF = [(torch.bfloat16, torch.bfloat16)]
TABLES = ("timesteps", "sigmas", "train_timesteps", "train_sigmas")


def pair(name: str, options: dict[str, Any]) -> tuple[Any, Any]:
    return sglang_adapter.sglang_class(name)(**options), drop_in.SGLANG_DROP_INS[name](**options)


def same_tables(reference: Any, ours: Any, names: tuple[str, ...] = TABLES) -> None:
    for name in names:
        theirs, mine = getattr(reference, name), getattr(ours, name)
        assert mine.dtype == theirs.dtype and torch.equal(mine, theirs), name


@pytest.mark.parametrize(
    "options",
    [
        {"shift": 5.0},
        {"exponential_shift": True, "exponential_shift_mu": 0.8},
        {"shift": 3.0, "shift_terminal": 0.1, "extra_one_step": True, "sigma_min": 0.0},
        {"inverse_timesteps": True, "reverse_sigmas": True},
    ],
    ids=["mova-shift5", "exponential", "terminal-extra-step", "inverse-reverse"],
)
@pytest.mark.parametrize(("sample_dtype", "model_dtype"), DTYPES)
def test_flow_match_drop_in_steps_as_sglang(
    options: dict[str, Any], sample_dtype: torch.dtype, model_dtype: torch.dtype
) -> None:
    """`set_timesteps(n, denoising_strength, shift, dynamic_shift_len)`, every step of a loop, `to_final`, `set_shift`
    and `add_noise`, bit for bit in sglang's dtype."""
    reference, ours = pair("FlowMatchScheduler", options)
    for kwargs in ({"denoising_strength": 0.6}, {"shift": 2.0}, {"dynamic_shift_len": 4096}):
        reference.set_timesteps(12, **kwargs)
        ours.set_timesteps(12, **kwargs)
        same_tables(reference, ours)
        x = latents((2, 4, 8, 8), sample_dtype)
        y = x.clone()
        for index, t in enumerate(reference.timesteps):
            output = toy_model(x, t).to(model_dtype)
            a, b = reference.step(output, t, x), ours.step(output, t, y)
            assert b.dtype == a.dtype and torch.equal(a, b), f"{kwargs} step {index}"
            x, y = a, b
    t = reference.timesteps[3]
    assert torch.equal(ours.step(x, t, x, to_final=True), reference.step(x, t, x, to_final=True))
    noise = latents((2, 4, 8, 8), seed=5)
    assert torch.equal(ours.add_noise(x, noise, t), reference.add_noise(x, noise, t))
    reference.set_shift(7.0)
    ours.set_shift(7.0)
    reference.set_timesteps(5)
    ours.set_timesteps(5)
    same_tables(reference, ours)
    assert from_sglang(ours) == from_sglang(reference)


MOVA_CASES = [
    ({"shift": 5.0}, {"visual_shift": 5.0, "audio_shift": 5.0}, 50),  # MOVA's stage and sample config
    ({"shift": 5.0}, {"visual_shift": 8.0, "audio_shift": 2.0}, 12),
    (
        {"shift": 3.0, "extra_one_step": True},
        {"visual_shift": 5.0, "audio_shift": 3.0, "audio_denoising_strength": 0.7},
        9,
    ),
    (
        {"shift": 5.0, "exponential_shift": True, "exponential_shift_mu": 0.8},
        {"visual_shift": 5.0, "audio_shift": 5.0, "visual_exponential_shift_mu": 1.2},
        10,
    ),
    ({"shift": 5.0}, None, 10),  # no post-processing: both columns the schedule
]


@pytest.mark.parametrize(("options", "dual", "steps"), MOVA_CASES, ids=["mova", "dual-8-2", "strength", "exp", "none"])
@pytest.mark.parametrize(("sample_dtype", "model_dtype"), HALF)
def test_pair_drop_in_runs_movas_loop_as_sglang(
    options: dict[str, Any],
    dual: dict[str, Any] | None,
    steps: int,
    sample_dtype: torch.dtype,
    model_dtype: torch.dtype,
) -> None:
    """MOVA's timestep stage (`set_timesteps(n, denoising_strength=1.0, shift=scheduler.shift)`, the dual sigma shift,
    `get_pairs()`), then its loop: `step_from_to` of the video and the audio latents from each pair to the next (None
    past the last), twice on one object; every pair table and every step bit for bit."""
    reference, ours = pair("FlowMatchPairScheduler", options)
    for _ in range(2):
        for scheduler in (reference, ours):
            scheduler.set_timesteps(steps, denoising_strength=1.0, shift=scheduler.shift)
            if dual is None:
                scheduler.set_pair_postprocess_by_name(None)
            else:
                scheduler.set_pair_postprocess_by_name("dual_sigma_shift", **dual)
        same_tables(reference, ours, (*TABLES, "pair_timesteps", "pair_sigmas"))
        paired = reference.get_pairs()
        assert torch.equal(ours.get_pairs(), paired)
        assert torch.equal(ours.get_pairs("sigmas"), reference.get_pairs("sigmas"))
        video, audio = latents((1, 4, 3, 6, 6), sample_dtype), latents((1, 8, 20), sample_dtype, seed=1)
        ours_video, ours_audio = video.clone(), audio.clone()
        for index in range(steps):
            t, t_audio = paired[index]
            following = paired[index + 1] if index + 1 < steps else (None, None)
            out_video, out_audio = toy_model(video, t).to(model_dtype), toy_model(audio, t_audio).to(model_dtype)
            video = reference.step_from_to(out_video, t, following[0], video)
            audio = reference.step_from_to(out_audio, t_audio, following[1], audio)
            ours_video = ours.step_from_to(out_video, t, following[0], ours_video)
            ours_audio = ours.step_from_to(out_audio, t_audio, following[1], ours_audio)
            for theirs, mine in ((video, ours_video), (audio, ours_audio)):
                assert mine.dtype == theirs.dtype and torch.equal(mine, theirs), f"step {index}"
    assert from_sglang(ours) == from_sglang(reference)


def test_pair_drop_in_refuses_what_it_cannot_map() -> None:
    """sglang's other post-processings and a caller's function, and a shift moved off the training grid, by name."""
    _, ours = pair("FlowMatchPairScheduler", {"shift": 5.0})
    ours.set_timesteps(8)
    with pytest.raises(NotImplementedError, match="quadratic_perp_bulge_swap"):
        ours.set_pair_postprocess_by_name("quadratic_perp_bulge_swap")
    with pytest.raises(NotImplementedError, match="set_pair_postprocess"):
        ours.set_pair_postprocess(lambda pairs: pairs)
    with pytest.raises(NotImplementedError, match="training grid"):
        ours.set_timesteps(8, shift=3.0)
