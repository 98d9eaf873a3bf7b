"""The conformance tables of ComfyUI's linear multistep samplers on Karras' ODE (`GradientEstimation`,
`IPNDMVariableStep`). ComfyUI is not installable here (GPL-3.0, no wheel): the parity column is the analytic model's
order and accuracy (`Order`s, measured on the Gaussian problem in float64), and `tests/test_k_multistep.py` holds our
loops to trajectories recorded from ComfyUI's own functions (`tests/fixtures/comfyui/`).

Configs: Stable Diffusion 1.5's sigma range with Karras sigmas (ComfyUI's "karras" scheduler on an SD 1.5 model),
EDM's range, the samplers' options, custom sigma tables (an exponential spacing, one that ends above 0).

Orders, as measured (their docstrings say why): the gradient estimation sampler at its default ge_gamma = 2 is of
first order (slopes 0.96 over 40-320 steps: it extrapolates the derivative a whole previous step ahead); at
ge_gamma = 1.5 it is Adams-Bashforth 2 on even steps, of second order (2.03). iPNDM-v is of second order whatever
its max_order above 1 (1.96 at max_order 2 over 20-160 steps; 1.97 at 4 and 1.97 at 3 past the pre-asymptotic
regime): its first step is Euler's, and on the Karras table's uneven steps ComfyUI's third- and fourth-order weights
are exact for linear derivatives only.
"""

from __future__ import annotations

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec

from .k_dpm import EDM, _exponential, _to_refiner


def _repeated(steps: int) -> dict[str, list[float]]:
    """A table with a step of length 0 (a sigma given twice)."""
    return {"sigmas": [10.0, 5.0, 5.0, 1.0, 0.0]}


GRADIENT_ESTIMATION = Spec(
    fs.GradientEstimation,
    configs=(
        Config("sd1.5-karras", {}),
        Config("edm-karras", EDM),
        Config("gamma-2.5", {"ge_gamma": 2.5}),
        Config("adams-bashforth-gamma", {"ge_gamma": 1.5, "rho": 3.0}),
        Config("exponential-sigmas", {}, Schedule(steps=8, custom=_exponential)),
        Config("ends-above-zero", {"ge_gamma": 1.5}, Schedule(steps=4, custom=_to_refiner)),
    ),
    reference=None,
    sigmas_include_final=True,
    orders=(
        Order("default", {}, 1.0, (40, 80, 160, 320)),
        Order("gamma-1.5", {"ge_gamma": 1.5}, 2.0),
    ),
)

IPNDM_VARIABLE_STEP = Spec(
    fs.IPNDMVariableStep,
    configs=(
        Config("sd1.5-karras", {}),
        Config("edm-karras-order-3", {**EDM, "max_order": 3}),
        Config("order-2", {"max_order": 2}),
        Config("order-1", {"max_order": 1, "rho": 3.0}),
        Config("exponential-sigmas", {}, Schedule(steps=8, custom=_exponential)),
        Config("ends-above-zero", {}, Schedule(steps=4, custom=_to_refiner)),
    ),
    reference=None,
    sigmas_include_final=True,
    refusals=(Refusal("repeated-sigma", {}, "a step of length 0", Schedule(steps=4, custom=_repeated), at="init"),),
    orders=(
        Order("order-2", {"max_order": 2}, 2.0),
        Order("default", {}, 2.0, (320, 640, 1280)),
    ),
)
