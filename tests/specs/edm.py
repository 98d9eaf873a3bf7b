"""The EDM family's conformance tables: `EDMEuler` (Cosmos 1.0's first, then EDM's defaults, CosXL-style exponential
v-prediction, churn), `EDMDPMSolverMultistep` (EDM's DPM++ 2M, then orders, SDE, thresholding) and
`CosineDPMSolverMultistep` (Stable Audio Open's, Brownian-tree noise seeded as diffusers seeds it)."""

from __future__ import annotations

from functional_sched.schedulers.edm import EDMEuler
from functional_sched.schedulers.edm_dpm import CosineDPMSolverMultistep, EDMDPMSolverMultistep
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec, pipelines

from .dpm_sde import tree_noise

STEPS = (20, 40, 80, 160)

EDM_EULER = Spec(
    EDMEuler,
    configs=(
        *pipelines(EDMEuler),
        Config("edm-defaults", {}),
        # CosXL-style: exponential sigmas, a v-prediction model with sigma_data 1.
        Config(
            "exponential-v",
            {"sigma_schedule": "exponential", "prediction_type": "v_prediction", "sigma_data": 1.0, "sigma_max": 120.0},
        ),
        Config("churn", {"s_churn": 0.5}),
        Config("churn-window", {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003, "rho": 5.0}),
        Config(
            "exponential-sigma-min", {"sigma_schedule": "exponential", "final_sigmas_type": "sigma_min"}, Schedule(7)
        ),
    ),
    refusals=(
        # diffusers' `precondition_outputs` raises ValueError("Prediction type sample is not supported.") in `step`.
        Refusal("sample-prediction", {"prediction_type": "sample"}, "prediction_type='sample' is not supported"),
    ),
    noise_dtype=None,  # diffusers draws the churn noise in the model output's dtype
    x0_is_models=lambda options: not options.get("s_churn"),
    orders=(
        Order("edm-euler-karras", {}, 1, STEPS),
        Order(
            "edm-euler-exponential-v", {"sigma_schedule": "exponential", "prediction_type": "v_prediction"}, 1, STEPS
        ),
    ),
)

# Exponential sigmas are uniform in lambda = -log(sigma), the variable DPM-Solver integrates.
EXPONENTIAL = {"sigma_schedule": "exponential"}
LATE_STEPS = (40, 80, 160, 320)  # past the pre-asymptotic regime of the third-order update

EDM_DPM_SOLVER = Spec(
    EDMDPMSolverMultistep,
    configs=(
        *pipelines(EDMDPMSolverMultistep),
        Config(
            "3m-heun-exponential-v",
            {
                "solver_order": 3,
                "solver_type": "heun",
                "prediction_type": "v_prediction",
                "sigma_data": 1.0,
                **EXPONENTIAL,
            },
            Schedule(steps=12),
        ),
        Config("2m-sde", {"algorithm_type": "sde-dpmsolver++"}),
        Config(
            "2m-sde-heun-exponential",
            {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun", **EXPONENTIAL},
        ),
        Config(
            "thresholding-sigma-min", {"thresholding": True, "sample_max_value": 1.5, "final_sigmas_type": "sigma_min"}
        ),
        Config(
            "euler-at-final-3",
            {"solver_order": 3, "euler_at_final": True, "lower_order_final": False},
            Schedule(steps=16),
        ),
        Config("first-order", {"solver_order": 1, "rho": 5.0}),
    ),
    refusals=(
        # diffusers' `precondition_outputs` raises ValueError("Prediction type sample is not supported.") in `step`.
        Refusal("sample-prediction", {"prediction_type": "sample"}, "prediction_type='sample' is not supported"),
        # diffusers' third-order update has no SDE branch: UnboundLocalError at the first third-order step.
        Refusal("sde-order-3", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}, "has no third-order update"),
        # Karras sigmas end at sigma_min and final_sigmas_type="sigma_min" appends it again: a last step of (almost)
        # zero length, which the third-order update divides by (lower_order_final acts only below 15 steps).
        Refusal(
            "zero-length-third-order-step",
            {"solver_order": 3, "final_sigmas_type": "sigma_min"},
            r"step 19 of 20 .* computes NaN or inf",
            Schedule(steps=20),
            at="init",
        ),
    ),
    orders=(
        Order("edm-dpm++2m", EXPONENTIAL, 2, STEPS),
        Order("edm-dpm++1", {"solver_order": 1, **EXPONENTIAL}, 1, STEPS),
        Order(
            "edm-dpm++2m-heun-v", {"solver_type": "heun", "prediction_type": "v_prediction", **EXPONENTIAL}, 2, STEPS
        ),
        # Second order, not third: diffusers' multistep third-order update halves D2 (see tests/specs/dpm_solver.py).
        Order("edm-dpm++3m", {"solver_order": 3, **EXPONENTIAL}, 2, LATE_STEPS),
    ),
)

# Stable Audio Open's config is diffusers' defaults. No `Order`: stochastic at every step (the SDE variants' weak order
# is measured in tests/test_edm.py).
COSINE_DPM_SOLVER = Spec(
    CosineDPMSolverMultistep,
    configs=(
        *pipelines(CosineDPMSolverMultistep),
        Config("karras-heun", {"sigma_schedule": "karras", "solver_type": "heun"}, Schedule(steps=20)),
        Config("first-order-epsilon", {"solver_order": 1, "prediction_type": "epsilon", "sigma_data": 0.5}),
        Config("edm-range-exponential", {"sigma_min": 0.002, "sigma_max": 80.0, "lower_order_final": False}),
        Config("euler-at-final", {"euler_at_final": True, "lower_order_final": False}, Schedule(steps=16)),
    ),
    refusals=(
        Refusal("sample-prediction", {"prediction_type": "sample"}, "prediction_type='sample' is not supported"),
        # diffusers' step has no third-order update here: UnboundLocalError at the first third-order step.
        Refusal("order-3", {"solver_order": 3}, "solver_order=3 is not supported; the largest is 2"),
        # The last sigma lies a rounding above sigma_min: the query into sigma 0, clamped to the tree's range, is
        # shorter than torchsde's tolerance, and diffusers' tree recurses without end.
        Refusal(
            "unresolvable-tree-query",
            {"sigma_schedule": "karras", "rho": 5.0},
            r"step 7 of 8 .* shorter than its tolerance",
            at="init",
        ),
    ),
    reference_noise=tree_noise,
)
