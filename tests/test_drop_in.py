"""functional_sched.adapters.drop_in: the drop-ins step like diffusers' schedulers, bit for bit, on the CPU."""

from __future__ import annotations

import inspect
from typing import Any

import diffusers
import numpy as np
import pytest
import torch
from _support import bit_identical_expected

import functional_sched as fs
from functional_sched.adapters import drop_in
from functional_sched.adapters._cases import GRID, Case
from functional_sched.adapters.drop_in import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    as_diffusers,
)

NAMES = ("FlowMatchEulerDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler")
SHAPE = (2, 4, 6, 6)

EXTRA = (
    Case("flow stochastic", "FlowMatchEulerDiscreteScheduler", {"shift": 3.0, "stochastic_sampling": True}),
    Case("DPM++ 3M v", "DPMSolverMultistepScheduler", {"solver_order": 3, "prediction_type": "v_prediction"}),
    Case(
        "DPM 2M SDE heun",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"},
        stochastic=True,
    ),
    Case(
        "UniPC bh1 order 3",
        "UniPCMultistepScheduler",
        {"solver_order": 3, "solver_type": "bh1", "final_sigmas_type": "sigma_min"},
    ),
)


def denoiser(x: torch.Tensor, t: Any) -> torch.Tensor:
    """A deterministic toy model: depends on the sample and the timestep, like a real one."""
    t = torch.as_tensor(t, dtype=torch.float32)
    return torch.sin(x * 0.7 + t / 1000.0) * 0.5 + 0.1 * x


def public(config: Any) -> dict[str, Any]:
    """A config's options, without diffusers' bookkeeping (`_class_name`, `_use_default_values`, ...)."""
    return {key: value for key, value in dict(config).items() if not key.startswith("_")}


def pair(name: str, config: dict[str, Any]) -> tuple[Any, Any]:
    return getattr(diffusers, name)(**config), getattr(drop_in, name)(**config)


def set_both(reference: Any, ours: Any, case: Case, steps: int) -> None:
    kwargs: dict[str, Any] = {}
    if case.pipeline_sigmas:
        kwargs["sigmas"] = np.linspace(1.0, 1 / steps, steps)
    else:
        kwargs["num_inference_steps"] = steps
    if case.mu is not None:
        kwargs["mu"] = case.mu
    reference.set_timesteps(**kwargs)
    ours.set_timesteps(**kwargs)


def assert_tables_equal(reference: Any, ours: Any) -> None:
    for name in ("timesteps", "sigmas"):
        expected, got = getattr(reference, name), getattr(ours, name)
        assert got.dtype == expected.dtype and got.device == expected.device, name
        assert torch.equal(got, expected), name
    assert ours.num_inference_steps == reference.num_inference_steps
    assert ours.step_index == reference.step_index
    assert ours.begin_index == reference.begin_index


def run_loop(reference: Any, ours: Any, x: torch.Tensor, seed: int = 0, start: int = 0, model_dtype=None) -> int:
    """Step both through the rest of the schedule; every output and read-out must match (bit for bit, or within the
    design's bound where `bit_identical_expected` says BLAS rounding may differ). Returns the steps taken."""
    exact = bit_identical_expected(type(ours._functional), dict(reference.config))
    y = x.clone()
    g_ref, g_ours = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    wants_generator = "generator" in inspect.signature(reference.step).parameters
    timesteps = reference.timesteps[start:]
    for i, t in enumerate(timesteps):
        e_ref, e_ours = denoiser(x, t), denoiser(y, t)
        if model_dtype is not None:
            e_ref, e_ours = e_ref.to(model_dtype), e_ours.to(model_dtype)
        extra_ref = {"generator": g_ref} if wants_generator else {}
        extra_ours = {"generator": g_ours} if wants_generator else {}
        return_dict = i % 2 == 0
        out_ref = reference.step(e_ref, t, x, return_dict=return_dict, **extra_ref)
        out_ours = ours.step(e_ours, t, y, return_dict=return_dict, **extra_ours)
        assert type(out_ours) is type(out_ref)
        x, y = (out_ref.prev_sample, out_ours.prev_sample) if return_dict else (out_ref[0], out_ours[0])
        assert y.dtype == x.dtype, f"step {i}"
        if exact:
            assert torch.equal(y, x), f"step {i}: max diff {(y.double() - x.double()).abs().max().item()}"
        else:
            assert (y.double() - x.double()).norm() <= 1e-5 * x.double().norm(), f"step {i}"
        assert_tables_equal(reference, ours)
    return len(timesteps)


