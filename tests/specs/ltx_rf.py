"""`LTXEulerAncestralRF`'s conformance table: LTX-2's distilled sigmas first (its DFR temporal refine runs eta = 0.5 on
them, plus the final 0), LTX-Video's FlowMatchEuler config taken over (`from_config`, a step count and `mu`), then
eta, s_noise, the schedule options and the custom-table corners."""

from __future__ import annotations

import types
from typing import Any

import diffusers
import numpy as np
from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES

from functional_sched.machinery import options as declarations
from functional_sched.schedulers.ltx_rf import LTXEulerAncestralRF
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec, pipelines
from functional_sched.testing.spec import built_as_diffusers

STEPS = (20, 40, 80, 160)
LTX_VIDEO = {
    "use_dynamic_shifting": True,
    "base_shift": 0.95,
    "max_shift": 2.05,
    "base_image_seq_len": 1024,
    "max_image_seq_len": 4096,
    "shift_terminal": 0.1,
}


def distilled(first: int) -> Any:
    """LTX-2's distilled sigmas from index `first` on, resampled to n steps (exactly them at n = 8 - first), plus 0."""
    return lambda n: {
        "sigmas": np.append(np.interp(np.linspace(first, 7, n), np.arange(8), DISTILLED_SIGMA_VALUES), 0.0)
    }


def _set_timesteps_from_arrays(self: Any, num_inference_steps: Any = None, device: Any = None, **tables: Any) -> None:
    """diffusers' `set_timesteps` with the suite's numpy tables as the lists a pipeline passes (it takes no arrays)."""
    listed = {key: value.tolist() if isinstance(value, np.ndarray) else value for key, value in tables.items()}
    type(self).set_timesteps(self, num_inference_steps, device, **listed)


def reference(options: dict[str, Any]) -> Any:
    """diffusers' class as pipelines build it: FlowMatchEuler's schedule keys in its config (defaults where a config
    does not set them, as a `from_config` of a FlowMatchEuler config has them), custom tables as lists; noising as flow
    matching noises (FlowMatchEuler's `scale_noise`, what LTX's pipelines do by hand: the class has none)."""
    declared = declarations.declared(LTXEulerAncestralRF)
    keys = {name: option.default for name, option in declared.items() if option.registered}
    built = built_as_diffusers(diffusers.LTXEulerAncestralRFScheduler, LTXEulerAncestralRF, {**keys, **options})
    built.set_timesteps = types.MethodType(_set_timesteps_from_arrays, built)
    built.scale_noise = types.MethodType(diffusers.FlowMatchEulerDiscreteScheduler.scale_noise, built)
    return built


LTX_RF = Spec(
    LTXEulerAncestralRF,
    configs=(
        Config("ltx-2-dfr-temporal-refine", {"eta": 0.5}, Schedule(steps=4, custom=distilled(4))),
        Config("ltx-2-distilled", {}, Schedule(steps=8, custom=distilled(0))),
        *pipelines(LTXEulerAncestralRF),
        Config("ltx-video-config", LTX_VIDEO, Schedule(mu=1.5)),
        Config("deterministic", {"eta": 0.0}),
        Config("s-noise", {"eta": 0.7, "s_noise": 0.5}),
        Config("shift-karras", {"shift": 3.0, "use_karras_sigmas": True}),
        Config("timesteps-as-sigmas", {}, Schedule(custom=lambda n: {"timesteps": np.linspace(1.0, 0.0, n + 1)})),
        Config("nonzero-final", {"eta": 0.5}, Schedule(custom=lambda n: {"sigmas": np.linspace(1.0, 0.05, n + 1)})),
    ),
    reference=reference,
    sigmas_include_final=True,
    refusals=(
        # The inverted schedule starts at sigma 0, which the step divides by: diffusers' first step is NaN.
        Refusal("invert-sigmas", {"invert_sigmas": True}, "invert_sigmas=True is not supported"),
        Refusal(
            "zero-sigma-before-the-end",
            {},
            "computes NaN or inf",
            Schedule(custom=lambda n: {"sigmas": (1.0, 0.0, 0.5, 0.0)}),
            at="init",
        ),
    ),
    orders=(
        Order("euler-eta0", {"eta": 0.0}, 1, STEPS),
        Order("euler-eta0-shift3", {"eta": 0.0, "shift": 3.0}, 1, STEPS),
    ),
)
