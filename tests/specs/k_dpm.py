"""The conformance tables of k-diffusion's DPM-Solver samplers (`DPMSolverPlusPlus2SAncestral`,
`DPMSolverPlusPlus3MSDE`, `DPMSolverFast`): their reference is k-diffusion 0.1.1.post1's whole loop
(`sample_dpmpp_2s_ancestral`, `sample_dpmpp_3m_sde`, `sample_dpm_fast`, loaded by
`functional_sched.adapters.k_diffusion`), run once per case with the suite's toy model as its denoiser; every model
call's input and the final sample are held to it (`Spec.reference_loop`).

Configs: Stable Diffusion 1.5's sigma range with Karras sigmas (what A1111's and ComfyUI's "DPM++ 2S a Karras" and
"DPM++ 3M SDE Karras" run, the default), EDM's range, eta 0 (the deterministic DPM-Solver++(2S) and (3M)), eta and
s_noise in between, custom sigma tables (an exponential spacing and a short hand-written one). 3M SDE's configs carry
a `noise_sampler_seed`: its reference draws from its own Brownian tree of that seed, which `brownian_noise`
reproduces on our side. Orders: measured on the Gaussian problem at eta = 0 (with eta > 0 and zero noise the limit is
not the probability-flow ODE).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import functional_sched as fs
from functional_sched.testing import Config, Order, Refusal, Schedule, Spec

EDM = {"sigma_min": 0.002, "sigma_max": 80.0}


# Custom tables in numpy (a custom table is made where the suite may run under FakeTensorMode).
def _exponential(steps: int) -> dict[str, Any]:
    """Sigmas spaced evenly in log sigma from 14.6 to 0.03 (k-diffusion's `get_sigmas_exponential`), then 0."""
    return {"sigmas": [*np.exp(np.linspace(math.log(14.6), math.log(0.03), steps)).tolist(), 0.0]}


def _to_refiner(steps: int) -> dict[str, Any]:
    """A table that ends above 0 (a partial denoise, as SDXL's base hands over to its refiner): `steps` intervals
    geometrically from 10 to 0.4."""
    return {"sigmas": np.exp(np.linspace(math.log(10.0), math.log(0.4), steps + 1)).tolist()}


def _tree_seed(case: Any) -> int:
    seed = case.options.get("noise_sampler_seed")
    return 0 if seed is None else seed


def k_diffusion_loop(name: str) -> Callable[..., torch.Tensor]:
    """`Spec.reference_loop` of k-diffusion's sampler `name`: its sigma table made as a k-diffusion user makes it
    (`get_sigmas_karras` of the config's range and rho, or the custom table as a float32 tensor), the latents scaled
    by its first sigma, the sampler run with the config's eta and s_noise. 3M SDE draws from k-diffusion's
    `BrownianTreeNoiseSampler` seeded with the config's `noise_sampler_seed` (0 where it has none)."""

    def run(case: Any, steps: int | None, model: Any, noise: torch.Tensor, noise_sampler: Any) -> torch.Tensor:
        from functional_sched.adapters.k_diffusion import sampler

        sched = case.scheduler()
        schedule = case.init_kwargs(steps)
        if schedule.get("timesteps") is not None or schedule.get("mu") is not None:
            raise ValueError("k-diffusion's samplers take a sigma table only")
        if schedule.get("sigmas") is not None:
            sigmas = torch.tensor(schedule["sigmas"], dtype=torch.float32)
        else:
            sigmas = sampler("get_sigmas_karras")(
                schedule["num_inference_steps"], sched.sigma_min, sched.sigma_max, sched.rho
            )
        x = noise * sigmas[0]
        if name == "sample_dpmpp_3m_sde":
            tree = sampler("BrownianTreeNoiseSampler")
            noise_sampler = tree(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=_tree_seed(case))
        with warnings.catch_warnings():  # torchsde warns where a float32 sigma lies a rounding outside its range
            warnings.simplefilter("ignore", UserWarning)
            return sampler(name)(
                model, x, sigmas, disable=True, eta=sched.eta, s_noise=sched.s_noise, noise_sampler=noise_sampler
            )

    return run


def tree_noise(case: Any, reference: Any, sched: Any, state: Any, like: torch.Tensor) -> torch.Tensor:
    """Our step's noise from the seed of the reference's tree (one tree over the batch, as k-diffusion's)."""
    return fs.brownian_noise(sched, state, like, _tree_seed(case))


DPMPP_2S_ANCESTRAL = Spec(
    fs.DPMSolverPlusPlus2SAncestral,
    configs=(
        Config("sd1.5-karras", {}),
        Config("eta-0", {"eta": 0.0}),
        Config("edm-karras", EDM),
        Config("eta-half-s-noise", {"eta": 0.5, "s_noise": 1.003}),
        Config("exponential-sigmas", {}, Schedule(steps=8, custom=_exponential)),
        Config("ends-above-zero", {"eta": 0.7}, Schedule(steps=4, custom=_to_refiner)),
        # eta 2: sigma_up reaches sigma_next, sigma_down is 0, and every interval is one Euler call plus noise.
        Config("eta-2", {"eta": 2.0, "rho": 3.0}),
    ),
    reference_loop=k_diffusion_loop("sample_dpmpp_2s_ancestral"),
    sigmas_include_final=True,
    orders=(Order("ode", {"eta": 0.0}, 2.0),),
)

DPMPP_3M_SDE = Spec(
    fs.DPMSolverPlusPlus3MSDE,
    configs=(
        Config("sd1.5-karras", {"noise_sampler_seed": 0}),
        Config("eta-0", {"eta": 0.0}),
        Config("edm-karras", {**EDM, "noise_sampler_seed": 1}),
        Config("eta-half-s-noise", {"eta": 0.5, "s_noise": 1.003, "noise_sampler_seed": 2}),
        Config("exponential-sigmas", {"noise_sampler_seed": 3}, Schedule(steps=8, custom=_exponential)),
        Config("ends-above-zero", {"noise_sampler_seed": 2**40}, Schedule(steps=4, custom=_to_refiner)),
    ),
    reference_loop=k_diffusion_loop("sample_dpmpp_3m_sde"),
    reference_noise=tree_noise,
    sigmas_include_final=True,
    refusals=(
        # k-diffusion's loop reads an unset step length after a first interval into sigma 0 (UnboundLocalError).
        Refusal("one-step", {}, "first interval ends at sigma 0", Schedule(steps=1), at="init"),
    ),
    # Second order, not third: k-diffusion's third-order update takes diffusers' D2 = (D1_0 - D1_1) / (r0 + r1), as
    # DPM-Solver++(3M) does (tests/specs/dpm_solver.py), measured past the pre-asymptotic regime.
    orders=(Order("ode", {"eta": 0.0}, 2.0, (40, 80, 160, 320)),),
)


def k_diffusion_fast_loop(case: Any, steps: int | None, model: Any, noise: torch.Tensor, noise_sampler: Any) -> Any:
    """`Spec.reference_loop` of k-diffusion's `sample_dpm_fast`: `steps` model calls between the config's sigma_min
    and sigma_max, from `randn * sigma_max`, with its eta and s_noise."""
    from functional_sched.adapters.k_diffusion import sampler

    sched = case.scheduler()
    schedule = case.init_kwargs(steps)
    if schedule["num_inference_steps"] is None or schedule.get("mu") is not None:
        raise ValueError("k-diffusion's sample_dpm_fast takes a number of model calls only")
    return sampler("sample_dpm_fast")(
        model,
        noise * sched.sigma_max,
        sched.sigma_min,
        sched.sigma_max,
        schedule["num_inference_steps"],
        disable=True,
        eta=sched.eta,
        s_noise=sched.s_noise,
        noise_sampler=noise_sampler,
    )


DPM_FAST = Spec(
    fs.DPMSolverFast,
    configs=(
        Config("sd1.5-range", {}, Schedule(steps=10)),
        Config("edm-range", EDM, Schedule(steps=12)),
        Config("ancestral", {"eta": 1.0, "s_noise": 1.003}, Schedule(steps=11)),
        Config("eta-half", {"eta": 0.5}, Schedule(steps=9)),
    ),
    reference_loop=k_diffusion_fast_loop,
    # Third order: singlestep DPM-Solver-3 on intervals uniform in log sigma; counts of 3k + 1 calls, whose last
    # interval is one first-order call (the error is read before it).
    orders=(Order("ode", {}, 3.0, (31, 61, 121, 241)),),
)
