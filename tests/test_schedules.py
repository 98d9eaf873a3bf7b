"""Unit tests of the host-side schedule math (`functional_sched/math/schedules.py`, `beta_quantile.py`) against the
references it reproduces: numpy, scipy, and diffusers 0.42.1's own helpers, run here in the test."""

from __future__ import annotations

import math

import diffusers
import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from diffusers.schedulers import scheduling_dpmsolver_multistep as diffusers_dpm

from functional_sched.math import beta_quantile as _beta_quantile
from functional_sched.math import schedules

# diffusers' DPMSolverMultistepScheduler.set_timesteps calls np.array on a tensor (numpy 2 warns).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def assert_bit_equal(actual: torch.Tensor, expected: np.ndarray | torch.Tensor) -> None:
    expected = torch.from_numpy(np.ascontiguousarray(expected)) if isinstance(expected, np.ndarray) else expected
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.equal(actual, expected), (actual - expected).abs().max()


# ------------------------------------------------------------------------------------------ numpy semantics
@pytest.mark.parametrize("start", [0, 1, -3.5, 0.1, 1e-3, 999, 1000])
@pytest.mark.parametrize("stop", [0, 1, -2, 1 / 3, 7.25, 999, 1000])
def test_np_linspace_matches_numpy(start: float, stop: float) -> None:
    for num in (0, 1, 2, 3, 7, 10, 26, 51, 1000):
        assert_bit_equal(schedules.np_linspace(start, stop, num), np.linspace(start, stop, num))


@pytest.mark.parametrize("start", [0, 1, 500.5, 999, 1000, 1100])
@pytest.mark.parametrize("step", [-1, -0.7, -1000 / 3, -1000 / 7, -1000 / 50, -333.3333333333333, 1, 2.5, 1000 / 3])
def test_np_arange_matches_numpy(start: float, step: float) -> None:
    for stop in (0, 1, -1, 3.3, 1000):
        assert_bit_equal(schedules.np_arange(start, stop, step), np.arange(start, stop, step).astype(np.float64))


def test_np_arange_trailing_spacing() -> None:
    """diffusers' trailing spacing: `np.arange(last_timestep, 0, -num_train_timesteps / n)` (float step)."""
    for train in (1000, 1100):
        for n in range(1, 201):
            assert_bit_equal(schedules.np_arange(train, 0, -train / n), np.arange(train, 0, -train / n))
        for last in (train, train - 7):
            for n in (3, 7, 25, 50):
                assert_bit_equal(schedules.np_arange(last, 0, -(train / n)), np.arange(last, 0, -(train / n)))


# --------------------------------------------------------------------------------------------- beta quantile
# Quantiles where diffusers evaluates scipy: `1 - np.linspace(0, 1, n)` for every step count up to 60, plus a grid.
QUANTILES = sorted({float(q) for n in range(1, 61) for q in 1 - np.linspace(0, 1, n)} | set(np.linspace(0, 1, 101)))


@pytest.mark.parametrize("a, b", [(0.6, 0.6), (2.0, 3.0), (5.0, 0.8), (0.3, 2.0)])
def test_regularized_incomplete_beta_matches_scipy(a: float, b: float) -> None:
    for x in np.linspace(0, 1, 401):
        expected = scipy.special.betainc(a, b, x)
        assert math.isclose(_beta_quantile.regularized_incomplete_beta(float(x), a, b), expected, rel_tol=1e-13)


@pytest.mark.parametrize(
    "a, b",
    [
        pytest.param(0.6, 0.6, id="diffusers-0.6-0.6"),
        pytest.param(2.0, 3.0, id="2-3"),
        pytest.param(5.0, 0.8, id="5-0.8"),
        pytest.param(0.3, 2.0, id="0.3-2"),
    ],
)
def test_beta_quantile_matches_scipy(a: float, b: float) -> None:
    """rel 1e-13 of scipy.stats.beta.ppf, including quantiles where the root sits at a bisection midpoint."""
    for q in QUANTILES:
        expected = scipy.stats.beta.ppf(q, a, b)
        assert math.isclose(_beta_quantile.beta_quantile(q, a, b), expected, rel_tol=1e-13, abs_tol=1e-300), q


@pytest.mark.parametrize("a, b, q", [(0.6, 0.6, 0.5), (2.0, 3.0, 0.3380281690140845), (5.0, 0.8, 0.225)])
def test_beta_quantile_at_bisection_points(a: float, b: float, q: float) -> None:
    assert math.isclose(_beta_quantile.beta_quantile(q, a, b), scipy.stats.beta.ppf(q, a, b), rel_tol=1e-13)


def test_beta_quantile_ends() -> None:
    assert _beta_quantile.beta_quantile(0.0, 0.6, 0.6) == scipy.stats.beta.ppf(0.0, 0.6, 0.6) == 0.0
    assert _beta_quantile.beta_quantile(1.0, 0.6, 0.6) == scipy.stats.beta.ppf(1.0, 0.6, 0.6) == 1.0


