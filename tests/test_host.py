"""`functional_sched.machinery.host`, the eager fast path: its per-plan caches die with their plans, and a shared
counter written in place (unsupported) is no longer trusted."""

from __future__ import annotations

import gc

import torch

import functional_sched as fs
from functional_sched.machinery import host as _host
from functional_sched.machinery import scheduler as _scheduler


def test_eager_entry_caches_are_freed_with_their_plans() -> None:
    """Eager steps cache each plan's 0-d coefficients; dropping the plan drops them (no leak)."""
    sched, sample = fs.FlowMatchEulerDiscrete(), torch.randn(1, 4)
    state = sched.init(sample=sample, sigmas=[0.987654, 0.5, 0.25])
    sched.step(state, sample, sample)
    key = id(state.plan.coefficients)
    assert key in _host._ENTRIES
    _scheduler._plan_on_device.cache_clear()
    _scheduler._cpu_plan.cache_clear()
    del state
    gc.collect()
    assert key not in _host._ENTRIES


def test_a_counter_written_in_place_is_not_trusted() -> None:
    """States share cached counter tensors; one written in place anyway is read for its new value, and later
    states get a fresh counter, not the written one."""
    sched, sample = fs.FlowMatchEulerDiscrete(), torch.randn(2, 4)
    state = sched.init(5, sample=sample)
    state.step_index.fill_(3)  # unsupported (states are immutable), but must not mislead anyone
    assert torch.equal(sched.timestep(state), sched.timesteps(state)[3].expand(2))
    jumped, _ = sched.step(state, sample, sample)
    expected, _ = sched.step(sched.init(5, sample=sample, begin_index=3), sample, sample)
    assert torch.equal(jumped, expected)
    fresh = sched.init(5, sample=sample)
    assert fresh.step_index is not state.step_index
    assert fresh.step_index.tolist() == [0, 0]