@pytest.mark.parametrize("case", GRID + EXTRA, ids=lambda case: case.label)
@pytest.mark.parametrize("steps", [8, 20])
def test_full_loop_bit_identical(case, steps):
    reference, ours = pair(case.diffusers_name, public(case.config))
    assert ours.step_index is None and ours.num_inference_steps is None
    set_both(reference, ours, case, steps)
    assert_tables_equal(reference, ours)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    assert run_loop(reference, ours, x, seed=steps) == steps
    # set_timesteps again starts a fresh run on the same object
    set_both(reference, ours, case, steps)
    assert ours.step_index is None
    run_loop(reference, ours, x, seed=steps + 1)


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}),
        ("DPMSolverMultistepScheduler", {}),
        ("DPMSolverMultistepScheduler", {"prediction_type": "sample"}),
        ("UniPCMultistepScheduler", {}),
    ],
)
def test_mixed_dtypes_follow_diffusers_output_dtype(name, config):
    reference, ours = pair(name, config)
    reference.set_timesteps(10)
    ours.set_timesteps(10)
    run_loop(reference, ours, torch.randn(SHAPE), model_dtype=torch.bfloat16)


def test_stochastic_noise_comes_from_the_generator():
    """The SDE result depends on the generator's seed (the equality above is not vacuous)."""
    ours = DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")
    x = torch.randn(SHAPE)
    outs = []
    for seed in (0, 1):
        ours.set_timesteps(5)
        t = ours.timesteps[0]
        outs.append(ours.step(denoiser(x, t), t, x, generator=torch.Generator().manual_seed(seed)).prev_sample)
    assert not torch.equal(outs[0], outs[1])


def test_dpm_sde_variance_noise():
    reference, ours = pair("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"})
    reference.set_timesteps(6)
    ours.set_timesteps(6)
    x = y = torch.randn(SHAPE)
    for i, t in enumerate(reference.timesteps):
        z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(i))
        x = reference.step(denoiser(x, t), t, x, variance_noise=z).prev_sample
        y = ours.step(denoiser(y, t), t, y, variance_noise=z).prev_sample
        assert torch.equal(x, y)


@pytest.mark.parametrize("name", NAMES)
def test_signatures_and_config_match_diffusers(name):
    reference_class, ours_class = getattr(diffusers, name), getattr(drop_in, name)
    assert ours_class.__name__ == name
    assert issubclass(ours_class, diffusers.SchedulerMixin) and issubclass(ours_class, diffusers.ConfigMixin)
    assert not issubclass(ours_class, reference_class)
    assert inspect.signature(ours_class.__init__) == inspect.signature(reference_class.__init__)
    reference, ours = reference_class(), ours_class()
    for method in ("set_timesteps", "step"):
        assert inspect.signature(getattr(ours, method)) == inspect.signature(getattr(reference, method)), method
    assert public(ours.config) == public(reference.config)
    assert ours._compatibles == reference_class._compatibles
    assert [c.__name__ for c in ours.compatibles] == [c.__name__ for c in reference.compatibles]
    assert ours.order == reference.order
    assert hasattr(ours, "init_noise_sigma") == hasattr(reference, "init_noise_sigma")
    if hasattr(reference, "init_noise_sigma"):
        assert ours.init_noise_sigma == reference.init_noise_sigma
    with pytest.raises(TypeError):
        ours_class(not_an_option=1)
    x = torch.randn(SHAPE)
    assert ours.scale_model_input(x, 3) is x


