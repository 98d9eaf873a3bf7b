"""sglang's flow-match Euler classes beyond their conformance tables (`tests/specs/sglang_flow.py`): schedules whose
length is not the step count asked for (MOSS-Image's snapped grids, which drop repeats), a one-step schedule sglang
leaves unstretched by `shift_terminal`, the loader's `set_shift`, the drop-in's refusal of `step(transition=...)`."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import functional_sched as fs
from functional_sched.adapters import drop_in, from_sglang, sglang
from functional_sched.testing import latents, toy_model

pytestmark = pytest.mark.skipif(
    not sglang.available(), reason="sglang's wheel is not installed: pip install --no-deps sglang==0.5.23"
)


def full_loop(reference: Any, ours: Any, state: Any, shape: tuple[int, ...] = (2, 4, 6, 6)) -> None:
    """Every step of `reference` (after its set_timesteps) and of `ours` from `state`: tables and steps bit-identical,
    and the state finished after as many steps as the reference's table has."""
    assert torch.equal(ours.timesteps(state), reference.timesteps)
    assert torch.equal(ours.sigmas(state), reference.sigmas)
    assert ours.steps_left(state) == len(reference.timesteps)
    x = latents(shape, torch.float32, seed=1)
    y = x.clone()
    for index, t in enumerate(reference.timesteps):
        assert torch.equal(ours.timestep(state), t.expand(shape[0]))
        x = reference.step(toy_model(x, t), t, x, return_dict=False)[0]
        y, state = ours.step(state, toy_model(y, ours.timestep(state)), y)
        assert torch.equal(y, x), f"step {index}"
    assert ours.steps_left(state) == 0


@pytest.mark.parametrize(("shift", "training_shift", "asked", "taken"), [(20.0, 1.0, 61, 60), (12.0, 1.0, 200, 172)])
def test_moss_snapped_grid_may_take_fewer_steps(shift: float, training_shift: float, asked: int, taken: int) -> None:
    """MOSS-Image drops consecutive repeats of the snapped grid: the plan has fewer steps than asked, and the host
    knows how many (`steps_left`, `timesteps`), as sglang's stage reads `len(timesteps)`."""
    reference = sglang.sglang_class("MOSSImageScheduler")(shift=shift, training_shift=training_shift)
    reference.set_timesteps(asked)
    assert len(reference.timesteps) == taken
    ours = from_sglang(reference)
    assert ours == fs.MOSSImage(shift=shift, training_shift=training_shift)
    full_loop(reference, ours, ours.init(asked, sample=latents((2, 4, 6, 6), torch.float32, seed=1)))
    # Stacked with a request of another length, each row steps as alone (one padded plan per row).
    short = ours.init(8, sample=torch.zeros(1, 4, 6, 6))
    long = ours.init(asked, sample=torch.zeros(1, 4, 6, 6))
    batch = fs.batching.stack([short, long])
    assert batch.plan.num_steps.tolist() == [8, taken]


def test_moss_set_shift_and_drop_in() -> None:
    """MOSS-Image's stage calls `set_shift(flow_shift)` (it writes the config's shift) before `set_timesteps`: the
    mapping reads it, and the drop-in steps as sglang's, fewer steps included."""
    reference = sglang.sglang_class("MOSSImageScheduler")()
    reference.set_shift(20.0)
    assert from_sglang(reference) == fs.MOSSImage(shift=20.0)
    ours = drop_in.as_diffusers(reference)
    assert type(ours).__name__ == "MOSSImageScheduler" and isinstance(ours, type(reference))
    for scheduler in (reference, ours):
        scheduler.set_timesteps(61)
    assert len(ours.timesteps) == 60 and torch.equal(ours.timesteps, reference.timesteps)
    x = latents((1, 4, 6, 6), torch.float32, seed=3)
    y = x.clone()
    for t in reference.timesteps:
        x = reference.step(toy_model(x, t), t, x).prev_sample
        y = ours.step(toy_model(y, t), t, y).prev_sample
        assert torch.equal(y, x)


def test_one_step_shift_terminal_is_left_unstretched_as_sglang() -> None:
    """One step from sigma 1 with `shift_terminal`: sglang's stretch has a zero scale factor and leaves the schedule
    as it is (diffusers divides by zero: our diffusers class refuses it); ours is sglang's."""
    reference = sglang.sglang_class("FlowMatchEulerDiscreteScheduler")(shift=3.0, shift_terminal=0.1)
    reference.set_timesteps(1)
    ours = from_sglang(reference)
    full_loop(reference, ours, ours.init(1, sample=latents((2, 4, 6, 6), torch.float32, seed=1)))
    with pytest.raises(ValueError, match="shift_terminal cannot stretch"):
        fs.FlowMatchEulerDiscrete(shift=3.0, shift_terminal=0.1).init(1, sample=torch.zeros(1, 4))


@pytest.mark.parametrize(("shift", "set_shift"), [(1.0, 7.0), (3.0, 5.0)])
def test_loader_set_shift_maps_and_drops_in(shift: float, set_shift: float) -> None:
    """sglang's SchedulerLoader: `set_shift(flow_shift)` on the checkpoint's scheduler. `from_sglang` maps it to the
    option `set_shift`; the drop-in's `set_shift` does the same; both step as sglang's."""
    reference = sglang.sglang_class("FlowMatchEulerDiscreteScheduler")(shift=shift)
    reference.set_shift(set_shift)
    ours = from_sglang(reference)
    assert ours == fs.SglangFlowMatchEulerDiscrete(shift=shift, set_shift=set_shift)
    built = drop_in.SGLANG_DROP_INS["FlowMatchEulerDiscreteScheduler"](shift=shift)
    built.set_shift(set_shift)
    assert built._functional == ours and drop_in.as_diffusers(reference)._functional == ours
    reference.set_timesteps(30)
    full_loop(reference, ours, ours.init(30, sample=latents((2, 4, 6, 6), torch.float32, seed=1)))


def test_drop_in_refuses_a_transition_by_name() -> None:
    ours = drop_in.SGLANG_DROP_INS["FlowMatchEulerDiscreteScheduler"](shift=3.0)
    ours.set_timesteps(4)
    x = torch.zeros(1, 4, 6, 6)
    with pytest.raises(NotImplementedError, match=r"step\(transition=\.\.\.\)"):
        ours.step(x, ours.timesteps[0], x, transition=lambda **arguments: arguments["sample"])
