"""The inverse schedulers beyond their conformance tables (`tests/specs/inverse.py`): the round trip an editing
pipeline makes (invert a clean sample towards noise, then sample it back with the forward class), bit for bit as
diffusers makes it and within a measured bound of where it started; the second order of DPM-Solver++'s update run
towards noise; and the options refused where diffusers runs on but would be silently wrong."""

from __future__ import annotations

import itertools

import diffusers
import pytest
import torch

import functional_sched as fs
from functional_sched.adapters import from_diffusers
from functional_sched.testing import gaussian

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
# Stable Diffusion 1.5 / 2.1-base, as DiffEdit builds both schedulers from it (DDIM's keys; the DPM classes have no
# set_alpha_to_one or clip_sample).
SD = {**SCALED_LINEAR, "steps_offset": 1}
SD_DDIM = {**SD, "set_alpha_to_one": False, "clip_sample": False}
ALPHA_BAR = torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2, 0)  # SD's, float32

# (inverse, forward, diffusers' inverse, diffusers' forward, options)
PAIRS = {
    "ddim": (fs.DDIMInverse, fs.DDIM, diffusers.DDIMInverseScheduler, diffusers.DDIMScheduler, SD_DDIM),
    "dpm++2m": (
        fs.DPMSolverMultistepInverse,
        fs.DPMSolverMultistep,
        diffusers.DPMSolverMultistepInverseScheduler,
        diffusers.DPMSolverMultistepScheduler,
        SD,
    ),
}
# Max-abs round-trip error (data spread up to 1.6, means up to 1.5) measured on diffusers 0.42.1, with 10% headroom.
# DDIM's inversion is first order (the model is asked at the timestep the step goes to, with the sample still where
# it starts); DPM-Solver's round trip is held back by the first, long step from timestep 0 of both schedules.
ROUND_TRIP_BOUND = {("ddim", 10): 0.48, ("ddim", 50): 0.124, ("dpm++2m", 10): 0.382, ("dpm++2m", 50): 0.139}