@pytest.mark.parametrize("source", ["UniPCMultistepScheduler", "DPMSolverMultistepScheduler"])
@pytest.mark.parametrize("target", ["UniPCMultistepScheduler", "DPMSolverMultistepScheduler"])
def test_from_config_switches_classes_like_diffusers(source, target):
    config = getattr(diffusers, source)(beta_schedule="scaled_linear", solver_order=3).config
    expected = getattr(diffusers, target).from_config(config)
    got = getattr(drop_in, target).from_config(config)
    assert type(got) is getattr(drop_in, target)
    assert public(got.config) == public(expected.config)
    expected.set_timesteps(12)
    got.set_timesteps(12)
    run_loop(expected, got, torch.randn(SHAPE))


def test_from_config_of_a_flow_pipeline_config():
    """`FlowMatchEuler.from_config` of a DPM config (foreign keys dropped as diffusers drops them)."""
    config = diffusers.DPMSolverMultistepScheduler().config
    expected = diffusers.FlowMatchEulerDiscreteScheduler.from_config(config, shift=3.0)
    got = FlowMatchEulerDiscreteScheduler.from_config(config, shift=3.0)
    assert public(got.config) == public(expected.config)


@pytest.mark.parametrize("name", NAMES)
def test_save_config_from_pretrained_round_trip(name, tmp_path):
    config = {"FlowMatchEulerDiscreteScheduler": {"shift": 3.0}}.get(name, {"solver_order": 3})
    ours = getattr(drop_in, name)(**config)
    ours.save_config(tmp_path / "ours")
    again = getattr(drop_in, name).from_pretrained(tmp_path / "ours")
    assert type(again) is type(ours) and public(again.config) == public(ours.config)
    by_diffusers = getattr(diffusers, name).from_pretrained(tmp_path / "ours")
    assert public(by_diffusers.config) == public(ours.config)
    by_diffusers.save_config(tmp_path / "theirs")
    from_theirs = getattr(drop_in, name).from_pretrained(tmp_path / "theirs")
    assert public(from_theirs.config) == public(by_diffusers.config)


@pytest.mark.parametrize(("name", "strength"), [(n, s) for n in NAMES for s in (0.5, 0.75)])
def test_img2img_begin_index(name, strength):
    config = {"FlowMatchEulerDiscreteScheduler": {"shift": 3.0}}.get(name, {})
    reference, ours = pair(name, config)
    steps = 10
    reference.set_timesteps(steps)
    ours.set_timesteps(steps)
    t_start = int(steps - steps * strength)  # the img2img pipelines' get_timesteps
    reference.set_begin_index(t_start)
    ours.set_begin_index(t_start)
    assert ours.begin_index == t_start
    image, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    t = reference.timesteps[t_start : t_start + 1].repeat(SHAPE[0])
    if name == "FlowMatchEulerDiscreteScheduler":
        x, y = reference.scale_noise(image, t, noise), ours.scale_noise(image, t, noise)
    else:
        x, y = reference.add_noise(image, noise, t), ours.add_noise(image, noise, t)
    assert torch.equal(x, y)
    assert run_loop(reference, ours, x, start=t_start) == steps - t_start


@pytest.mark.parametrize("name", NAMES)
def test_noising_by_timestep_lookup_and_after_steps(name):
    """No begin_index: each row's sigma is found by its timestep; after steps (inpainting): the step index."""
    config = {"FlowMatchEulerDiscreteScheduler": {"shift": 3.0}}.get(name, {})
    reference, ours = pair(name, config)
    reference.set_timesteps(10)
    ours.set_timesteps(10)
    image, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    flow = name == "FlowMatchEulerDiscreteScheduler"

    def noised(scheduler: Any, t: torch.Tensor) -> torch.Tensor:
        return scheduler.scale_noise(image, t, noise) if flow else scheduler.add_noise(image, noise, t)

    t = reference.timesteps[[1, 6]]
    assert torch.equal(noised(ours, t), noised(reference, t))
    assert not torch.equal(noised(ours, t)[0], noised(ours, t[[1, 1]])[0])
    reference.set_begin_index(0)
    ours.set_begin_index(0)
    run_loop(reference, ours, image.clone())
    # after the loop the step index (10) is used: the last sigma
    reference.set_timesteps(10)
    ours.set_timesteps(10)
    reference.set_begin_index(2)
    ours.set_begin_index(2)
    x = y = image
    for step_t in reference.timesteps[2:5]:
        x = reference.step(denoiser(x, step_t), step_t, x).prev_sample
        y = ours.step(denoiser(y, step_t), step_t, y).prev_sample
    assert ours.step_index == reference.step_index == 5
    assert torch.equal(noised(ours, t), noised(reference, t))


