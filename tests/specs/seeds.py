"""The conformance tables of ComfyUI's SEEDS samplers (`SEEDS2`, `SEEDS3`). ComfyUI is no installable reference
(GPL-3.0, no package), so the suite has no runnable reference here: its parity column is the order on the Gaussian
problem, and tests/test_seeds.py holds every model call's input and the final sample to trajectories recorded from
ComfyUI's `sample_seeds_2` and `sample_seeds_3` (tests/fixtures/comfyui/README.md says how).

Configs: the defaults (SEEDS-2 phi_1 at r = 1/2, SEEDS-3 at r = 1/3, 2/3; eta = s_noise = 1) on Stable Diffusion
1.5's Karras sigmas; SEEDS-2's phi_2 at eta 0.5 and r 0.4; ComfyUI's `exp_heun_2_x0` (phi_2, r = 1, eta = 0) and its
SDE variant; SEEDS-3 at eta 0 and with its own r_1, r_2 on a table that ends above zero. Orders: the ODE's (eta = 0)
on the Gaussian problem; the stochastic configs' weak orders are measured in tests/test_seeds.py.
"""

from __future__ import annotations

import functional_sched as fs
from functional_sched.testing import Config, Order, Schedule, Spec

from .er_sde import EDM, exponential, to_refiner

SEEDS_2 = Spec(
    fs.SEEDS2,
    configs=(
        Config("sd1.5-karras", {}, Schedule(steps=5)),  # few intervals: each is two or three calls
        Config(
            "phi-2-eta-half",
            {"solver_type": "phi_2", "eta": 0.5, "s_noise": 1.003, "r": 0.4},
            Schedule(steps=8, custom=exponential),
        ),
        Config("exp-heun-2-x0", {"solver_type": "phi_2", "eta": 0.0, "s_noise": 0.0, "r": 1.0, **EDM}),
        Config(
            "exp-heun-2-x0-sde-to-refiner", {"solver_type": "phi_2", "r": 1.0}, Schedule(steps=4, custom=to_refiner)
        ),
    ),
    reference=None,
    sigmas_include_final=True,
    orders=(
        Order("ode-phi-1", {"eta": 0.0}, 2.0, (10, 20, 40, 80)),
        Order("ode-phi-2", {"eta": 0.0, "solver_type": "phi_2"}, 2.0, (10, 20, 40, 80)),
    ),
)

SEEDS_3 = Spec(
    fs.SEEDS3,
    configs=(
        Config("sd1.5-karras", {}, Schedule(steps=5)),  # few intervals: each is two or three calls
        Config("eta-0", {"eta": 0.0}, Schedule(steps=8, custom=exponential)),
        Config(
            "custom-r-to-refiner",
            {"eta": 0.7, "s_noise": 1.003, "r_1": 0.25, "r_2": 0.6},
            Schedule(steps=4, custom=to_refiner),
        ),
    ),
    reference=None,
    sigmas_include_final=True,
    orders=(Order("ode", {"eta": 0.0}, 3.0, (10, 20, 40, 80)),),
)
