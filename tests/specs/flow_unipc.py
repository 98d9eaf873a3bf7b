"""The conformance tables of sglang's UniPC classes, held to sglang 0.5.23's own objects.

`FlowUniPCMultistep` (sglang's `FlowUniPCMultistepScheduler`): the configs of sglang's pipelines first (Wan 2.1
T2V 480p: shift 3, 50 steps; Wan 720p / I2V / TI2V-5B: shift 5; Wan 2.2 T2V-A14B: shift 12, 40 steps; TurboWan and
FastWan: shift 8, 4 and 3 steps; LongLive2 and flux3_action: built with shift 1, `set_timesteps(shift=5)`; cosmos3:
shift 1, `set_shift(10)`, 35 steps), then the options' corners. `SglangUniPCMultistep` (sglang's copy of
diffusers' `UniPCMultistepScheduler`): Wan's flow configs on its diffusers-0.35 grid, then the rest of diffusers'.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import diffusers
import numpy as np

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec

EVERY_STEP = tuple(range(400))  # disable_corrector on every step: UniP alone
STEPS = (20, 40, 80, 160)


def exact(options: Mapping[str, Any], situation: str) -> bool:
    """Bit for bit but at order 3, where diffusers' einsum sums two weighted differences with the CPU's BLAS kernel
    (its rounding depends on the machine; `tests/specs/unipc.py`)."""
    return options.get("solver_order", 2) < 3


FLOW_UNIPC = Spec(
    fs.FlowUniPCMultistep,
    configs=(
        Config("wan2.1-t2v-480p", {"shift": 3.0}, Schedule(steps=50)),
        Config("wan-720p-i2v-ti2v", {"shift": 5.0}, Schedule(steps=50)),
        Config("wan2.2-t2v-a14b", {"shift": 12.0}, Schedule(steps=40)),
        Config("wan2.2-i2v-a14b", {"shift": 5.0}, Schedule(steps=40)),
        Config("turbowan", {"shift": 8.0}, Schedule(steps=4)),
        Config("fastwan", {"shift": 8.0}, Schedule(steps=3)),
        Config("longlive2", {"set_shift": 5.0}, Schedule(steps=4)),
        Config("flux3-action", {"set_shift": 5.0}, Schedule(steps=10)),
        Config("cosmos3", {"set_shift": 10.0}, Schedule(steps=35)),
        Config("wan-order-1", {"shift": 3.0, "solver_order": 1}, Schedule(steps=20)),
        Config("wan-order-3", {"shift": 5.0, "solver_order": 3}, Schedule(steps=20)),
        Config("bh1-sigma-min", {"shift": 3.0, "solver_type": "bh1", "final_sigmas_type": "sigma_min"}),
        Config("sigma-min", {"shift": 5.0, "final_sigmas_type": "sigma_min"}),
        Config("corrector-off-3", {"shift": 3.0, "solver_order": 3, "disable_corrector": (0, 1, 2, 5)}),
        Config("thresholding", {"shift": 3.0, "thresholding": True, "sample_max_value": 1.5}),
        Config("dynamic-shift", {"use_dynamic_shifting": True}, Schedule(mu=1.2)),
        Config(
            "custom-sigmas",
            {"shift": 3.0},
            Schedule(custom=lambda n: {"sigmas": np.linspace(0.99, 0.05, n)}),
        ),
        Config("no-shift", {}, Schedule(steps=7)),
    ),
    exact=exact,
    unsupported={"solver_p": diffusers.DDIMScheduler()},
    refusals=(
        # sglang converts a velocity to noise as x - (1 - s) v (the sign of v is wrong): its samples are wrong.
        Refusal("noise-prediction", {"predict_x0": False, "final_sigmas_type": "sigma_min"}, "predict_x0=False"),
        # No nudge below 1: log(1 - 1) at the first step, NaN from the second.
        Refusal(
            "custom-sigmas-at-one",
            {"shift": 3.0},
            "custom sigmas starting at 1.0",
            Schedule(custom=lambda n: {"sigmas": np.linspace(1.0, 0.1, n)}),
            at="init",
        ),
        Refusal("bh1-to-zero", {"solver_type": "bh1"}, "final_sigmas_type='zero'"),
        Refusal("full-order-into-zero", {"shift": 3.0, "lower_order_final": False}, "lower_order_final=False with"),
    ),
    # Wan's grid is uniform in sigma from just below 1, so its first steps in lambda = log((1 - s) / s) shrink only
    # like log N: no order of the solver shows on it (1.3 for orders 1 to 3), and sglang's grid takes no other spacing
    # but custom sigmas. A lower bound only; the solver's orders are measured on UniPCMultistep's spec, whose step
    # this class shares but for Cramer's rule.
    orders=(Order("wan-grid", {"shift": 3.0}, 1, STEPS, at_least=True),),
)


FLOW = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}

SGLANG_UNIPC = Spec(
    fs.SglangUniPCMultistep,
    configs=(
        Config("wan2.1-480p-flow", {**FLOW, "flow_shift": 3.0}, Schedule(steps=20)),
        Config("wan2.2-t2v-a14b-flow", {**FLOW, "flow_shift": 12.0}, Schedule(steps=40)),
        Config("wan-720p-flow", {**FLOW, "flow_shift": 5.0}, Schedule(steps=4)),
        Config(
            "flow-dynamic-exponential",
            {**FLOW, "use_dynamic_shifting": True},
            Schedule(mu=1.2),
        ),
        Config("flow-dynamic-without-mu", {**FLOW, "use_dynamic_shifting": True, "flow_shift": 3.0}),
        Config("flow-order-3", {**FLOW, "flow_shift": 5.0, "solver_order": 3}, Schedule(steps=12)),
        Config("flow-karras", {**FLOW, "use_karras_sigmas": True}),
        Config("sd1.5", {**SCALED_LINEAR, "steps_offset": 1}, Schedule(steps=15)),
        Config("trailing-v", {**SCALED_LINEAR, "timestep_spacing": "trailing", "prediction_type": "v_prediction"}),
        Config("karras", {**SCALED_LINEAR, "use_karras_sigmas": True}),
        Config("exponential", {"use_exponential_sigmas": True}),
        Config("beta", {"use_beta_sigmas": True}),
        Config("corrector-off-3", {"solver_order": 3, "disable_corrector": (0, 1, 2, 5)}),
    ),
    exact=exact,
    unsupported={"solver_p": diffusers.DDIMScheduler()},
    refusals=(
        # sglang accepts shift_terminal and ignores it.
        Refusal("shift-terminal", {**FLOW, "flow_shift": 3.0, "shift_terminal": 0.1}, "shift_terminal=0.1"),
        Refusal(
            "dynamic-linear",
            {**FLOW, "use_dynamic_shifting": True, "time_shift_type": "linear"},
            "mu needs use_dynamic_shifting=True and time_shift_type='exponential'",
            Schedule(mu=1.2),
            at="init",
        ),
        Refusal("bh1-to-zero", {"solver_type": "bh1"}, "final_sigmas_type='zero'"),
        Refusal("full-order-into-zero", {"lower_order_final": False}, "lower_order_final=False with"),
    ),
)
