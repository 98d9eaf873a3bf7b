"""Accuracy beyond parity: each solver's true error against a closed-form probability-flow solution.

Data: x0 ~ N(mu, diag(s^2)), each of D dims with its own mean and spread. Noised, x_t = alpha_t x0 + sigma_t eps, with
(alpha, sigma) = (1 / sqrt(1 + S^2), S / sqrt(1 + S^2)) for a VP schedule's sigma S, and (1 - S, S) for rectified
flow. The model is the exact denoiser, the posterior mean

    x0_hat(x_t) = E[x0 | x_t] = mu + alpha s^2 (x_t - alpha mu) / (alpha^2 s^2 + sigma^2),

from which eps_hat = (x_t - alpha x0_hat) / sigma, v = alpha eps_hat - sigma x0_hat and the flow velocity
eps_hat - x0_hat. The probability-flow ODE then has a closed form. In y = x / alpha and s~ = sigma / alpha (every
such schedule reduces to this, the DDIM ODE), dy/ds~ = eps_hat = (y - x0_hat) / s~, and x0_hat = mu + s^2 (y - mu) /
(s^2 + s~^2), so d(y - mu)/ds~ = (y - mu) s~ / (s^2 + s~^2), whose solution is (y - mu) proportional to
sqrt(s^2 + s~^2). Multiplying back by alpha:

    x_t = alpha_t mu + sqrt(alpha_t^2 s^2 + sigma_t^2) (x_T - alpha_T mu) / sqrt(alpha_T^2 s^2 + sigma_T^2),

the affine map that carries the marginal N(alpha_T mu, alpha_T^2 s^2 + sigma_T^2) onto the one at t.
`test_closed_form_solves_the_probability_flow_ode` checks it against a fine RK4 solve.

The convergence tests run each solver in float64 (float64 samples get float64 plans) from x_T at the table's first
sigma over several step counts and fit the log-log slope of the final max-abs error against the step count. The
schedule matters: diffusers' default VP schedules (linspace timesteps) end with a step from t ~ 1000 / N to t = 0
whose size in lambda = log(alpha / sigma) shrinks only like log N, so no solver shows its order there (DPM++ 2M
measures ~1.5 over 10-80 steps). Sigmas spaced exponentially (uniform in lambda, the variable these solvers
integrate in) or Karras sigmas (a smooth warp of it) refine every step like 1 / N. Those tables end at sigma_min
and, with final_sigmas_type="sigma_min", append it again, so the last listed step has length zero; the comparison
is made at sigmas[N - 1] after N - 1 steps, all at full order (lower_order_final=False, euler_at_final=False).
What the final options do: lower_order_final only acts below 15 steps; euler_at_final and lower-order finals only
change the zero-length step; final_sigmas_type="zero" adds an Euler step from sigma_min to 0, which returns the
denoiser's x0_hat exactly (`test_final_step_to_zero_returns_the_denoised_sample`) and whose O(sigma_min^2) error
becomes a floor once the solver error falls below it (DPM++ 3M, 160 steps).

Measured on this problem (local slopes between doublings, then the asserted band):
- flow Euler: 1.0. DPM++ 1 and UniP-1: 1.0. DPM++ 2M (midpoint, heun), DPM-Solver 2: 2.0.
- DPM++ 3M and DPM-Solver 3: 3.0 at 10-20 steps falling to 2.03 at 160-320: diffusers' (and the reference
  dpm-solver code's) multistep third-order update takes D2 = (D1_0 - D1_1) / (r0 + r1), which estimates
  h^2 x0_hat'' / 2, while its weight alpha_t ((e^-h - 1 + h) / h^2 - 1/2) ~ -alpha_t h / 6 needs h^2 x0_hat'' (the
  Taylor term is alpha_t h^3 x0_hat'' / 6). The update is thus second order with a smaller constant; the same
  multistep with D2 doubled measures >= 4 here. We reproduce diffusers, so we assert 2 (and that 3M beats 2M).
- UniPC (Zhao et al. 2023, "UniPC", Theorem 3.1/3.2: the corrector UniC raises the order of UniP-p by one):
  UniPC-1 2.0 (bh2) and 2.2 (bh1); UniPC-2 3.0 (bh2, predict_x0 either way, and on rectified flow with Karras
  sigmas), 3.1-3.2 (bh1), against 2.0 for UniP-2 (disable_corrector on every step). Order 3 is superconvergent on
  this problem (UniP-3 ~4.2, UniPC-3 3.3-3.9 and rising), so it only gets a lower bound.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import functional_sched as fs

DIMS, ROWS = 64, 4
MU = torch.linspace(-1.5, 1.5, DIMS, dtype=torch.float64)
SPREAD = torch.linspace(0.2, 1.6, DIMS, dtype=torch.float64)  # s, per dim
NOISE = torch.randn(ROWS, DIMS, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
BAND = 0.3  # allowed distance of a fitted slope from the order


# ------------------------------------------------------------------------------------------------ the problem
def alpha_sigma(sigma: torch.Tensor, flow: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if flow:
        return 1 - sigma, sigma
    alpha = 1 / torch.sqrt(1 + sigma**2)
    return alpha, sigma * alpha


def marginal_std(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(alpha**2 * SPREAD**2 + sigma**2)


def denoiser(prediction_type: str, x: torch.Tensor, sigma: torch.Tensor, flow: bool) -> torch.Tensor:
    """The exact model output for `prediction_type` at table sigma `sigma`."""
    alpha, sigma_t = alpha_sigma(sigma, flow)
    x0 = MU + alpha * SPREAD**2 * (x - alpha * MU) / marginal_std(alpha, sigma_t) ** 2
    eps = (x - alpha * x0) / sigma_t
    outputs = {"epsilon": eps, "sample": x0, "v_prediction": alpha * eps - sigma_t * x0, "flow_prediction": eps - x0}
    return outputs[prediction_type]


def exact_solution(x_start: torch.Tensor, start: torch.Tensor, end: torch.Tensor, flow: bool) -> torch.Tensor:
    """The probability-flow ODE carried from table sigma `start` to `end` (closed form, module docstring)."""
    alpha_start, sigma_start = alpha_sigma(start, flow)
    alpha_end, sigma_end = alpha_sigma(end, flow)
    whitened = (x_start - alpha_start * MU) / marginal_std(alpha_start, sigma_start)
    return alpha_end * MU + marginal_std(alpha_end, sigma_end) * whitened


def start_sample(sigma: torch.Tensor, flow: bool) -> torch.Tensor:
    """Rows drawn from the marginal at `sigma`."""
    alpha, sigma_t = alpha_sigma(sigma, flow)
    return alpha * MU + marginal_std(alpha, sigma_t) * NOISE


# ------------------------------------------------------------------------------------------------ the sanity check
def rk4(derivative: Callable[[torch.Tensor, float], torch.Tensor], y: torch.Tensor, grid: np.ndarray) -> torch.Tensor:
    for u0, u1 in itertools.pairwise(grid):
        h = u1 - u0
        k1 = derivative(y, u0)
        k2 = derivative(y + h / 2 * k1, u0 + h / 2)
        k3 = derivative(y + h / 2 * k2, u0 + h / 2)
        k4 = derivative(y + h * k3, u1)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


def test_closed_form_solves_the_probability_flow_ode() -> None:
    """The closed form against RK4 with 4000 steps, in float64, driven by the same denoiser the solvers see."""
    # VP: y = x / alpha, s~ = S (the VP table sigma is already sigma / alpha); dy/du = s~ eps_hat with u = log s~.
    start, end = torch.tensor(80.0, dtype=torch.float64), torch.tensor(0.02, dtype=torch.float64)
    x_start = start_sample(start, flow=False)

    def vp(y: torch.Tensor, u: float) -> torch.Tensor:
        sigma = torch.tensor(math.exp(u), dtype=torch.float64)
        alpha, _ = alpha_sigma(sigma, flow=False)
        return sigma * denoiser("epsilon", alpha * y, sigma, flow=False)

    grid = np.linspace(math.log(start.item()), math.log(end.item()), 4001)
    y_end = rk4(vp, x_start / alpha_sigma(start, flow=False)[0], grid)
    solved = alpha_sigma(end, flow=False)[0] * y_end
    torch.testing.assert_close(solved, exact_solution(x_start, start, end, flow=False), rtol=0, atol=1e-10)

    # Rectified flow: dx/dsigma = velocity, from pure noise (sigma = 1) to data (sigma = 0).
    one, zero = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    x_start = start_sample(one, flow=True)

    def flow(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return denoiser("flow_prediction", x, torch.tensor(sigma, dtype=torch.float64), flow=True)

    solved = rk4(flow, x_start, np.linspace(1.0, 1e-9, 4001))  # the velocity is smooth at 0; stop a hair above it
    torch.testing.assert_close(solved, exact_solution(x_start, one, zero, flow=True), rtol=0, atol=1e-8)


# ------------------------------------------------------------------------------------------------ convergence
def final_error(scheduler: Any, steps: int, prediction_type: str, flow: bool, compare_at: str) -> float:
    """Max-abs error after the loop, at sigmas[-1] after every step ("last"), or at sigmas[N - 1] after N - 1
    steps ("last_listed", skipping the zero-length step onto an appended sigma_min)."""
    state = scheduler.init(steps, sample=NOISE)
    sigmas = scheduler.sigmas(state)
    assert sigmas.dtype == torch.float64
    run = steps if compare_at == "last" else steps - 1
    x_start = start_sample(sigmas[0], flow)
    x = x_start
    for index in range(run):
        x, state = scheduler.step(state, denoiser(prediction_type, x, sigmas[index], flow), x)
    assert x.dtype == torch.float64
    return (x - exact_solution(x_start, sigmas[0], sigmas[run], flow)).abs().max().item()


def fitted_slope(step_counts: list[int], errors: list[float]) -> float:
    """The order p of error ~ C N^-p: minus the least-squares slope of log(error) against log(N)."""
    return -float(np.polyfit(np.log(step_counts), np.log(errors), 1)[0])


UniPC = fs.UniPCMultistep
EVERY_STEP = tuple(range(400))  # disable_corrector on every step: UniP alone
VP_LAMBDA = {"use_exponential_sigmas": True, "final_sigmas_type": "sigma_min", "lower_order_final": False}
FLOW_KARRAS = {
    "use_flow_sigmas": True,
    "use_karras_sigmas": True,
    "prediction_type": "flow_prediction",
    "final_sigmas_type": "sigma_min",
    "lower_order_final": False,
}
STEPS = [20, 40, 80, 160]
LATE_STEPS = [40, 80, 160, 320]  # past the pre-asymptotic third-order regime of DPM++ 3M

# (id, scheduler factory, prediction type, flow, where to compare, step counts, order)
CONVERGENCE = [
    ("flow-euler", lambda: fs.FlowMatchEulerDiscrete(), "flow_prediction", True, "last", STEPS, 1),
    ("flow-euler-shift3", lambda: fs.FlowMatchEulerDiscrete(shift=3.0), "flow_prediction", True, "last", STEPS, 1),
    ("dpm++1", lambda: fs.DPMSolverMultistep(solver_order=1, **VP_LAMBDA), "epsilon", False, "last_listed", STEPS, 1),
    ("dpm++2m", lambda: fs.DPMSolverMultistep(**VP_LAMBDA), "epsilon", False, "last_listed", STEPS, 2),
    (
        "dpm++2m-heun",
        lambda: fs.DPMSolverMultistep(solver_type="heun", **VP_LAMBDA),
        "epsilon",
        False,
        "last_listed",
        STEPS,
        2,
    ),
    (
        "dpm++2m-v",
        lambda: fs.DPMSolverMultistep(prediction_type="v_prediction", **VP_LAMBDA),
        "v_prediction",
        False,
        "last_listed",
        STEPS,
        2,
    ),
    (
        "dpm-solver-2",
        lambda: fs.DPMSolverMultistep(algorithm_type="dpmsolver", **VP_LAMBDA),
        "epsilon",
        False,
        "last_listed",
        STEPS,
        2,
    ),
    # Second order, not third: see the module docstring (diffusers' D2 is half the divided difference it needs).
    (
        "dpm++3m",
        lambda: fs.DPMSolverMultistep(solver_order=3, **VP_LAMBDA),
        "epsilon",
        False,
        "last_listed",
        LATE_STEPS,
        2,
    ),
    (
        "dpm-solver-3",
        lambda: fs.DPMSolverMultistep(solver_order=3, algorithm_type="dpmsolver", **VP_LAMBDA),
        "epsilon",
        False,
        "last_listed",
        LATE_STEPS,
        2,
    ),
]
UNIPC_CONVERGENCE = [
    ("unip-1", dict(solver_order=1, disable_corrector=EVERY_STEP, **VP_LAMBDA), "epsilon", False, 1),
    ("unipc-1-bh2", dict(solver_order=1, **VP_LAMBDA), "epsilon", False, 2),
    ("unipc-1-bh1", dict(solver_order=1, solver_type="bh1", **VP_LAMBDA), "epsilon", False, 2),
    ("unip-2-bh2", dict(disable_corrector=EVERY_STEP, **VP_LAMBDA), "epsilon", False, 2),
    ("unipc-2-bh2", dict(VP_LAMBDA), "epsilon", False, 3),
    ("unipc-2-bh1", dict(solver_type="bh1", **VP_LAMBDA), "epsilon", False, 3),
    ("unipc-2-bh2-noise", dict(predict_x0=False, **VP_LAMBDA), "epsilon", False, 3),
    ("unip-2-flow-karras", dict(disable_corrector=EVERY_STEP, **FLOW_KARRAS), "flow_prediction", True, 2),
    ("unipc-2-flow-karras", dict(FLOW_KARRAS), "flow_prediction", True, 3),
]


def measure(factory: Callable[[], Any], prediction_type: str, flow: bool, compare_at: str, counts: list[int]):
    scheduler = factory()
    errors = [final_error(scheduler, steps, prediction_type, flow, compare_at) for steps in counts]
    assert all(math.isfinite(error) and error > 0 for error in errors), errors
    return fitted_slope(counts, errors), errors


@pytest.mark.parametrize(
    ("factory", "prediction_type", "flow", "compare_at", "counts", "order"),
    [pytest.param(*case[1:], id=case[0]) for case in CONVERGENCE],
)
def test_convergence_order(
    factory: Callable[[], Any], prediction_type: str, flow: bool, compare_at: str, counts: list[int], order: int
) -> None:
    slope, errors = measure(factory, prediction_type, flow, compare_at, counts)
    assert abs(slope - order) <= BAND, f"slope {slope:.2f}, errors {errors}"
    assert errors == sorted(errors, reverse=True), errors  # more steps, smaller error, every time


@pytest.mark.parametrize(
    ("config", "prediction_type", "flow", "order"), [pytest.param(*case[1:], id=case[0]) for case in UNIPC_CONVERGENCE]
)
def test_unipc_convergence_order(config: dict[str, Any], prediction_type: str, flow: bool, order: int) -> None:
    """UniC raises the order of UniP-p to p + 1 (Zhao et al. 2023, Theorems 3.1-3.2)."""
    slope, errors = measure(lambda: UniPC(**config), prediction_type, flow, "last_listed", STEPS)
    assert abs(slope - order) <= BAND, f"slope {slope:.2f}, errors {errors}"
    assert errors == sorted(errors, reverse=True), errors


@pytest.mark.parametrize("corrector", [False, True], ids=["unip-3", "unipc-3"])
def test_unipc_third_order_is_at_least_third_order(corrector: bool) -> None:
    """Order 3 converges faster than its nominal order on this problem (see the module docstring): lower bound only."""
    config = dict(VP_LAMBDA, solver_order=3, disable_corrector=() if corrector else EVERY_STEP)
    slope, errors = measure(lambda: UniPC(**config), "epsilon", False, "last_listed", LATE_STEPS)
    assert slope >= 3 - BAND, f"slope {slope:.2f}, errors {errors}"


def test_third_order_multistep_beats_second_order() -> None:
    """DPM++ 3M is second order (module docstring) but with a smaller constant: 1.7x to 2.9x below 2M here."""
    two = [final_error(fs.DPMSolverMultistep(**VP_LAMBDA), n, "epsilon", False, "last_listed") for n in STEPS]
    three = [
        final_error(fs.DPMSolverMultistep(solver_order=3, **VP_LAMBDA), n, "epsilon", False, "last_listed")
        for n in STEPS
    ]
    assert all(e3 < e2 / 1.5 for e2, e3 in zip(two, three, strict=True)), (two, three)


def test_corrector_lowers_the_error() -> None:
    """At every step count, UniPC-2 (with UniC) is more accurate than UniP-2 alone, and by more as N grows."""
    with_corrector = [final_error(UniPC(**VP_LAMBDA), n, "epsilon", False, "last_listed") for n in STEPS]
    without = [
        final_error(UniPC(disable_corrector=EVERY_STEP, **VP_LAMBDA), n, "epsilon", False, "last_listed") for n in STEPS
    ]
    ratios = [plain / corrected for plain, corrected in zip(without, with_corrector, strict=True)]
    assert all(ratio > 1 for ratio in ratios), ratios
    assert ratios == sorted(ratios), ratios


@pytest.mark.parametrize("order", [1, 2, 3])
def test_final_step_to_zero_returns_the_denoised_sample(order: int) -> None:
    """With final_sigmas_type="zero" the last step is first order into sigma = 0: it returns x0_hat of the sample it
    is given (DPM-Solver++: x = (sigma_t / sigma_s) x + alpha_t (1 - e^-h) x0_hat with sigma_t = 0, h = inf)."""
    scheduler = fs.DPMSolverMultistep(
        solver_order=order, use_exponential_sigmas=True, final_sigmas_type="zero", lower_order_final=False
    )
    steps = 12
    state = scheduler.init(steps, sample=NOISE)
    sigmas = scheduler.sigmas(state)
    assert sigmas[-1] == 0
    x = start_sample(sigmas[0], flow=False)
    for index in range(steps):
        before = x
        x, state = scheduler.step(state, denoiser("epsilon", x, sigmas[index], flow=False), x)
    expected = denoiser("sample", before, sigmas[-2], flow=False)
    torch.testing.assert_close(x, expected, rtol=1e-12, atol=1e-12)
