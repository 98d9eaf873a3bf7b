"""Parity of `FlowMatchEulerDiscrete` with diffusers 0.42.1's `FlowMatchEulerDiscreteScheduler`, step by step.

Every loop runs diffusers and ours side by side (`_support.parity_run`). The timestep and sigma tables must be
equal in values and dtype. float32 steps must lie within 1e-5 of the trajectory's max-abs norm; today every flow
Euler step is bit-identical to diffusers', so the tests also assert exact equality, which is the stronger claim.
"""

from __future__ import annotations

from typing import Any

import diffusers
import numpy as np
import pytest
import torch
from _support import flux_mu, flux_sigmas, latents, parity_run, relative_error, toy_model, ulp
from hypothesis import given, settings
from hypothesis import strategies as st

import functional_sched as fs

REFERENCE = diffusers.FlowMatchEulerDiscreteScheduler
FLOAT32_TOLERANCE = 1e-5  # relative to the trajectory's max-abs norm, per step


def assert_parity(result: Any, *, exact: bool = True) -> None:
    """Tables equal (values and dtype); every step within tolerance; bit-identical where flow Euler is today."""
    assert result.ours_timesteps.dtype == result.ref_timesteps.dtype
    assert torch.equal(result.ours_timesteps, result.ref_timesteps), (result.ours_timesteps, result.ref_timesteps)
    assert result.ours_sigmas.dtype == result.ref_sigmas.dtype
    assert torch.equal(result.ours_sigmas, result.ref_sigmas), (result.ours_sigmas, result.ref_sigmas)
    assert result.steps > 0
    assert all(result.timestep_agrees)
    assert result.max_error <= FLOAT32_TOLERANCE, result.first_difference()
    assert result.num_identical > result.steps // 2, result.first_difference()
    if exact:
        assert all(result.identical), result.first_difference()


