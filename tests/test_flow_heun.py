"""What the conformance suite does not express for `FlowMatchHeunDiscrete`'s drop-in: diffusers' phase attributes
(`dt`, `prev_derivative`, `sample`, `state_in_first_order`) through a loop, and the refusal of Karras' churn."""

from __future__ import annotations

import diffusers
import pytest
import torch

from functional_sched.adapters import drop_in


def test_drop_in_phase_attributes_are_diffusers() -> None:
    reference = diffusers.FlowMatchHeunDiscreteScheduler(shift=3.0)
    ours = drop_in.FlowMatchHeunDiscreteScheduler(shift=3.0)
    for scheduler in (reference, ours):
        scheduler.set_timesteps(5)
    assert not hasattr(ours, "sample") and not hasattr(reference, "sample")
    x = y = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    for t in reference.timesteps:
        x = reference.step(torch.tanh(x), t, x).prev_sample
        y = ours.step(torch.tanh(y), t, y).prev_sample
        assert torch.equal(y, x)
        assert ours.state_in_first_order == reference.state_in_first_order
        for name in ("dt", "prev_derivative", "sample"):
            theirs, mine = getattr(reference, name), getattr(ours, name)
            assert (mine is None) == (theirs is None), name
            if theirs is not None:
                assert mine.dtype == theirs.dtype and torch.equal(mine, theirs), name


def test_drop_in_refuses_churn_by_name() -> None:
    ours = drop_in.FlowMatchHeunDiscreteScheduler()
    ours.set_timesteps(4)
    sample = torch.zeros(1, 4, 8, 8)
    with pytest.raises(NotImplementedError, match=r"s_churn=0\.5 is not supported"):
        ours.step(sample, ours.timesteps[0], sample, s_churn=0.5)
    ours.step(sample, ours.timesteps[0], sample, s_churn=0.0, s_noise=1.5)  # no churn: s_noise changes nothing
