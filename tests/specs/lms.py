"""`LMSDiscrete`'s conformance table: SD 1.5's, SDXL's and SD 2.1-v's LMS (order 4) first, then the lower orders
(`order`, a `step()` argument in diffusers), Karras, exponential and beta sigmas, and the spacings."""

from __future__ import annotations

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
SD15 = {**SCALED_LINEAR, "steps_offset": 1}
STEPS = (20, 40, 80, 160)
LONG = (40, 80, 160, 320)


LMS = Spec(
    fs.LMSDiscrete,
    configs=(
        Config("sd1.5", SD15, Schedule(steps=10)),
        Config("sdxl", {**SD15, "timestep_spacing": "leading"}, Schedule(steps=10)),
        Config("sd2.1-v", {**SD15, "prediction_type": "v_prediction"}, Schedule(steps=10)),
        Config("karras", {**SD15, "use_karras_sigmas": True}),
        Config("exponential-sigmas", {"use_exponential_sigmas": True}),
        Config("beta-sigmas", {**SCALED_LINEAR, "use_beta_sigmas": True}),
        Config("order-1", {**SD15, "order": 1}),
        Config("order-2-trailing", {"order": 2, "timestep_spacing": "trailing"}, Schedule(steps=7)),
        Config("order-3-v", {"order": 3, "prediction_type": "v_prediction"}),
        Config("sample-prediction", {"prediction_type": "sample", "timestep_spacing": "trailing"}),
        Config(
            "trained-betas",
            {"num_train_timesteps": 100, "trained_betas": tuple(0.001 + 0.0002 * index for index in range(100))},
        ),
    ),
    refusals=(
        # diffusers keeps `order` derivatives for any order; the state's history holds four.
        Refusal("order-5", {"order": 5}, "order"),
        # diffusers' step raises ValueError for it ("must be one of `epsilon`, or `v_prediction`").
        Refusal("original-sample-prediction", {"prediction_type": "original_sample"}, "prediction_type"),
    ),
    # Adams-Bashforth of order k in sigma on Karras' smoothly graded steps: global order k. The warm-up steps
    # (orders 1, 2, 3: local errors O(h^2), O(h^3), O(h^4)) would cap the asymptotic order at 2, but they are taken at
    # sigma_max, where the solution (mu + sqrt(s^2 + sigma^2) w) is almost linear in sigma and their errors shrink by
    # about s / sigma_max on the way down: measured slopes 1.00, 1.95, 2.88 and 3.79 over 40-320 steps (3.56 for order
    # 4 over 20-160, v-prediction the same), so order 4 is asserted as at least 3.5 (a slope >= 3.2).
    orders=(
        Order("lms-1-karras", {"use_karras_sigmas": True, "order": 1}, 1, STEPS),
        Order("lms-2-karras", {"use_karras_sigmas": True, "order": 2}, 2, LONG),
        Order("lms-3-karras", {"use_karras_sigmas": True, "order": 3}, 3, LONG),
        Order("lms-4-karras", {"use_karras_sigmas": True}, 3.5, STEPS, at_least=True),
        Order(
            "lms-4-v-karras", {"use_karras_sigmas": True, "prediction_type": "v_prediction"}, 3.5, LONG, at_least=True
        ),
    ),
)