# ------------------------------------------------------------------------------------ real pipeline configs
PIPELINES = {
    # StableDiffusion3Pipeline: static shift 3.0, set_timesteps(num_inference_steps).
    "sd3": ({"shift": 3.0}, 28, {}),
    # FluxPipeline (FLUX.1-dev): sigmas=np.linspace(1, 1/n, n), mu=calculate_shift(image_seq_len, ...).
    "flux-dev-256": (
        {"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15},
        None,
        {"sigmas": flux_sigmas(28), "mu": flux_mu(256, 256, 4096, 0.5, 1.15)},
    ),
    "flux-dev-4096": (
        {"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15},
        None,
        {"sigmas": flux_sigmas(50), "mu": flux_mu(4096, 256, 4096, 0.5, 1.15)},
    ),
    # QwenImagePipeline (Qwen/Qwen-Image scheduler_config.json).
    "qwen-image": (
        {
            "use_dynamic_shifting": True,
            "base_shift": 0.5,
            "max_shift": 0.9,
            "base_image_seq_len": 256,
            "max_image_seq_len": 8192,
            "shift_terminal": 0.02,
        },
        None,
        # calculate_shift(image_seq_len, 256, 8192, 0.5, 0.9) with the scheduler's config values, 1024x1024.
        {"sigmas": flux_sigmas(30), "mu": flux_mu(4096, 256, 8192, 0.5, 0.9)},
    ),
    # LTXPipeline (Lightricks/LTX-Video scheduler_config.json), video_sequence_length 2048.
    "ltx-video": (
        {
            "use_dynamic_shifting": True,
            "base_shift": 0.95,
            "max_shift": 2.05,
            "base_image_seq_len": 1024,
            "max_image_seq_len": 4096,
            "shift_terminal": 0.1,
        },
        None,
        {"sigmas": flux_sigmas(40), "mu": flux_mu(2048, 1024, 4096, 0.95, 2.05)},
    ),
    # HunyuanVideoPipeline: static shift 7.0, sigmas=np.linspace(1.0, 0.0, n + 1)[:-1].
    "hunyuan-video": (
        {"shift": 7.0},
        None,
        {"sigmas": tuple(float(s) for s in np.linspace(1.0, 0.0, 31)[:-1])},
    ),
}


@pytest.mark.parametrize("name", list(PIPELINES))
def test_pipeline_config_parity(name: str) -> None:
    config, steps, schedule = PIPELINES[name]
    result = parity_run(
        REFERENCE(**config),
        fs.FlowMatchEulerDiscrete(**config),
        num_inference_steps=steps,
        set_timesteps_kwargs=schedule,
        init_kwargs=schedule,
        shape=(1, 4, 8, 8),
        seed=1,
        begin_index=0,  # these pipelines call scheduler.set_begin_index(0)
    )
    assert_parity(result)
    assert result.steps == len(result.ref_timesteps)


@pytest.mark.parametrize("name", ["flux-dev-4096", "qwen-image"])
def test_pipeline_sigmas_as_numpy_array(name: str) -> None:
    """Pipelines pass `np.linspace` arrays (float64); ours takes the same array."""
    config, steps, schedule = PIPELINES[name]
    schedule = {**schedule, "sigmas": np.asarray(schedule["sigmas"])}
    result = parity_run(
        REFERENCE(**config),
        fs.FlowMatchEulerDiscrete(**config),
        num_inference_steps=steps,
        set_timesteps_kwargs=schedule,
        init_kwargs=schedule,
        shape=(1, 2, 4, 4),
    )
    assert_parity(result)


def test_custom_sigmas_as_float32_tensor() -> None:
    """A float32 tensor of sigmas is used as is by both (no float64 detour that could round differently)."""
    sigmas = torch.linspace(1.0, 0.03, 12, dtype=torch.float32) ** 1.3
    result = parity_run(
        REFERENCE(shift=2.5),
        fs.FlowMatchEulerDiscrete(shift=2.5),
        set_timesteps_kwargs={"sigmas": sigmas.numpy()},
        init_kwargs={"sigmas": sigmas},
    )
    assert_parity(result)


# ------------------------------------------------------------------------------------------- hypothesis grid
@st.composite
def flow_configs(draw: st.DrawFn) -> tuple[dict[str, Any], int | None, dict[str, Any]]:
    """A FlowMatchEulerDiscrete config, step count and schedule kwargs (shared by init and set_timesteps)."""
    config: dict[str, Any] = {}
    schedule: dict[str, Any] = {}
    if draw(st.booleans()):
        config["use_dynamic_shifting"] = True
        config["time_shift_type"] = draw(st.sampled_from(["exponential", "linear"]))
        schedule["mu"] = draw(st.floats(0.2, 2.0))
    else:
        config["shift"] = draw(st.sampled_from([1.0, 0.7, 3.0, 5.0, 7.0, 12.5]))
    config["shift_terminal"] = draw(st.sampled_from([None, None, 0.02, 0.1, 0.3]))
    config["invert_sigmas"] = draw(st.booleans())
    spacing = draw(st.sampled_from([None, None, "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"]))
    if spacing:
        config[spacing] = True
    config["stochastic_sampling"] = draw(st.booleans())
    steps = draw(st.integers(1, 30))
    custom = draw(st.sampled_from([None, None, "sigmas", "timesteps", "both"]))
    if custom:
        first = draw(st.floats(0.5, 1.0))
        last = draw(st.floats(0.01, 0.45))
        table = np.linspace(first, last, steps)
        if custom in ("sigmas", "both"):
            schedule["sigmas"] = tuple(float(value) for value in table)
        if custom in ("timesteps", "both"):
            schedule["timesteps"] = tuple(float(value) * 1000 for value in table**0.8)
        if draw(st.booleans()):
            steps = None  # let the custom table fix the count, as pipelines do
    return config, steps, schedule


@settings(max_examples=50, derandomize=True, deadline=None)
@given(case=flow_configs(), seed=st.integers(0, 2**16))
def test_grid_parity(case: tuple[dict[str, Any], int | None, dict[str, Any]], seed: int) -> None:
    config, steps, schedule = case
    reference = REFERENCE(**config)
    with np.errstate(divide="ignore", invalid="ignore"):
        reference.set_timesteps(steps, **schedule)
    if torch.isnan(reference.sigmas).any():
        assert_nan_schedule_refused(config, steps, schedule)
        return
    result = parity_run(
        reference,
        fs.FlowMatchEulerDiscrete(**config),
        num_inference_steps=steps,
        set_timesteps_kwargs=schedule,
        init_kwargs=schedule,
        shape=(2, 3, 4, 4),
        seed=seed,
    )
    assert_parity(result)


def assert_nan_schedule_refused(config: dict[str, Any], steps: int | None, schedule: dict[str, Any]) -> None:
    """Where diffusers' schedule holds NaN (shift_terminal stretching a last sigma of 1), ours refuses it."""
    with pytest.raises(ValueError, match="shift_terminal cannot stretch a schedule whose last sigma is 1"):
        fs.FlowMatchEulerDiscrete(**config).init(steps, sample=torch.zeros(1, 2), **schedule)


@pytest.mark.parametrize(
    "config", [{"shift": 3.0, "shift_terminal": 0.1}, {"use_dynamic_shifting": True, "shift_terminal": 0.02}]
)
def test_single_step_shift_terminal_is_refused_where_diffusers_gives_nan(config: dict[str, Any]) -> None:
    schedule = {"mu": 0.8} if config.get("use_dynamic_shifting") else {}
    reference = REFERENCE(**config)
    with np.errstate(divide="ignore", invalid="ignore"):
        reference.set_timesteps(1, **schedule)
    assert torch.isnan(reference.timesteps).all()
    assert_nan_schedule_refused(config, 1, schedule)


@pytest.mark.parametrize(
    "config",
    [{"shift": 3.0}, {"shift": 3.0, "stochastic_sampling": True}, {"shift": 1.0, "invert_sigmas": True}],
    ids=["deterministic", "stochastic", "inverted"],
)
@pytest.mark.parametrize("steps", [1, 2, 50])
def test_step_count_extremes(config: dict[str, Any], steps: int) -> None:
    result = parity_run(REFERENCE(**config), fs.FlowMatchEulerDiscrete(**config), num_inference_steps=steps)
    assert_parity(result)


# ----------------------------------------------------------------------------------------- reduced precision
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("stochastic", [False, True])
def test_half_precision_parity(dtype: torch.dtype, stochastic: bool) -> None:
    """Sample and model output in bf16/fp16: diffusers upcasts to float32 and casts the result back.

    The design allows one ulp of the half dtype; today every step is bit-identical, and that is asserted too.
    """
    config = {"shift": 3.0, "stochastic_sampling": stochastic}
    result = parity_run(
        REFERENCE(**config), fs.FlowMatchEulerDiscrete(**config), num_inference_steps=20, dtype=dtype, seed=3
    )
    assert result.ours_samples[-1].dtype == dtype
    for ours, ref in zip(result.ours_samples, result.ref_samples, strict=True):
        assert ((ours.double() - ref.double()).abs() <= ulp(ref)).all()
    assert all(result.identical), result.first_difference()


def test_float32_latents_with_bf16_model_output() -> None:
    """float32 latents, bf16 transformer (Flux-style pipelines cast the step's result back to the latents' dtype).

    Documented difference: our step returns the SAMPLE's dtype (float32), diffusers returns the MODEL OUTPUT's
    (bf16). Given the same inputs at every step, ours rounded to bf16 equals diffusers' result bit for bit.
    """
    config = {"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15}
    schedule = {"sigmas": flux_sigmas(20), "mu": flux_mu(1024, 256, 4096, 0.5, 1.15)}
    reference = REFERENCE(**config)
    reference.set_timesteps(**schedule)
    reference.set_begin_index(0)
    sched = fs.FlowMatchEulerDiscrete(**config)
    sample = latents((2, 4, 8, 8), torch.float32, seed=5)
    state = sched.init(sample=sample, **schedule)
    free_running = sample.clone()
    free_state = state
    for t in reference.timesteps:
        model_output = toy_model(sample, t).to(torch.bfloat16)
        ref = reference.step(model_output, t, sample, return_dict=False)[0]
        ours, state = sched.step(state, model_output, sample)
        assert ref.dtype == torch.bfloat16
        assert ours.dtype == torch.float32
        assert torch.equal(ours.to(torch.bfloat16), ref)
        sample = ref.to(torch.float32)  # the pipeline's cast back to the latents' dtype
        free_output = toy_model(free_running, sched.timestep(free_state)).to(torch.bfloat16)
        free_running, free_state = sched.step(free_state, free_output, free_running)
    # Left to itself, our float32 trajectory skips diffusers' rounding of every step's result to bf16 (half an ulp,
    # eps / 2 relative, per step): close, within the rounding diffusers accumulates, but not equal.
    steps = len(reference.timesteps)
    assert relative_error(free_running, sample) < steps * torch.finfo(torch.bfloat16).eps / 2
    assert not torch.equal(free_running, sample)


# -------------------------------------------------------------------------------------------- img2img: noising
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("begin_index", [0, 4, 9])
def test_add_noise_matches_scale_noise(dtype: torch.dtype, begin_index: int) -> None:
    reference = REFERENCE(shift=3.0)
    reference.set_timesteps(10)
    reference.set_begin_index(begin_index)
    sched = fs.FlowMatchEulerDiscrete(shift=3.0)
    image = latents((3, 4, 8, 8), dtype, seed=7)
    noise = latents((3, 4, 8, 8), dtype, seed=8)
    state = sched.init(10, sample=image, begin_index=begin_index)
    timestep = reference.timesteps[begin_index].repeat(3)
    expected = reference.scale_noise(image, timestep, noise)
    actual = sched.add_noise(state, image, noise)
    assert actual.dtype == expected.dtype == dtype
    assert torch.equal(actual, expected)


def test_add_noise_per_row_matches_scale_noise_lookup() -> None:
    """Rows at different steps (training-style noising): diffusers looks each row's timestep up in its table."""
    reference = REFERENCE(shift=3.0)
    reference.set_timesteps(12)
    sched = fs.FlowMatchEulerDiscrete(shift=3.0)
    image = latents((4, 2, 4, 4), torch.float32, seed=9)
    noise = latents((4, 2, 4, 4), torch.float32, seed=10)
    indices = torch.tensor([0, 3, 7, 11])
    state = sched.init(12, sample=image)
    state = state.replace(step_index=indices)
    expected = reference.scale_noise(image, reference.timesteps[indices], noise)
    assert torch.equal(sched.timestep(state), reference.timesteps[indices])
    assert torch.equal(sched.add_noise(state, image, noise), expected)


@pytest.mark.parametrize("begin_index", [1, 6, 11])
@pytest.mark.parametrize("stochastic", [False, True])
def test_begin_index_parity(begin_index: int, stochastic: bool) -> None:
    """img2img: diffusers' `set_begin_index(k)` then the loop over `timesteps[k:]`; ours `init(begin_index=k)`."""
    config = {"shift": 3.0, "stochastic_sampling": stochastic}
    result = parity_run(
        REFERENCE(**config),
        fs.FlowMatchEulerDiscrete(**config),
        num_inference_steps=12,
        begin_index=begin_index,
        seed=11,
    )
    assert result.steps == 12 - begin_index
    assert_parity(result)


def test_img2img_pipeline_start() -> None:
    """SD3 img2img: noise the image to timesteps[k] with scale_noise / add_noise, then denoise from k."""
    k, steps = 4, 10
    reference = REFERENCE(shift=3.0)
    reference.set_timesteps(steps)
    reference.set_begin_index(k)
    sched = fs.FlowMatchEulerDiscrete(shift=3.0)
    image = latents((1, 4, 8, 8), torch.float32, seed=12)
    noise = latents((1, 4, 8, 8), torch.float32, seed=13)
    state = sched.init(steps, sample=image, begin_index=k)
    ref = reference.scale_noise(image, reference.timesteps[k : k + 1], noise)
    ours = sched.add_noise(state, image, noise)
    assert torch.equal(ours, ref)
    for t in reference.timesteps[k:]:
        assert torch.equal(sched.timestep(state), t.reshape(1))
        ref = reference.step(toy_model(ref, t), t, ref, return_dict=False)[0]
        ours, state = sched.step(state, toy_model(ours, sched.timestep(state)), ours)
        assert torch.equal(ours, ref)
