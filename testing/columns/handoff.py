"""Handoff: a request handed to another worker mid-loop (`stages.handoff` bytes, `serialize` tensors and JSON)
finishes bit for bit as the undisturbed run, at any step, stacked requests and rows at different steps included."""

from __future__ import annotations

import json
from typing import Any

import torch

import functional_sched as fs
from functional_sched import batching, serialize
from functional_sched.stages import Denoise, Req, handoff

from ..parity import conditioned_model, latents
from ..requests import same_state
from ..selection import configs
from ..spec import Case

ROW_SHAPE = (2, 4, 4)


def make_req(case: Case, index: int, steps: int, rows: int = 2) -> Req:
    """A prepared request with classifier-free guidance and guidance rescale, its schedule settings on it too (as
    `PrepareTimesteps` leaves them)."""
    sample = latents((rows, *ROW_SHAPE), torch.float32, seed=50 + index)
    return Req(
        latents=sample,
        state=case.scheduler().init(sample=sample, **case.init_kwargs(steps)),
        prompt_embeds=latents((rows, *ROW_SHAPE), torch.float32, seed=60 + index),
        negative_prompt_embeds=latents((rows, *ROW_SHAPE), torch.float32, seed=70 + index),
        guidance_scale=4.0 + index,
        guidance_rescale=0.5,
        seed=index,
    ).evolve(**case.init_kwargs(steps))


def same_req(a: Req, b: Req) -> bool:
    return torch.equal(a.latents, b.latents) and same_state(a.state, b.state)


def trajectory(stage: Any, req: Req) -> list[Req]:
    """The request before each step and after the last (`stage.step`, one at a time)."""
    reqs = [req]
    while not stage.done(reqs[-1]):
        reqs.append(stage.step(reqs[-1]))
    return reqs


def row_noise(state: Any, row_ids: list[int]) -> torch.Tensor:
    """Each row's noise from a generator seeded by (row, its step): independent of how rows are grouped."""
    draws = [
        fs.randn_tensor(
            (1, *ROW_SHAPE), generator=torch.Generator().manual_seed(1000 * row + step), dtype=torch.float32
        )
        for row, step in zip(row_ids, state.step_index.tolist(), strict=True)
    ]
    return torch.cat(draws)


