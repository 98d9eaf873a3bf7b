"""The conformance tables of Hunyuan3D's schedulers, held to sglang 0.5.23's classes: first the call of sglang's
shape stage (`Hunyuan3DShapeBeforeDenoisingStage`: `retrieve_timesteps(scheduler, n, device,
sigmas=np.linspace(0, 1, n))`, n = 50 by default) with the checkpoints' configs (Hunyuan3D-2's shape DiT:
`num_train_timesteps=1000`; its turbo DiTs: the consistency class with `pcm_timesteps=100`, 5 steps), then the
options' corners."""

from __future__ import annotations

from typing import Any

import numpy as np

from functional_sched.schedulers.hunyuan3d import (
    Hunyuan3DConsistencyFlowMatchEulerDiscrete,
    Hunyuan3DFlowMatchEulerDiscrete,
)
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec

STEPS = (20, 40, 80, 160)


def shape_stage_sigmas(steps: int) -> dict[str, Any]:
    """What sglang's Hunyuan3D shape stage passes: `sigmas=np.linspace(0, 1, n)` (from noise to data)."""
    return {"sigmas": np.linspace(0.0, 1.0, steps)}


HUNYUAN3D_FLOW_MATCH = Spec(
    Hunyuan3DFlowMatchEulerDiscrete,
    configs=(
        Config("hunyuan3d-2-shape", {"num_train_timesteps": 1000}, Schedule(steps=50, custom=shape_stage_sigmas)),
        Config("shape-stage-shift3", {"shift": 3.0}, Schedule(custom=shape_stage_sigmas)),
        Config("default-spacing", {}),
        Config("default-spacing-shift3", {"shift": 3.0}),  # the training table's shift, then the schedule's again
        Config("dynamic-shape-stage", {"use_dynamic_shifting": True}, Schedule(mu=1.2, custom=shape_stage_sigmas)),
        Config("dynamic-default-spacing", {"use_dynamic_shifting": True}, Schedule(mu=0.7)),
        Config("shift0.7-200-train", {"shift": 0.7, "num_train_timesteps": 200}),
    ),
    refusals=(
        # sglang's set_timesteps takes no timesteps (a TypeError).
        Refusal(
            "custom-timesteps",
            {},
            "custom timesteps are not supported",
            Schedule(custom=lambda steps: {"timesteps": np.linspace(0.0, 1000.0, steps)}),
            at="init",
        ),
    ),
    orders=(
        Order("euler", {}, 1, STEPS),
        Order("euler-shift3", {"shift": 3.0}, 1, STEPS),
    ),
    # sglang's scale_noise is diffusers' `sigma * noise + (1 - sigma) * sample`, the descending convention: on this
    # ascending schedule it returns the clean sample at the first step (pure noise). Ours noises as the step steps,
    # `sigma * sample + (1 - sigma) * noise`; the drop-in keeps sglang's own method.
    reference_noises_as_it_steps=False,
)

HUNYUAN3D_CONSISTENCY = Spec(
    Hunyuan3DConsistencyFlowMatchEulerDiscrete,
    configs=(
        Config(
            "hunyuan3d-2-turbo-shape",
            {"num_train_timesteps": 1000, "pcm_timesteps": 100},
            Schedule(steps=5, custom=shape_stage_sigmas),
        ),
        Config("default", {}),
        Config("pcm30-uneven-phases", {"pcm_timesteps": 30}),  # 1000 // 30 = 33: the grid stops short of 1
        Config("train500-pcm16", {"num_train_timesteps": 500, "pcm_timesteps": 16}),
    ),
    refusals=(
        # floor(linspace(0, 10, 12, endpoint=False)) repeats index 0: sglang's loop starts at the second match of the
        # first timestep and fails with an IndexError at its last step.
        Refusal(
            "more-steps-than-pcm", {"pcm_timesteps": 10}, "more than pcm_timesteps=10", Schedule(steps=12), at="init"
        ),
        Refusal(
            "more-sigmas-than-pcm",
            {"pcm_timesteps": 4},
            "more than pcm_timesteps=4",
            Schedule(custom=lambda steps: {"sigmas": np.linspace(0.0, 1.0, 6)}),
            at="init",
        ),
    ),
    orders=(Order("euler-fine-grid", {"pcm_timesteps": 500}, 1, STEPS),),
)
