"""FlowMatchLCM's scale-wise generation (`scale_factors`), which the conformance suite's fixed-shape loops do not
express: parity on every step against diffusers, compile per resolution stage, rows stacked within a stage, purity,
handoff, the drop-in's `set_scale_factors`. The configs without scale factors run the suite (tests/specs/flow_lcm.py).

A resolution stage is a run of steps with the same input and output resolution (the sample's shape and the noise's).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import diffusers
import pytest
import torch

import functional_sched as fs
from functional_sched.adapters import drop_in, from_diffusers
from functional_sched.schedulers.flow_lcm import FlowMatchLCM
from functional_sched.testing import latents, toy_model

#: SwD's SD3.5 tables (yandex-research/swd's README): latent scales, and sigmas passed with timesteps = sigmas * 1000.
SWD_6 = (1.0, 0.9454, 0.8959, 0.7904, 0.7371, 0.6022)
SWD_M4 = (1.0, 0.9454, 0.7904, 0.6022)
SWD_L4 = (1.0, 0.8959, 0.7371, 0.6022)


def swd(sigmas: Sequence[float]) -> dict[str, Any]:
    return {"sigmas": list(sigmas), "timesteps": [sigma * 1000 for sigma in sigmas]}


#: id -> (options, set_timesteps/init arguments, sample shape). SwD's scales over its first one give the factors
#: (32, 48, ..., 128 -> 1.5, ..., 4); samples are 8x8 here instead of 32x32 (the same sizes over 4).
CONFIGS: dict[str, tuple[dict[str, Any], dict[str, Any], tuple[int, ...]]] = {
    "swd-sd3.5-m-6": ({"shift": 1.0, "scale_factors": (1.5, 2.0, 2.5, 3.0, 4.0)}, swd(SWD_6), (2, 4, 8, 8)),
    "swd-sd3.5-m-4": ({"shift": 1.0, "scale_factors": (2.0, 3.0, 4.0)}, swd(SWD_M4), (2, 4, 8, 8)),
    "swd-sd3.5-l-4": ({"shift": 1.0, "scale_factors": (1.25, 1.5, 2.0)}, swd(SWD_L4), (2, 4, 8, 8)),
    # SwD's own loop interpolates with torch's default mode.
    "swd-nearest": ({"scale_factors": (1.5, 2.0, 2.5, 3.0, 4.0), "upscale_mode": "nearest"}, swd(SWD_6), (1, 4, 8, 8)),
    "sd3.5-stages-bilinear": (
        {"shift": 3.0, "scale_factors": (1.0, 1.0, 2.0, 2.0, 2.0), "upscale_mode": "bilinear"},
        {"num_inference_steps": 6},
        (2, 4, 8, 8),
    ),
    "flux-dynamic-area": (
        {"use_dynamic_shifting": True, "scale_factors": (0.5, 1.5), "upscale_mode": "area"},
        {"sigmas": [1.0, 2 / 3, 1 / 3], "mu": 1.15},
        (2, 4, 8, 8),
    ),
    "video-trilinear": (
        {"shift": 5.0, "scale_factors": (1.5, 2.0), "upscale_mode": "trilinear"},
        {"num_inference_steps": 3},
        (1, 4, 3, 6, 6),
    ),
    "audio-linear": ({"scale_factors": (1.5, 2.0), "upscale_mode": "linear"}, {"num_inference_steps": 3}, (2, 4, 10)),
    "nearest-exact-karras": (
        {"shift": 3.0, "use_karras_sigmas": True, "scale_factors": (1.3, 1.7, 2.0), "upscale_mode": "nearest-exact"},
        {"num_inference_steps": 4},
        (2, 4, 7, 9),
    ),
}
DTYPES = (torch.float32, torch.bfloat16)


def reference(options: Mapping[str, Any], kwargs: Mapping[str, Any]) -> Any:
    scheduler = diffusers.FlowMatchLCMScheduler(**{**options, "scale_factors": list(options["scale_factors"])})
    scheduler.set_timesteps(**kwargs)
    return scheduler


def reference_loop(options: Mapping[str, Any], kwargs: Mapping[str, Any], start: torch.Tensor) -> list[torch.Tensor]:
    scheduler, sample, samples = reference(options, kwargs), start.clone(), []
    generator = torch.Generator().manual_seed(1)
    for t in scheduler.timesteps:
        sample = scheduler.step(toy_model(sample, t), t, sample, generator=generator, return_dict=False)[0]
        samples.append(sample)
    return samples


def our_steps(sched: FlowMatchLCM, state: Any, sample: torch.Tensor, generator: torch.Generator) -> Any:
    """One step of ours as a loop runs it: the model at the sample, noise drawn at the step's `noise_shape`."""
    noise = fs.randn_tensor(sched.noise_shape(state, sample), generator=generator, dtype=torch.float32)
    return sched.step(state, toy_model(sample, sched.timestep(state)), sample, noise=noise)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", CONFIGS)
