"""`functional_sched.batching`: stacking keeps what requests share (one plan object, one fingerprint tensor), and
refuses states that cannot share a batch. Every scheduler's stacked requests, at different steps and with different
step counts, step as each alone and split back bit for bit: the conformance suite's rows column."""

from __future__ import annotations

from typing import Any

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
    its request's plan and fingerprint back: equal values, and no tensor that another request's state or the batch
    holds (a request's states share its own tables, as its steps do)."""
    sched = fs.DPMSolverMultistep()
    states = [sched.init(8, sample=latents((rows, *SHAPE), torch.float32, seed=rows)) for rows in (2, 1, 1)]
    batch = batching.stack(states)
    assert batch.plan.num_steps.shape == (1,)
    pieces = batching.split(batch, [2, 1, 1])
    held = [batch, *states, *pieces]
    for index, piece in enumerate(pieces):
        assert same_state(piece, states[index])
        others = [state for state in held if state is not piece and state is not states[index]]
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


class _HostReads:
    """Counts the reads of a tensor's value on the host (`.item()`, `int()`, `bool()`, `tolist()`, ...: each a
    device sync on CUDA) while patched in. (Not a dispatch mode: under one, steps take the traced path.)"""

    METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        for name in self.METHODS:
            monkeypatch.setattr(torch.Tensor, name, self._counted(getattr(torch.Tensor, name)))

    def _counted(self, method: Any) -> Any:
        def counted(tensor: torch.Tensor, *args: Any) -> Any:
            self.reads += 1
            return method(tensor, *args)

        return counted


@pytest.mark.parametrize("scheduler", [fs.DPMSolverMultistep(), fs.UniPCMultistep(), fs.FlowMatchEulerDiscrete()])
def test_a_serving_round_reads_nothing_back(scheduler: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests of different step counts, at different steps: stack, step, split and the loop's questions
    (`steps_left`, `steps_taken`, `timestep`) answer from what the host knows (`host.Rows`), with no read of a
    tensor's value; each request comes back with its own plan and a cursor, as from its own step."""
    states, samples = [], []
    for index, (steps, taken) in enumerate(((6, 0), (9, 2), (4, 3))):
        sample = latents((index + 1, *SHAPE), torch.float32, seed=index)
        state = scheduler.init(steps, sample=sample)
        for _ in range(taken):
            sample, state = scheduler.step(state, sample * 0.1, sample)
        states.append(state)
        samples.append(sample)
    counts = [sample.shape[0] for sample in samples]
    with monkeypatch.context() as patched:
        host_reads = _HostReads(patched)
        batch = batching.stack(states)
        timesteps = scheduler.timestep(batch)
        stepped_sample, stepped = scheduler.step(batch, torch.cat(samples) * 0.1, torch.cat(samples))
        left = scheduler.steps_left(stepped)
        pieces = batching.split(stepped, counts)
        taken = [scheduler.steps_taken(piece) for piece in pieces]
        left_each = [scheduler.steps_left(piece) for piece in pieces]
        assert host_reads.reads == 0
    assert left == 9 - 3 and taken == [1, 3, 4] and left_each == [5, 6, 0]
    assert torch.equal(timesteps, torch.cat([scheduler.timestep(state) for state in states]))
    alone_samples = []
    for state, sample, piece in zip(states, samples, pieces, strict=True):
        assert scheduler._cursor(piece) is not None and piece.plan is state.plan
        alone_sample, alone = scheduler.step(state, sample * 0.1, sample)
        assert same_state(piece, alone)
        alone_samples.append(alone_sample)
    assert torch.equal(stepped_sample, torch.cat(alone_samples))
    # A state rebuilt with `replace` is no longer the one the host knows: the device answers.
    rebuilt = stepped.replace(step_index=stepped.step_index.clone())
    assert scheduler._rows(rebuilt) is None and scheduler.steps_left(rebuilt) == 9 - 3


def test_pad_grows_rows_and_steps_with_copies_that_step_alike() -> None:
    """`pad` to a bucket: the real rows step as before, the copies of the first row step as it does, the plan is
    one schedule per row padded past every row's end; fewer rows or steps than the state has are refused."""
    sched = fs.DPMSolverMultistep()
    states = [sched.init(steps, sample=latents((1, *SHAPE), torch.float32, seed=steps)) for steps in (5, 7)]
    batch = batching.stack(states)
    padded = batching.pad(batch, 4, steps=9)
    assert padded.plan.timesteps.shape == (4, 9) and padded.plan.coefficients.shape[:2] == (4, 9)
    assert padded.plan.num_steps.tolist() == [5, 7, 5, 5]
    sample = torch.cat([latents((1, *SHAPE), torch.float32, seed=seed) for seed in (1, 2)])
    grown = torch.cat([sample, sample[:1], sample[:1]])
    for _ in range(5):
        sample, batch = sched.step(batch, sample * 0.1, sample)
        grown, padded = sched.step(padded, grown * 0.1, grown)
        assert torch.equal(grown[:2], sample) and torch.equal(grown[2], sample[0]) and torch.equal(grown[3], sample[0])
    with pytest.raises(ValueError, match="rows must be >= 2"):
        batching.pad(batch, 1)
    with pytest.raises(ValueError, match="steps must be >= 7"):
        batching.pad(batch, 2, steps=6)
