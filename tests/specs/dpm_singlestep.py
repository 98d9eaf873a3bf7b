"""`DPMSolverSinglestep`'s conformance table: SD 1.5's DPM++ 2S and 3S (plain and Karras) first, then the SDE variant,
noise prediction, third-order Heun, and the options' corners (order lists without `lower_order_final`, flow sigmas,
thresholding, clipped lambdas, first order)."""

from __future__ import annotations

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
# Exponential sigmas are uniform in lambda = log(alpha / sigma), the variable these solvers integrate: every step
# refines like 1 / N.
VP_LAMBDA = {"use_exponential_sigmas": True}
# Noise prediction cannot step to sigma = 0: it ends at sigma_min.
VP_LAMBDA_NOISE = {**VP_LAMBDA, "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}
STEPS = (20, 40, 80, 160)
# Multiples of 3: the error is measured after the schedule's last complete singlestep of order 2 or 3.
STEPS_3 = (24, 48, 96, 192)

DPM_SINGLESTEP = Spec(
    fs.DPMSolverSinglestep,
    configs=(
        Config("sd1.5-dpm-2s", SCALED_LINEAR),
        Config("sd1.5-dpm-3s", {**SCALED_LINEAR, "solver_order": 3}, Schedule(steps=20)),
        Config("sd1.5-dpm-2s-karras", {**SCALED_LINEAR, "use_karras_sigmas": True}, Schedule(steps=20)),
        Config("sd1.5-dpm-3s-karras", {**SCALED_LINEAR, "solver_order": 3, "use_karras_sigmas": True}),
        Config(
            "sd21-v-2s-sde-karras",
            {
                **SCALED_LINEAR,
                "prediction_type": "v_prediction",
                "use_karras_sigmas": True,
                "algorithm_type": "sde-dpmsolver++",
            },
        ),
        Config("3s-sde-heun", {"solver_order": 3, "algorithm_type": "sde-dpmsolver++", "solver_type": "heun"}),
        Config("3s-heun", {**SCALED_LINEAR, "solver_order": 3, "solver_type": "heun"}, Schedule(steps=13)),
        Config(
            "dpmsolver-3s-heun-sigma-min",
            {"solver_order": 3, "algorithm_type": "dpmsolver", "solver_type": "heun", "final_sigmas_type": "sigma_min"},
            Schedule(steps=12),
        ),
        Config(
            "dpmsolver-2s-v-sigma-min",
            {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "prediction_type": "v_prediction"},
            Schedule(steps=9),
        ),
        # Steps a multiple of the order, a final sigma_min: the only order list without lower orders at the end.
        Config("3s-no-lower-final", {"solver_order": 3, "final_sigmas_type": "sigma_min", "lower_order_final": False}),
        # The conversion is the identity: the history would hold the model's own output but for a copy.
        Config("sample-prediction-thresholding", {"prediction_type": "sample", "thresholding": True, **VP_LAMBDA}),
        Config("beta-sigmas-3", {"use_beta_sigmas": True, "solver_order": 3}),
        Config(
            "flow-dynamic-shift-3",
            {
                "use_flow_sigmas": True,
                "prediction_type": "flow_prediction",
                "use_dynamic_shifting": True,
                "solver_order": 3,
            },
            Schedule(steps=10, mu=1.15),
        ),
        Config(
            "clipped-lambdas-cosine",
            {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1, "solver_order": 3},
        ),
        Config(
            "custom-timesteps-3",
            {"solver_order": 3},
            Schedule(custom=lambda n: {"timesteps": [float(round(999 - 996 * i / max(n - 1, 1))) for i in range(n)]}),
        ),
        Config("first-order", {"solver_order": 1}),
    ),
    # The toy model serves one output layout: a learned variance's extra channels are DPM-Solver's (its own test).
    held=("variance_type",),
    refusals=(
        Refusal(
            "first-timestep-repeats",
            {"beta_schedule": "squaredcos_cap_v2", "use_karras_sigmas": True},
            "the schedule's first timestep 999 repeats",
            Schedule(steps=10),
            at="init",
        ),
        Refusal(
            "noise-prediction-to-zero",
            {"algorithm_type": "dpmsolver", "final_sigmas_type": "zero"},
            "final_sigmas_type='zero' needs a data-prediction algorithm",
        ),
        # diffusers 0.42.1 indexes alpha_t[timestep] with timestep=None there: a [1, 1000] table, a shape error.
        Refusal(
            "noise-prediction-thresholding",
            {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "thresholding": True},
            "thresholding=True with algorithm_type='dpmsolver'",
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
        Order("dpm++1", {"solver_order": 1, **VP_LAMBDA}, 1, STEPS),
        Order("dpm++2s", VP_LAMBDA, 2, STEPS),
        Order("dpm++2s-heun", {"solver_type": "heun", **VP_LAMBDA}, 2, STEPS),
        Order("dpm++2s-v", {"prediction_type": "v_prediction", **VP_LAMBDA}, 2, STEPS),
        Order("dpm-solver-2s", VP_LAMBDA_NOISE, 2, STEPS),
        Order("dpm++3s", {"solver_order": 3, **VP_LAMBDA}, 3, STEPS_3),
        Order("dpm++3s-heun", {"solver_order": 3, "solver_type": "heun", **VP_LAMBDA}, 3, STEPS_3),
        Order("dpm-solver-3s", {"solver_order": 3, **VP_LAMBDA_NOISE}, 3, STEPS_3),
    ),
)
