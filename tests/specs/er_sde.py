"""The conformance table of ComfyUI's ER-SDE solver (`ERSDE`). ComfyUI is no installable reference (GPL-3.0, no
package), so the suite has no runnable reference here: its parity column is the order on the Gaussian problem, and
tests/test_er_sde.py holds every model call's input and the final sample to trajectories recorded from ComfyUI's
`sample_er_sde` (tests/fixtures/comfyui/README.md says how).

Configs: the node's default (ER-SDE noise scaler, 3 stages) on Stable Diffusion 1.5's Karras sigmas, the reverse-time
SDE's scaler at eta 0.5 with 2 stages on EDM's range, the ODE on an exponential table, one stage (the ER-SDE Euler
step) on a table that ends above zero. Orders: the ODE's (noise-free) on the Gaussian problem; the stochastic
configs' weak orders are measured in tests/test_er_sde.py.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import functional_sched as fs
from functional_sched.testing import Config, Order, Schedule, Spec

EDM = {"sigma_min": 0.002, "sigma_max": 80.0}


# Custom tables in numpy (a custom table is made where the suite may run under FakeTensorMode).
def exponential(steps: int) -> dict[str, Any]:
    """Sigmas spaced evenly in log sigma from 14.6 to 0.03 (k-diffusion's `get_sigmas_exponential`), then 0."""
    return {"sigmas": [*np.exp(np.linspace(math.log(14.6), math.log(0.03), steps)).tolist(), 0.0]}


def to_refiner(steps: int) -> dict[str, Any]:
    """A table that ends above 0 (a partial denoise): `steps` intervals geometrically from 10 to 0.4."""
    return {"sigmas": np.exp(np.linspace(math.log(10.0), math.log(0.4), steps + 1)).tolist()}


ER_SDE = Spec(
    fs.ERSDE,
    configs=(
        Config("sd1.5-karras", {}),
        Config("reverse-time-stage-2", {"solver_type": "Reverse-time SDE", "max_stage": 2, "eta": 0.5, **EDM}),
        Config("ode", {"solver_type": "ODE"}, Schedule(steps=8, custom=exponential)),
        Config("stage-1-to-refiner", {"max_stage": 1, "s_noise": 0.5}, Schedule(steps=4, custom=to_refiner)),
    ),
    reference=None,
    sigmas_include_final=True,
    # Second order at 3 stages as at 2: the stage-3 term multiplies an O(h^2) coefficient by a second difference
    # whose first difference is only first-order accurate (the paper's scheme); and once the step falls under the
    # 200-point Riemann sums' resolution the order drops further (1.6 from 80 to 160 steps), so measured before that.
    orders=(
        Order("ode-stage-3", {"solver_type": "ODE"}, 2.0, (10, 20, 40, 80)),
        Order("ode-stage-2", {"solver_type": "ODE", "max_stage": 2}, 2.0, (10, 20, 40, 80)),
        Order("ode-stage-1", {"solver_type": "ODE", "max_stage": 1}, 1.0),
    ),
)
