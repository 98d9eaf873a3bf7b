"""The conformance table of ComfyUI's Heun++ (`HeunPlusPlus`, its `sample_heunpp2`). ComfyUI is not installable here
(GPL-3.0, no wheel): the parity column is the analytic model's order and accuracy (`Order`, measured on the Gaussian
problem in float64), and `tests/test_heunpp.py` holds our loop to trajectories recorded from ComfyUI's own function
(`tests/fixtures/comfyui/heunpp2.safetensors`), bit for bit.

Configs: Stable Diffusion 1.5's sigma range with Karras sigmas (ComfyUI's "karras" scheduler on an SD 1.5 model),
EDM's range, another rho, custom sigma tables (an exponential spacing, one that ends above 0), and the short tables
where the three-call intervals give way: two intervals (a Heun interval, then Euler's; a one-interval table is one
Euler call, too short for the suite's loops: `tests/test_heunpp.py` covers it).

Order: first (slopes 1.01, 1.00 and 1.01 over 20-160 steps for SD 1.5's and EDM's ranges and rho 3): the weights of
the second and third derivatives, sigma / (3 sigma_0), vanish as sigma falls, leaving Euler's step.
"""

from __future__ import annotations

import functional_sched as fs
from functional_sched.testing import Config, Order, Schedule, Spec

from .k_dpm import EDM, _exponential, _to_refiner

HEUNPP = Spec(
    fs.HeunPlusPlus,
    configs=(
        # Five intervals: 12 model calls (the default run's columns loop over the first config).
        Config("sd1.5-karras", {}, Schedule(steps=5)),
        Config("edm-karras", EDM),
        Config("rho-3", {"rho": 3.0}),
        Config("exponential-sigmas", {}, Schedule(steps=8, custom=_exponential)),
        Config("ends-above-zero", {}, Schedule(steps=4, custom=_to_refiner)),
        Config("two-intervals", {}, Schedule(steps=2)),
    ),
    reference=None,
    sigmas_include_final=True,
    orders=(Order("default", {}, 1.0),),
)
