"""FlowMatchEulerDiscrete facts beyond its conformance table (`tests/specs/flow_match.py`): custom sigmas in the forms
pipelines pass them (numpy arrays, float32 tensors used as they are, with no float64 detour)."""

from __future__ import annotations

from typing import Any

import diffusers
import numpy as np
import pytest
import torch
from specs import CASES

import functional_sched as fs
from functional_sched.adapters import drop_in
from functional_sched.testing import latents, toy_model


def side_by_side(config: dict[str, Any], ours_schedule: dict[str, Any], reference_schedule: dict[str, Any]) -> None:
    """A full loop of both, each given its own form of the custom table: every step bit-identical."""
    reference, sched = diffusers.FlowMatchEulerDiscreteScheduler(**config), fs.FlowMatchEulerDiscrete(**config)
    reference.set_timesteps(**reference_schedule)
    reference.set_begin_index(0)
    x = latents((1, 2, 4, 4), torch.float32, seed=1)
    y, state = x.clone(), sched.init(sample=x, **ours_schedule)
    assert torch.equal(sched.timesteps(state), reference.timesteps)
    assert torch.equal(sched.sigmas(state), reference.sigmas)
    for index, t in enumerate(reference.timesteps):
        x = reference.step(toy_model(x, t), t, x, return_dict=False)[0]
        y, state = sched.step(state, toy_model(y, sched.timestep(state)), y)
        assert torch.equal(y, x), f"step {index}"


def test_pipeline_sigmas_as_a_numpy_array() -> None:
    """Flux and Qwen-Image pass `np.linspace` arrays (float64); `init` takes the same array."""
    for name in ("FlowMatchEulerDiscrete-flux.1-dev-1024px", "FlowMatchEulerDiscrete-qwen-image-1328px"):
        case = CASES[name]
        schedule = {"sigmas": np.linspace(1.0, 1 / 20, 20), "mu": case.config.schedule.mu}
        side_by_side(dict(case.options), schedule, schedule)


def test_custom_sigmas_as_a_float32_tensor() -> None:
    """A float32 tensor of sigmas is used as it is by both (no float64 detour that could round otherwise)."""
    sigmas = torch.linspace(1.0, 0.03, 12, dtype=torch.float32) ** 1.3
    side_by_side({"shift": 2.5}, {"sigmas": sigmas}, {"sigmas": sigmas.numpy()})


@pytest.mark.parametrize("stochastic", [False, True], ids=["ode", "stochastic"])
@pytest.mark.parametrize("model_dtype", [torch.float32, torch.bfloat16], ids=["f32-model", "bf16-model"])
def test_per_token_timesteps_step_as_diffusers(stochastic: bool, model_dtype: torch.dtype) -> None:
    """LTX's conditioning: tokens at their own timesteps (some at 0, some a step behind the rest), per token of
    packed latents [B, tokens, C]. The core step and the drop-in equal diffusers' `step(per_token_timesteps=...)`
    bit for bit at every step (float32 out, as diffusers returns); the core takes a timestep per row (a leading block
    of one dim) for the same steps too (diffusers' own broadcasting takes only one per token)."""
    options = {"shift": 3.0, "stochastic_sampling": stochastic}
    reference = diffusers.FlowMatchEulerDiscreteScheduler(**options)
    ours = drop_in.as_diffusers(diffusers.FlowMatchEulerDiscreteScheduler(**options))
    core = fs.FlowMatchEulerDiscrete(**options)
    for scheduler in (reference, ours):
        scheduler.set_timesteps(8)
    start = torch.randn(2, 10, 4, generator=torch.Generator().manual_seed(0))
    samples = [start.clone(), start.clone(), start.clone()]
    state = core.init(8, sample=start)
    for index, t in enumerate(reference.timesteps):
        tokens = t.expand(2, 10).clone()
        tokens[:, :3] = 0.0
        tokens[:, 3:5] = reference.timesteps[min(index + 1, 7)]
        per_token = tokens if index % 2 == 0 else t.expand(2, 10).clone()
        core_per_token = per_token if index % 2 == 0 else t.expand(2).clone()  # per row: a leading block of one dim
        outputs = [(torch.sin(sample * 3) * 0.5).to(model_dtype) for sample in samples]
        kwargs = [{"generator": torch.Generator().manual_seed(index)} for _ in range(2)]
        samples[0] = reference.step(outputs[0], t, samples[0], per_token_timesteps=per_token, **kwargs[0]).prev_sample
        samples[1] = ours.step(outputs[1], t, samples[1], per_token_timesteps=per_token, **kwargs[1]).prev_sample
        noise = fs.randn_tensor(start.shape, generator=torch.Generator().manual_seed(index)) if stochastic else None
        samples[2], state = core.step(state, outputs[2], samples[2], noise=noise, per_token_timesteps=core_per_token)
        for side in (1, 2):
            assert samples[side].dtype == torch.float32 and torch.equal(samples[side], samples[0]), (index, side)


