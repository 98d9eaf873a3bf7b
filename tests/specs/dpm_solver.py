"""`DPMSolverMultistep`'s conformance table: SD 1.5's DPM++ 2M (plain, Karras, SDE) and Sana first, then SDXL, SD 2.1
and the options' corners (orders, algorithms, thresholding, dynamic shift, custom timesteps)."""

from __future__ import annotations

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec, pipelines

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
# Exponential sigmas are uniform in lambda = log(alpha / sigma), the variable these solvers integrate: every step
# refines like 1 / N (diffusers' default linspace ends with a step whose size shrinks only like log N).
VP_LAMBDA = {"use_exponential_sigmas": True}
# Noise prediction cannot step to sigma = 0: it ends at sigma_min, repeated; the Euler step there has zero length.
VP_LAMBDA_NOISE = {**VP_LAMBDA, "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "euler_at_final": True}
STEPS = (20, 40, 80, 160)
LATE_STEPS = (40, 80, 160, 320)  # past the pre-asymptotic third-order regime of DPM++ 3M

DPM_SOLVER = Spec(
    fs.DPMSolverMultistep,
    configs=(
        *pipelines(fs.DPMSolverMultistep),
        Config(
            "sdxl-2m-sde-karras",
            {
                **SCALED_LINEAR,
                "steps_offset": 1,
                "timestep_spacing": "leading",
                "use_karras_sigmas": True,
                "algorithm_type": "sde-dpmsolver++",
            },
        ),
        Config(
            "3m-karras-v",
            {**SCALED_LINEAR, "solver_order": 3, "prediction_type": "v_prediction", "use_karras_sigmas": True},
            Schedule(steps=12),
        ),
        Config("3m-sde-heun", {"solver_order": 3, "algorithm_type": "sde-dpmsolver++", "solver_type": "heun"}),
        Config(
            "sd21-v-trailing-zero-snr",
            {
                **SCALED_LINEAR,
                "prediction_type": "v_prediction",
                "timestep_spacing": "trailing",
                "rescale_betas_zero_snr": True,
            },
        ),
        Config(
            "dpmsolver-sigma-min-thresholding",
            {
                "algorithm_type": "dpmsolver",
                "final_sigmas_type": "sigma_min",
                "solver_type": "heun",
                "thresholding": True,
                "sample_max_value": 1.5,
            },
        ),
        Config("sde-dpmsolver-sigma-min", {"algorithm_type": "sde-dpmsolver", "final_sigmas_type": "sigma_min"}),
        # The conversion is the identity: the history would hold the model's own output but for a copy.
        Config("sample-prediction", {"prediction_type": "sample"}),
        Config(
            "lu-lambdas-cosine",
            {"use_lu_lambdas": True, "beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1},
        ),
        Config(
            "flow-dynamic-shift",
            {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "use_dynamic_shifting": True},
            Schedule(mu=1.15),
        ),
        Config("euler-at-final-3", {"solver_order": 3, "euler_at_final": True, "final_sigmas_type": "sigma_min"}),
        Config(
            "custom-timesteps-3",
            {"solver_order": 3},
            Schedule(custom=lambda n: {"timesteps": [float(round(t)) for t in _spread(999, 3, n)]}),
        ),
    ),
    # The toy model serves one output layout: a learned variance's extra channels have a test of their own.
    held=("variance_type",),
    refusals=(
        # Fractional timesteps repeat once cast to int64: the first one at 4 of 10 noise levels; diffusers' loop looks
        # it up, starts at its second occurrence and runs off its sigma table.
        Refusal(
            "first-timestep-repeats",
            {"beta_schedule": "squaredcos_cap_v2", "use_karras_sigmas": True},
            "the schedule's first timestep 998 repeats",
            Schedule(steps=10),
            at="init",
        ),
        # More steps than integer training timesteps: some repeat, and a higher-order step divides by zero length.
        Refusal(
            "more-steps-than-training-timesteps",
            {"num_train_timesteps": 20},
            "num_inference_steps=21 is more than this config's schedule can represent",
            Schedule(steps=21),
            at="init",
        ),
        Refusal(
            "noise-prediction-to-zero",
            {"algorithm_type": "dpmsolver", "final_sigmas_type": "zero"},
            "final_sigmas_type='zero' needs a data-prediction algorithm",
        ),
        Refusal(
            "sde-dpmsolver-order-3",
            {"algorithm_type": "sde-dpmsolver", "solver_order": 3, "final_sigmas_type": "sigma_min"},
            "has no third-order update",
        ),
        # Karras sigmas end at sigma_min and final_sigmas_type="sigma_min" appends it again: a zero-length last step,
        # which a third-order update divides by (lower_order_final acts only below 15 steps).
        Refusal(
            "zero-length-third-order-step",
            {"solver_order": 3, "use_karras_sigmas": True, "final_sigmas_type": "sigma_min"},
            r"step 19 of 20 .* has zero length",
            Schedule(steps=20),
            at="init",
        ),
        Refusal(
            "flow-sigmas-from-vp-karras",
            {"use_flow_sigmas": True, "use_karras_sigmas": True, "prediction_type": "flow_prediction"},
            "use_flow_sigmas=True with use_karras_sigmas=True",
        ),
        Refusal(
            "flow-velocity-for-noise-prediction",
            {
                "algorithm_type": "dpmsolver",
                "final_sigmas_type": "sigma_min",
                "use_flow_sigmas": True,
                "prediction_type": "flow_prediction",
            },
            "prediction_type='flow_prediction' is not supported",
        ),
    ),
    orders=(
        Order("dpm++2m", VP_LAMBDA, 2, STEPS),
        Order("dpm++1", {"solver_order": 1, **VP_LAMBDA}, 1, STEPS),
        Order("dpm++2m-heun", {"solver_type": "heun", **VP_LAMBDA}, 2, STEPS),
        Order("dpm++2m-v", {"prediction_type": "v_prediction", **VP_LAMBDA}, 2, STEPS),
        Order("dpm-solver-2", VP_LAMBDA_NOISE, 2, STEPS),
        # Second order, not third: diffusers' (and the reference dpm-solver code's) multistep third-order update
        # takes D2 = (D1_0 - D1_1) / (r0 + r1), half the divided difference its weight needs (tests/test_accuracy.py).
        Order("dpm++3m", {"solver_order": 3, **VP_LAMBDA}, 2, LATE_STEPS),
        Order("dpm-solver-3", {"solver_order": 3, **VP_LAMBDA_NOISE}, 2, LATE_STEPS),
    ),
)


def _spread(first: int, last: int, n: int) -> list[float]:
    """n distinct timesteps from `first` down to `last` (custom tables a pipeline might pass)."""
    return [first] if n == 1 else [first + (last - first) * i / (n - 1) for i in range(n)]