def test_every_step_is_bit_identical_to_diffusers(config: str, dtype: torch.dtype) -> None:
    options, kwargs, shape = CONFIGS[config]
    start = latents(shape, dtype)
    expected = reference_loop(options, kwargs, start)
    sched = FlowMatchLCM(**options)
    state, sample = sched.init(sample=start.clone(), **kwargs), start.clone()
    generator = torch.Generator().manual_seed(1)
    assert torch.equal(sched.timesteps(state), reference(options, kwargs).timesteps)
    for index, ref in enumerate(expected):
        sample, state = our_steps(sched, state, sample, generator)
        assert sample.shape == ref.shape and sample.dtype == ref.dtype, f"step {index}"
        assert torch.equal(sample, ref), f"step {index}: {(sample.double() - ref.double()).abs().max().item():.3e}"
    factors = options["scale_factors"]
    assert sample.shape[2:] == tuple(round(factors[-1] * size) for size in shape[2:])


def stage_run(config: str) -> tuple[FlowMatchLCM, list[tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """An eager run's inputs of each step (state, model output, sample, noise), to replay compiled."""
    options, kwargs, shape = CONFIGS[config]
    sched = FlowMatchLCM(**options)
    sample = latents(shape)
    state, generator, inputs = sched.init(sample=sample, **kwargs), torch.Generator().manual_seed(1), []
    for _ in range(len(sched.timesteps(state))):
        noise = fs.randn_tensor(sched.noise_shape(state, sample), generator=generator, dtype=torch.float32)
        output = toy_model(sample, sched.timestep(state))
        inputs.append((state, output, sample, noise))
        sample, state = sched.step(state, output, sample, noise=noise)
    return sched, inputs


@pytest.mark.parametrize("config", ["sd3.5-stages-bilinear", "swd-sd3.5-m-6", "video-trilinear"])
def test_compiled_fullgraph_one_graph_per_stage(config: str) -> None:
    """fullgraph, static shapes: one graph per resolution stage (input and output shape), no recompile within one;
    the compiled steps, fed the compiled states, give the eager samples."""
    sched, inputs = stage_run(config)
    torch._dynamo.reset()
    compiled = torch.compile(sched.step, fullgraph=True, dynamic=False)
    stages: set[tuple[Any, ...]] = set()
    state = fs.batching.stack([inputs[0][0]])  # no cursor: the device path compiled code takes
    for index, (eager_state, output, sample, noise) in enumerate(inputs):
        stage = (tuple(sample.shape), tuple(noise.shape))
        stance = "fail_on_recompile" if stage in stages else "default"
        stages.add(stage)
        with torch.compiler.set_stance(stance):
            result, state = compiled(state, output, sample, noise=noise)
        expected, _ = sched.step(eager_state, output, sample, noise=noise)
        assert result.shape == expected.shape
        torch.testing.assert_close(
            result, expected, rtol=0, atol=1e-6 * expected.abs().max().item(), msg=f"step {index}"
        )
        assert torch.equal(state.step_index, torch.full_like(state.step_index, index + 1))
    assert len(stages) < len(inputs) or config != "sd3.5-stages-bilinear"


def test_rows_stacked_within_a_stage_step_as_alone() -> None:
    """Rows at different steps and of different initial sizes, stacked where they share a stage (16 -> 16): each row
    gives what it gives alone, eager and compiled; rows bound for different resolutions are refused."""
    options, kwargs, _ = CONFIGS["sd3.5-stages-bilinear"]  # factors 1, 1, 2, 2, 2: 8x8 reaches 16x16 at step 3
    sched, generator = FlowMatchLCM(**options), torch.Generator().manual_seed(1)
    small = latents((1, 4, 8, 8), seed=1)
    state_a, sample_a = sched.init(sample=small, **kwargs), small
    for _ in range(3):
        sample_a, state_a = our_steps(sched, state_a, sample_a, generator)
    sample_b = latents((1, 4, 16, 16), seed=2)
    state_b = sched.init(sample=sample_b, **kwargs)  # step 0 of a 16x16 start: factor 1, 16 -> 16
    for _ in range(2):  # A at steps 3, 4 and B at 0, 1: every step 16 -> 16
        stacked = fs.batching.stack([state_a, state_b])
        sample = torch.cat([sample_a, sample_b])
        noise = fs.randn_tensor(sched.noise_shape(stacked, sample), generator=generator, dtype=torch.float32)
        output = toy_model(sample, sched.timestep(stacked))
        together, _ = sched.step(stacked, output, sample, noise=noise)
        compiled, _ = torch.compile(sched.step, fullgraph=True, dynamic=False)(
            fs.batching.stack([state_a, state_b]), output, sample, noise=noise
        )
        sample_a, state_a = sched.step(state_a, output[:1], sample_a, noise=noise[:1])
        sample_b, state_b = sched.step(state_b, output[1:], sample_b, noise=noise[1:])
        assert torch.equal(together, torch.cat([sample_a, sample_b]))
        torch.testing.assert_close(compiled, together, rtol=0, atol=1e-6 * together.abs().max().item())
    # A's last step stays at 16x16, B's step 2 goes to 32x32: one tensor cannot hold both.
    with pytest.raises(ValueError, match="different resolutions"):
        sched.noise_shape(fs.batching.stack([state_a, state_b]), torch.cat([sample_a, sample_b]))


def test_step_is_pure_and_the_state_carries_the_initial_size() -> None:
    options, kwargs, shape = CONFIGS["swd-sd3.5-m-6"]
    sched = FlowMatchLCM(**options)
    sample = latents(shape)
    state = sched.init(sample=sample, **kwargs)
    assert state.init_size.tolist() == [[8.0, 8.0]] * shape[0] and state.init_size.dtype == torch.float32
    generator = torch.Generator().manual_seed(1)
    for _ in range(len(sched.timesteps(state))):
        noise = fs.randn_tensor(sched.noise_shape(state, sample), generator=generator, dtype=torch.float32)
        output = toy_model(sample, sched.timestep(state))
        inputs = [output, sample, noise, *(leaf for leaf in torch.utils._pytree.tree_leaves(state))]
        copies, versions = [tensor.clone() for tensor in inputs], [tensor._version for tensor in inputs]
        new_sample, new_state, x0 = sched.step(state, output, sample, noise=noise, denoised=True)
        assert all(torch.equal(tensor, copy) for tensor, copy in zip(inputs, copies, strict=True))
        assert [tensor._version for tensor in inputs] == versions
        assert x0.shape == sample.shape and new_sample.shape == noise.shape
        assert new_state.init_size.data_ptr() == state.init_size.data_ptr()  # carried, never a sample-shaped buffer
        sample, state = new_sample, new_state


def test_handoff_mid_run_finishes_bit_identically() -> None:
    options, kwargs, shape = CONFIGS["swd-sd3.5-l-4"]
    sched = FlowMatchLCM(**options)
    start = latents(shape)

    def run(handoff_at: int | None) -> torch.Tensor:
        state, sample, generator = sched.init(sample=start, **kwargs), start, torch.Generator().manual_seed(1)
        for index in range(len(sched.timesteps(state))):
            if index == handoff_at:
                tensors, metadata = fs.serialize.state_to_tensors(state)
                metadata = json.loads(json.dumps(metadata))  # as it travels
                state = fs.serialize.state_from_tensors(tensors, metadata, FlowMatchLCM(**options))
            sample, state = our_steps(sched, state, sample, generator)
        return sample

    assert torch.equal(run(2), run(None))


def test_refusals() -> None:
    options, kwargs, shape = CONFIGS["swd-sd3.5-m-4"]
    sched = FlowMatchLCM(**options)
    sample = latents(shape)
    with pytest.raises(ValueError, match="must have 4 steps, not 6"):
        sched.init(6, sample=sample)
    with pytest.raises(ValueError, match="upscale_mode='bicubic' interpolates 4-D samples"):
        sched.init(sample=latents((2, 4, 3, 8, 8)), **kwargs)
    with pytest.raises(ValueError, match="makes a size below 1"):
        FlowMatchLCM(scale_factors=(0.01, 1.0)).init(3, sample=sample)
    state = sched.init(sample=sample, **kwargs)
    output = toy_model(sample, sched.timestep(state))
    with pytest.raises(ValueError, match=r"this step goes to \(2, 4, 16, 16\)"):
        sched.step(state, output, sample, noise=torch.randn(shape))  # the loop drivers' latents-shaped noise
    with pytest.raises(ValueError, match="noise_shape"):
        sched.step(state, output, sample)
    # The loop drivers run one latents shape: refused up front, eager or compiled.
    with pytest.raises(ValueError, match="changes the sample's shape between steps"):
        fs.denoise(sched, toy_model, sample, **kwargs, noise=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="changes the sample's shape between steps"):
        fs.SamplingLoop(sched, toy_model, mode="compile")(sample, **kwargs, noise=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="must not be empty"):
        FlowMatchLCM(scale_factors=())


# ---------------------------------------------------------------------------------------------------- the drop-in
def drop_in_run(scheduler: Any, kwargs: Mapping[str, Any], start: torch.Tensor, switch: Any = None) -> list[Any]:
    """A pipeline's loop; `switch(scheduler)` after the first step (a run-time `set_scale_factors`)."""
    scheduler.set_timesteps(**kwargs)
    sample, generator, samples = start.clone(), torch.Generator().manual_seed(1), []
    for index, t in enumerate(scheduler.timesteps):
        sample = scheduler.step(toy_model(sample, t), t, sample, generator=generator).prev_sample
        samples.append(sample)
        if index == 0 and switch is not None:
            switch(scheduler)
    return samples


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_drop_in_set_scale_factors_as_diffusers(dtype: torch.dtype) -> None:
    """SwD's use: `set_scale_factors` on a scheduler built from SD3.5's config, before the run; and a switch mid-run."""
    factors = [1.5, 2.0, 2.5, 3.0, 4.0]
    start = latents((1, 4, 8, 8), dtype)
    runs = {}
    for name, build in (("diffusers", diffusers.FlowMatchLCMScheduler), ("drop-in", drop_in.FlowMatchLCMScheduler)):
        scheduler = build.from_config({"shift": 1.0})
        scheduler.set_scale_factors(factors, "bicubic")
        runs[name] = drop_in_run(scheduler, swd(SWD_6), start)
        mid_run = build.from_config({"shift": 1.0})
        runs[name + " mid-run"] = drop_in_run(
            mid_run, swd(SWD_6), start, lambda s: s.set_scale_factors(factors, "nearest")
        )
    for ours, theirs in ((runs["drop-in"], runs["diffusers"]), (runs["drop-in mid-run"], runs["diffusers mid-run"])):
        assert [sample.shape for sample in ours] == [sample.shape for sample in theirs]
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert runs["drop-in"][-1].shape[2:] == (32, 32) and runs["drop-in mid-run"][0].shape[2:] == (8, 8)


def test_drop_in_and_from_diffusers_take_run_time_scale_factors() -> None:
    scheduler = diffusers.FlowMatchLCMScheduler(shift=3.0)
    scheduler.set_scale_factors([1.25, 1.5, 2.0], "area")
    mapped = from_diffusers(scheduler)
    assert mapped.scale_factors == (1.25, 1.5, 2.0) and mapped.upscale_mode == "area"
    scheduler.set_scale_factors([], "area")  # diffusers: none
    assert from_diffusers(scheduler).scale_factors is None
    assert from_diffusers(diffusers.FlowMatchLCMScheduler(scale_factors=[])).scale_factors is None
    ours = drop_in.as_diffusers(diffusers.FlowMatchLCMScheduler(scale_factors=[1.25, 1.5, 2.0]))
    assert isinstance(ours, drop_in.FlowMatchLCMScheduler) and ours._functional.scale_factors == (1.25, 1.5, 2.0)
    start = latents((1, 4, 8, 8))
    theirs = diffusers.FlowMatchLCMScheduler(scale_factors=[1.25, 1.5, 2.0])
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            drop_in_run(ours, {"num_inference_steps": 4}, start),
            drop_in_run(theirs, {"num_inference_steps": 4}, start),
            strict=True,
        )
    )
    shifted = diffusers.FlowMatchLCMScheduler(shift=3.0)
    shifted.set_shift(2.0)
    with pytest.raises(NotImplementedError, match=r"FlowMatchLCMScheduler.set_shift\(2.0\)"):
        from_diffusers(shifted)
    with pytest.raises(NotImplementedError, match=r"FlowMatchLCMScheduler.set_shift\(2.0\)"):
        drop_in.FlowMatchLCMScheduler(shift=3.0).set_shift(2.0)
    # Factors for another step count: diffusers and the drop-in raise at the first step.
    for build in (diffusers.FlowMatchLCMScheduler, drop_in.FlowMatchLCMScheduler):
        wrong = build(scale_factors=[1.5, 2.0])
        wrong.set_timesteps(8)
        with pytest.raises(ValueError, match="`_scale_factors` should have the same length as `timesteps` - 1"):
            wrong.step(start, wrong.timesteps[0], start)
        late = build()
        late.set_timesteps(3)
        late.step(start, late.timesteps[0], start)
        late.set_scale_factors([1.5, 2.0, 3.0], "bicubic")  # mid-run, for another step count
        with pytest.raises(ValueError, match="`_scale_factors` should have the same length as `timesteps` - 1"):
            late.step(start, late.timesteps[1], start)
