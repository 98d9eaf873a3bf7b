"""`DEISMultistep`'s conformance table: SD 1.5's DEIS (orders 2 and 3) first, then SDXL's leading spacing, SD 2.1's
v-prediction, and the options' corners (Karras, exponential and beta sigmas, flow sigmas with a dynamic shift,
thresholding, first order)."""

from __future__ import annotations

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
SD15 = {**SCALED_LINEAR, "steps_offset": 1}
# Exponential sigmas are uniform in lambda = log(alpha / sigma) (and in log rho, the variable DEIS integrates in):
# every step refines like 1 / N.
VP_LAMBDA = {"use_exponential_sigmas": True}
STEPS = (20, 40, 80, 160)

DEIS = Spec(
    fs.DEISMultistep,
    configs=(
        Config("sd1.5-deis-2", SD15),
        Config("sd1.5-deis-3", {**SD15, "solver_order": 3}, Schedule(steps=20)),
        Config("sdxl-deis-leading", {**SD15, "timestep_spacing": "leading"}, Schedule(steps=25)),
        Config(
            "sd21-v-trailing",
            {**SCALED_LINEAR, "prediction_type": "v_prediction", "timestep_spacing": "trailing"},
        ),
        Config("karras-3", {**SCALED_LINEAR, "solver_order": 3, "use_karras_sigmas": True}, Schedule(steps=12)),
        Config("exponential-3-no-lower-final", {"solver_order": 3, "lower_order_final": False, **VP_LAMBDA}),
        Config("beta-sigmas-v", {"use_beta_sigmas": True, "prediction_type": "v_prediction"}),
        Config(
            "flow-dynamic-shift-3",
            {
                "use_flow_sigmas": True,
                "prediction_type": "flow_prediction",
                "use_dynamic_shifting": True,
                "solver_order": 3,
            },
            Schedule(steps=10, mu=1.15),
        ),
        Config("flow-shift", {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": 3.0}),
        Config("thresholding-sample", {"prediction_type": "sample", "thresholding": True, "sample_max_value": 1.5}),
        Config("first-order", {"solver_order": 1}),
    ),
    refusals=(
        # Karras timesteps of a cosine schedule repeat once rounded: 999 at the first three of 10 noise levels;
        # diffusers' loop looks it up, starts at its second occurrence and runs off its sigma table.
        Refusal(
            "first-timestep-repeats",
            {"beta_schedule": "squaredcos_cap_v2", "use_karras_sigmas": True},
            "the schedule's first timestep 999 repeats",
            Schedule(steps=10),
            at="init",
        ),
        Refusal(
            "more-steps-than-training-timesteps",
            {"num_train_timesteps": 20},
            "num_inference_steps=21 is more than this config's schedule can represent",
            Schedule(steps=21),
            at="init",
        ),
        Refusal(
            "flow-sigmas-from-vp-karras",
            {"use_flow_sigmas": True, "use_karras_sigmas": True, "prediction_type": "flow_prediction"},
            "use_flow_sigmas=True with use_karras_sigmas=True",
        ),
    ),
    orders=(
        Order("deis-1", {"solver_order": 1, **VP_LAMBDA}, 1, STEPS),
        Order("deis-2", VP_LAMBDA, 2, STEPS),
        Order("deis-2-v", {"prediction_type": "v_prediction", **VP_LAMBDA}, 2, STEPS),
        # Third order, reached from above: the fitted slope falls from 3.8 (20-160 steps) to 3.1 (100-800 steps).
        Order("deis-3", {"solver_order": 3, **VP_LAMBDA}, 3, (40, 80, 160, 320), at_least=True),
    ),
)