def test_per_token_step_compiles_to_one_graph_and_refuses_other_shapes() -> None:
    sched = fs.FlowMatchEulerDiscrete(shift=3.0)
    sample = torch.randn(2, 6, 4)
    state = sched.init(5, sample=sample)
    per_token = sched.timestep(state)[:, None].expand(2, 6).clone()
    per_token[:, 0] = 0.0
    compiled = torch.compile(sched.step, fullgraph=True, backend="eager")
    eager = sched.step(state, sample * 0.1, sample, per_token_timesteps=per_token)[0]
    assert torch.equal(compiled(state, sample * 0.1, sample, per_token_timesteps=per_token)[0], eager)
    with pytest.raises(ValueError, match="per_token_timesteps must be a real tensor shaped as the sample's leading"):
        sched.step(state, sample, sample, per_token_timesteps=per_token[:, :3])
    with pytest.raises(TypeError, match=r"per_token_timesteps must be a torch\.Tensor"):
        sched.step(state, sample, sample, per_token_timesteps=[1.0, 2.0])


def test_per_token_steps_of_stacked_requests_equal_each_alone() -> None:
    """Requests of different step counts at different steps, stacked: a per-token step of the stack gives each
    request what its own per-token step gives (each row's tokens step down its own row's schedule)."""
    sched = fs.FlowMatchEulerDiscrete(shift=3.0, stochastic_sampling=False)
    samples = [torch.randn(1, 6, 4, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    states = [sched.init(steps, sample=sample) for steps, sample in zip((5, 9), samples, strict=True)]
    samples[1], states[1] = sched.step(states[1], samples[1] * 0.1, samples[1])
    tokens = []
    for state in states:
        per_token = sched.timestep(state)[:, None].expand(1, 6).clone()
        per_token[:, :2] = 0.0  # conditioning tokens
        tokens.append(per_token)
    alone = [
        sched.step(state, sample * 0.3, sample, per_token_timesteps=per_token)[0]
        for state, sample, per_token in zip(states, samples, tokens, strict=True)
    ]
    stacked, _ = sched.step(
        fs.batching.stack(states),
        torch.cat(samples) * 0.3,
        torch.cat(samples),
        per_token_timesteps=torch.cat(tokens),
    )
    assert torch.equal(stacked, torch.cat(alone))


@pytest.mark.parametrize(("shift", "set_shift", "steps"), [(1.0, 7.0, 50), (3.0, 5.0, 50), (1.0, 5.0, 4)])
def test_set_shift_mixes_two_shifts_as_diffusers(shift: float, set_shift: float, steps: int) -> None:
    """sglang's loader calls `set_shift(flow_shift)` on every pipeline's scheduler: the sigma range stays the config
    shift's, `set_timesteps` shifts by the new one. The option `set_shift` is that mix, mapped by `from_diffusers` and
    taken by the drop-in's `set_shift`; every step bit-identical."""
    reference = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    reference.set_shift(set_shift)
    ours = fs.FlowMatchEulerDiscrete(shift=shift, set_shift=set_shift)
    assert ours != fs.FlowMatchEulerDiscrete(shift=set_shift)  # not the scheduler built with the new shift
    assert fs.adapters.from_diffusers(reference) == ours
    side_by_side_schedulers(reference, ours, steps)
    mixed = drop_in.FlowMatchEulerDiscreteScheduler(shift=shift)
    mixed.set_shift(set_shift)
    assert mixed._functional == ours and drop_in.as_diffusers(ours)._functional == ours
    assert drop_in.as_diffusers(reference)._functional == ours
    x = latents((1, 2, 4, 4), torch.float32, seed=2)
    for scheduler in (reference, mixed):
        scheduler.set_timesteps(steps)
    y = x.clone()
    assert torch.equal(mixed.timesteps, reference.timesteps) and torch.equal(mixed.sigmas, reference.sigmas)
    for t in reference.timesteps:
        x = reference.step(toy_model(x, t), t, x).prev_sample
        y = mixed.step(toy_model(y, t), t, y).prev_sample
        assert torch.equal(y, x)


def test_set_shift_of_the_config_shift_or_with_dynamic_shifting_is_no_option() -> None:
    """`set_shift` to the config's own shift, or with dynamic shifting (which never reads the shift), changes nothing:
    one config for one schedule."""
    assert fs.FlowMatchEulerDiscrete(shift=3.0, set_shift=3.0) == fs.FlowMatchEulerDiscrete(shift=3.0)
    dynamic = fs.FlowMatchEulerDiscrete(use_dynamic_shifting=True, set_shift=5.0)
    assert dynamic == fs.FlowMatchEulerDiscrete(use_dynamic_shifting=True) and dynamic.set_shift is None
    with pytest.raises(ValueError, match=r"FlowMatchEulerDiscrete: set_shift must be > 0"):
        fs.FlowMatchEulerDiscrete(set_shift=0.0)


def side_by_side_schedulers(reference: Any, ours: Any, steps: int) -> None:
    """`reference` (set_timesteps(steps)) and `ours` (init(steps)) over a full loop: tables and steps bit-identical."""
    reference.set_timesteps(steps)
    reference.set_begin_index(0)
    x = latents((1, 2, 4, 4), torch.float32, seed=1)
    y, state = x.clone(), ours.init(steps, sample=x)
    assert torch.equal(ours.timesteps(state), reference.timesteps)
    assert torch.equal(ours.sigmas(state), reference.sigmas)
    for index, t in enumerate(reference.timesteps):
        x = reference.step(toy_model(x, t), t, x, return_dict=False)[0]
        y, state = ours.step(state, toy_model(y, ours.timestep(state)), y)
        assert torch.equal(y, x), f"step {index}"
