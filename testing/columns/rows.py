"""Rows: requests at different steps and with different step counts, stacked into one state (`batching.stack`),
step in one call exactly as each would alone, split back bit for bit, and compile into one graph; requests stepped
alternately by one scheduler object never touch each other (torchode's "independent of the batch's composition")."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch._dynamo.testing

from functional_sched import batching

from ..parity import calls as schedule_calls
from ..parity import latents
from ..requests import SHAPE, run_loop, same_state, step_inputs
from ..selection import configs
from ..spec import Case


def requests(case: Case, counts: list[int], warm: list[int], rows: list[int]) -> tuple[Any, list[list[Any]]]:
    """Requests with `counts[i]` steps and `rows[i]` rows, each advanced `warm[i]` steps alone: the scheduler and
    [state, sample, generator] per request."""
    sched = case.scheduler()
    out = []
    for index, (count, taken, size) in enumerate(zip(counts, warm, rows, strict=True)):
        sample = latents((size, *SHAPE[1:]), torch.float32, seed=30 + index)
        generator = torch.Generator().manual_seed(40 + index)
        state = sched.init(sample=sample, **case.init_kwargs(count))
        samples, state = run_loop(case, sched, state, sample, taken, generator=generator)
        out.append([state, samples[-1] if samples else sample, generator])
    return sched, out


def step_together_and_alone(case: Case, sched: Any, batch: Any, reqs: list[list[Any]]) -> Any:
    """One step of the stacked state and of each request alone (same inputs): equal row for row. Returns the new
    stacked state; `reqs` advance in place."""
    inputs = [step_inputs(case, sched, state, sample, generator) for state, sample, generator in reqs]
    assert torch.equal(sched.timestep(batch), torch.cat([sched.timestep(state) for state, _, _ in reqs]))
    joined = {key: torch.cat([row[key] for row in inputs]) for key in inputs[0]}
    batch_sample, batch = sched.step(batch, sample=torch.cat([sample for _, sample, _ in reqs]), **joined)
    for request, row in zip(reqs, inputs, strict=True):
        request[1], request[0] = sched.step(request[0], sample=request[1], **row)
    assert torch.equal(batch_sample, torch.cat([sample for _, sample, _ in reqs])), "stacked differs from alone"
    return batch


def counts_for(case: Case) -> list[int]:
    steps = max(case.steps, 6)
    return [steps, steps + 3, steps - 2]


class Rows:
    """Stacked requests step as each alone; split gives each back."""

    @configs("every")
    def test_requests_at_different_steps_step_as_alone(self, case: Case) -> None:
        steps, rows = max(case.steps, 6), [1, 2, 1]
        sched, reqs = requests(case, [steps] * 3, [0, 1, 4], rows)
        states = [state for state, _, _ in reqs]
        batch = batching.stack(states)
        assert batch.plan.num_steps.shape == (1,), "requests of one schedule stack into one schedule"
        assert batch.step_index.tolist() == [0, 1, 1, 4]
        assert same_state(batching.stack([batching.stack(states[:2]), states[2]]), batch)
        for _ in range(steps - 4):
            batch = step_together_and_alone(case, sched, batch, reqs)
            for piece, (state, _, _) in zip(batching.split(batch, rows), reqs, strict=True):
                assert same_state(piece, state), "a split piece differs from its request stepped alone"

    @configs("every")
    def test_requests_with_different_step_counts_step_as_alone(self, case: Case) -> None:
        """One padded plan per row: stepped together to the shortest's end, whose row is then refused; split, each
        request finishes alone as it would have."""
        counts, warm, rows = counts_for(case), [2, 0, 1], [1, 2, 1]
        sched, reqs = requests(case, counts, warm, rows)
        calls = [
            schedule_calls(sched, state) for state, _, _ in reqs
        ]  # more than the step count where timesteps repeat
        batch = batching.stack([state for state, _, _ in reqs])
        assert batch.plan.timesteps.shape == (sum(rows), max(calls))
        assert batch.plan.num_steps.tolist() == [calls[0], calls[1], calls[1], calls[2]]
        for _ in range(calls[2] - warm[2]):
            batch = step_together_and_alone(case, sched, batch, reqs)
        finished = rf"row\(s\) \[3\] already took all {calls[2]} steps"
        with pytest.raises(IndexError, match=finished):
            sched.timestep(batch)
        with pytest.raises(IndexError, match=finished):
            stacked = torch.cat([sample for _, sample, _ in reqs])
            sched.step(batch, model_output=torch.zeros_like(stacked), sample=stacked, noise=torch.zeros_like(stacked))
        for piece, (state, sample, generator) in zip(batching.split(batch, rows), reqs, strict=True):
            assert same_state(piece, state)
            left = schedule_calls(sched, state) - sched.steps_taken(state)
            alone = run_loop(case, sched, state, sample, left, generator=generator.clone_state())[0]
            split = run_loop(case, sched, piece, sample, left, generator=generator.clone_state())[0]
            assert all(torch.equal(a, b) for a, b in zip(alone, split, strict=True))

    @configs("every")
    def test_interleaved_requests_match_each_alone(self, case: Case) -> None:
        """Two requests with different step counts and rows, stepped alternately by one scheduler object."""
        sched = case.scheduler()
        counts = [case.steps, case.steps + 5]
        starts = [latents((1 + index, *SHAPE[1:]), torch.float32, seed=30 + index) for index in range(2)]
        alone = [
            run_loop(case, sched, sched.init(sample=x, **case.init_kwargs(n)), x, n, generator=_generator(i))[0]
            for i, (x, n) in enumerate(zip(starts, counts, strict=True))
        ]
        live = [
            [sched.init(sample=x, **case.init_kwargs(n)), x, _generator(i), []]
            for i, (x, n) in enumerate(zip(starts, counts, strict=True))
        ]
        for turn in range(max(counts)):
            for request, count in zip(live, counts, strict=True):
                if turn < count:
                    state, sample, generator, history = request
                    sample, state = sched.step(
                        state, sample=sample, **step_inputs(case, sched, state, sample, generator)
                    )
                    request[:2] = state, sample
                    history.append(sample)
        for request, expected in zip(live, alone, strict=True):
            assert len(request[3]) == len(expected)
            assert all(torch.equal(a, b) for a, b in zip(request[3], expected, strict=True))

    @configs()
    def test_stacked_state_compiles_fullgraph(self, case: Case) -> None:
        """A stacked state (one padded schedule per row, rows at different steps) steps in one compiled graph."""
        torch._dynamo.reset()
        counts = counts_for(case)[:2]
        sched, reqs = requests(case, counts, [1, 3], [1, 1])
        batch = batching.stack([state for state, _, _ in reqs])
        counter = torch._dynamo.testing.CompileCounterWithBackend("eager")
        compiled = torch.compile(sched.step, fullgraph=True, backend=counter)
        for _ in range(2):
            inputs = [
                step_inputs(case, sched, state, sample, generator.clone_state()) for state, sample, generator in reqs
            ]
            joined = {key: torch.cat([row[key] for row in inputs]) for key in inputs[0]}
            sample = torch.cat([sample for _, sample, _ in reqs])
            compiled_sample, compiled_batch = compiled(batch, sample=sample, **joined)
            batch = step_together_and_alone(case, sched, batch, reqs)
            assert torch.equal(compiled_sample, torch.cat([sample for _, sample, _ in reqs]))
            assert same_state(compiled_batch, batch)
        assert counter.frame_count == 1
        torch._dynamo.reset()


def _generator(index: int) -> torch.Generator:
    return torch.Generator().manual_seed(40 + index)
