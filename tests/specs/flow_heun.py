"""`FlowMatchHeunDiscrete`'s conformance table: SD3's shift first, then the other shifts and a shorter training
schedule (diffusers' class has no other option: a step count is its only `set_timesteps` argument)."""

from __future__ import annotations

from functional_sched.schedulers.flow_heun import FlowMatchHeunDiscrete
from functional_sched.testing import Config, Order, Spec, pipelines

# Interval counts of the order fits: the error is measured before the last call (the Euler step into sigma = 0),
# after N - 1 whole Heun intervals.
STEPS = (10, 20, 40, 80)

FLOW_HEUN = Spec(
    FlowMatchHeunDiscrete,
    configs=(
        *pipelines(FlowMatchHeunDiscrete),
        Config("default", {}),
        Config("hunyuan-shift", {"shift": 7.0}),
        Config("shift-below-one", {"shift": 0.7}),
        Config("train-100", {"num_train_timesteps": 100, "shift": 2.0}),
    ),
    orders=(
        Order("heun", {}, 2, STEPS),
        Order("heun-shift3", {"shift": 3.0}, 2, STEPS),
    ),
)
