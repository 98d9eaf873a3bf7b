"""`functional_sched.batching`: requests at different steps, with different step counts, stacked into one state,
stepped together as each would be alone, and split back bit for bit."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch._dynamo.testing
from _support import FACTORIES, Case, is_stochastic, latents, run_loop, same_state, step_noise, toy_model

import functional_sched as fs
from functional_sched import batching

SHAPE = (3, 4, 4)  # per-row sample shape


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Any:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def requests(case: Case, steps: list[int], warm: list[int], rows: list[int] | None = None) -> dict[str, list[Any]]:
    """Requests with `steps[i]` steps and `rows[i]` rows each, advanced `warm[i]` steps alone."""
    sched = case.scheduler()
    rows = rows or [1] * len(steps)
    out: dict[str, list[Any]] = {"states": [], "samples": [], "generators": []}
    for index, (count, taken, size) in enumerate(zip(steps, warm, rows, strict=True)):
        sample = latents((size, *SHAPE), torch.float32, seed=30 + index)
        generator = torch.Generator().manual_seed(40 + index)
        state = sched.init(sample=sample, **case.init_kwargs(count))
        history, state = run_loop(sched, state, sample, taken, generator=generator)
        out["states"].append(state)
        out["samples"].append(history[-1] if history else sample)
        out["generators"].append(generator)
    return out


def inputs_for(sched: Any, state: Any, sample: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    inputs = {"model_output": toy_model(sched.scale_model_input(state, sample), sched.timestep(state))}
    if is_stochastic(sched):
        inputs["noise"] = step_noise(sample.shape, generator)
    return inputs


def test_exported() -> None:
    assert fs.batching is batching
    assert "batching" in fs.__all__
    assert callable(batching.stack) and callable(batching.split)


@pytest.mark.parametrize("case", FACTORIES)
def test_stacked_requests_step_as_alone_and_split_back(case: Case) -> None:
    """Three requests (step counts differ, steps taken differ, one has two rows) stacked, stepped together for
    several steps, equal to each stepped alone; split back, the pieces equal the lone states bit for bit."""
    sched = case.scheduler()
    counts, warm, rows = [case.steps, case.steps + 3, case.steps - 2], [2, 0, 1], [1, 2, 1]
    reqs = requests(case, counts, warm, rows)
    states, samples, generators = reqs["states"], reqs["samples"], reqs["generators"]
    batch = batching.stack(states)
    assert batch.plan.timesteps.shape == (sum(rows), max(counts))
    assert batch.plan.num_steps.tolist() == [counts[0], counts[1], counts[1], counts[2]]
    assert batch.step_index.tolist() == [2, 0, 0, 1]
    batch_sample = torch.cat(samples)
    for _ in range(4):
        inputs = [inputs_for(sched, *request) for request in zip(states, samples, generators, strict=True)]
        assert torch.equal(sched.timestep(batch), torch.cat([sched.timestep(state) for state in states]))
        batch_sample, batch = sched.step(
            batch, sample=batch_sample, **{key: torch.cat([row[key] for row in inputs]) for key in inputs[0]}
        )
        stepped = [sched.step(s, sample=x, **i) for s, x, i in zip(states, samples, inputs, strict=True)]
        samples, states = [x for x, _ in stepped], [s for _, s in stepped]
        assert torch.equal(batch_sample, torch.cat(samples))
        pieces = batching.split(batch, rows)
        for piece, state in zip(pieces, states, strict=True):
            assert same_state(piece, state)
    # The pieces step on alone as the lone states do.
    pieces = batching.split(batch, rows)
    for piece, state, sample, generator in zip(pieces, states, samples, generators, strict=True):
        inputs = inputs_for(sched, state, sample, generator)
        ours, ours_state = sched.step(piece, sample=sample, **inputs)
        ref, ref_state = sched.step(state, sample=sample, **inputs)
        assert torch.equal(ours, ref)
        assert same_state(ours_state, ref_state)


@pytest.mark.parametrize("case", FACTORIES)
def test_round_trip_and_shared_plan(case: Case) -> None:
    """Requests with one plan object keep it shared (S=1); split(stack(states)) equals the states bit for bit."""
    reqs = requests(case, [case.steps] * 3, [0, 3, 1], [2, 1, 1])
    states = reqs["states"]
    assert all(state.plan is states[0].plan for state in states)
    batch = batching.stack(states)
    assert batch.plan is states[0].plan
    assert batch.fingerprint is states[0].fingerprint
    assert batch.step_index.tolist() == [0, 0, 3, 1]
    pieces = batching.split(batch, [2, 1, 1])
    assert len(pieces) == 3
    for piece, state in zip(pieces, states, strict=True):
        assert type(piece) is type(state)
        assert piece.fingerprint is state.fingerprint  # the shared tensor, recognised with no device read
        assert same_state(piece, state)
    # Stacking stacked states: the rows stay in order.
    again = batching.stack([batching.stack(states[:2]), states[2]])
    assert same_state(again, batch)


@pytest.mark.parametrize("case", FACTORIES[:1] + FACTORIES[4:5] + FACTORIES[-1:])
def test_padded_rows_refuse_to_step_past_their_end(case: Case) -> None:
    """A row whose schedule is done is refused, although its padded plan has entries for its index."""
    sched = case.scheduler()
    counts = [case.steps, case.steps - 2]
    reqs = requests(case, counts, [counts[0] - 1, counts[1]])
    batch = batching.stack(reqs["states"])
    sample = torch.cat(reqs["samples"])
    noise = {"noise": torch.zeros_like(sample)} if is_stochastic(sched) else {}
    with pytest.raises(IndexError, match=rf"row\(s\) \[1\] already took all {counts[1]} steps"):
        sched.step(batch, sample=sample, model_output=torch.zeros_like(sample), **noise)
    with pytest.raises(IndexError, match=rf"row\(s\) \[1\] already took all {counts[1]} steps"):
        sched.timestep(batch)


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


@pytest.mark.parametrize("case", [FACTORIES[2], FACTORIES[4], FACTORIES[9]])
def test_stacked_state_compiles_fullgraph(case: Case) -> None:
    """A stacked state (one padded schedule per row, rows at different steps) steps in one compiled graph."""
    sched = case.scheduler()
    reqs = requests(case, [case.steps, case.steps + 2], [1, 3])
    states, samples, generators = reqs["states"], reqs["samples"], reqs["generators"]
    batch = batching.stack(states)
    sample = torch.cat(samples)
    counter = torch._dynamo.testing.CompileCounterWithBackend("eager")
    compiled = torch.compile(sched.step, fullgraph=True, backend=counter)
    for _ in range(2):
        inputs = [inputs_for(sched, *request) for request in zip(states, samples, generators, strict=True)]
        joined = {key: torch.cat([row[key] for row in inputs]) for key in inputs[0]}
        ref, ref_state = sched.step(batch, sample=sample, **joined)
        sample, batch = compiled(batch, sample=sample, **joined)
        assert torch.equal(sample, ref)
        assert same_state(batch, ref_state)
        stepped = [sched.step(s, sample=x, **i) for s, x, i in zip(states, samples, inputs, strict=True)]
        samples, states = [x for x, _ in stepped], [s for _, s in stepped]
        assert torch.equal(sample, torch.cat(samples))
    assert counter.frame_count == 1
