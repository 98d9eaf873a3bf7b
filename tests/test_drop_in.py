"""functional_sched.adapters.drop_in, what the conformance suite's interop column does not already prove for every
class: `set_timesteps` in all its keyword forms and refusals, `from_config` across classes, the SDE noise arguments,
the timestep look-up of a repeated timestep, DPM-Solver's `mu`, FlowMatchEuler's refusals, and `step()` arguments
that are options (`Option.step_argument`) re-planning the run."""

from __future__ import annotations

from typing import Any

import diffusers
import numpy as np
import pytest
import torch
from specs import SPECS

import functional_sched as fs
from functional_sched.adapters import drop_in
from functional_sched.adapters.drop_in import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    as_diffusers,
)
from functional_sched.machinery import options
from functional_sched.machinery.options import Option, Real
from functional_sched.testing import toy_model
from functional_sched.testing.columns.interop import SHAPE, assert_tables_equal, drop_in_loop, public


def pair(name: str, options: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(the conformance case for these options, diffusers' scheduler, our drop-in)."""
    spec = next(spec for spec in SPECS.values() if spec.scheduler.diffusers_name == name)
    return spec.case(options), getattr(diffusers, name)(**options), getattr(drop_in, name)(**options)


def test_stochastic_noise_comes_from_the_generator():
    """The SDE result depends on the generator's seed (the equality above is not vacuous)."""
    ours = DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")
    x = torch.randn(SHAPE)
    outs = []
    for seed in (0, 1):
        ours.set_timesteps(5)
        t = ours.timesteps[0]
        outs.append(ours.step(toy_model(x, t), t, x, generator=torch.Generator().manual_seed(seed)).prev_sample)
    assert not torch.equal(outs[0], outs[1])


def test_dpm_sde_variance_noise():
    _, reference, ours = pair("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"})
    reference.set_timesteps(6)
    ours.set_timesteps(6)
    x = y = torch.randn(SHAPE)
    for i, t in enumerate(reference.timesteps):
        z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(i))
        x = reference.step(toy_model(x, t), t, x, variance_noise=z).prev_sample
        y = ours.step(toy_model(y, t), t, y, variance_noise=z).prev_sample
        assert torch.equal(x, y)


@pytest.mark.parametrize("source", ["UniPCMultistepScheduler", "DPMSolverMultistepScheduler"])
@pytest.mark.parametrize("target", ["UniPCMultistepScheduler", "DPMSolverMultistepScheduler"])
def test_from_config_switches_classes_like_diffusers(source, target):
    options = {"beta_schedule": "scaled_linear", "solver_order": 3}
    config = getattr(diffusers, source)(**options).config
    expected = getattr(diffusers, target).from_config(config)
    got = getattr(drop_in, target).from_config(config)
    assert type(got) is getattr(drop_in, target)
    assert public(got.config) == public(expected.config)
    expected.set_timesteps(12)
    got.set_timesteps(12)
    drop_in_loop(pair(target, options)[0], expected, got, torch.randn(SHAPE))


def test_from_config_of_a_flow_pipeline_config():
    """`FlowMatchEuler.from_config` of a DPM config (foreign keys dropped as diffusers drops them)."""
    config = diffusers.DPMSolverMultistepScheduler().config
    expected = diffusers.FlowMatchEulerDiscreteScheduler.from_config(config, shift=3.0)
    got = FlowMatchEulerDiscreteScheduler.from_config(config, shift=3.0)
    assert public(got.config) == public(expected.config)


def test_repeated_timestep_takes_the_second_match():
    """A repeated timestep makes a zero-length step, which only a first-order solver survives (at higher orders the
    next step divides by it, and `set_timesteps` refuses the schedule)."""
    _, reference, ours = pair("DPMSolverMultistepScheduler", {"solver_order": 1})
    custom = [999, 500, 500, 200, 1]
    reference.set_timesteps(timesteps=custom)
    ours.set_timesteps(timesteps=custom)
    x = torch.randn(SHAPE)
    t = reference.timesteps[1]
    reference.step(toy_model(x, t), t, x)
    ours.step(toy_model(x, t), t, x)
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
    case, reference, ours = pair(name, config)
    reference.set_timesteps(**kwargs)
    ours.set_timesteps(**kwargs)
    assert_tables_equal(reference, ours)
    drop_in_loop(case, reference, ours, torch.randn(SHAPE))


