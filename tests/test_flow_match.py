"""FlowMatchEulerDiscrete facts beyond its conformance table (`tests/specs/flow_match.py`): custom sigmas in the forms
pipelines pass them (numpy arrays, float32 tensors used as they are, with no float64 detour)."""

from __future__ import annotations

from typing import Any

import diffusers
import numpy as np
import torch
from specs import CASES

import functional_sched as fs
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
