"""DEISMultistep and DPMSolverSinglestep facts beyond their conformance tables (`tests/specs/deis.py`,
`tests/specs/dpm_singlestep.py`): the singlestep order list against diffusers' for every step count, the drop-in's
`lower_order_final` that diffusers sets in its config for good, and learned-variance models' extra channels."""

from __future__ import annotations

import itertools
import logging

import diffusers
import pytest
import torch

import functional_sched as fs
from functional_sched.adapters import drop_in
from functional_sched.testing import latents, toy_model


@pytest.fixture(autouse=True)
def _quiet_diffusers() -> None:
    """diffusers' singlestep class logs a warning each time it changes `lower_order_final`."""
    logging.getLogger("diffusers.schedulers.scheduling_dpmsolver_singlestep").setLevel(logging.ERROR)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("lower_order_final", [False, True])
@pytest.mark.parametrize("final_sigmas_type", ["zero", "sigma_min"])
def test_singlestep_order_list_is_diffusers(order: int, lower_order_final: bool, final_sigmas_type: str) -> None:
    """The planned order of each step (before the warm-up caps it) is diffusers' `order_list` after `set_timesteps`,
    for 1 to 40 steps: its lower orders at the end, and the final sigma of zero taken at first order."""
    options = {"solver_order": order, "lower_order_final": lower_order_final, "final_sigmas_type": final_sigmas_type}
    ours = fs.DPMSolverSinglestep(**options)
    for steps in range(1, 41):
        reference = diffusers.DPMSolverSinglestepScheduler(**options)  # fresh: its config changes below
        reference.set_timesteps(steps)
        assert ours.order_list(steps) == reference.order_list, steps
        assert ours._orders(steps).tolist() == reference.order_list, steps


def test_singlestep_drop_in_keeps_lower_order_final_as_diffusers_sets_it() -> None:
    """diffusers registers `lower_order_final=True` the first time a schedule's steps are no multiple of the order,
    and keeps it for later schedules whose steps are: the drop-in's config and steps follow, bit for bit."""
    options = {"solver_order": 3, "final_sigmas_type": "sigma_min"}
    reference = diffusers.DPMSolverSinglestepScheduler(**options)
    ours = drop_in.DPMSolverSinglestepScheduler(**options)
    for steps in (9, 7, 9):
        for scheduler in (reference, ours):
            scheduler.set_timesteps(steps)
        assert ours.config.lower_order_final == reference.config.lower_order_final
        assert ours.order_list == reference.order_list
        x_ref, x_ours = latents((1, 4, 8, 8)), latents((1, 4, 8, 8))
        for t in reference.timesteps:
            x_ref = reference.step(toy_model(x_ref, t), t, x_ref, return_dict=False)[0]
            x_ours = ours.step(toy_model(x_ours, t), t, x_ours, return_dict=False)[0]
            assert torch.equal(x_ours, x_ref)
    assert reference.config.lower_order_final  # set by the 7-step schedule, kept by the second 9-step one


@pytest.mark.parametrize(("order", "algorithm"), itertools.product([2, 3], ["dpmsolver++", "dpmsolver"]))
def test_singlestep_learned_variance_channels(order: int, algorithm: str) -> None:
    """variance_type='learned_range' (DeepFloyd IF style): the model outputs mean and variance channels."""
    config = {
        "solver_order": order,
        "algorithm_type": algorithm,
        "final_sigmas_type": "sigma_min",
        "variance_type": "learned_range",
        "beta_schedule": "squaredcos_cap_v2",
        "lambda_min_clipped": -5.1,
    }
    reference = diffusers.DPMSolverSinglestepScheduler(**config)
    sched = fs.DPMSolverSinglestep(**config)
    reference.set_timesteps(12)
    ref = latents((2, 3, 8, 8))
    ours, state = ref.clone(), sched.init(12, sample=ref)
    assert torch.equal(sched.timesteps(state), reference.timesteps)
    for index, t in enumerate(reference.timesteps):
        ref = reference.step(toy_model(torch.cat([ref, ref.flip(1)], dim=1), t), t, ref, return_dict=False)[0]
        ours, state = sched.step(state, toy_model(torch.cat([ours, ours.flip(1)], dim=1), sched.timestep(state)), ours)
        assert torch.equal(ours, ref), f"step {index}"


@pytest.mark.parametrize("begin_index", [1, 2, 4, 5])
def test_singlestep_run_from_mid_schedule_caps_its_orders_as_diffusers(begin_index: int) -> None:
    """A run that begins mid-schedule (img2img) has gathered no outputs yet: diffusers lowers each call's order until
    its history holds enough, and starts its singlestep at the first call; the plan's warm-up levels do the same."""
    options = {"solver_order": 3, "solver_type": "heun", "final_sigmas_type": "sigma_min"}
    reference = diffusers.DPMSolverSinglestepScheduler(**options)
    reference.set_timesteps(12)
    reference.set_begin_index(begin_index)
    sched = fs.DPMSolverSinglestep(**options)
    ref = latents((1, 4, 8, 8))
    ours, state = ref.clone(), sched.init(12, sample=ref, begin_index=begin_index)
    for t in reference.timesteps[begin_index:]:
        ref = reference.step(toy_model(ref, t), t, ref, return_dict=False)[0]
        ours, state = sched.step(state, toy_model(ours, sched.timestep(state)), ours)
        assert torch.equal(ours, ref)