def exact_epsilon(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The Gaussian problem's exact epsilon model on SD's schedule, called as a UNet is: at the timestep it is given
    (computed in float64 from the float32 sample, returned in its dtype: both sides get the same bits)."""
    a = ALPHA_BAR[int(t)].to(torch.float64)
    return gaussian.model_output("epsilon", x.double(), a**0.5, (1 - a) ** 0.5).to(x.dtype)


def our_loop(scheduler: fs.Scheduler, x: torch.Tensor, steps: int) -> torch.Tensor:
    state = scheduler.init(steps, sample=x)
    for _ in range(len(scheduler.timesteps(state))):
        x, state = scheduler.step(state, exact_epsilon(x, scheduler.timestep(state)[0]), x)
    return x


def diffusers_loop(scheduler: object, x: torch.Tensor, steps: int) -> torch.Tensor:
    scheduler.set_timesteps(steps)  # type: ignore[attr-defined]
    for t in scheduler.timesteps:  # type: ignore[attr-defined]
        x = scheduler.step(exact_epsilon(x, t), t, x, return_dict=False)[0]  # type: ignore[attr-defined]
    return x


def clean_sample() -> torch.Tensor:
    return (gaussian.MU + gaussian.SPREAD * gaussian.NOISE).to(torch.float32)


@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_inversion_round_trip_equals_diffusers(pair: str, steps: int) -> None:
    """DiffEdit's round trip: invert with ours, sample back with the forward class. Both legs equal diffusers' bit
    for bit, and the sample comes back within the measured bound."""
    inverse, forward, diffusers_inverse, diffusers_forward, options = PAIRS[pair]
    x0 = clean_sample()
    noised = our_loop(inverse(**options), x0, steps)
    back = our_loop(forward(**options), noised, steps)
    theirs_noised = diffusers_loop(diffusers_inverse.from_config(diffusers_forward(**options).config), x0, steps)
    theirs_back = diffusers_loop(diffusers_forward(**options), theirs_noised, steps)
    assert torch.equal(noised, theirs_noised)
    assert torch.equal(back, theirs_back)
    # Inverted, the sample is noise: unit spread (the data's own was 0.2 to 1.6 per dimension).
    assert abs(noised.std().item() - 1) < 0.15
    error = (back - x0).abs().max().item()
    assert error <= ROUND_TRIP_BOUND[pair, steps], error


def test_ddim_round_trip_is_first_order() -> None:
    inverse, forward, *_, options = PAIRS["ddim"]
    x0 = clean_sample()
    errors = [
        (our_loop(forward(**options), our_loop(inverse(**options), x0, n), n) - x0).abs().max().item()
        for n in (25, 50, 100)
    ]
    assert all(0.45 < finer / coarser < 0.56 for coarser, finer in itertools.pairwise(errors)), errors


def lambda_uniform_error(scheduler: fs.DPMSolverMultistepInverse, steps: int) -> float:
    """The float64 error of `steps` inverse steps with the exact model on sigmas uniform in lambda, from SD's first
    training sigma to 150 times it (the solver's update on a table: diffusers' spacings keep a long first step)."""
    sigmas = torch.exp(torch.linspace(torch.log(torch.tensor(0.0292)), torch.log(torch.tensor(4.38)), steps + 1))
    host_plan = scheduler._tables_plan(torch.arange(steps), sigmas.double(), torch.float64)
    state = scheduler._init_on(host_plan, gaussian.NOISE, 0)
    levels = [scheduler._alpha_sigma(sigma) for sigma in scheduler.sigmas(state)]
    x_start = gaussian.start_sample(*levels[0])
    x = x_start
    for _ in range(steps):
        x, state = scheduler.step(state, gaussian.exact_output(scheduler, state, x), x)
    return (x - gaussian.exact_solution(x_start, levels[0], levels[steps])).abs().max().item()


@pytest.mark.parametrize(
    ("options", "order"),
    [
        ({}, 2),
        ({"solver_type": "heun"}, 2),
        ({"algorithm_type": "dpmsolver"}, 2),
        ({"prediction_type": "v_prediction"}, 2),
        ({"solver_order": 1}, 1),
        # Second order, not third, as the forward class (tests/specs/dpm_solver.py says why).
        ({"solver_order": 3}, 2),
    ],
)
def test_dpm_solver_inverse_order_towards_noise(options: dict, order: int) -> None:
    counts = (20, 40, 80, 160)
    errors = [lambda_uniform_error(fs.DPMSolverMultistepInverse(**options), n) for n in counts]
    slope = gaussian.fitted_order(counts, errors)
    assert abs(slope - order) <= 0.3, (slope, errors)
    assert errors == sorted(errors, reverse=True), errors


def test_karras_timesteps_that_round_alike_are_refused() -> None:
    """Karras sigmas on the cosine schedule round to timestep 0 twice at 8 steps: diffusers drops the repeat but
    keeps its sigma, so its table holds one sigma too many and each later step reads the next timestep's sigma."""
    options = {"beta_schedule": "squaredcos_cap_v2", "use_karras_sigmas": True}
    reference = diffusers.DPMSolverMultistepInverseScheduler(**options)
    reference.set_timesteps(8)
    assert len(reference.sigmas) > len(reference.timesteps) + 1
    with pytest.raises(ValueError, match="repeat a timestep"):
        fs.DPMSolverMultistepInverse(**options).init(8, sample=torch.zeros(1, 4))


def test_flow_sigmas_are_refused_by_name() -> None:
    """diffusers' inverse flow schedule is its forward one: sigmas from about 1 down, which denoises."""
    reference = diffusers.DPMSolverMultistepInverseScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")
    reference.set_timesteps(8)
    assert bool((reference.sigmas[1:-1] < reference.sigmas[:-2]).all())
    with pytest.raises(NotImplementedError, match="use_flow_sigmas=True"):
        from_diffusers(reference)


def test_a_registered_sigma_range_is_refused() -> None:
    """A pipeline's registered `sigma_min`/`sigma_max` (Cosmos 2's, on the forward class) turn diffusers' inverse
    Karras sigmas around: from sigma_max down, a schedule that denoises."""
    reference = diffusers.DPMSolverMultistepInverseScheduler(use_karras_sigmas=True)
    reference.register_to_config(sigma_min=0.002, sigma_max=80.0)
    reference.set_timesteps(8)
    assert bool((reference.sigmas[1:-1] < reference.sigmas[:-2]).all())
    with pytest.raises(NotImplementedError, match="registered sigma range"):
        from_diffusers(reference)
    plain = diffusers.DPMSolverMultistepInverseScheduler()
    plain.register_to_config(sigma_min=0.002, sigma_max=80.0)  # read by no spacing of the default schedule
    assert from_diffusers(plain) == fs.DPMSolverMultistepInverse()


@pytest.mark.parametrize("algorithm_type", ["sde-dpmsolver++", "sde-dpmsolver"])
def test_sde_variants_are_nan_in_diffusers_and_refused(algorithm_type: str) -> None:
    reference = diffusers.DPMSolverMultistepInverseScheduler(algorithm_type=algorithm_type)
    reference.set_timesteps(8)
    x = clean_sample()
    t = reference.timesteps[0]
    assert bool(reference.step(exact_epsilon(x, t), t, x, generator=torch.Generator()).prev_sample.isnan().all())
    with pytest.raises(ValueError, match="cannot step towards noise"):
        from_diffusers(reference)


def test_diffedit_configs_map() -> None:
    """`DDIMInverseScheduler.from_config(pipe.scheduler.config)` of SD 2.1-base's PNDM config (its `skip_prk_steps`
    dropped), and the deprecated `set_alpha_to_zero`, which diffusers takes as `set_alpha_to_one`."""
    pndm = diffusers.PNDMScheduler(**SD, skip_prk_steps=True, set_alpha_to_one=False)
    ours = from_diffusers(diffusers.DDIMInverseScheduler.from_config(pndm.config))
    assert ours == fs.DDIMInverse(**SD, set_alpha_to_one=False)
    with pytest.warns(FutureWarning):
        deprecated = diffusers.DDIMInverseScheduler(set_alpha_to_zero=False)
    assert from_diffusers(deprecated) == fs.DDIMInverse(set_alpha_to_one=False)
    dpm = from_diffusers(diffusers.DPMSolverMultistepInverseScheduler.from_config(pndm.config))
    assert dpm == fs.DPMSolverMultistepInverse(**SD)
