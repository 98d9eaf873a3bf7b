"""A problem whose probability-flow ODE has a closed form, to measure a solver's true error (not its parity).

Data: x0 ~ N(mu, diag(s^2)), each of D dims with its own mean and spread. Noised, x_t = alpha_t x0 + sigma_t eps,
where (alpha_t, sigma_t) come from the scheduler's table sigma (`scheduler._alpha_sigma`: VP or rectified flow).
The model is the exact denoiser, the posterior mean

    x0_hat(x_t) = E[x0 | x_t] = mu + alpha s^2 (x_t - alpha mu) / (alpha^2 s^2 + sigma^2),

from which eps_hat = (x_t - alpha x0_hat) / sigma, v = alpha eps_hat - sigma x0_hat and the flow velocity
eps_hat - x0_hat. In y = x / alpha and s~ = sigma / alpha (every such schedule reduces to this, the DDIM ODE),
dy/ds~ = (y - x0_hat) / s~, whose solution keeps (y - mu) proportional to sqrt(s^2 + s~^2). Multiplying back:

    x_t = alpha_t mu + sqrt(alpha_t^2 s^2 + sigma_t^2) (x_T - alpha_T mu) / sqrt(alpha_T^2 s^2 + sigma_T^2),

the affine map that carries the marginal at T onto the one at t (`tests/test_accuracy.py` checks it against RK4).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

DIMS, ROWS = 64, 4
MU = torch.linspace(-1.5, 1.5, DIMS, dtype=torch.float64)
SPREAD = torch.linspace(0.2, 1.6, DIMS, dtype=torch.float64)  # s, per dim
NOISE = torch.randn(ROWS, DIMS, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def marginal_std(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(alpha**2 * SPREAD**2 + sigma**2)


def model_output(prediction_type: str, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The exact model's output for `prediction_type` at noise level (alpha, sigma)."""
    x0 = MU + alpha * SPREAD**2 * (x - alpha * MU) / marginal_std(alpha, sigma) ** 2
    eps = (x - alpha * x0) / sigma
    outputs = {"epsilon": eps, "sample": x0, "v_prediction": alpha * eps - sigma * x0, "flow_prediction": eps - x0}
    return outputs[prediction_type]


def exact_solution(x_start: torch.Tensor, start: tuple[Any, Any], end: tuple[Any, Any]) -> torch.Tensor:
    """The probability-flow ODE carried from noise level `start` = (alpha, sigma) to `end` (closed form)."""
    whitened = (x_start - start[0] * MU) / marginal_std(*start)
    return end[0] * MU + marginal_std(*end) * whitened


