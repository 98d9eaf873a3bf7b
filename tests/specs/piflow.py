"""`Piflow`'s and `SglangPiflow`'s conformance tables: Kandinsky 6's distilled checkpoints first (TI2VA at 10 steps,
SR at its `nfe` of 4), then the options' corners. Held to diffusers 0.42.1's `PiflowScheduler` and to sglang 0.5.23's.

The suite's toy model predicts one output shaped like the sample; the references take `n_grid` predictions per
channel, so each reference here is its class with a `step` that repeats a sample-shaped output `n_grid` times before
calling the real one (the same prediction at every grid point, what our step reads such an output as). Distinct
predictions per grid point are held to both references in `tests/test_piflow.py`.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import Any

import diffusers
import torch

import functional_sched as fs
from functional_sched.testing import Config, Refusal, Schedule, Spec
from functional_sched.testing.spec import built_as_diffusers

#: Orders are not measured: the policy integrates a grid of x0 predictions the Gaussian problem's model does not give.
CONFIGS = (
    # Kandinsky-6.0-Pro-distill (sglang's Kandinsky6TI2VADistilledSamplingParams, diffusers' TI2VA pipeline): the
    # checkpoint's defaults, 10 steps, one DiT call each.
    Config("kandinsky-6-distill", {}, Schedule(steps=10)),
    # Kandinsky 6 SR's pi-Flow bundle: `nfe` steps (4) per tile chunk.
    Config("kandinsky-6-sr", {}, Schedule(steps=4)),
    Config("shift-3-grid-4-whole-last-step", {"shift": 3.0, "n_grid": 4, "final_step_size_scale": 1.0}),
    Config("coarse-policy", {"num_policy_substeps": 32, "n_grid": 2, "eps": 1e-4}, Schedule(steps=6)),
    Config("one-substep", {"num_policy_substeps": 1, "shift": 1.0}),
    Config("small-shift-short-last-step", {"shift": 0.7, "final_step_size_scale": 0.25, "num_policy_substeps": 7}),
)

REFUSALS = (
    Refusal("custom-sigmas", {}, "sigmas not supported", Schedule(custom=lambda n: {"sigmas": [1.0, 0.5]}), at="init"),
    Refusal("mu", {}, "mu not supported", Schedule(mu=1.0), at="init"),
)


def _reference(load: Callable[[], type], scheduler_class: type) -> Callable[[Mapping[str, Any]], Any]:
    """Builds the reference class with a config's options; its instance's `step` repeats a model output shaped like the
    sample `n_grid` times, then calls the class's own (the instance stays of the reference's own class)."""

    def build(config: Mapping[str, Any]) -> Any:
        reference = built_as_diffusers(load(), scheduler_class, config)
        step = reference.step

        def broadcasting_step(
            self: Any, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, **kwargs: Any
        ) -> Any:
            if model_output.shape == sample.shape:
                model_output = model_output.repeat(*([1] * (sample.dim() - 1)), self.config.n_grid)
            return step(model_output, timestep, sample, **kwargs)

        reference.step = types.MethodType(broadcasting_step, reference)
        return reference

    return build


def _sglang_piflow() -> type:
    from functional_sched.adapters.sglang import sglang_class

    return sglang_class("PiflowScheduler")


PIFLOW = Spec(
    fs.Piflow,
    configs=CONFIGS,
    reference=_reference(lambda: diffusers.PiflowScheduler, fs.Piflow),
    refusals=REFUSALS,
)

SGLANG_PIFLOW = Spec(
    fs.SglangPiflow,
    configs=(
        Config("kandinsky-6-sr-nfe", {"nfe": 4}, Schedule(steps=4)),  # the SR stage runs `config.nfe` steps
        *CONFIGS,
    ),
    reference=_reference(_sglang_piflow, fs.SglangPiflow),
    refusals=REFUSALS,
)
