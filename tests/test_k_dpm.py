"""What the conformance suite does not express for k-diffusion's samplers (`tests/specs/k_dpm.py` holds their
tables): the loader of k-diffusion's `sampling.py`, the README's table of classes beyond diffusers, and 3M SDE's
noise from one Brownian tree per row (k-diffusion's list of seeds) in a whole loop, and the SDE samplers' weak order
on the Gaussian problem (the suite's `Order` measures the eta = 0 ODE only)."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import functional_sched as fs
from functional_sched.adapters import k_diffusion
from functional_sched.testing import gaussian, latents, toy_model

pytestmark = pytest.mark.skipif(
    not k_diffusion.available(),
    reason="k-diffusion's wheel is not installed: pip install --no-deps k-diffusion==0.1.1.post1",
)

README = Path(__file__).resolve().parents[1] / "README.md"


def test_sampling_loads_without_the_package_and_leaves_nothing_imported() -> None:
    module = k_diffusion.sampling_module()
    assert module is k_diffusion.sampling_module()  # loaded once
    assert k_diffusion.sampler("sample_dpmpp_3m_sde") is module.sample_dpmpp_3m_sde
    assert module.utils.append_dims(torch.ones(2), 3).shape == (2, 1, 1)  # k-diffusion's own function
    assert not [name for name in sys.modules if name == "k_diffusion" or name.startswith("k_diffusion.")]
    with pytest.raises(KeyError, match="has no 'sample_nothing'"):
        k_diffusion.sampler("sample_nothing")


def test_readme_table_of_classes_beyond_diffusers_is_true() -> None:
    """The "Beyond diffusers" table: each row names a registered class and its reference ("supported"), and every
    class held to k-diffusion is listed."""
    section = README.read_text().split("### Beyond diffusers", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| ([\w-]+) `(\w+)`[^|]* \| ([^|]+) \| `(\w+)` \|$", section, flags=re.MULTILINE)
    assert rows and all(status.strip() == "supported" for _, _, status, _ in rows)
    registered = {(cls.reference_library, cls.diffusers_name, cls.__name__) for cls in fs.SCHEDULERS}
    listed = {(library, name, ours) for library, name, _, ours in rows}
    assert listed <= registered, listed - registered
    held_to_k_diffusion = {entry for entry in registered if entry[0] == "k-diffusion"}
    assert held_to_k_diffusion <= listed, held_to_k_diffusion - listed


def test_3m_sde_with_a_tree_per_row_matches_k_diffusion() -> None:
    """k-diffusion's `BrownianTreeNoiseSampler` with one seed per row (a tree each) against `brownian_noise` with the
    same seeds: the whole loop, bit for bit (a row's noise is then its own, whatever shares the batch)."""
    sched = fs.DPMSolverPlusPlus3MSDE(eta=0.8)
    seeds = [11, 2**33]
    x = latents((2, 4, 8, 8), torch.float32, 3)
    sigmas = k_diffusion.sampler("get_sigmas_karras")(10, sched.sigma_min, sched.sigma_max, sched.rho)
    x = x * sigmas[0]
    tree = k_diffusion.sampler("BrownianTreeNoiseSampler")(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchsde: a float32 sigma a rounding outside its range
        expected = k_diffusion.sampler("sample_dpmpp_3m_sde")(
            toy_model, x.clone(), sigmas, disable=True, eta=0.8, noise_sampler=tree
        )
    state, sample = sched.init(10, sample=x), x
    while sched.steps_left(state):
        noise = fs.brownian_noise(sched, state, sample, seeds)
        sample, state = sched.step(state, toy_model(sample, sched.timestep(state)), sample, noise=noise)
    assert torch.equal(sample, expected)


# Measured slopes over 20-160 steps: 1.97 (2S a, eta 1 and 0.5), 1.94 and 1.87 (3M SDE, eta 1 and 0.5).
WEAK_ORDER_TWO = {
    "2s-ancestral": fs.DPMSolverPlusPlus2SAncestral(),
    "2s-ancestral-eta-half": fs.DPMSolverPlusPlus2SAncestral(eta=0.5),
    "3m-sde": fs.DPMSolverPlusPlus3MSDE(),
    "3m-sde-eta-half": fs.DPMSolverPlusPlus3MSDE(eta=0.5),
}


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=(pytest.mark.slow,) if "half" in name else ()) for name in WEAK_ORDER_TWO]
)
def test_weak_order_two(name: str) -> None:
    """The SDE samplers' weak error on the Gaussian problem (the law of their samples against the data's marginal,
    `gaussian.weak_error_of_states`) falls like N^-2: the exponential integrators are exact on the linear part."""
    steps = (20, 40, 80, 160)
    errors = [gaussian.weak_error_of_states(WEAK_ORDER_TWO[name], count) for count in steps]
    slope = gaussian.fitted_order(steps, errors)
    assert abs(slope - 2) <= 0.2 and errors == sorted(errors, reverse=True), (slope, errors)


def test_weak_error_of_states_is_weak_error_on_a_one_call_sampler() -> None:
    sched = fs.EulerAncestralDiscrete()
    assert gaussian.weak_error_of_states(sched, 12) == pytest.approx(gaussian.weak_error(sched, 12), rel=1e-12)


@pytest.mark.parametrize(
    ("scheduler", "name", "calls_per_interval"),
    [
        (fs.DPMSolverPlusPlus2SAncestral(eta=0.7), "sample_dpmpp_2s_ancestral", 2),
        (fs.DPMSolverPlusPlus3MSDE(eta=0.0), "sample_dpmpp_3m_sde", 1),
    ],
    ids=["2s-ancestral", "3m-ode"],
)
def test_img2img_start_is_k_diffusion_on_the_tables_tail(scheduler: Any, name: str, calls_per_interval: int) -> None:
    """An img2img start, `init(n, begin_index=...)` at interval k's first call, is k-diffusion's loop on
    `sigmas[k:]` (how its callers start img2img), bit for bit: the warm-up of 3M restarts, 2S's calls line up. (3M
    with eta > 0 differs by design: its tree spans the whole schedule, k-diffusion's the tail's range.)"""
    sigmas = k_diffusion.sampler("get_sigmas_karras")(10, scheduler.sigma_min, scheduler.sigma_max, scheduler.rho)
    image, noise = latents((2, 4, 8, 8), torch.float32, 5), latents((2, 4, 8, 8), torch.float32, 6)
    start = 4
    x = image + noise * sigmas[start]
    generator = torch.Generator().manual_seed(2)
    draw = lambda sigma, sigma_next: torch.randn(x.shape, generator=generator)  # noqa: E731
    expected = k_diffusion.sampler(name)(
        toy_model, x.clone(), sigmas[start:], disable=True, eta=scheduler.eta, noise_sampler=draw
    )
    state = scheduler.init(10, sample=image, begin_index=start * calls_per_interval)
    assert torch.equal(scheduler.add_noise(state, image, noise), x)
    generator, sample = torch.Generator().manual_seed(2), x
    while scheduler.steps_left(state):
        drawn = torch.randn(x.shape, generator=generator) if scheduler._draws_noise(state) else torch.zeros_like(x)
        drawn = drawn if scheduler.stochastic else None
        sample, state = scheduler.step(state, toy_model(sample, scheduler.timestep(state)), sample, noise=drawn)
    assert torch.equal(sample, expected)