@pytest.mark.parametrize("name", NAMES)
def test_first_step_finds_its_index_by_timestep(name):
    """Without set_begin_index the first step locates its timestep in the table, as diffusers does."""
    config = {"FlowMatchEulerDiscreteScheduler": {"shift": 3.0}}.get(name, {})
    reference, ours = pair(name, config)
    reference.set_timesteps(10)
    ours.set_timesteps(10)
    x = torch.randn(SHAPE)
    assert run_loop(reference, ours, x, start=4) == 6
    assert ours.step_index == 10


def test_repeated_timestep_takes_the_second_match():
    reference, ours = pair("DPMSolverMultistepScheduler", {})
    custom = [999, 500, 500, 200, 1]
    reference.set_timesteps(timesteps=custom)
    ours.set_timesteps(timesteps=custom)
    x = torch.randn(SHAPE)
    t = reference.timesteps[1]
    reference.step(denoiser(x, t), t, x)
    ours.step(denoiser(x, t), t, x)
    assert ours.step_index == reference.step_index == 3


@pytest.mark.parametrize(
    ("name", "config", "kwargs"),
    [
        ("DPMSolverMultistepScheduler", {}, {"timesteps": [900, 700, 400, 100]}),
        ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, {"timesteps": [1000.0, 750.0, 500.0, 250.0]}),
        ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, {"sigmas": [1.0, 0.6, 0.3], "num_inference_steps": 3}),
        (
            "UniPCMultistepScheduler",
            {"use_flow_sigmas": True, "prediction_type": "flow_prediction"},
            {"sigmas": np.array([1.0, 0.7, 0.4, 0.1])},  # diffusers needs an array here
        ),
        (
            "UniPCMultistepScheduler",
            {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "use_dynamic_shifting": True},
            {"num_inference_steps": 7, "mu": 0.8},
        ),
    ],
)
def test_set_timesteps_keyword_forms(name, config, kwargs):
    reference, ours = pair(name, config)
    reference.set_timesteps(**kwargs)
    ours.set_timesteps(**kwargs)
    assert_tables_equal(reference, ours)
    run_loop(reference, ours, torch.randn(SHAPE))


def test_dpm_mu_sets_flow_shift_like_diffusers():
    config = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "use_dynamic_shifting": True}
    reference, ours = pair("DPMSolverMultistepScheduler", config)
    reference.set_timesteps(8, mu=1.1)
    ours.set_timesteps(8, mu=1.1)
    assert_tables_equal(reference, ours)
    run_loop(reference, ours, torch.randn(SHAPE))
    reference.set_timesteps(8)  # diffusers keeps flow_shift = exp(mu)
    ours.set_timesteps(8)
    assert_tables_equal(reference, ours)
    assert ours.config.flow_shift == reference.config.flow_shift


def test_timesteps_follow_the_device_argument():
    reference, ours = pair("FlowMatchEulerDiscreteScheduler", {"shift": 3.0})
    reference.set_timesteps(5, device="cpu")
    ours.set_timesteps(5, device="cpu")
    assert_tables_equal(reference, ours)


