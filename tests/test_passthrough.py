"""`ComfyUIPassThrough` beyond the conformance suite: sglang's schedule rules (a list truncated, a tensor's dtype
kept, one timestep 0 for a step count) and what its step hands back; of the drop-in (which the suite's drop-in columns
hold to sglang's class in every spec config: API, config, loops, read-outs), what they cannot express: sglang's
ComfyUI stage (its writes of `_step_index` and `_begin_index`, more calls than the table holds, `set_shift`), another
batch size per call, and the mapping of the drop-in itself."""

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


# ---------------------------------------------------------------------------------------------------- the drop-in
def _pair(**options: object) -> tuple:
    from functional_sched.adapters import drop_in

    reference = sglang_adapter.sglang_class("ComfyUIPassThroughScheduler")(**options)
    return reference, drop_in.SGLANG_DROP_INS["ComfyUIPassThroughScheduler"](**options)


def _same_read_outs(reference: object, ours: object) -> None:
    """What sglang's stage reads: timesteps (dtype, device, values), shift, step and begin indices; no sigmas, no
    num_inference_steps on either."""
    assert ours.timesteps.dtype == reference.timesteps.dtype and torch.equal(ours.timesteps, reference.timesteps)
    for name in ("shift", "step_index", "begin_index", "num_train_timesteps", "order"):
        assert getattr(ours, name) == getattr(reference, name), name
    for name in ("sigmas", "num_inference_steps"):
        assert hasattr(ours, name) == hasattr(reference, name) is False, name


@pytest.mark.parametrize(
    "kwargs",
    [{"timesteps": [999.7, 500.2, 0.9]}, {"timesteps": torch.tensor([900.5, 10.25])}, {"num_inference_steps": 4}],
    ids=["list", "float32-tensor", "step-count"],
)
def test_drop_in_runs_as_sglangs_comfyui_stage(kwargs: dict) -> None:
    """sglang's denoising stage around a ComfyUI request, twice on one object: `_step_index`/`_begin_index` written
    None, `set_begin_index(0)`, a step per timestep (`return_dict` alternating), and more calls than the table holds
    (ComfyUI calls once per model evaluation); every read-out and output as sglang's."""
    reference, ours = _pair(num_train_timesteps=1000)
    _same_read_outs(reference, ours)
    sample = torch.randn(2, 4, 3, 3)
    for _ in range(2):
        for scheduler in (reference, ours):
            scheduler.set_timesteps(**kwargs)
            scheduler._step_index = None
            scheduler._begin_index = None
            scheduler.set_begin_index(0)
        _same_read_outs(reference, ours)
        for index in range(len(reference.timesteps) + 2):
            t = reference.timesteps[min(index, len(reference.timesteps) - 1)]
            output = torch.randn(2, 4, 3, 3, dtype=torch.bfloat16)
            a = reference.step(output, t, sample, return_dict=index % 2 == 0)
            b = ours.step(output, t, sample, return_dict=index % 2 == 0)
            assert type(a) is type(b)
            a, b = (a.prev_sample, b.prev_sample) if index % 2 == 0 else (a[0], b[0])
            assert b.dtype == a.dtype and torch.equal(a, b)
            _same_read_outs(reference, ours)
    noise = torch.randn_like(sample)
    t = reference.timesteps[:1].expand(2)
    assert torch.equal(ours.add_noise(sample, noise, t), reference.add_noise(sample, noise, t))
    assert torch.equal(ours.scale_model_input(sample, t[0]), reference.scale_model_input(sample, t[0]))
    for scheduler in (reference, ours):
        scheduler.set_shift(3.0)
    _same_read_outs(reference, ours)


def test_drop_in_steps_before_set_timesteps_and_on_another_batch() -> None:
    """sglang's step needs no schedule (its table is empty until `set_timesteps`), and takes any batch size."""
    reference, ours = _pair()
    for rows in (1, 3):
        sample = torch.randn(rows, 2, 2)
        assert torch.equal(ours.step(sample * 2, torch.tensor(5.0), sample)[0], sample)
        reference.step(sample * 2, torch.tensor(5.0), sample)
        _same_read_outs(reference, ours)


def test_drop_in_maps_as_sglangs() -> None:
    """`from_sglang` of the drop-in is that of sglang's object (its config as sglang registers it)."""
    reference, ours = _pair(num_train_timesteps=2000)
    assert from_sglang(ours) == from_sglang(reference) == fs.ComfyUIPassThrough(num_train_timesteps=2000)
