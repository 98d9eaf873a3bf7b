"""`PNDM`'s conformance table: SD 1.5's PLMS first (`skip_prk_steps`), then the pseudo Runge-Kutta warm-up (diffusers'
default), SD 2.1-style v-prediction, and the options' corners (spacings, `set_alpha_to_one`, cosine and trained
betas)."""

from __future__ import annotations

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
SD15 = {**SCALED_LINEAR, "steps_offset": 1, "skip_prk_steps": True}
STEPS = (40, 80, 160, 320)

PNDM = Spec(
    fs.PNDM,
    configs=(
        Config("sd1.5-plms", SD15),
        Config("sd1.5-prk", {**SD15, "skip_prk_steps": False}),
        Config("sd2.1-v-plms", {**SD15, "prediction_type": "v_prediction"}),
        Config("default-prk", {}),
        Config(
            "prk-v-trailing", {"prediction_type": "v_prediction", "timestep_spacing": "trailing"}, Schedule(steps=7)
        ),
        Config(
            "plms-linspace-alpha-one",
            {"skip_prk_steps": True, "timestep_spacing": "linspace", "set_alpha_to_one": True},
            Schedule(steps=7),
        ),
        Config("prk-cosine", {"beta_schedule": "squaredcos_cap_v2", "set_alpha_to_one": True}),
        Config(
            "plms-trained-betas",
            {
                "skip_prk_steps": True,
                "num_train_timesteps": 100,
                "trained_betas": tuple(0.001 + 0.0002 * index for index in range(100)),
            },
        ),
    ),
    refusals=(
        # The Runge-Kutta warm-up takes four timesteps: diffusers' set_timesteps fails to broadcast on fewer.
        Refusal(
            "prk-with-three-steps", {}, "num_inference_steps=3 with skip_prk_steps=False", Schedule(steps=3), "init"
        ),
        # Leading timesteps past the training schedule: diffusers indexes alphas_cumprod out of range.
        Refusal(
            "steps-offset-past-training",
            {"steps_offset": 200},
            "call 0 of 17 steps from timestep 1075 to 1013, outside the training schedule",
            at="init",
        ),
    ),
    # diffusers' PLMS multiplies uniform-step Adams-Bashforth weights of epsilon (sampled uniformly in t) by formula
    # (9)'s transfer, the exact step for a constant epsilon: a quadrature of epsilon over sqrt(1 - a) / sqrt(a), which
    # is curved in t, with an O(h^3) local error. Measured: slope 2.0 at 80% of the calls (PLMS and PRK alike, linear
    # and scaled-linear betas), and over the whole loop 1.5 to 2.1, as sqrt(1 - a) ~ sqrt(t) near t = 0 costs order in
    # the last steps: at least 1.5 is asserted (the warm-up's higher order never shows). v-prediction is first order:
    # diffusers combines the velocities and converts the combination at the current sample and timestep, not each
    # velocity at its own.
    orders=(
        Order("plms", {"skip_prk_steps": True}, 1.5, STEPS, at_least=True),
        Order("prk", {}, 1.5, STEPS, at_least=True),
        Order("plms-sd-betas", SD15, 1.5, STEPS, at_least=True),
        Order("plms-v", {"skip_prk_steps": True, "prediction_type": "v_prediction"}, 1.0, (20, 40, 80, 160)),
    ),
)
