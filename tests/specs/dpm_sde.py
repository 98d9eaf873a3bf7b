"""DPM-Solver++ SDE's conformance table (`DPMSolverSDE`): A1111's "DPM++ SDE Karras" on SD 1.5 and SDXL first, SD
2.1-v, then the options' corners. Every config carries a `noise_sampler_seed` (diffusers' tree otherwise draws its
seed from the global generator, and two schedulers could not be compared); our noise is `brownian_noise` from the
seed the reference's tree has, so parity holds step by step. No convergence order is declared: the Gaussian order
column runs the step with zero noise, whose limit is not the probability-flow ODE; `tests/test_dpm_sde.py` measures
the weak order instead."""

from __future__ import annotations

from typing import Any

import torch

import functional_sched as fs
from functional_sched.testing import Config, Refusal, Spec

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
SD15 = {**SCALED_LINEAR, "steps_offset": 1}


def tree_noise(case: Any, reference: Any, sched: Any, state: Any, like: torch.Tensor) -> torch.Tensor:
    """Our step's noise from the seed of the reference's tree (its `noise_sampler_seed`, or the one it drew without
    one): one tree over the batch, as diffusers'."""
    (tree,) = reference.noise_sampler.tree.trees
    return fs.brownian_noise(sched, state, like, tree.entropy)


DPM_SDE = Spec(
    fs.DPMSolverSDE,
    configs=(
        Config("sd1.5-dpm-sde-karras", {**SD15, "use_karras_sigmas": True, "noise_sampler_seed": 0}),
        Config(
            "sdxl-dpm-sde-karras",
            {**SD15, "timestep_spacing": "leading", "use_karras_sigmas": True, "noise_sampler_seed": 1},
        ),
        Config(
            "sd21-v-karras",
            {**SD15, "prediction_type": "v_prediction", "use_karras_sigmas": True, "noise_sampler_seed": 2},
        ),
        Config("sd1.5-leading", {**SD15, "timestep_spacing": "leading", "noise_sampler_seed": 3}),
        Config("default", {"noise_sampler_seed": 4}),
        Config(
            "trailing-v", {"timestep_spacing": "trailing", "prediction_type": "v_prediction", "noise_sampler_seed": 5}
        ),
        Config("exponential-sigmas", {**SCALED_LINEAR, "use_exponential_sigmas": True, "noise_sampler_seed": 6}),
        Config("beta-sigmas", {**SCALED_LINEAR, "use_beta_sigmas": True, "noise_sampler_seed": 7}),
        # (No squaredcos_cap_v2 config: its sigma_max of 2e4 turns diffusers' own float16 step NaN; the float32 grid
        # draws it.)
        Config("s-noise", {**SD15, "use_karras_sigmas": True, "s_noise": 1.003, "noise_sampler_seed": 9}),
        Config("s-noise-half", {**SD15, "s_noise": 0.5, "noise_sampler_seed": 2**40}),
    ),
    refusals=(
        # diffusers' step raises NotImplementedError("prediction_type not implemented yet: sample").
        Refusal("sample-prediction", {"prediction_type": "sample"}, "prediction_type='sample' is not supported"),
    ),
    reference_noise=tree_noise,
)