class Handoff:
    """Requests handed over mid-loop resume bit for bit."""

    @configs("every")
    def test_handoff_mid_loop_finishes_bit_identically(self, case: Case) -> None:
        """Denoise k steps, dumps, loads, finish: every remaining step equals the undisturbed run, at k = 0, 1, the
        middle, the last step and after it (stochastic configs too: the noise comes from (seed, step))."""
        sched = case.scheduler()
        stage = Denoise(model=conditioned_model, scheduler=sched)
        undisturbed = trajectory(stage, make_req(case, 3, case.steps))
        steps = len(undisturbed) - 1
        for k in sorted({0, 1, steps // 2, steps - 1, steps}):
            resumed = handoff.loads(handoff.dumps(undisturbed[k], sched), sched)
            assert same_req(resumed, undisturbed[k])
            assert resumed.state.cursor is not None, "a request whose rows stand at one step resumes on the host path"
            for expected in undisturbed[k + 1 :]:
                resumed = stage.step(resumed)
                assert same_req(resumed, expected), f"resumed at step {k} of {steps}"
            assert stage.done(resumed)

    @configs()
    def test_handoff_of_stacked_requests(self, case: Case) -> None:
        """One request holding the stacked rows of three with different step counts (a padded plan, one schedule
        per row), handed off at several steps, stepped together to the shortest's end, then split and each
        finished: every step equals the undisturbed run's."""
        sched = case.scheduler()
        stage = Denoise(model=conditioned_model, scheduler=sched)
        steps = max(case.steps, 6)
        counts, rows = [steps, steps + 2, steps - 2], [1, 2, 1]
        parts = [make_req(case, i, count, rows=n) for i, (count, n) in enumerate(zip(counts, rows, strict=True))]
        stacked = Req(
            latents=torch.cat([part.latents for part in parts]),
            state=batching.stack([part.state for part in parts]),
            prompt_embeds=torch.cat([part.prompt_embeds for part in parts]),
            negative_prompt_embeds=torch.cat([part.negative_prompt_embeds for part in parts]),
            guidance_scale=5.0,
            seed=11,
        )

        def finish(req: Req) -> list[torch.Tensor]:
            """The latents after each step: together up to the shortest schedule's end, then each part alone."""
            out = []
            while sched.steps_taken(req.state) < min(counts):
                req = stage.step(req)
                out.append(req.latents)
            for index, (state, part_latents) in enumerate(
                zip(batching.split(req.state, rows), req.latents.split(rows), strict=True)
            ):
                out += [
                    step.latents
                    for step in trajectory(stage, parts[index].evolve(latents=part_latents, state=state))[1:]
                ]
            return out

        expected = finish(stacked)
        req = stacked
        for k in range(min(counts) + 1):
            if k in (0, 1, min(counts) - 1, min(counts)):
                resumed = handoff.loads(handoff.dumps(req, sched), sched)
                assert same_req(resumed, req)
                got = finish(resumed)
                assert all(torch.equal(a, b) for a, b in zip(got, expected[k:], strict=True)), f"resumed at step {k}"
            if k < min(counts):
                req = stage.step(req)

    @configs()
    def test_state_of_rows_at_different_steps_round_trips(self, case: Case) -> None:
        """`serialize` alone: rows at different steps of different schedules (per-row counters and warm-up) resume
        bit for bit from the tensors and the JSON metadata (through json.dumps, as a header would carry it)."""
        sched = case.scheduler()
        embeds = latents((4, *ROW_SHAPE), torch.float32, seed=5)

        def advance(sample: torch.Tensor, state: Any, row_ids: list[int]) -> tuple[torch.Tensor, Any]:
            output = conditioned_model(sample, sched.timestep(state), embeds[row_ids])
            noise = row_noise(state, row_ids) if sched.stochastic else None
            return sched.step(state, output, sample, noise=noise)

        steps = max(case.steps, 6)
        # The last request starts at its second step: by begin_index, or (a solve whose steps the data chooses starts
        # at its first) by a step alone.
        table = sched.timestep_table
        counts, begins = [steps, steps + 2, steps - 2], [0, 0, 1 if table else 0]
        samples = [latents((n, *ROW_SHAPE), torch.float32, seed=20 + i) for i, n in enumerate([1, 2, 1])]
        states = [
            sched.init(sample=sample, begin_index=begin, **case.init_kwargs(count))
            for sample, count, begin in zip(samples, counts, begins, strict=True)
        ]
        for _ in range(2):  # the first request warms up alone: its history and warm-up differ from the others'
            samples[0], states[0] = advance(samples[0], states[0], [0])
        if not table:
            samples[2], states[2] = advance(samples[2], states[2], [3])
        state, sample = batching.stack(states), torch.cat(samples)
        rows = [0, 1, 2, 3]
        assert len(set(state.step_index.tolist())) == 3
        remaining = min(count - int(s.step_index[0]) for count, s in zip(counts, states, strict=True))
        undisturbed = [(sample, state)]
        for _ in range(remaining):
            undisturbed.append(advance(*undisturbed[-1], rows))
        for k, (sample_k, state_k) in enumerate(undisturbed):
            tensors, metadata = serialize.state_to_tensors(state_k)
            resumed = serialize.state_from_tensors(tensors, json.loads(json.dumps(metadata)), sched)
            assert same_state(resumed, state_k)
            current = sample_k
            for expected_sample, expected_state in undisturbed[k + 1 :]:
                current, resumed = advance(current, resumed, rows)
                assert torch.equal(current, expected_sample) and same_state(resumed, expected_state)
