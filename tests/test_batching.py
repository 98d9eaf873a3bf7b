"""`functional_sched.batching`: stacking keeps what requests share (one plan object, one fingerprint tensor), and
refuses states that cannot share a batch. Every scheduler's stacked requests, at different steps and with different
step counts, step as each alone and split back bit for bit: the conformance suite's rows column."""

from __future__ import annotations

import pytest
import torch

import functional_sched as fs
from functional_sched import batching
from functional_sched.testing import latents
from functional_sched.testing.requests import same_state

SHAPE = (3, 4, 4)  # per-row sample shape


def test_exported() -> None:
    assert fs.batching is batching
    assert "batching" in fs.__all__
    assert callable(batching.stack) and callable(batching.split)


def test_stacked_and_split_states_own_their_tensors() -> None:
    """Requests of one schedule stack into one schedule (S=1) in a plan of the batch's own; split gives each piece
    its own plan and fingerprint: equal values, and no tensor that another request's state holds."""
    sched = fs.DPMSolverMultistep()
    states = [sched.init(8, sample=latents((rows, *SHAPE), torch.float32, seed=rows)) for rows in (2, 1, 1)]
    batch = batching.stack(states)
    assert batch.plan.num_steps.shape == (1,)
    pieces = batching.split(batch, [2, 1, 1])
    held = [batch, *states, *pieces]
    for index, piece in enumerate(pieces):
        assert same_state(piece, states[index])
        others = [state for state in held if state is not piece]
        for mine in (piece.plan.coefficients, piece.plan.timesteps, piece.fingerprint):
            assert all(
                mine.untyped_storage().data_ptr() != leaf.untyped_storage().data_ptr()
                for state in others
                for leaf in (state.plan.coefficients, state.plan.timesteps, state.fingerprint)
            )


def test_refuses_mixed_classes_options_and_layouts() -> None:
    sample = latents((1, *SHAPE), torch.float32, seed=0)
    flow = fs.FlowMatchEulerDiscrete(shift=3.0).init(6, sample=sample)
    dpm = fs.DPMSolverMultistep(solver_order=2).init(6, sample=sample)
    with pytest.raises(TypeError, match="one scheduler class"):
        batching.stack([flow, dpm])
    other = fs.FlowMatchEulerDiscrete(shift=3.0, stochastic_sampling=True).init(6, sample=sample)
    with pytest.raises(ValueError, match="different step options"):
        batching.stack([flow, other])
    third = fs.DPMSolverMultistep(solver_order=3).init(6, sample=sample)
    with pytest.raises(ValueError, match="different step options"):
        batching.stack([dpm, third])
    # Options that only shape the plan (not the step) stack fine: shift is one of them.
    shifted = fs.FlowMatchEulerDiscrete(shift=5.0).init(8, sample=sample)
    assert batching.stack([flow, shifted]).plan.timesteps.shape == (2, 8)
    wide = fs.DPMSolverMultistep(solver_order=2).init(6, sample=latents((1, 3, 4, 5), torch.float32, seed=1))
    with pytest.raises(ValueError, match="differ beyond their rows"):
        batching.stack([dpm, wide])
    double = fs.DPMSolverMultistep(solver_order=2).init(6, sample=sample.double())
    with pytest.raises(ValueError, match="dtype"):
        batching.stack([dpm, double])
    with pytest.raises(ValueError, match="no states"):
        batching.stack([])
    with pytest.raises(TypeError, match="scheduler state"):
        batching.stack([flow, sample])
    batch = batching.stack([flow, shifted])
    for sizes in ([1], [1, 2], [0, 2], [2, 0]):
        with pytest.raises(ValueError, match="adding up"):
            batching.split(batch, sizes)
