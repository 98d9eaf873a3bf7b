"""`SASolver`'s conformance table: PixArt's and SD 1.5's SA-Solver first, then SDXL's leading spacing, SD 2.1's
v-prediction, and the options' corners (orders 1-4, noise prediction, constant tau, Karras, exponential, beta and flow
sigmas, thresholding, the cosine schedule)."""

from __future__ import annotations

from functional_sched.schedulers.sa_solver import ConstantTau, SASolver
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec, pipelines

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
SD15 = {**SCALED_LINEAR, "steps_offset": 1}
FLOW = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
# tau = 0: SA-Solver as an ODE solver (diffusers documents `lambda t: 0`): a callable, recognised as a constant.
ODE = {"tau_func": lambda t: 0}
# Exponential sigmas are uniform in lambda = log(alpha / sigma), the variable SA-Solver integrates in.
VP_LAMBDA = {"use_exponential_sigmas": True, **ODE}
STEPS = (20, 40, 80, 160)
LATER = (40, 80, 160, 320)

SA_SOLVER = Spec(
    SASolver,
    configs=(
        *pipelines(SASolver),
        Config("sdxl-leading", {**SD15, "timestep_spacing": "leading"}, Schedule(steps=25)),
        Config("sd21-v-trailing", {**SCALED_LINEAR, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}),
        Config("ode", {**SD15, **ODE}, Schedule(steps=10)),
        Config("sde-constant-tau", {"tau_func": ConstantTau(1.0)}),
        Config("tau-half-3-3", {"tau_func": ConstantTau(0.5), "predictor_order": 3, "corrector_order": 3}),
        Config("orders-4-4", {**SD15, "predictor_order": 4, "corrector_order": 4}, Schedule(steps=12)),
        Config("orders-1-1", {"predictor_order": 1, "corrector_order": 1}),
        Config("orders-1-4", {"predictor_order": 1, "corrector_order": 4}, Schedule(steps=10)),
        Config("orders-3-2-no-lower-final", {"predictor_order": 3, "lower_order_final": False}),
        Config("noise-prediction", {"algorithm_type": "noise_prediction"}),
        Config(
            "noise-prediction-v-3-4",
            {
                "algorithm_type": "noise_prediction",
                "prediction_type": "v_prediction",
                "predictor_order": 3,
                "corrector_order": 4,
            },
            Schedule(steps=10),
        ),
        # The conversion is the identity: the history would hold the model's own output but for a copy.
        Config("noise-prediction-epsilon-ode", {"algorithm_type": "noise_prediction", **ODE}),
        Config("sample-prediction", {"prediction_type": "sample"}),
        Config("karras", {**SD15, "use_karras_sigmas": True}),
        Config("exponential-3-3", {"use_exponential_sigmas": True, "predictor_order": 3, "corrector_order": 3}),
        Config("beta-sigmas-v", {"use_beta_sigmas": True, "prediction_type": "v_prediction"}),
        Config("flow-shift", {**FLOW, "flow_shift": 3.0}),
        Config(
            "thresholding-sample",
            {"thresholding": True, "prediction_type": "sample", "sample_max_value": 1.5},
        ),
        Config("cosine-clipped", {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1}),
    ),
    noise_dtype=None,  # diffusers draws each step's noise in the model output's dtype
    held=("variance_type",),  # a learned variance needs a model with twice the channels
    refusals=(
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
        Refusal(
            "flow-sigmas-from-vp-karras",
            {**FLOW, "use_karras_sigmas": True},
            "use_flow_sigmas=True with use_karras_sigmas=True",
        ),
        Refusal(
            "noise-prediction-of-a-flow",
            {"algorithm_type": "noise_prediction", **FLOW},
            "prediction_type='flow_prediction' is not supported",
        ),
        Refusal(
            "thresholding-noise-prediction",
            {"algorithm_type": "noise_prediction", "thresholding": True},
            "thresholding=True with algorithm_type='noise_prediction'",
        ),
    ),
    # Global order min(corrector_order, predictor_order + 1): the corrector (an Adams-Moulton step through the new
    # output) sets the accuracy of each step's start, the predictor adds one step's local error (measured with tau = 0,
    # the ODE; 20 steps are pre-asymptotic at first order).
    orders=(
        Order("predictor-1-corrector-1", {"predictor_order": 1, "corrector_order": 1, **VP_LAMBDA}, 1, LATER),
        Order("predictor-1-corrector-2", {"predictor_order": 1, **VP_LAMBDA}, 2, STEPS),
        Order("predictor-2-corrector-1", {"corrector_order": 1, **VP_LAMBDA}, 1, LATER),
        Order("predictor-2-corrector-2", VP_LAMBDA, 2, LATER),
        Order("predictor-2-corrector-3", {"corrector_order": 3, **VP_LAMBDA}, 3, STEPS),
        Order(
            "noise-prediction-2-3", {"algorithm_type": "noise_prediction", "corrector_order": 3, **VP_LAMBDA}, 3, STEPS
        ),
        # Superconvergent on this problem (about 4 from 80 steps on): a lower bound only.
        Order(
            "predictor-3-corrector-3",
            {"predictor_order": 3, "corrector_order": 3, **VP_LAMBDA},
            3,
            LATER,
            at_least=True,
        ),
        Order(
            "noise-prediction-3-4",
            {"algorithm_type": "noise_prediction", "predictor_order": 3, "corrector_order": 4, **VP_LAMBDA},
            4,
            LATER,
        ),
    ),
)