# --------------------------------------------------------------------------------------------- betas, alphas
BETA_CONFIGS = [
    {"beta_schedule": "linear"},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"beta_schedule": "linear", "num_train_timesteps": 500, "beta_start": 0.0002, "beta_end": 0.03},
]


@pytest.mark.parametrize("config", BETA_CONFIGS, ids=lambda c: f"{c['beta_schedule']}-{c.get('num_train_timesteps')}")
@pytest.mark.parametrize("zero_snr", [False, True])
def test_betas_and_alphas_cumprod_match_diffusers(config: dict, zero_snr: bool) -> None:
    reference = diffusers.DPMSolverMultistepScheduler(**config, rescale_betas_zero_snr=zero_snr)
    train = config.get("num_train_timesteps", 1000)
    betas = schedules.betas(
        train, config.get("beta_start", 0.0001), config.get("beta_end", 0.02), config["beta_schedule"]
    )
    if zero_snr:
        assert_bit_equal(schedules.rescale_zero_terminal_snr(betas), reference.betas)
    else:
        assert_bit_equal(betas, reference.betas)
    cumulative = schedules.alphas_cumprod(betas, zero_snr)
    assert_bit_equal(cumulative, reference.alphas_cumprod)
    # The initial (training) sigma table diffusers keeps: sqrt((1 - a) / a).
    assert_bit_equal(schedules.vp_sigmas(cumulative), reference.sigmas)


def test_squaredcos_and_rescale_match_diffusers_functions() -> None:
    for train in (10, 1000, 1200):
        assert_bit_equal(
            schedules.betas(train, 0.0, 0.0, "squaredcos_cap_v2"), diffusers_dpm.betas_for_alpha_bar(train)
        )
    betas = schedules.betas(1000, 0.00085, 0.012, "scaled_linear")
    assert_bit_equal(schedules.rescale_zero_terminal_snr(betas), diffusers_dpm.rescale_zero_terminal_snr(betas.clone()))


def test_trained_betas_match_diffusers() -> None:
    trained = np.linspace(0.0001, 0.02, 1000) ** 1.1
    reference = diffusers.DPMSolverMultistepScheduler(trained_betas=trained)
    assert_bit_equal(schedules.betas(1000, 0.0001, 0.02, "linear", tuple(trained)), reference.betas)


def test_unknown_beta_schedule_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"beta_schedule='cubic'.*'linear', 'scaled_linear', 'squaredcos_cap_v2'"):
        schedules.betas(1000, 0.0001, 0.02, "cubic")


def test_vp_alpha_sigma_matches_diffusers() -> None:
    reference = diffusers.DPMSolverMultistepScheduler()
    sigmas = reference.sigmas[::37].clone()
    alpha, sigma = schedules.vp_alpha_sigma(sigmas)
    expected_alpha, expected_sigma = reference._sigma_to_alpha_sigma_t(sigmas)
    assert_bit_equal(alpha, expected_alpha)
    assert_bit_equal(sigma, expected_sigma)
    flow = diffusers.DPMSolverMultistepScheduler(use_flow_sigmas=True)
    for actual, expected in zip(schedules.flow_alpha_sigma(sigmas), flow._sigma_to_alpha_sigma_t(sigmas), strict=True):
        assert_bit_equal(actual, expected)


# ------------------------------------------------------------------------------------------ spaced timesteps
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("steps_offset", [0, 1])
@pytest.mark.parametrize(
    "config",
    [
        {"beta_schedule": "linear"},
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
        {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1},
        {"beta_schedule": "linear", "num_train_timesteps": 1100},
    ],
    ids=["linear", "scaled_linear", "cosine-clipped", "linear-1100"],
)
def test_spaced_timesteps_match_dpm_solver(spacing: str, steps_offset: int, config: dict) -> None:
    reference = diffusers.DPMSolverMultistepScheduler(**config, timestep_spacing=spacing, steps_offset=steps_offset)
    train = reference.config.num_train_timesteps
    # diffusers' clipping of the smallest lambda, read off its own tables.
    clipped = torch.searchsorted(torch.flip(reference.lambda_t, [0]), reference.config.lambda_min_clipped).item()
    for n in (1, 2, 3, 7, 10, 20, 25, 27, 50, 81, 100, 999):
        reference.set_timesteps(n)
        actual = schedules.spaced_timesteps(spacing, n, train, steps_offset, train - clipped)
        assert_bit_equal(actual, reference.timesteps)


def test_unknown_spacing_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"timestep_spacing='uniform'.*'linspace', 'leading', 'trailing'"):
        schedules.spaced_timesteps("uniform", 10, 1000, 0, 1000)


# --------------------------------------------------------------------------------------- sigma conversions
FLOW = diffusers.FlowMatchEulerDiscreteScheduler()
DPM = diffusers.DPMSolverMultistepScheduler()
SIGMA_RANGES = [(0.0292, 14.6146), (0.002, 80.0), (0.03, 1.0), (1e-3, 0.9997)]