@pytest.mark.parametrize(
    ("name", "config", "kwargs"),
    [
        ("FlowMatchEulerDiscreteScheduler", {"use_dynamic_shifting": True}, {"num_inference_steps": 5}),
        ("FlowMatchEulerDiscreteScheduler", {}, {"sigmas": [1.0, 0.5], "timesteps": [1000.0]}),
        ("FlowMatchEulerDiscreteScheduler", {}, {"sigmas": [1.0, 0.5], "num_inference_steps": 3}),
        ("DPMSolverMultistepScheduler", {}, {}),
        ("DPMSolverMultistepScheduler", {}, {"num_inference_steps": 3, "timesteps": [900, 100]}),
        ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, {"timesteps": [900, 100]}),
        ("UniPCMultistepScheduler", {}, {"sigmas": [1.0, 0.5]}),
        (
            "UniPCMultistepScheduler",
            {"use_flow_sigmas": True, "use_dynamic_shifting": True},
            {"num_inference_steps": 5},
        ),
    ],
)
def test_set_timesteps_refuses_what_diffusers_refuses(name, config, kwargs):
    reference, ours = pair(name, config)
    with pytest.raises(ValueError):
        reference.set_timesteps(**kwargs)
    with pytest.raises(ValueError):
        ours.set_timesteps(**kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_step_before_set_timesteps_raises(name):
    ours = getattr(drop_in, name)()
    x = torch.randn(SHAPE)
    with pytest.raises(ValueError):
        ours.step(x, torch.tensor(999.0), x)
    with pytest.raises(RuntimeError):
        _ = ours.timesteps


def test_flow_match_refuses_integer_timesteps_and_per_token_timesteps():
    ours = FlowMatchEulerDiscreteScheduler()
    ours.set_timesteps(4)
    x = torch.randn(SHAPE)
    with pytest.raises(ValueError, match="integer"):
        ours.step(x, 3, x)
    with pytest.raises(NotImplementedError, match="per_token_timesteps"):
        ours.step(x, ours.timesteps[0], x, per_token_timesteps=torch.full(SHAPE[:1], 999.0))
    assert ours.step_index is None  # nothing happened


@pytest.mark.parametrize("name", NAMES)
def test_as_diffusers_from_diffusers_and_functional(name):
    config = {"FlowMatchEulerDiscreteScheduler": {"shift": 3.0}}.get(name, {"solver_order": 3})
    reference = getattr(diffusers, name)(**config)
    ours = as_diffusers(reference)
    assert type(ours) is getattr(drop_in, name)
    assert public(ours.config) == public(reference.config)
    functional = next(cls for cls in fs.SCHEDULERS if cls.diffusers_name == name)(**config)
    from_functional = as_diffusers(functional)
    assert type(from_functional) is type(ours) and public(from_functional.config) == public(reference.config)
    reference.set_timesteps(9)
    ours.set_timesteps(9)
    run_loop(reference, ours, torch.randn(SHAPE))


def test_as_diffusers_refuses_unsupported():
    with pytest.raises(NotImplementedError, match="solver_p"):
        as_diffusers(diffusers.UniPCMultistepScheduler(solver_p=diffusers.DDIMScheduler()))
    with pytest.raises(NotImplementedError, match="EulerDiscreteScheduler"):
        as_diffusers(diffusers.EulerDiscreteScheduler())
    with pytest.raises(NotImplementedError):
        UniPCMultistepScheduler(solver_p=diffusers.DDIMScheduler())


@pytest.mark.parametrize(
    "name", ["FlowMatchEulerDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler"]
)
def test_unknown_first_timestep_is_handled_as_diffusers(name: str) -> None:
    """A first `step` with a timestep that is not in the table: FlowMatchEuler raises IndexError, DPM and UniPC
    start from the last index; the drop-in does the same."""
    reference, ours = getattr(diffusers, name)(), getattr(drop_in, name)()
    reference.set_timesteps(6)
    ours.set_timesteps(6)
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    unknown = torch.tensor(123.25) if name.startswith("FlowMatch") else torch.tensor(123)
    model_output = torch.tanh(sample)
    if name.startswith("FlowMatch"):
        with pytest.raises(IndexError):
            reference.step(model_output, unknown, sample)
        with pytest.raises(IndexError):
            ours.step(model_output, unknown, sample)
        return
    expected = reference.step(model_output, unknown, sample).prev_sample
    assert reference.step_index == len(reference.timesteps)
    assert torch.equal(ours.step(model_output, unknown, sample).prev_sample, expected)
    assert ours.step_index == reference.step_index
