"""The conformance table of `DPMSolverAdaptive`: its reference is k-diffusion 0.1.1.post1's `sample_dpm_adaptive`
(loaded by `functional_sched.adapters.k_diffusion`), run on each row alone (a batch of one: the class's error norm is
the row's) with the rows' model calls batched, and the class's budget of attempts applied to k-diffusion's own
controller (`sample_dpm_adaptive_rows`); every model call's input and the final sample are held to it.

Configs: Stable Diffusion 1.5's sigma range (A1111's and ComfyUI's "DPM adaptive"), DPM-Solver-12, EDM's range,
tighter tolerances, a PID controller and a large first step (both reject attempts), and eta > 0 with Brownian noise
(a tree per row, seeded `SEED + row` on both sides: rejected attempts leave an accepted interval's increment as it is).
Budgets of 12 to 19 attempts cover each config's whole solve on the suite's model, so the default parity runs are
k-diffusion's loops unchanged; the step-count extremes (1, 2, 3 attempts) hold the budget's rule.
"""

from __future__ import annotations

from typing import Any

import torch

import functional_sched as fs
from functional_sched.testing import Config, Schedule, Spec

EDM = {"sigma_min": 0.002, "sigma_max": 80.0}
#: The Brownian trees' seeds: row r's is SEED + r, on both sides.
SEED = 7


def _seeds(rows: int) -> list[int]:
    return [SEED + row for row in range(rows)]


def k_diffusion_adaptive_loop(
    case: Any, steps: int | None, model: Any, noise: torch.Tensor, noise_sampler: Any
) -> torch.Tensor:
    """`Spec.reference_loop`: k-diffusion's `sample_dpm_adaptive` per row from `randn * sigma_max`, its model calls
    batched, with the case's budget; with eta > 0 each row draws from its own `BrownianTreeNoiseSampler`."""
    from functional_sched.adapters.k_diffusion import sample_dpm_adaptive_rows, sampler

    sched = case.scheduler()
    schedule = case.init_kwargs(steps)
    x = noise * sched.sigma_max
    samplers = None
    if sched.eta:
        tree = sampler("BrownianTreeNoiseSampler")
        low, high = torch.tensor(sched.sigma_min), torch.tensor(sched.sigma_max)
        samplers = [tree(x[row : row + 1], low, high, seed=seed) for row, seed in enumerate(_seeds(x.shape[0]))]
    return sample_dpm_adaptive_rows(model, x, sched, schedule["num_inference_steps"], samplers)[0]


def tree_noise(case: Any, reference: Any, sched: Any, state: Any, like: torch.Tensor) -> torch.Tensor:
    """Our step's noise from each row's tree (the reference's seeds)."""
    return fs.brownian_noise(sched, state, like, _seeds(like.shape[0]))


BUDGET = Schedule(steps=12)

DPM_ADAPTIVE = Spec(
    fs.DPMSolverAdaptive,
    configs=(
        Config("sd1.5-range", {}, BUDGET),
        Config("order-2", {"order": 2}, Schedule(steps=16)),
        Config("edm-range", EDM, Schedule(steps=16)),
        Config("tight", {"rtol": 0.01, "atol": 0.001}, Schedule(steps=16)),
        Config("pid", {"pcoeff": 0.3, "icoeff": 0.9, "dcoeff": 0.2}, BUDGET),
        Config("large-first-step", {"h_init": 3.0, "accept_safety": 0.9}, BUDGET),
        # 19 attempts, 57 calls: the stages' tests run this config at up to 21 (63 calls) in a GraphedDenoise (64).
        Config("ancestral", {"eta": 1.0, "s_noise": 1.003}, Schedule(steps=19)),
    ),
    reference_loop=k_diffusion_adaptive_loop,
    reference_noise=tree_noise,
    decisions_follow_rounding=True,
)