def start_sample(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Rows drawn from the marginal at (alpha, sigma)."""
    return alpha * MU + marginal_std(alpha, sigma) * NOISE


def final_error(scheduler: Any, steps: int) -> float:
    """Max-abs error of a float64 loop of `steps` steps with the exact model against the closed form, compared
    before the last step: that one is special in most schedules (into sigma = 0, where a data prediction is
    returned exactly and an O(sigma_min^2) error floor appears, or at a lower order), and would hide the order of
    the rest. A scheduler without a `prediction_type` option takes a flow velocity (flow matching).
    """
    state = scheduler.init(steps, sample=NOISE)
    sigmas = scheduler.sigmas(state)
    assert sigmas.dtype == torch.float64, "a float64 sample gets a float64 plan"
    calls = len(scheduler.timesteps(state))
    run = calls - 1
    levels = [scheduler._alpha_sigma(sigma) for sigma in sigmas]
    x_start = start_sample(*levels[0])
    x = x_start
    # Zero noise where a scheduler takes it at every step: the ODE of a class that is stochastic by config (SA-Solver
    # at tau = 0 takes noise, as diffusers draws it, with weight 0).
    noise = {"noise": torch.zeros_like(x)} if scheduler.stochastic else {}
    for _ in range(run):
        x, state = scheduler.step(state, exact_output(scheduler, state, x), x, **noise)
    assert x.dtype == torch.float64
    return (x - exact_solution(x_start, levels[0], levels[run])).abs().max().item()


def exact_output(scheduler: Any, state: Any, x: torch.Tensor) -> torch.Tensor:
    """The exact model's output at this call of `state`: fed `scale_model_input(state, x)`, at the noise level the
    model sees (`_model_sigma`; its (alpha, sigma) scaled as the input is). A scheduler without a `prediction_type`
    option takes a flow velocity (flow matching)."""
    network_output = getattr(scheduler, "_network_output", None)
    if network_output is not None:  # a preconditioned network (EDM's): its output F for the exact x0
        alpha, sigma = scheduler._alpha_sigma(scheduler._model_sigma(state)[:, None].to(x.dtype))
        return network_output(state, x, model_output("sample", x, alpha, sigma))
    prediction_type = getattr(scheduler, "prediction_type", "flow_prediction")
    model_input = scheduler.scale_model_input(state, x)
    scale = scheduler.scale_model_input(state, torch.ones_like(x))[:, :1]
    alpha, sigma = scheduler._alpha_sigma(scheduler._model_sigma(state)[:, None].to(x.dtype))
    return model_output(prediction_type, model_input, alpha * scale, sigma * scale)


def fitted_order(step_counts: list[int] | tuple[int, ...], errors: list[float]) -> float:
    """The order p of error ~ C N^-p: minus the least-squares slope of log(error) against log(N)."""
    return -float(np.polyfit(np.log(step_counts), np.log(errors), 1)[0])


def weak_error(scheduler: Any, steps: int) -> float:
    """A stochastic scheduler's weak error on this problem: max error of the mean and variance of its samples before
    the last call, against the data's marginal there, propagated exactly. Each call is affine per dimension in the
    sample and the noise with the exact (affine) model, x' = a x + b + c z, so the law stays Gaussian: read a, b and
    c off the scheduler's own step (rows: the mean, the mean + 1, the mean with unit noise), then m' = a m + b,
    v' = a^2 v + c^2."""
    rows = torch.zeros(3, DIMS, dtype=torch.float64)
    state = scheduler.init(steps, sample=rows)
    sigmas = scheduler.sigmas(state)
    alpha, sigma = scheduler._alpha_sigma(sigmas[0])
    mean, variance = alpha * MU, marginal_std(alpha, sigma) ** 2
    noise = torch.zeros_like(rows)
    noise[2] = 1.0
    calls = len(scheduler.timesteps(state))
    for _ in range(calls - 1):
        x = torch.stack([mean, mean + 1, mean])
        out, state = scheduler.step(state, exact_output(scheduler, state, x), x, noise=noise)
        a, c = out[1] - out[0], out[2] - out[0]
        mean, variance = out[0], a**2 * variance + c**2
    alpha, sigma = scheduler._alpha_sigma(sigmas[calls - 1])
    target_mean, target_variance = alpha * MU, marginal_std(alpha, sigma) ** 2
    return max((variance - target_variance).abs().max().item(), (mean - target_mean).abs().max().item())


def weak_error_of_states(scheduler: Any, steps: int) -> float:
    """`weak_error` for any scheduler whose step is linear in its sample, model output, noise and state buffers with
    coefficients of the schedule alone (two calls per interval, a history): the law is tracked through the scheduler's
    own state. X = m + sum_j L_j xi_j over independent standard normals xi_j (the start's spread, then one per call):
    row 0 of one state carries m (the exact model's affine output, no noise), row 1 + j carries L_j (the model's linear
    part, and a unit noise at call j only), every row through the same calls; before the last call the mean is row 0
    and the variance the sum of the other rows' squares. Each call's noise counts as a fresh normal (Brownian increments
    over disjoint intervals are). On a one-call scheduler without buffers it equals `weak_error`."""
    probe = scheduler.init(steps, sample=torch.zeros(1, DIMS, dtype=torch.float64))
    calls = len(scheduler.timesteps(probe))
    state = scheduler.init(steps, sample=torch.zeros(2 + calls, DIMS, dtype=torch.float64))
    sigmas = scheduler.sigmas(state)
    alpha, sigma = scheduler._alpha_sigma(sigmas[0])
    x = torch.zeros(2 + calls, DIMS, dtype=torch.float64)
    x[0], x[1] = alpha * MU, marginal_std(alpha, sigma)
    for call in range(calls - 1):
        affine = exact_output(scheduler, state, x)
        output = affine - exact_output(scheduler, state, torch.zeros_like(x))
        output[0] = affine[0]
        noise = torch.zeros_like(x)
        noise[2 + call] = 1.0
        x, state = scheduler.step(state, output, x, noise=noise)
    alpha, sigma = scheduler._alpha_sigma(sigmas[calls - 1])
    variance = (x[1:] ** 2).sum(0)
    return max((variance - marginal_std(alpha, sigma) ** 2).abs().max().item(), (x[0] - alpha * MU).abs().max().item())
