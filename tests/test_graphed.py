"""`GraphedDenoise`: a round over static per-bucket buffers gives every request what `Denoise` gives it, bit for bit
(on the CPU the round runs uncaptured on the buffers: the copies in and out are what is tested; the CUDA graph
itself is checked on the device by benchmarks/e2e.py), and no request keeps a reference into a static buffer."""

from __future__ import annotations

import pytest
import torch
from specs import CASES, representative
from test_stages import make_req

from functional_sched.stages import Denoise, GraphedDenoise
from functional_sched.testing import Case, conditioned_model
from functional_sched.testing.columns.handoff import same_req


@pytest.mark.parametrize("guided", [True, False], ids=["cfg", "no-cfg"])
@pytest.mark.parametrize("case", representative(), ids=lambda case: case.id)
def test_rounds_equal_denoise(case: Case, guided: bool) -> None:
    """Requests of different step counts and rows joining and leaving: bucket sizes change, rows past the requests
    hold stale rows; every request equals its `Denoise` run to its end."""
    graphed = GraphedDenoise(model=conditioned_model, scheduler=case.scheduler(), buckets=(2, 4, 8), capture=False)
    plain = Denoise(model=conditioned_model, scheduler=case.scheduler())
    counts = [case.steps, case.steps + 2, case.steps - 2, case.steps + 1]
    waiting = [make_req(case, index, count, rows=1 + index % 2, guided=guided) for index, count in enumerate(counts)]
    ours, reference = [], []
    while waiting or ours:
        if waiting:  # one joins each round
            ours.append(waiting[0])
            reference.append(waiting.pop(0))
        ours, reference = graphed.step_many(ours), plain.step_many(reference)
        for mine, theirs in zip(ours, reference, strict=True):
            assert same_req(mine, theirs)
            assert graphed.scheduler._cursor(mine.state) is not None  # back on the host path
        finished = [graphed.done(req) for req in ours]
        ours = [req for req, done in zip(ours, finished, strict=True) if not done]
        reference = [req for req, done in zip(reference, finished, strict=True) if not done]
    assert len(graphed._rounds) >= 2  # more than one bucket was used


def test_results_are_copied_out_of_the_static_buffers() -> None:
    case = CASES["DPMSolverMultistep-sd1.5-dpm-2m"]
    graphed = GraphedDenoise(model=conditioned_model, scheduler=case.scheduler(), buckets=(4,), capture=False)
    reqs = graphed.step_many([make_req(case, index, 6) for index in range(3)])
    (round_,) = graphed._rounds.values()
    static = [round_.inputs["latents"], *torch.utils._pytree.tree_leaves(round_.inputs["state"])]
    held = [req.latents for req in reqs] + [leaf for req in reqs for leaf in torch.utils._pytree.tree_leaves(req.state)]
    buffers = {tensor.untyped_storage().data_ptr() for tensor in static}
    assert all(tensor.untyped_storage().data_ptr() not in buffers for tensor in held)


def test_what_a_graph_cannot_take_runs_as_denoise() -> None:
    """Past `max_graphs`, more rows than the largest bucket, `guidance_rescale`, more steps than `max_steps`: the
    round runs as `Denoise` runs it, with the same results, and no new graph is made for it."""
    case = CASES["UniPCMultistep-sd1.5-unipc-bh2"]
    graphed = GraphedDenoise(
        model=conditioned_model, scheduler=case.scheduler(), buckets=(2,), max_steps=8, max_graphs=1, capture=False
    )
    plain = Denoise(model=conditioned_model, scheduler=case.scheduler())
    rounds = [
        [make_req(case, 0, 6), make_req(case, 1, 7)],  # the one graph: bucket 2
        [make_req(case, 2, 6, rows=2), make_req(case, 3, 6)],  # 3 rows: more than the largest bucket
        [make_req(case, 4, 6, guidance_rescale=0.5)],  # rescaled guidance
        [make_req(case, 5, 9)],  # more steps than max_steps
        [make_req(case, 6, 6, guided=False)],  # a second layout, past max_graphs
    ]
    for reqs in rounds:
        for ours, theirs in zip(graphed.step_many(reqs), plain.step_many(reqs), strict=True):
            assert same_req(ours, theirs)
    assert len(graphed._rounds) == 1
