"""DPMSolverMultistep against diffusers 0.42.1's DPMSolverMultistepScheduler, every step of full loops.

The contract (DESIGN.md, "Parity"): the timestep table equals diffusers' in values and dtype, the sigma table
likewise, and every float32 step lies within 1e-5 of the trajectory's norm. On the CPU the planned update forms each
term in diffusers' order, so every config tried here is bit-identical as well; the tests assert both, the bound
first, so a failure says whether the contract or only bit-identity broke. Expected values come only from running
diffusers here, each side feeding its own sample to the toy denoiser of `_support`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import diffusers
import pytest
import torch
from _support import latents, parity_run, step_noise, toy_model, ulp
from hypothesis import given, settings
from hypothesis import strategies as st

import functional_sched as fs

BOUND = 1e-5  # per float32 step, relative to the max-abs of diffusers' sample after that step
SHAPE = (2, 4, 8, 8)
SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


@dataclasses.dataclass(frozen=True)
class Example:
    """One loop: a config shared by both sides, and how its schedule is set."""

    config: dict[str, Any]
    steps: int | None = 20
    timesteps: tuple[int, ...] | None = None
    mu: float | None = None
    seed: int = 0

    def schedule_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.timesteps is not None:
            kwargs["timesteps"] = list(self.timesteps)
        if self.mu is not None:
            kwargs["mu"] = self.mu
        return kwargs


def has_repeated_timesteps(example: Example) -> bool:
    reference = diffusers.DPMSolverMultistepScheduler(**example.config)
    reference.set_timesteps(example.steps, **example.schedule_kwargs())
    return len(set(reference.timesteps.tolist())) < len(reference.timesteps)


def run(example: Example, *, dtype: torch.dtype = torch.float32, begin_index: int | None = None, shape=SHAPE) -> Any:
    """`parity_run` for one example. A table with repeated timesteps gets `set_begin_index(0)`, as pipelines do:
    without one diffusers starts at the second match of timesteps[0] (see
    `test_repeated_timesteps_need_a_begin_index_in_diffusers`)."""
    if begin_index is None and has_repeated_timesteps(example):
        begin_index = 0
    return parity_run(
        diffusers.DPMSolverMultistepScheduler(**example.config),
        fs.DPMSolverMultistep(**example.config),
        num_inference_steps=example.steps,
        set_timesteps_kwargs=example.schedule_kwargs(),
        init_kwargs=example.schedule_kwargs(),
        shape=shape,
        dtype=dtype,
        seed=example.seed,
        begin_index=begin_index,
    )


def assert_tables_equal(result: Any) -> None:
    assert result.ours_timesteps.dtype == result.ref_timesteps.dtype
    assert torch.equal(result.ours_timesteps, result.ref_timesteps), (result.ours_timesteps, result.ref_timesteps)
    assert result.ours_sigmas.dtype == result.ref_sigmas.dtype
    torch.testing.assert_close(result.ours_sigmas, result.ref_sigmas, rtol=0, atol=0, equal_nan=True)


def assert_parity(result: Any, expected_steps: int | None = None, *, exact: bool = True) -> None:
    """Tables equal; every step within the contract's bound, then (if `exact`) bit-identical.

    A NaN or inf must sit where diffusers has the same (a zero-length final step of order 3 divides 0 by 0 on both
    sides, see `test_zero_length_final_step_breaks_down_like_diffusers`); the bound applies to the finite entries.
    """
    assert_tables_equal(result)
    assert result.steps == (expected_steps if expected_steps is not None else len(result.ref_timesteps))
    assert result.steps > 0
    assert bool(torch.isfinite(result.ref_samples[0]).all()), "the first step of diffusers' loop is not finite"
    for index, (ours, ref) in enumerate(zip(result.ours_samples, result.ref_samples, strict=True)):
        assert ours.dtype == ref.dtype
        finite = torch.isfinite(ref)
        assert torch.equal(torch.isfinite(ours), finite), (
            f"step {index}: finite where diffusers is not, or not where it is"
        )
        torch.testing.assert_close(ours[~finite], ref[~finite], rtol=0, atol=0, equal_nan=True)  # same NaN, same inf
        scale = ref[finite].double().abs().max().item() if bool(finite.any()) else 1.0
        error = (ours[finite].double() - ref[finite].double()).abs().max().item() if bool(finite.any()) else 0.0
        assert error <= BOUND * (scale or 1.0), f"step {index}: relative error {error / (scale or 1.0):.3e}"
    if not exact:
        return
    for index, (ours, ref) in enumerate(zip(result.ours_samples, result.ref_samples, strict=True)):
        torch.testing.assert_close(ours, ref, rtol=0, atol=0, equal_nan=True, msg=lambda m, i=index: f"step {i}: {m}")


# ------------------------------------------------------------------------------------------------ the grid
ALGORITHMS = ("dpmsolver++", "sde-dpmsolver++", "dpmsolver", "sde-dpmsolver")
SPACINGS = ("none", "karras", "exponential", "beta", "lu", "flow", "flow_dynamic", "custom")
BETAS = {
    "linear": {"beta_schedule": "linear"},
    "scaled_linear": SCALED_LINEAR,
    "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2"},
}


@st.composite
def examples(draw: st.DrawFn) -> Example:
    algorithm = draw(st.sampled_from(ALGORITHMS))
    data_prediction = algorithm.endswith("++")
    spacing = draw(st.sampled_from(SPACINGS))
    flow = spacing.startswith("flow")
    predictions = ["epsilon", "sample", "v_prediction"]
    if flow and data_prediction:
        predictions.append("flow_prediction")
    config: dict[str, Any] = {
        "algorithm_type": algorithm,
        "solver_order": draw(st.integers(1, 2 if algorithm == "sde-dpmsolver" else 3)),
        "solver_type": draw(st.sampled_from(["midpoint", "heun"])),
        "prediction_type": draw(st.sampled_from(predictions)),
        **BETAS[draw(st.sampled_from(sorted(BETAS)))],
        "final_sigmas_type": draw(st.sampled_from(["zero", "sigma_min"])) if data_prediction else "sigma_min",
        "lower_order_final": draw(st.booleans()),
        "euler_at_final": draw(st.booleans()),
        "timestep_spacing": draw(st.sampled_from(["linspace", "leading", "trailing"])),
        "steps_offset": draw(st.sampled_from([0, 1])),
        "rescale_betas_zero_snr": draw(st.booleans()),
        "lambda_min_clipped": draw(st.sampled_from([-math.inf, -5.1])),
    }
    if draw(st.booleans()):
        config.update(
            thresholding=True,
            dynamic_thresholding_ratio=draw(st.sampled_from([0.995, 0.9])),
            sample_max_value=draw(st.sampled_from([1.0, 1.5])),
        )
    steps: int | None = draw(st.integers(1, 40))
    timesteps, mu = None, None
    if spacing in ("karras", "exponential", "beta", "lu"):
        config[f"use_{spacing}_{'lambdas' if spacing == 'lu' else 'sigmas'}"] = True
    elif flow:
        config["use_flow_sigmas"] = True
        config["flow_shift"] = draw(st.sampled_from([1.0, 3.0, 5.0, 7.5]))
        if spacing == "flow_dynamic":
            config["use_dynamic_shifting"] = True
            mu = draw(st.sampled_from([0.0, 0.5, 1.15, 2.0]))
    elif spacing == "custom":
        values = draw(st.lists(st.integers(0, 999), min_size=1, max_size=30, unique=True))
        timesteps, steps = tuple(sorted(values, reverse=True)), None
    return Example(config, steps=steps, timesteps=timesteps, mu=mu, seed=draw(st.integers(0, 3)))


@settings(max_examples=60, derandomize=True, deadline=None)
@given(examples())
def test_grid_matches_diffusers_every_step(example: Example) -> None:
    assert_parity(run(example))


# One option at a time around DPM++ 2M, so each option is covered whatever the grid draws.
OPTIONS = [
    {},
    {"solver_order": 1},
    {"solver_order": 3},
    {"solver_type": "heun"},
    {"solver_order": 3, "solver_type": "heun"},
    {"prediction_type": "sample"},
    {"prediction_type": "v_prediction"},
    {"algorithm_type": "sde-dpmsolver++"},
    {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
    {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"},
    {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"},
    {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "solver_order": 3},
    {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "prediction_type": "v_prediction"},
    {"algorithm_type": "sde-dpmsolver", "final_sigmas_type": "sigma_min"},
    {"algorithm_type": "sde-dpmsolver", "final_sigmas_type": "sigma_min", "solver_type": "heun"},
    {"algorithm_type": "sde-dpmsolver", "final_sigmas_type": "sigma_min", "solver_order": 1},
    SCALED_LINEAR,
    {"beta_schedule": "squaredcos_cap_v2"},
    {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1},
    {"use_karras_sigmas": True},
    {"use_karras_sigmas": True, "beta_schedule": "squaredcos_cap_v2"},
    {"use_exponential_sigmas": True},
    {"use_beta_sigmas": True},
    {"use_lu_lambdas": True},
    {"use_lu_lambdas": True, "beta_schedule": "squaredcos_cap_v2"},
    {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": 3.0},
    {"use_flow_sigmas": True, "prediction_type": "v_prediction", "flow_shift": 2.0},
    {"final_sigmas_type": "sigma_min"},
    {"final_sigmas_type": "sigma_min", "solver_order": 3, "lower_order_final": False},
    {"lower_order_final": False},
    {"lower_order_final": False, "solver_order": 3},
    {"euler_at_final": True},
    {"euler_at_final": True, "final_sigmas_type": "sigma_min", "solver_order": 3},
    {"timestep_spacing": "leading", "steps_offset": 1},
    {"timestep_spacing": "trailing"},
    {"timestep_spacing": "trailing", "rescale_betas_zero_snr": True},
    {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction"},
    {"thresholding": True, "prediction_type": "sample"},
    {"thresholding": True, "prediction_type": "sample", "sample_max_value": 1.5, "dynamic_thresholding_ratio": 0.9},
    {
        "thresholding": True,
        "prediction_type": "epsilon",
        "algorithm_type": "dpmsolver",
        "final_sigmas_type": "sigma_min",
    },
    {"trained_betas": tuple(float(b) for b in torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))},
]


@pytest.mark.parametrize("steps", [1, 2, 3, 10, 14, 15, 25])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items())[:60])
def test_one_option_matches_diffusers(options: dict[str, Any], steps: int) -> None:
    assert_parity(run(Example(options, steps=steps)))


def test_dynamic_shift_mu_matches_diffusers() -> None:
    config = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "use_dynamic_shifting": True}
    for mu in (0.3, 1.15, 2.5):
        assert_parity(run(Example(config, steps=12, mu=mu)))


@pytest.mark.parametrize(
    "timesteps",
    [(999,), (999, 500), (999, 800, 600, 400, 200, 0), tuple(range(961, 0, -40)), (700, 650, 420, 419, 100, 3)],
)
@pytest.mark.parametrize("order", [1, 2, 3])
def test_custom_timesteps_match_diffusers(timesteps: tuple[int, ...], order: int) -> None:
    assert_parity(run(Example({"solver_order": order}, steps=None, timesteps=timesteps)))


def test_repeated_timesteps_need_a_begin_index_in_diffusers() -> None:
    """squaredcos_cap_v2 with karras sigmas keeps fractional timesteps, which repeat once cast to int64.

    diffusers then starts at the second match of timesteps[0] and runs off its sigma table unless the pipeline calls
    `set_begin_index(0)`; ours has no timestep look-up, so `init` (begin_index=0) is the set_begin_index(0) loop.
    """
    example = Example({"beta_schedule": "squaredcos_cap_v2", "use_karras_sigmas": True}, steps=10)
    assert has_repeated_timesteps(example)
    with pytest.raises(IndexError):
        parity_run(
            diffusers.DPMSolverMultistepScheduler(**example.config),
            fs.DPMSolverMultistep(**example.config),
            num_inference_steps=example.steps,
        )
    assert_parity(run(example))


@pytest.mark.parametrize("algorithm", ["dpmsolver++", "dpmsolver"])
def test_zero_length_final_step_breaks_down_like_diffusers(algorithm: str) -> None:
    """karras sigmas end at sigma_min, and final_sigmas_type='sigma_min' appends it again: the last step has h = 0.

    A third-order step divides 0 by 0 there, in diffusers and in ours alike; the NaN lands in the same places.
    """
    config = {"algorithm_type": algorithm, "final_sigmas_type": "sigma_min", "solver_order": 3}
    result = run(Example({**config, "use_karras_sigmas": True}, steps=20))
    assert result.ref_sigmas[-1] == result.ref_sigmas[-2]
    assert bool(torch.isnan(result.ref_samples[-1]).all())
    assert_parity(result)


def test_sde_dpmsolver_has_no_third_order() -> None:
    with pytest.raises(ValueError, match="sde-dpmsolver"):
        fs.DPMSolverMultistep(algorithm_type="sde-dpmsolver", solver_order=3, final_sigmas_type="sigma_min")


def test_noise_prediction_needs_a_final_sigma() -> None:
    # diffusers raises the same at construction: DPM-Solver (noise prediction) cannot step to sigma = 0.
    with pytest.raises(ValueError):
        diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver", final_sigmas_type="zero")
    with pytest.raises(ValueError, match="final_sigmas_type"):
        fs.DPMSolverMultistep(algorithm_type="dpmsolver", final_sigmas_type="zero")


def test_flow_prediction_needs_data_prediction() -> None:
    # diffusers only notices in `step`; ours at construction.
    config = {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "use_flow_sigmas": True}
    reference = diffusers.DPMSolverMultistepScheduler(prediction_type="flow_prediction", **config)
    reference.set_timesteps(4)
    sample = latents(SHAPE, torch.float32, 0)
    with pytest.raises(ValueError, match="flow_prediction"):
        reference.step(sample, reference.timesteps[0], sample)
    with pytest.raises(ValueError, match="prediction_type"):
        fs.DPMSolverMultistep(prediction_type="flow_prediction", **config)


# ------------------------------------------------------------------------------------------------ real configs
REAL = {
    # runwayml/stable-diffusion-v1-5's scheduler_config (PNDM, no timestep_spacing key -> DPM's "linspace").
    "sd15-dpmpp-2m": ({**SCALED_LINEAR, "steps_offset": 1}, 25),
    "sd15-dpmpp-2m-leading": ({**SCALED_LINEAR, "steps_offset": 1, "timestep_spacing": "leading"}, 25),
    "sdxl-dpmpp-2m-karras": (
        {**SCALED_LINEAR, "steps_offset": 1, "timestep_spacing": "leading", "use_karras_sigmas": True},
        30,
    ),
    "sdxl-dpmpp-2m-sde-karras": (
        {**SCALED_LINEAR, "steps_offset": 1, "use_karras_sigmas": True, "algorithm_type": "sde-dpmsolver++"},
        25,
    ),
    "sana": ({"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0}, 20),
    "dpmpp-3m": ({**SCALED_LINEAR, "solver_order": 3}, 30),
    "dpmpp-3m-sde-karras": (
        {**SCALED_LINEAR, "solver_order": 3, "algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
        30,
    ),
    "sd21-v-trailing-zero-snr": (
        {
            **SCALED_LINEAR,
            "prediction_type": "v_prediction",
            "timestep_spacing": "trailing",
            "rescale_betas_zero_snr": True,
        },
        25,
    ),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_config_matches_diffusers(name: str) -> None:
    config, steps = REAL[name]
    assert_parity(run(Example(config, steps=steps)))


@pytest.mark.parametrize("name", ["sd15-dpmpp-2m", "sdxl-dpmpp-2m-sde-karras", "sana", "dpmpp-3m"])
def test_bf16_matches_diffusers_exactly(name: str) -> None:
    """Sample and model output both bf16: diffusers computes in float32 and returns bf16, and so do we."""
    config, steps = REAL[name]
    result = run(Example(config, steps=steps), dtype=torch.bfloat16)
    assert_tables_equal(result)
    for index, (ours, ref) in enumerate(zip(result.ours_samples, result.ref_samples, strict=True)):
        assert ours.dtype == ref.dtype == torch.bfloat16
        torch.testing.assert_close(ours, ref, rtol=0, atol=0, msg=lambda m, i=index: f"step {i}: {m}")


# (config, the dtype diffusers returns). diffusers casts its result to the dtype of the *converted* model output:
# x0 = (x - sigma eps) / alpha promotes a bf16 output to float32, while "sample" prediction (x0 = the output) and
# DPM-Solver's epsilon keep bf16.
MIXED = {
    "sd15-dpmpp-2m": (REAL["sd15-dpmpp-2m"][0], torch.float32),
    "sde-karras": (REAL["sdxl-dpmpp-2m-sde-karras"][0], torch.float32),
    "sana": (REAL["sana"][0], torch.float32),
    "dpmpp-3m": (REAL["dpmpp-3m"][0], torch.float32),
    "sample": ({"prediction_type": "sample", "solver_order": 3}, torch.bfloat16),
    "sample-thresholding": ({"prediction_type": "sample", "thresholding": True}, torch.bfloat16),
    "dpmsolver-eps": ({"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}, torch.bfloat16),
    "sde-dpmsolver-eps": ({"algorithm_type": "sde-dpmsolver", "final_sigmas_type": "sigma_min"}, torch.bfloat16),
}


@pytest.mark.parametrize("name", list(MIXED))
def test_float32_latents_with_bf16_model_output(name: str) -> None:
    """float32 latents, bf16 model output: ours returns float32 (the sample's dtype), diffusers the converted model
    output's dtype. Where that is float32 the two are bit-identical; where it is bf16, ours cast to bf16 lies within
    one bf16 ulp of diffusers' (one rounding of the same float32 value; in practice equal).

    Where diffusers returns bf16 its own loop is rounded to bf16 after every step while ours keeps float32, so a
    free-running comparison would measure diffusers' rounding, not the step: each step starts both sides from
    diffusers' previous sample upcast to float32 (as pipelines do with `latents.to(latents_dtype)`), with the same
    bf16 model output, so the histories hold the same converted outputs. Where diffusers returns float32 this is the
    free-running loop.
    """
    config, returned = MIXED[name]
    reference = diffusers.DPMSolverMultistepScheduler(**config)
    ours_sched = fs.DPMSolverMultistep(**config)
    steps = 20
    reference.set_timesteps(steps)
    sample = latents(SHAPE, torch.float32, 0)
    state = ours_sched.init(steps, sample=sample)
    g_diff, g_ours = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for index, t in enumerate(reference.timesteps):
        model_output = toy_model(sample, t).to(torch.bfloat16)
        ref = reference.step(model_output, t, sample, generator=g_diff, return_dict=False)[0]
        noise = step_noise(sample.shape, g_ours) if ours_sched.stochastic else None
        ours, state = ours_sched.step(state, model_output, sample, noise=noise)
        assert ref.dtype == returned
        assert ours.dtype == torch.float32
        if returned == torch.float32:
            torch.testing.assert_close(ours, ref, rtol=0, atol=0, msg=lambda m, i=index: f"step {i}: {m}")
        else:
            gap = (ours.to(torch.bfloat16).double() - ref.double()).abs()
            assert bool((gap <= ulp(ref)).all()), f"step {index}: {gap.max().item()} > one bf16 ulp"
        sample = ref.to(torch.float32)


def test_learned_variance_channels() -> None:
    """variance_type='learned_range' (DeepFloyd IF style): the model outputs mean and variance channels."""
    config = {
        "beta_schedule": "squaredcos_cap_v2",
        "variance_type": "learned_range",
        "lambda_min_clipped": -5.1,
        "thresholding": True,
        "dynamic_thresholding_ratio": 0.95,
        "sample_max_value": 1.5,
    }
    reference = diffusers.DPMSolverMultistepScheduler(**config)
    ours_sched = fs.DPMSolverMultistep(**config)
    reference.set_timesteps(12)
    ref = latents((2, 3, 8, 8), torch.float32, 0)
    ours, state = ref.clone(), ours_sched.init(12, sample=ref)
    assert torch.equal(ours_sched.timesteps(state), reference.timesteps)
    for index, t in enumerate(reference.timesteps):
        ref_output = toy_model(torch.cat([ref, ref.flip(1)], dim=1), t)
        ref = reference.step(ref_output, t, ref, return_dict=False)[0]
        our_output = toy_model(torch.cat([ours, ours.flip(1)], dim=1), ours_sched.timestep(state))
        ours, state = ours_sched.step(state, our_output, ours)
        torch.testing.assert_close(ours, ref, rtol=0, atol=0, msg=lambda m, i=index: f"step {i}: {m}")


# ------------------------------------------------------------------------------------------------ img2img
@pytest.mark.parametrize(
    ("config", "steps", "begin_index"),
    [
        ({**SCALED_LINEAR, "steps_offset": 1}, 25, 10),
        ({**SCALED_LINEAR, "use_karras_sigmas": True, "algorithm_type": "sde-dpmsolver++"}, 20, 5),
        ({"solver_order": 3, "final_sigmas_type": "sigma_min"}, 12, 11),
        ({"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0}, 30, 12),
    ],
)
def test_begin_index_and_add_noise_match_diffusers(config: dict[str, Any], steps: int, begin_index: int) -> None:
    """img2img: `init(begin_index=k)` against `set_begin_index(k)`, and `add_noise` at that index, then the loop."""
    reference = diffusers.DPMSolverMultistepScheduler(**config)
    ours_sched = fs.DPMSolverMultistep(**config)
    reference.set_timesteps(steps)
    reference.set_begin_index(begin_index)
    image, noise = latents(SHAPE, torch.float32, 3), latents(SHAPE, torch.float32, 4)
    state = ours_sched.init(steps, sample=image, begin_index=begin_index)
    start = reference.timesteps[begin_index : begin_index + 1].repeat(SHAPE[0])
    assert torch.equal(ours_sched.timestep(state), start)

    ref = reference.add_noise(image, noise, start)
    ours = ours_sched.add_noise(state, image, noise)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)

    g_diff, g_ours = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    stochastic = config.get("algorithm_type", "").startswith("sde")
    for index, t in enumerate(reference.timesteps[begin_index:]):
        ref = reference.step(toy_model(ref, t), t, ref, generator=g_diff, return_dict=False)[0]
        noise_z = step_noise(SHAPE, g_ours) if stochastic else None
        ours, state = ours_sched.step(state, toy_model(ours, ours_sched.timestep(state)), ours, noise=noise_z)
        torch.testing.assert_close(ours, ref, rtol=0, atol=0, msg=lambda m, i=index: f"step {begin_index + i}: {m}")
    assert index == steps - begin_index - 1


@pytest.mark.parametrize("begin_index", [1, 7, 19])
def test_begin_index_loop_matches_diffusers(begin_index: int) -> None:
    assert_parity(run(Example({"solver_order": 3}, steps=20), begin_index=begin_index), expected_steps=20 - begin_index)


# ------------------------------------------------------------------------------------------------ float64
@pytest.mark.parametrize(
    "config",
    [
        {},
        {"solver_order": 3, "use_karras_sigmas": True},
        {"prediction_type": "v_prediction", "solver_type": "heun", "final_sigmas_type": "sigma_min"},
        {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "solver_order": 3},
        {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0},
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
    ],
    ids=["dpmpp2m", "dpmpp3m-karras", "v-heun", "dpm3", "flow", "sde-karras"],
)
def test_float64_plans_run_close_to_float32(config: dict[str, Any]) -> None:
    """diffusers downcasts float64 samples to float32, so float64 is not compared to it; it must stay close to
    the float32 trajectory (both ours) and keep float64 throughout."""
    scheduler = fs.DPMSolverMultistep(**config)
    steps = 20
    start = latents(SHAPE, torch.float64, 0)
    trajectories = {}
    for dtype in (torch.float64, torch.float32):
        sample = start.to(dtype)
        state = scheduler.init(steps, sample=sample)
        assert state.plan.coefficients.dtype == dtype
        generator = torch.Generator().manual_seed(1)
        samples = []
        for _ in range(steps):
            output = toy_model(sample, scheduler.timestep(state))
            noise = step_noise(SHAPE, generator).to(dtype) if scheduler.stochastic else None
            sample, state = scheduler.step(state, output, sample, noise=noise)
            assert sample.dtype == dtype
            assert all(entry.dtype == dtype for entry in state.history)
            samples.append(sample)
        trajectories[dtype] = samples
    for index, (wide, narrow) in enumerate(zip(trajectories[torch.float64], trajectories[torch.float32], strict=True)):
        assert bool(torch.isfinite(wide).all())
        scale = wide.abs().max().item()
        error = (wide - narrow.double()).abs().max().item()
        assert error <= 1e-4 * scale, f"step {index}: {error / scale:.2e}"
