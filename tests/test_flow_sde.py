"""`FlowMatchSDE` beyond its conformance table (tests/specs/flow_sde.py, held to Flow-GRPO's `sde_step_with_logprob`):
what a table of the suite cannot hold (a one-step schedule, whose second sigma is the final 0), and noise level 0 as
the ODE's Euler step."""

from __future__ import annotations

import pytest
import torch
from specs.flow_sde import FLOW_SDE

import functional_sched as fs
from functional_sched.testing import Schedule, parity_run


@pytest.mark.parametrize("noise_level", [0.7, 0.0])
def test_one_step_schedule_is_flow_grpos(noise_level: float) -> None:
    """One step from sigma 1: the denominator 1 - sigma_max takes the final sigma, 0, as Flow-GRPO's `sigmas[1]`."""
    case = FLOW_SDE.case({"shift": 3.0, "noise_level": noise_level}, Schedule(steps=1))
    result = parity_run(case, steps=1)
    assert result.identical == [True], result.first_difference()


def test_noise_level_zero_is_the_euler_step_of_the_ode() -> None:
    """noise_level 0: the deterministic flow Euler step, x + (sigma' - sigma) v, as FlowMatchEulerDiscrete takes it."""
    sample = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    sde, euler = fs.FlowMatchSDE(shift=3.0, noise_level=0.0), fs.FlowMatchEulerDiscrete(shift=3.0)
    assert not sde.stochastic
    sde_state, euler_state = sde.init(6, sample=sample), euler.init(6, sample=sample)
    x, y = sample, sample
    for _ in range(6):
        output = torch.tanh(x) - 0.5 * x
        x, sde_state = sde.step(sde_state, output, x)
        y, euler_state = euler.step(euler_state, output, y)
        assert torch.equal(x, y)
