"""`IPNDM`'s conformance table: Dance Diffusion's config (diffusers' default) first, then the warm-up's corners (fewer
steps than the order). Trained noise levels (`trained_betas`) make the schedule, one step fewer than values
whatever the step count says, so the suite's columns that vary the step count cannot serve them:
`tests/test_ipndm.py` has their parity."""

from __future__ import annotations

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec

IPNDM = Spec(
    fs.IPNDM,
    configs=(
        # harmonai's Dance Diffusion checkpoints ship IPNDMScheduler's defaults (the pipeline's only scheduler).
        Config("dance-diffusion", {}),
        Config("dance-diffusion-3-steps", {}, Schedule(steps=3)),
        Config("num-train-timesteps-100", {"num_train_timesteps": 100}, Schedule(steps=20)),
    ),
    held=("trained_betas",),
    refusals=(
        # A noise level above 1: diffusers takes sqrt(1 - beta^2) of a negative number (NaN timesteps and steps).
        Refusal("trained-betas-above-one", {"trained_betas": (1.5, 0.5, 0.0)}, "trained_betas are noise levels"),
    ),
    # diffusers' schedule starts at alpha = 0, where its DDIM transfer cannot read x0 from epsilon: the first step
    # sets x0 = 0, an error of alpha_1 ~ (pi / sqrt 2) / N that the rest of the loop carries: first order overall
    # (measured 1.04 over 20..160 steps). Started below t = 1 (`tests/test_ipndm.py`), the Adams-Bashforth
    # combination of epsilon (uniform in t, integrated against the non-uniform sigma / alpha) is second order.
    orders=(Order("default", {}, 1.0, (20, 40, 80, 160)),),
)