def test_dpm_mu_sets_flow_shift_like_diffusers():
    config = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "use_dynamic_shifting": True}
    case, reference, ours = pair("DPMSolverMultistepScheduler", config)
    reference.set_timesteps(8, mu=1.1)
    ours.set_timesteps(8, mu=1.1)
    assert_tables_equal(reference, ours)
    drop_in_loop(case, reference, ours, torch.randn(SHAPE))
    reference.set_timesteps(8)  # diffusers keeps flow_shift = exp(mu)
    ours.set_timesteps(8)
    assert_tables_equal(reference, ours)
    assert ours.config.flow_shift == reference.config.flow_shift


def test_timesteps_follow_the_device_argument():
    _, reference, ours = pair("FlowMatchEulerDiscreteScheduler", {"shift": 3.0})
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
    _, reference, ours = pair(name, config)
    with pytest.raises(ValueError):
        reference.set_timesteps(**kwargs)
    with pytest.raises(ValueError):
        ours.set_timesteps(**kwargs)


def test_flow_match_refuses_integer_timesteps_and_misshapen_per_token_timesteps():
    ours = FlowMatchEulerDiscreteScheduler()
    ours.set_timesteps(4)
    x = torch.randn(SHAPE)
    with pytest.raises(ValueError, match="integer"):
        ours.step(x, 3, x)
    with pytest.raises(ValueError, match="per_token_timesteps must be a real tensor shaped as the sample's leading"):
        ours.step(x, ours.timesteps[0], x, per_token_timesteps=torch.full((SHAPE[0] + 1,), 999.0))
    assert ours.step_index is None  # nothing happened


def test_as_diffusers_refuses_unsupported():
    with pytest.raises(NotImplementedError, match="solver_p"):
        as_diffusers(diffusers.UniPCMultistepScheduler(solver_p=diffusers.DDIMScheduler()))
    with pytest.raises(NotImplementedError, match="CMStochasticIterativeScheduler"):
        as_diffusers(diffusers.CMStochasticIterativeScheduler())
    with pytest.raises(NotImplementedError):
        UniPCMultistepScheduler(solver_p=diffusers.DDIMScheduler())


# ------------------------------------------------------------------------------------------------ step arguments
@options.config
class NoisyFlowMatch(fs.FlowMatchEulerDiscrete):
    """Flow-match Euler whose stochastic noise is scaled by `s_noise`, an option diffusers' Euler-type classes take as
    a `step()` argument: a test scheduler, so the drop-in's handling of step arguments has a user before Euler."""

    s_noise: float = Option(1.0, Real(above=0), step_argument=True)

    def _step_options(self) -> tuple[Any, ...]:
        return (*super()._step_options(), self.s_noise)

    def step(self, state: Any, model_output: Any, sample: Any, *, noise: Any = None) -> Any:
        return super().step(state, model_output, sample, noise=None if noise is None else noise * self.s_noise)


# The drop-in of `NoisyFlowMatch`: as every drop-in, it carries its diffusers class's name and signatures.
NoisyDropIn = type(
    "FlowMatchEulerDiscreteScheduler", (FlowMatchEulerDiscreteScheduler,), {"_functional_class": NoisyFlowMatch}
)


@pytest.mark.parametrize("switch_at", [0, 3])
def test_a_step_argument_replans_from_the_step_the_run_is_at(switch_at: int) -> None:
    """diffusers' `step(..., s_noise=)` is config here: a drop-in called with another value than its config re-plans
    and goes on from the step it is at, as a functional loop that switches to the scheduler of that value there."""
    config = {"shift": 3.0, "stochastic_sampling": True}
    ours = NoisyDropIn(**config)
    assert "s_noise" not in ours.config  # a step argument: diffusers keeps it out of the config
    ours.set_timesteps(6)
    before, after = NoisyFlowMatch(**config), NoisyFlowMatch(**config, s_noise=0.5)
    x = y = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    state = before.init(6, sample=y)
    g_ours, g_functional = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    for index, t in enumerate(ours.timesteps):
        s_noise = 0.5 if index >= switch_at else 1.0
        x = ours.step(toy_model(x, t), t, x, s_noise=s_noise, generator=g_ours).prev_sample
        sched = after if index >= switch_at else before
        if index == switch_at:  # the run goes on under the new config: its plan and step options
            state = after._replanned(state, 6)
        noise = fs.randn_tensor(SHAPE, generator=g_functional, dtype=torch.float32)
        assert torch.equal(sched.timestep(state), t.expand(SHAPE[0]))
        y, state = sched.step(state, toy_model(y, t), y, noise=noise)
        assert torch.equal(x, y), f"step {index}"
    assert ours._functional == after and ours.step_index == 6
