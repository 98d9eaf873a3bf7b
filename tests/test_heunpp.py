"""ComfyUI's Heun++ against its recorded trajectories (`tests/fixtures/comfyui/heunpp2.safetensors`, made by
`record_k_samplers.py` there from ComfyUI's own `sample_heunpp2`); the conformance suite holds the rest
(`tests/specs/heunpp.py`)."""

from __future__ import annotations

import pytest
import torch
from test_k_multistep import recorded, relative_errors, replay

import functional_sched as fs
from functional_sched.testing import toy_model

RUNS = recorded("heunpp2")


@pytest.mark.parametrize("config", sorted(RUNS))
def test_heunpp2_is_comfyuis_bit_for_bit(config: str) -> None:
    """Every model call's input (one to three per interval) and the final sample equal ComfyUI's `sample_heunpp2`
    bit for bit: its weights are formed in the table's float32 as ComfyUI forms them, each product in its order."""
    run = RUNS[config]
    ours, reference = replay(fs.HeunPlusPlus(**run["options"]), run)
    assert all(torch.equal(a, b) for a, b in zip(ours, reference, strict=True)), relative_errors(ours, reference)


def test_calls_per_interval() -> None:
    """Three model calls per interval but the last two (two, then one), at the interval's sigmas and the next one."""
    scheduler = fs.HeunPlusPlus()
    state = scheduler.init(sigmas=[8.0, 4.0, 2.0, 1.0, 0.0], sample=torch.zeros(1, 2))
    expected = [8.0, 4.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0, 1.0]
    assert scheduler.timesteps(state).tolist() == expected


def test_one_interval_is_one_euler_call() -> None:
    """A one-interval table is one Euler call (ComfyUI's loop: its interval ends at the table's last sigma)."""
    scheduler = fs.HeunPlusPlus()
    sample = torch.linspace(-2.0, 2.0, 8).reshape(2, 4)
    state = scheduler.init(sigmas=[3.0, 0.5], sample=sample)
    x0 = toy_model(sample, scheduler.timestep(state))
    prev_sample, state = scheduler.step(state, x0, sample)
    assert not scheduler.steps_left(state)
    assert torch.equal(prev_sample, sample + (sample - x0) / torch.tensor(3.0) * torch.tensor(-2.5))
