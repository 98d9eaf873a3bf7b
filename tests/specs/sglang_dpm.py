"""`SglangDPMSolverMultistep`'s conformance table, held to sglang 0.5.23's `DPMSolverMultistepScheduler` (a wrapper of
diffusers' class): SANA's config and wan_animate_2's custom sigmas first, then sglang's defaults and the options'
corners (orders, algorithms, VP spacings, custom sigmas on VP schedules)."""

from __future__ import annotations

import numpy as np

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec

from .dpm_solver import LATE_STEPS, STEPS, VP_LAMBDA, VP_LAMBDA_NOISE

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
# SANA (sglang's runtime/pipelines/sana.py; the checkpoint's scheduler_config.json): DPM-Solver++ 2M on flow sigmas.
SANA = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0}
# wan_animate_2 (runtime/pipelines/wan_animate_2_pipeline.py) builds the wrapper with its pipeline's flow_shift, 5.0.
WAN_ANIMATE = {
    "num_train_timesteps": 1000,
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "flow_shift": 5.0,
}


def wan_sigmas(steps: int, shift: float = 5.0) -> dict[str, np.ndarray]:
    """What wan_animate_2 passes to `set_timesteps(sigmas=...)`: Wan's `get_sampling_sigmas(n, shift)`, float64
    `linspace(1, 0, n + 1)[:n]` shifted (its first sigma is 1.0 exactly)."""
    sigmas = np.linspace(1, 0, steps + 1)[:steps]
    return {"sigmas": shift * sigmas / (1 + (shift - 1) * sigmas)}


SGLANG_DPM_SOLVER = Spec(
    fs.SglangDPMSolverMultistep,
    configs=(
        Config("sana", SANA, Schedule(steps=20)),
        Config("wan-animate-2", WAN_ANIMATE, Schedule(steps=40, custom=wan_sigmas)),
        Config("wan-animate-2-distilled", WAN_ANIMATE, Schedule(steps=10, custom=wan_sigmas)),
        Config("sglang-defaults", {}),
        Config("sd15-2m-sde", {**SCALED_LINEAR, "steps_offset": 1, "algorithm_type": "sde-dpmsolver++"}),
        Config("flow-sigmas-3m-sde", {**WAN_ANIMATE, "solver_order": 3, "algorithm_type": "sde-dpmsolver++"}),
        Config(
            "wan-sigmas-3m-heun",
            {**WAN_ANIMATE, "solver_order": 3, "solver_type": "heun"},
            Schedule(8, custom=wan_sigmas),
        ),
        Config(
            "karras-v",
            {
                **SCALED_LINEAR,
                "prediction_type": "v_prediction",
                "use_karras_sigmas": True,
                "timestep_spacing": "leading",
            },
        ),
        # Custom sigmas on a VP schedule: sglang's wrapper takes them too (as VP sigmas; the model's timestep is
        # sigma * 1000 all the same), and final_sigmas_type="sigma_min" ends them at the training schedule's smallest.
        Config(
            "vp-custom-sigmas-sigma-min",
            {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"},
            Schedule(steps=6, custom=lambda n: {"sigmas": np.linspace(0.95, 0.1, n)}),
        ),
        Config("sample-prediction", {"prediction_type": "sample"}),
    ),
    # sglang's wrapper keeps its history in the diffusers scheduler it holds (`model_outputs` written on the wrapper
    # reach nothing), and its `order` is solver_order (diffusers' DPM has 1): tests/test_sglang_dpm.py instead.
    drop_in_gaps=("history", "img2img"),
    # The toy model serves one output layout: a learned variance's extra channels are DPMSolverMultistep's test.
    held=("variance_type",),
    refusals=(
        # sglang's default flow_shift=None: diffusers' set_timesteps multiplies by it (TypeError).
        Refusal(
            "flow-sigmas-without-shift",
            {"prediction_type": "flow_prediction", "use_flow_sigmas": True},
            "use_flow_sigmas=True needs a flow_shift",
            Schedule(steps=10),
            at="init",
        ),
        # mu reaches the inner diffusers scheduler, built without use_dynamic_shifting: it asserts.
        Refusal("mu", SANA, "mu is not supported", Schedule(steps=10, mu=1.0), at="init"),
        Refusal(
            "noise-prediction-to-zero",
            {"algorithm_type": "dpmsolver", "final_sigmas_type": "zero"},
            "final_sigmas_type='zero' needs a data-prediction algorithm",
        ),
        Refusal(
            "flow-sigmas-from-vp-karras",
            {**SANA, "use_karras_sigmas": True},
            "use_flow_sigmas=True with use_karras_sigmas=True",
        ),
    ),
    orders=(
        Order("dpm++2m", VP_LAMBDA, 2, STEPS),
        Order("dpm++1", {"solver_order": 1, **VP_LAMBDA}, 1, STEPS),
        Order("dpm-solver-2", VP_LAMBDA_NOISE, 2, STEPS),
        # Second order, not third: DPMSolverMultistep's spec says why (diffusers' D2 is half the divided difference).
        Order("dpm++3m", {"solver_order": 3, **VP_LAMBDA}, 2, LATE_STEPS),
    ),
)