@pytest.mark.parametrize("sigma_min, sigma_max", SIGMA_RANGES)
def test_karras_exponential_beta_sigmas_match_diffusers(sigma_min: float, sigma_max: float) -> None:
    """float64 values within an ulp or two (torch's and numpy's pow/exp may round differently), and equal once
    cast to float32, the precision diffusers' tables end in."""
    ends = np.array([sigma_max, sigma_min])
    pairs = [
        (schedules.karras_sigmas, FLOW._convert_to_karras),
        (schedules.exponential_sigmas, FLOW._convert_to_exponential),
        (schedules.beta_sigmas, FLOW._convert_to_beta),
    ]
    for n in (1, 2, 3, 7, 10, 11, 25, 50):
        for ours, theirs in pairs:
            expected = torch.from_numpy(theirs(in_sigmas=ends, num_inference_steps=n))
            actual = ours(sigma_min, sigma_max, n)
            torch.testing.assert_close(actual, expected, rtol=1e-12, atol=0)
            assert torch.equal(actual.float(), expected.float()), (ours.__name__, n)


def test_lu_log_sigmas_match_diffusers() -> None:
    for low, high in [(-3.2, 4.5), (-5.1, 10.2), (-0.5, 0.5)]:
        for n in (1, 2, 7, 25):
            expected = DPM._convert_to_lu(in_lambdas=np.array([high, low]), num_inference_steps=n)
            assert_bit_equal(schedules.lu_log_sigmas(low, high, n), expected)


LOG_SIGMAS = np.log((((1 - DPM.alphas_cumprod) / DPM.alphas_cumprod) ** 0.5).numpy())  # float32, as diffusers keeps
SIGMA_GRID = np.concatenate([np.geomspace(1e-12, 200.0, 301), [0.0292, 1.0, 14.6146, 157.4]])


def test_sigma_to_t_timesteps_match_diffusers() -> None:
    """What the tables use: diffusers rounds (or truncates to int64) the fractional timesteps."""
    expected = np.array([DPM._sigma_to_t(sigma, LOG_SIGMAS) for sigma in SIGMA_GRID])
    actual = schedules.sigma_to_t(torch.from_numpy(SIGMA_GRID), torch.from_numpy(LOG_SIGMAS))
    torch.testing.assert_close(actual, torch.from_numpy(expected), rtol=1e-12, atol=1e-8)
    assert_bit_equal(actual.round().to(torch.int64), torch.from_numpy(expected.round()).to(torch.int64))
    assert_bit_equal(actual.to(torch.int64), torch.from_numpy(expected).to(torch.int64))


def test_sigma_to_t_within_float64_rounding_of_diffusers() -> None:
    """Same operations in the same precisions as diffusers' `_sigma_to_t` (incl. its float32 `low - high`); only
    numpy's and torch's float64 `log` may differ in the last bit, so allow a few float64 ulps."""
    expected = np.array([DPM._sigma_to_t(sigma, LOG_SIGMAS) for sigma in SIGMA_GRID])
    actual = schedules.sigma_to_t(torch.from_numpy(SIGMA_GRID), torch.from_numpy(LOG_SIGMAS))
    torch.testing.assert_close(actual, torch.from_numpy(expected), rtol=1e-15, atol=1e-13)


# ------------------------------------------------------------------------------------------------ flow shifts
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["exponential", "linear"])
def test_time_shift_matches_diffusers(dtype: type, kind: str) -> None:
    """float64 for the default schedule (np.linspace / 1000), float32 for custom sigmas (np.array(...).astype)."""
    reference = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, time_shift_type=kind)
    sigmas = (np.linspace(1000, 1, 37) / 1000).astype(dtype)
    for mu in (0.3, 0.5, 1.15, 2.05, math.log(3.0)):
        expected = reference.time_shift(mu, 1.0, sigmas)
        assert_bit_equal(schedules.time_shift(torch.from_numpy(sigmas), mu, kind), expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_shift_and_stretch_match_diffusers(dtype: type) -> None:
    sigmas = (np.linspace(1000, 1, 29) / 1000).astype(dtype)
    for shift in (1.0, 3.0, 7.0, 0.5):
        # diffusers' static shift, inline in set_timesteps: shift * s / (1 + (shift - 1) * s)
        expected = shift * sigmas / (1 + (shift - 1) * sigmas)
        assert_bit_equal(schedules.shift_sigmas(torch.from_numpy(sigmas), shift), expected)
    for terminal in (0.02, 0.1, 0.3):
        reference = diffusers.FlowMatchEulerDiscreteScheduler(shift_terminal=terminal)
        expected = reference.stretch_shift_to_terminal(sigmas)
        assert_bit_equal(schedules.stretch_to_terminal(torch.from_numpy(sigmas), terminal), expected)


def test_as_float_table_matches_numpy_astype() -> None:
    values = [1.0, 0.7333333333333333, 1 / 3, 0.1, 1e-8]
    for dtype, np_dtype in ((torch.float32, np.float32), (torch.float64, np.float64)):
        assert_bit_equal(schedules.as_float_table(values, dtype), np.array(values).astype(np_dtype))
        assert_bit_equal(
            schedules.as_float_table(torch.tensor(values, dtype=torch.float64), dtype),
            np.array(values).astype(np_dtype),
        )
