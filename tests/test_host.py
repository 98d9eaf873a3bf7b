"""`functional_sched.machinery.host`: the host-plan cache holds host objects only, bounded in bytes and emptied by
`clear_caches()`; each request owns its tensors, so an in-place write reaches no other request; a cursor that no
longer speaks for its state is not trusted."""

from __future__ import annotations

import torch

import functional_sched as fs
from functional_sched.machinery import host


def test_the_host_plan_cache_is_bounded_in_bytes_and_clearable() -> None:
    fs.clear_caches()
    sched, sample = fs.UniPCMultistep(), torch.zeros(1, 4)
    sched.init(20, sample=sample)
    assert len(host.HOST_PLANS) == 1 and host.HOST_PLANS.nbytes > 0
    plan = next(iter(host.HOST_PLANS._plans.values()))
    assert all(table.is_cpu for table in (plan.plan.coefficients, plan.plan.sigmas))  # host objects only
    limit = host.HOST_PLANS.limit
    try:
        host.HOST_PLANS.limit = 3 * plan.nbytes  # room for about three such plans
        for steps in range(21, 40):
            sched.init(steps, sample=sample)
        assert host.HOST_PLANS.nbytes <= host.HOST_PLANS.limit and 1 <= len(host.HOST_PLANS) <= 3
    finally:
        host.HOST_PLANS.limit = limit
    fs.clear_caches()
    assert len(host.HOST_PLANS) == 0 and host.HOST_PLANS.nbytes == 0


def test_a_write_into_one_request_reaches_no_other() -> None:
    """Two requests of one schedule share no tensor: a caller's in-place write into one (its step index, its history,
    its timestep table) leaves the other's results as they were alone."""
    sched, sample = fs.DPMSolverMultistep(), torch.randn(2, 4)
    a, b = sched.init(6, sample=sample), sched.init(6, sample=sample)
    alone, _ = sched.step(sched.init(6, sample=sample), torch.tanh(sample), sample)
    a.step_index.add_(2)
    a.history[0].fill_(7.0)
    sched.timesteps(a).zero_()
    got, _ = sched.step(b, torch.tanh(sample), sample)
    assert torch.equal(got, alone) and torch.equal(sched.timestep(b), sched.timesteps(b)[0].expand(2))


def test_a_cursor_that_no_longer_speaks_for_its_state_is_not_trusted() -> None:
    """A state rebuilt with `replace` (another step index) keeps the cursor of the state it came from; the step reads
    the index it holds instead, on the device path."""
    sched, sample = fs.FlowMatchEulerDiscrete(), torch.randn(2, 4)
    state = sched.init(5, sample=sample)
    moved = state.replace(step_index=torch.tensor([3, 3]))
    assert sched._cursor(moved) is None
    assert torch.equal(sched.timestep(moved), sched.timesteps(state)[3].expand(2))
    jumped, _ = sched.step(moved, sample, sample)
    expected, _ = sched.step(sched.init(5, sample=sample, begin_index=3), sample, sample)
    assert torch.equal(jumped, expected)
