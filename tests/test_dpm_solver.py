"""DPMSolverMultistep facts beyond its conformance table (`tests/specs/dpm_solver.py`): what diffusers does with
repeated timesteps, and learned-variance models' extra output channels."""

from __future__ import annotations

import diffusers
import pytest
import torch
from specs import SPECS

import functional_sched as fs
from functional_sched.testing import latents, toy_model

SPEC = SPECS[fs.DPMSolverMultistep]


def test_a_repeated_first_timestep_is_refused_where_diffusers_runs_off_its_table() -> None:
    """squaredcos_cap_v2 with Karras sigmas keeps fractional timesteps, which repeat once cast to int64, the first
    one at four noise levels. diffusers' loop (as its pipelines run it) starts at the second match of timesteps[0]
    and runs off its sigma table; the model would see one timestep for four noise levels. Refused at `init`."""
    options = {"beta_schedule": "squaredcos_cap_v2", "use_karras_sigmas": True}
    reference = diffusers.DPMSolverMultistepScheduler(**options)
    reference.set_timesteps(10)
    assert (reference.timesteps == reference.timesteps[0]).sum() == 4
    sample = latents((2, 4, 8, 8))
    with pytest.raises(IndexError):
        for t in reference.timesteps:
            sample = reference.step(toy_model(sample, t), t, sample, return_dict=False)[0]
    with pytest.raises(ValueError, match="the schedule's first timestep 998 repeats"):
        fs.DPMSolverMultistep(**options).init(10, sample=sample)


def test_learned_variance_channels() -> None:
    """variance_type='learned_range' (DeepFloyd IF style): the model outputs mean and variance channels."""
    config = {
        "beta_schedule": "squaredcos_cap_v2",
        "variance_type": "learned_range",
        "lambda_min_clipped": -5.1,
        "thresholding": True,
        "dynamic_thresholding_ratio": 0.95,
        "sample_max_value": 1.5,
    }
    reference = diffusers.DPMSolverMultistepScheduler(**config)
    ours_sched = fs.DPMSolverMultistep(**config)
    reference.set_timesteps(12)
    ref = latents((2, 3, 8, 8))
    ours, state = ref.clone(), ours_sched.init(12, sample=ref)
    assert torch.equal(ours_sched.timesteps(state), reference.timesteps)
    for index, t in enumerate(reference.timesteps):
        ref = reference.step(toy_model(torch.cat([ref, ref.flip(1)], dim=1), t), t, ref, return_dict=False)[0]
        our_output = toy_model(torch.cat([ours, ours.flip(1)], dim=1), ours_sched.timestep(state))
        ours, state = ours_sched.step(state, our_output, ours)
        torch.testing.assert_close(ours, ref, rtol=0, atol=0, msg=lambda m, i=index: f"step {i}: {m}")
