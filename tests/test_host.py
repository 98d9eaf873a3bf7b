"""`functional_sched.machinery.host`: the host-plan cache holds host objects only, bounded in bytes and emptied by
`clear_caches()`; each request owns its tensors, so an in-place write reaches no other request; a cursor that no
longer speaks for its state is not trusted; once requests finish and `clear_caches()` runs, the library holds no
memory, on the host or the device."""

from __future__ import annotations

import gc
import os
import random
import weakref
from pathlib import Path

import pytest
import torch
import torch.utils._pytree as pytree

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


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the process's resident memory (Linux)")
def test_the_cache_counts_the_memory_its_plans_really_take() -> None:
    """The byte bound means real bytes: stepping through plans makes their 0-d host scalars and casts (about 1 KB
    each, for 4 bytes of data), which the accounting charges as they are made. Ten long plans, stepped in float32
    and bf16, grow the process by no more than 1.5x what the cache says it holds (most of it is those scalars)."""
    sample = torch.zeros(1, 4)
    model = lambda x, t: 0.1 * x  # noqa: E731
    fs.denoise(fs.UniPCMultistep(), model, sample, num_inference_steps=3)  # the first call's own allocations
    fs.clear_caches()
    gc.collect()
    resident = _resident_bytes()
    for steps in range(100, 110):
        for dtype in (torch.float32, torch.bfloat16):
            fs.denoise(fs.UniPCMultistep(), model, sample.to(dtype), num_inference_steps=steps)
    gc.collect()
    grown, accounted = _resident_bytes() - resident, host.HOST_PLANS.nbytes
    assert len(host.HOST_PLANS) == 10, "the test needs every plan kept"
    assert accounted > 10 * 100 * 22 * host.SCALAR_BYTES, "each step's scalars are charged"
    assert grown <= 1.5 * accounted, f"the process grew {grown >> 20} MB, the cache accounts {accounted >> 20} MB"
    fs.clear_caches()


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


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


def _finish_requests(device: str, count: int = 1000) -> list[weakref.ref]:
    """`count` requests of random schedulers, row counts, shapes, dtypes and step counts, each stepped a couple of
    times and dropped, with the host-plan cache's limit lowered so that it evicts; its byte accounting checked after
    each request. Returns weak references to every tensor a request held or was handed (its sample, model outputs,
    every leaf of every state)."""
    rng, generator = random.Random(0), torch.Generator().manual_seed(0)
    watched: list[weakref.ref] = []
    limit = host.HOST_PLANS.limit
    host.HOST_PLANS.limit = 64 << 10  # a few plans' tables: plans are evicted all the time, some as they grow
    try:
        for _ in range(count):
            sched = rng.choice(fs.SCHEDULERS)()
            shape = (rng.randint(1, 4), *(rng.randint(1, 6) for _ in range(rng.randint(1, 3))))
            dtype = rng.choice((torch.float32, torch.bfloat16))
            sample = torch.randn(shape, generator=generator).to(device, dtype)
            state = sched.init(rng.randint(4, 30), sample=sample)  # PNDM's Runge-Kutta warm-up takes 4 steps
            held = [sample, *pytree.tree_leaves(state)]
            for _ in range(min(2, sched.steps_left(state))):
                model_output = torch.tanh(sample)
                noise = torch.randn_like(sample) if sched.stochastic else None  # Euler a, KDPM2 a: every step
                sample, state = sched.step(state, model_output, sample, noise=noise)
                held += [model_output, sample, *pytree.tree_leaves(state)]
            watched += [weakref.ref(tensor) for tensor in held]
            cached = host.HOST_PLANS._plans.values()
            assert host.HOST_PLANS.nbytes == sum(plan.nbytes for plan in cached) <= host.HOST_PLANS.limit
    finally:
        host.HOST_PLANS.limit = limit
    return watched


def _live_tensors() -> int:
    gc.collect()
    return sum(issubclass(type(value), torch.Tensor) for value in gc.get_objects())


def test_a_thousand_finished_requests_leave_no_memory_behind() -> None:
    """After a thousand requests of random shapes finish, none of their tensors is alive (the cache keeps no
    caller's or request's tensor); after `clear_caches()` the cache is empty and no tensor the run made is alive."""
    fs.clear_caches()
    before = _live_tensors()
    watched = _finish_requests("cpu")
    gc.collect()
    assert not any(ref() is not None for ref in watched), "a request's tensor outlived it"
    fs.clear_caches()
    assert len(host.HOST_PLANS) == 0 and host.HOST_PLANS.nbytes == 0
    assert _live_tensors() <= before, "the library still holds tensors"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_thousand_finished_cuda_requests_leave_no_device_memory_behind() -> None:
    """The same on CUDA: once the requests are dropped, the device memory allocated is back at its baseline before
    `clear_caches()` runs (the cache holds no device tensor), and after it."""
    fs.clear_caches()
    gc.collect()
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    watched = _finish_requests("cuda")
    gc.collect()
    torch.cuda.synchronize()
    assert not any(ref() is not None for ref in watched), "a request's tensor outlived it"
    assert torch.cuda.memory_allocated() == baseline, "the host-plan cache holds device memory"
    fs.clear_caches()
    assert len(host.HOST_PLANS) == 0 and host.HOST_PLANS.nbytes == 0
    assert torch.cuda.memory_allocated() == baseline
