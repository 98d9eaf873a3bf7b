"""The conformance tables of ComfyUI's RES multistep samplers (`RESMultistep`, `RESMultistepAncestral`). Their
reference, ComfyUI's `sample_res_multistep` and `sample_res_multistep_ancestral`, is GPL-3.0 and no package, so no
spec runs it: the parity column is the order on the Gaussian problem (`Order`), and tests/test_res.py holds every
model call's input and the final sample to trajectories recorded from ComfyUI's loop (tests/fixtures/comfyui/).

Configs: Stable Diffusion 1.5's sigma range with Karras sigmas (ComfyUI's "res_multistep" with the "karras"
scheduler on an SD 1.5 checkpoint, the default), EDM's range, a flow model's table (ComfyUI runs the same loop for
flow models: SD3's shift-3 "simple" sigmas from 1), a table that ends above 0 (a refiner's hand-over); the ancestral
variant at eta 1 (its default), 0, 0.5 with s_noise 1.003, and 2 (sigma_down reaches 0 before the last step).
Orders: RES multistep is second order on the probability-flow ODE (measured 2.12 over 20-160 steps; the ancestral
variant's weak order, also 2, is in tests/test_res.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import functional_sched as fs
from functional_sched.testing import Config, Order, Schedule, Spec

EDM = {"sigma_min": 0.002, "sigma_max": 80.0}


# Custom tables in numpy (a custom table is made where the suite may run under FakeTensorMode).
def flow_sigmas(steps: int) -> dict[str, Any]:
    """A flow model's table as ComfyUI's "simple" scheduler makes it for SD3 (discrete flow, shift 3, 1000 training
    steps): sigma(t) = 3t / (1 + 2t) at every (1000 / steps)-th training time from t = 1 down, then 0."""
    t = np.arange(1, 1001) / 1000
    table = 3.0 * t / (1 + 2.0 * t)
    return {"sigmas": [float(table[-(1 + int(k * 1000 / steps))]) for k in range(steps)] + [0.0]}


def to_refiner(steps: int) -> dict[str, Any]:
    """A table that ends above 0 (a partial denoise, as SDXL's base hands over to its refiner): `steps` intervals
    geometrically from 10 to 0.4."""
    return {"sigmas": np.exp(np.linspace(math.log(10.0), math.log(0.4), steps + 1)).tolist()}


FLOW = Schedule(steps=8, custom=flow_sigmas)

RES_MULTISTEP = Spec(
    fs.RESMultistep,
    configs=(
        Config("sd1.5-karras", {}),
        Config("edm-karras", EDM),
        Config("flow-shift3", {}, FLOW),
        Config("ends-above-zero", {"rho": 3.0}, Schedule(steps=4, custom=to_refiner)),
    ),
    reference=None,
    sigmas_include_final=True,
    orders=(Order("ode", {}, 2.0), Order("ode-edm", EDM, 2.0)),
)

RES_MULTISTEP_ANCESTRAL = Spec(
    fs.RESMultistepAncestral,
    configs=(
        Config("sd1.5-karras", {}),
        Config("eta-0", {"eta": 0.0}),
        Config("edm-eta-half-s-noise", {**EDM, "eta": 0.5, "s_noise": 1.003}),
        Config("flow-shift3", {}, FLOW),
        # eta 2: sigma_up reaches sigma_next, sigma_down is 0, and a step is an Euler step to 0 plus noise; the next
        # one's c2 is infinite (its second-order term vanishes).
        Config("eta-2", {"eta": 2.0, "rho": 3.0}),
    ),
    reference=None,
    sigmas_include_final=True,
    # With zero noise at eta = 0 it is RES multistep (with eta > 0 and zero noise the limit is not the ODE).
    orders=(Order("ode", {"eta": 0.0}, 2.0),),
)
