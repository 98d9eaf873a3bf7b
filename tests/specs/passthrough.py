"""`ComfyUIPassThrough`'s conformance table, held to sglang 0.5.23's `ComfyUIPassThroughScheduler`: the timesteps a
caller gives (ComfyUI's, truncated to int64 as sglang does with a list). A schedule of a step count (sglang's single
timestep 0, whatever the count) is the drawn grid's.

What does not apply, by the spec's fields: no convergence order (the step moves nothing; `orders` is empty); the x0
column (`x0_is_models` False: with `denoised=True` the step hands back the model's output, whatever it predicts, for
the external sampler, not an x0 of this class's, which has no noise level to form one at); the checkpointed loop's
gradients (`depends_on_model` False: the loop's result is its start, whatever the model returns)."""

from __future__ import annotations

import functional_sched as fs
from functional_sched.testing import Config, Schedule, Spec

# What ComfyUI's samplers pass for a flow model's steps (timesteps = sigma * 1000, not whole numbers).
COMFY_TIMESTEPS = Schedule(
    steps=6, custom=lambda n: {"timesteps": [999.7 - 950.0 * i / max(n - 1, 1) for i in range(n)]}
)

PASSTHROUGH = Spec(
    fs.ComfyUIPassThrough,
    configs=(
        Config("comfyui-timesteps", {}, COMFY_TIMESTEPS),
        Config("train-2000-timesteps", {"num_train_timesteps": 2000}, COMFY_TIMESTEPS),
    ),
    # `*args` of sglang's constructor lands in its config (diffusers' register_to_config), where nothing reads it.
    unsupported={"args": 5},
    x0_is_models=lambda options: False,
    depends_on_model=False,
)
