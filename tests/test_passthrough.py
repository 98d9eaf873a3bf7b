"""`ComfyUIPassThrough` beyond the conformance suite: sglang's schedule rules (a list truncated, a tensor's dtype
kept, one timestep 0 for a step count) and what its step hands back."""

from __future__ import annotations

import pytest
import torch

import functional_sched as fs
from functional_sched.adapters import from_sglang
from functional_sched.adapters import sglang as sglang_adapter

pytestmark = pytest.mark.skipif(
    not sglang_adapter.available(), reason="sglang's wheel is not installed: pip install --no-deps sglang==0.5.23"
)


def _sglangs(**kwargs: object) -> torch.Tensor:
    scheduler = sglang_adapter.sglang_class("ComfyUIPassThroughScheduler")()
    scheduler.set_timesteps(**kwargs)
    return scheduler.timesteps


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timesteps": [999.7, 500.2, 0.9]},
        {"timesteps": torch.tensor([999.7, 500.2], dtype=torch.float32)},
        {"timesteps": torch.tensor([900, 10])},
        {"num_inference_steps": 30},
        {"sigmas": [1.0, 0.5]},
    ],
    ids=["list", "float32-tensor", "int64-tensor", "step-count", "sigmas"],
)
def test_timesteps_are_sglangs(kwargs: dict) -> None:
    sched = fs.ComfyUIPassThrough()
    state = sched.init(sample=torch.zeros(2, 3), **kwargs)
    expected = _sglangs(**kwargs)
    assert sched.timesteps(state).dtype == expected.dtype and torch.equal(sched.timesteps(state), expected)


def test_step_returns_the_sample_and_hands_back_the_models_output() -> None:
    sched = fs.ComfyUIPassThrough()
    sample, output = torch.randn(2, 4, 3), torch.randn(2, 4, 3, dtype=torch.bfloat16)
    state = sched.init(sample=sample, timesteps=[999.0, 500.0])
    stepped, state, handed = sched.step(state, output, sample, denoised=True)
    assert torch.equal(stepped, sample) and stepped.data_ptr() != sample.data_ptr()
    assert handed.dtype == sample.dtype and torch.equal(handed, output.to(sample.dtype))
    assert sched.steps_taken(state) == 1 and torch.equal(sched.sigmas(state), torch.zeros(1, 3)[0])
    assert torch.equal(sched.add_noise(state, sample, torch.randn_like(sample)), sample)


def test_from_sglang() -> None:
    reference = sglang_adapter.sglang_class("ComfyUIPassThroughScheduler")
    assert from_sglang(reference(num_train_timesteps=2000)) == fs.ComfyUIPassThrough(num_train_timesteps=2000)
    with pytest.raises(NotImplementedError, match="option args=7"):
        from_sglang(reference(1000, 7))
