"""`UniPCMultistep`'s conformance table: SD 1.5 and Wan 2.1 first, then Wan's other shifts, SDXL, third order and the
options' corners (bh1, noise prediction, corrector off, sigma ranges, custom flow sigmas, dynamic shift)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import diffusers
import numpy as np

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec, pipelines

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
FLOW = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
# Exponential sigmas are uniform in lambda = log(alpha / sigma), the variable UniPC integrates: every step refines
# like 1 / N (diffusers' default linspace ends with a step whose size shrinks only like log N).
VP_LAMBDA = {"use_exponential_sigmas": True}
# B(h) = h, and noise prediction, cannot step to sigma = 0: end at sigma_min (repeated: a zero-length first-order step).
VP_LAMBDA_MIN = {**VP_LAMBDA, "final_sigmas_type": "sigma_min"}
FLOW_KARRAS = {**FLOW, "use_karras_sigmas": True}
EVERY_STEP = tuple(range(400))  # disable_corrector on every step: UniP alone
STEPS = (20, 40, 80, 160)
FLOW_KARRAS_STEPS = (10, 16, 25, 40)


def exact(options: Mapping[str, Any], situation: str) -> bool:
    """Bit for bit, except at order 3, where diffusers sums its two weighted differences with `einsum`, whose
    rounding depends on the CPU's BLAS kernel (float32: bit-identical on an AMD EPYC with torch 2.13, one ulp off on
    an Intel Xeon with torch 2.11; bf16 with Karras sigmas: one bf16 ulp here); and float32 latents with a bf16
    model where the converted output stays bf16 (sample prediction, or predict_x0=False): diffusers' einsum
    promotes the residual to float32 at some orders and not others, ours forms it in the converted dtype."""
    if options.get("solver_order", 2) >= 3:
        return False
    if situation == "mixed":
        return options.get("predict_x0", True) and options.get("prediction_type", "epsilon") != "sample"
    return True


UNIPC = Spec(
    fs.UniPCMultistep,
    configs=(
        *pipelines(fs.UniPCMultistep),
        Config("wan21-720p", {**FLOW, "flow_shift": 5.0}, Schedule(steps=10)),
        Config(
            "sdxl-karras-leading",
            {**SCALED_LINEAR, "steps_offset": 1, "timestep_spacing": "leading", "use_karras_sigmas": True},
        ),
        Config(
            "bh1-3-karras",
            {"solver_order": 3, "solver_type": "bh1", "final_sigmas_type": "sigma_min", "use_karras_sigmas": True},
            Schedule(steps=12),
        ),
        Config("bh2-3", {**SCALED_LINEAR, "solver_order": 3}),
        Config(
            "noise-prediction-v",
            {"predict_x0": False, "final_sigmas_type": "sigma_min", "prediction_type": "v_prediction"},
        ),
        # The conversion is the identity: the history would hold the model's own output but for a copy.
        Config("noise-prediction-epsilon", {"predict_x0": False, "final_sigmas_type": "sigma_min"}),
        Config("sample-prediction", {"prediction_type": "sample"}),
        Config("corrector-off-3", {"solver_order": 3, "disable_corrector": (0, 1, 2, 5)}),
        Config("beta-sigmas-range", {"use_beta_sigmas": True, "sigma_min": 0.0292, "sigma_max": 14.6}),
        Config(
            "thresholding-sample",
            {
                "thresholding": True,
                "prediction_type": "sample",
                "sample_max_value": 1.5,
                "dynamic_thresholding_ratio": 0.9,
            },
        ),
        Config("flow-shift-terminal", {**FLOW, "flow_shift": 3.0, "shift_terminal": 0.1}),
        Config(
            "flow-dynamic-linear", {**FLOW, "use_dynamic_shifting": True, "time_shift_type": "linear"}, Schedule(mu=3.0)
        ),
        Config("flow-custom-sigmas", FLOW, Schedule(custom=lambda n: {"sigmas": np.linspace(1.0, 1 / n, n)})),
        Config("flow-karras", {**FLOW, "use_karras_sigmas": True}),
    ),
    exact=exact,
    unsupported={"solver_p": diffusers.DDIMScheduler()},
    refusals=(
        # Beta sigmas of the squaredcos schedule map 9 of 10 noise levels to its first timestep.
        Refusal(
            "first-timestep-repeats",
            {"beta_schedule": "squaredcos_cap_v2", "use_beta_sigmas": True},
            "the schedule's first timestep .* repeats",
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
        # B(h) is infinite on a last step into sigma = 0 where it is h (bh1) or e^h - 1 (noise prediction).
        Refusal("bh1-to-zero", {"solver_type": "bh1", "final_sigmas_type": "zero"}, "final_sigmas_type='zero'"),
        Refusal("noise-prediction-to-zero", {"predict_x0": False}, "final_sigmas_type='zero'"),
        Refusal(
            "bh1-noise-prediction-to-zero", {"solver_type": "bh1", "predict_x0": False}, "final_sigmas_type='zero'"
        ),
        # A last step at order >= 2 into sigma = 0: h = inf and the step ratios vanish (order 3: a singular solve).
        Refusal("full-order-into-zero", {"lower_order_final": False}, "lower_order_final=False with final_sigmas"),
        Refusal(
            "full-order-3-into-zero", {"solver_order": 3, "lower_order_final": False}, "lower_order_final=False with"
        ),
        Refusal(
            "full-order-3-into-zero-flow",
            {**FLOW, "flow_shift": 3.0, "solver_order": 3, "lower_order_final": False},
            "lower_order_final=False with final_sigmas_type='zero'",
        ),
        Refusal(
            "flow-sigmas-from-vp-exponential",
            {**FLOW, "use_exponential_sigmas": True},
            "use_flow_sigmas=True with use_exponential_sigmas=True",
        ),
        Refusal(
            "custom-sigmas-without-flow-sigmas",
            {},
            "custom sigmas need use_flow_sigmas=True",
            Schedule(custom=lambda n: {"sigmas": np.linspace(0.9, 0.5, n)}),
            at="init",
        ),
        Refusal(
            "shift-terminal-one-step",
            {**FLOW, "flow_shift": 3.0, "shift_terminal": 0.1},
            "shift_terminal cannot stretch",
            Schedule(steps=1),
            at="init",
        ),
    ),
    # UniC raises the order of UniP-p to p + 1 (Zhao et al. 2023, Theorems 3.1-3.2).
    orders=(
        Order("unipc-2-bh2", VP_LAMBDA, 3, STEPS),
        Order("unip-1", {"solver_order": 1, "disable_corrector": EVERY_STEP, **VP_LAMBDA}, 1, STEPS),
        Order("unipc-1-bh2", {"solver_order": 1, **VP_LAMBDA}, 2, STEPS),
        Order("unipc-1-bh1", {"solver_order": 1, "solver_type": "bh1", **VP_LAMBDA_MIN}, 2, STEPS),
        Order("unip-2-bh2", {"disable_corrector": EVERY_STEP, **VP_LAMBDA}, 2, STEPS),
        Order("unipc-2-bh1", {"solver_type": "bh1", **VP_LAMBDA_MIN}, 3, STEPS),
        Order("unipc-2-noise-prediction", {"predict_x0": False, **VP_LAMBDA_MIN}, 3, STEPS),
        # Up to 40 steps: from 60 on, flow Karras sigmas give the first timestep twice (refused, as diffusers fails).
        Order("unip-2-flow-karras", {"disable_corrector": EVERY_STEP, **FLOW_KARRAS}, 2, FLOW_KARRAS_STEPS),
        Order("unipc-2-flow-karras", FLOW_KARRAS, 3, FLOW_KARRAS_STEPS),
        # Superconvergent on this problem (UniP-3 ~4.2, UniPC-3 3.3-3.9 and rising): a lower bound only.
        Order(
            "unip-3",
            {"solver_order": 3, "disable_corrector": EVERY_STEP, **VP_LAMBDA},
            3,
            (40, 80, 160, 320),
            at_least=True,
        ),
        Order("unipc-3", {"solver_order": 3, **VP_LAMBDA}, 3, (40, 80, 160, 320), at_least=True),
    ),
)
