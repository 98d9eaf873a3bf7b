"""Schedule math shared by every scheduler: betas, timestep spacings, sigma conversions and flow shifts.

Host-side and run once per plan. diffusers computes these tables with numpy, in float64 or float32 depending on
the option; each function here repeats the same operations in the same precision with torch, so the tables come out
equal to diffusers' bit for bit (the tests check them). Tensors are 1-D; `float64` stands for numpy's default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .beta_quantile import beta_quantile

F64 = torch.float64
F32 = torch.float32
KARRAS_RHO = 7.0  # Karras et al. (2022), eq. 5
BETA_SIGMAS_SHAPE = (0.6, 0.6)  # "Beta Sampling is All You Need" (Lee et al., 2024)
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
SPACINGS = ("linspace", "leading", "trailing")


# ---------------------------------------------------------------------------------------------- numpy semantics
def np_linspace(start: float, stop: float, num: int) -> torch.Tensor:
    """`numpy.linspace(start, stop, num)` in float64: `i * step + start`, the last point exactly `stop`."""
    values = torch.arange(num, dtype=F64)
    if num > 1:
        step = (stop - start) / (num - 1)
        values = values * step + start if step != 0 else values / (num - 1) * (stop - start) + start
        values[-1] = stop
    else:
        values = values * (stop - start) + start
    return values


def np_arange(start: float, stop: float, step: float) -> torch.Tensor:
    """`numpy.arange` with a float step: numpy fills `start + i * delta`, where `delta = (start + step) - start`."""
    length = max(math.ceil((stop - start) / step), 0)
    if length <= 1:
        return torch.full((length,), float(start), dtype=F64)
    delta = (start + step) - start
    return torch.arange(length, dtype=F64) * delta + start


def np_log(values: torch.Tensor) -> torch.Tensor:
    """`numpy.log(values)` (CPU, same dtype): numpy's own, where numpy is installed (as it is wherever diffusers is).
    numpy's vectorised log differs from libm's and torch's in the last bit, by machine (its AVX2/AVX-512 kernels);
    tables that keep unrounded log-derived values (the float timesteps of Euler-type schedules) then match diffusers'
    on every machine. Without numpy: torch's log, within an ulp of it."""
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with torch's and diffusers' installs
        return torch.log(values)
    return torch.from_numpy(numpy.log(values.detach().cpu().numpy()))


def np_exp(values: torch.Tensor) -> torch.Tensor:
    """`numpy.exp(values)` (CPU, same dtype): numpy's own vectorised exp, as `np_log` (torch's differs in the last
    bit of float64 values, which float64 tables such as DPM-SDE's timesteps keep)."""
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with torch's and diffusers' installs
        return torch.exp(values)
    return torch.from_numpy(numpy.exp(values.detach().cpu().numpy()))


def np_power(values: torch.Tensor, exponent: float) -> torch.Tensor:
    """`values ** exponent` as numpy computes it for an array (CPU, same dtype), as `np_exp`."""
    try:
        array = values.detach().cpu().numpy()
    except RuntimeError:  # pragma: no cover - numpy comes with torch's and diffusers' installs
        return values**exponent
    return torch.from_numpy(array**exponent)


# ------------------------------------------------------------------------------------------------------- betas
def _squaredcos_cap_v2(num_train_timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Betas whose alpha_bar follows a squared cosine, Nichol & Dhariwal (2021), eq. 17."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps), max_beta)
        for i in range(num_train_timesteps)
    ]
    return torch.tensor(betas, dtype=F32)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Rescale betas to zero terminal SNR, Lin et al. (2023), Algorithm 1."""
    alphas_bar_sqrt = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


def betas(
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    beta_schedule: str,
    trained_betas: Sequence[float] | None = None,
) -> torch.Tensor:
    """The training betas, float32, as diffusers builds them."""
    if trained_betas is not None:
        return torch.tensor(trained_betas, dtype=F32)
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=F32)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=F32) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        return _squaredcos_cap_v2(num_train_timesteps)
    raise ValueError(f"beta_schedule={beta_schedule!r} is not supported; choose one of {BETA_SCHEDULES}.")


def alphas_cumprod(training_betas: torch.Tensor, rescale_betas_zero_snr: bool) -> torch.Tensor:
    """alpha_bar_t, float32; a zero-SNR schedule ends at 2**-24 instead of 0 so its sigma stays finite."""
    if rescale_betas_zero_snr:
        training_betas = rescale_zero_terminal_snr(training_betas)
    result = torch.cumprod(1.0 - training_betas, dim=0)
    if rescale_betas_zero_snr:
        result[-1] = 2**-24
    return result


def vp_sigmas(cumulative_alphas: torch.Tensor) -> torch.Tensor:
    """The variance-preserving schedule as sigmas of the variance-exploding form: sqrt((1 - a) / a), float32."""
    return ((1 - cumulative_alphas) / cumulative_alphas) ** 0.5


def vp_alpha_sigma(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha_t, sigma_t) of the VP process from a VE sigma, in the dtype of `sigma`."""
    alpha = 1 / ((sigma**2 + 1) ** 0.5)
    return alpha, sigma * alpha


def flow_alpha_sigma(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha_t, sigma_t) of the rectified-flow interpolation x_t = (1 - sigma) x0 + sigma noise."""
    return 1 - sigma, sigma


# ----------------------------------------------------------------------------------------------- timesteps
def spaced_timesteps(
    spacing: str, num_inference_steps: int, num_train_timesteps: int, steps_offset: int, last_timestep: int
) -> torch.Tensor:
    """Integer timesteps, descending, for 'linspace', 'leading' or 'trailing' spacing (Lin et al. 2023, table 2).

    `last_timestep` is one past the largest usable training timestep (`num_train_timesteps` unless clipped).
    """
    n = num_inference_steps
    if spacing == "linspace":
        values = np_linspace(0, last_timestep - 1, n + 1).round().flip(0)[:-1]
    elif spacing == "leading":
        ratio = last_timestep // (n + 1)
        values = (torch.arange(n + 1, dtype=torch.int64) * ratio).flip(0)[:-1] + steps_offset
    elif spacing == "trailing":
        values = np_arange(last_timestep, 0, -(num_train_timesteps / n)).round() - 1
    else:
        raise ValueError(f"timestep_spacing={spacing!r} is not supported; choose one of {SPACINGS}.")
    return values.to(torch.int64)


def sigma_to_t(sigmas: torch.Tensor, log_sigmas: torch.Tensor) -> torch.Tensor:
    """Fractional training timesteps of `sigmas` by interpolating log-sigma over the training table, float64.

    numpy's arithmetic follows the sigmas' dtype: float64 sigmas (Karras and the other spacings) interpolate in
    float64; float32 ones (Euler's custom sigmas, one float32 scalar at a time) form the weight in float32."""
    work = F32 if sigmas.dtype == F32 and log_sigmas.dtype == F32 else F64
    log_sigma = np_log(torch.clamp(sigmas.to(work), min=1e-10))
    distances = log_sigma[None, :] - log_sigmas.to(work)[:, None]
    low = torch.cumsum(distances >= 0, dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
    low_value, high_value = log_sigmas[low], log_sigmas[low + 1]
    # numpy forms `low - high` in the table's dtype (float32 in diffusers), then divides in the sigmas' dtype.
    weight = ((low_value.to(work) - log_sigma) / (low_value - high_value).to(work)).clamp(0, 1)
    return (1 - weight).to(F64) * low + weight.to(F64) * (low + 1)


def np_interp(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """`numpy.interp(x, arange(len(table)), table)` in float64: `slope * (x - j) + table[j]` on each interval,
    the table's last value at its end (as numpy's C loop computes it)."""
    x, values = x.to(F64), table.to(F64)
    last = values.shape[0] - 1
    low = torch.clamp(torch.floor(x), 0, last - 1).to(torch.int64)
    slope = values[low + 1] - values[low]  # divided by the interval's length, 1
    result = slope * (x - low.to(F64)) + values[low]
    return torch.where(x >= last, values[last], torch.where(x <= 0, values[0], result))


def fractional_timesteps(
    spacing: str, num_inference_steps: int, num_train_timesteps: int, steps_offset: int
) -> torch.Tensor:
    """Timesteps, descending, float32, as the k-diffusion-style discrete schedulers (Euler, Heun, KDPM2, LMS) space
    them: 'linspace' is not rounded, 'leading' steps by N // n (no n + 1), 'trailing' by N / n from N, minus 1."""
    n, train = num_inference_steps, num_train_timesteps
    if spacing == "linspace":
        return np_linspace(0, train - 1, n).to(F32).flip(0)
    if spacing == "leading":
        return (torch.arange(n, dtype=torch.int64) * (train // n)).flip(0).to(F32) + steps_offset
    if spacing == "trailing":
        return np_arange(train, 0, -(train / n)).round().to(F32) - 1
    raise ValueError(f"timestep_spacing={spacing!r} is not supported; choose one of {SPACINGS}.")


# --------------------------------------------------------------------------------------- sigma conversions
def karras_sigmas(sigma_min: float, sigma_max: float, num: int) -> torch.Tensor:
    """Karras et al. (2022), eq. 5: sigmas evenly spaced in sigma^(1/rho), float64."""
    ramp = np_linspace(0, 1, num)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / KARRAS_RHO), sigma_max ** (1 / KARRAS_RHO)
    return np_power(max_inv_rho + ramp * (min_inv_rho - max_inv_rho), KARRAS_RHO)


def exponential_sigmas(sigma_min: float, sigma_max: float, num: int) -> torch.Tensor:
    """Sigmas evenly spaced in log(sigma), float64."""
    return np_exp(np_linspace(math.log(sigma_max), math.log(sigma_min), num))


def beta_sigmas(sigma_min: float, sigma_max: float, num: int) -> torch.Tensor:
    """Sigmas at the quantiles of Beta(0.6, 0.6), "Beta Sampling is All You Need" (Lee et al., 2024), float64."""
    a, b = BETA_SIGMAS_SHAPE
    try:  # scipy's own where installed (diffusers' beta sigmas need it): float64 timesteps made from them match too
        from scipy.stats import beta as distribution
    except ImportError:  # pragma: no cover - within float32 resolution of scipy's
        quantiles = [beta_quantile(float(q), a, b) for q in 1 - np_linspace(0, 1, num)]
    else:
        quantiles = [float(distribution.ppf(float(q), a, b)) for q in 1 - np_linspace(0, 1, num)]
    return torch.tensor([sigma_min + quantile * (sigma_max - sigma_min) for quantile in quantiles], dtype=F64)


def lu_log_sigmas(log_sigma_min: float, log_sigma_max: float, num: int) -> torch.Tensor:
    """Log-sigmas evenly spaced ("Lu's lambdas", DPM-Solver++ appendix), float64."""
    return log_sigma_max + np_linspace(0, 1, num) * (log_sigma_min - log_sigma_max)


# --------------------------------------------------------------------------------------------- flow shifts
def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """The static resolution shift of SD3, Esser et al. (2024), eq. 23."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def time_shift(sigmas: torch.Tensor, mu: float, kind: str) -> torch.Tensor:
    """Flux's resolution-dependent shift by `mu`: exponential (exp(mu)) or linear (mu)."""
    scale = sigmas.new_tensor(math.exp(mu) if kind == "exponential" else mu)
    # A tensor numerator: torch evaluates `float / tensor` as `reciprocal(tensor) * float`, rounding twice.
    return scale / (scale + (1 / sigmas - 1) ** 1.0)


def stretch_to_terminal(sigmas: torch.Tensor, shift_terminal: float) -> torch.Tensor:
    """Stretch a shifted schedule so it ends at `shift_terminal` (LTX-Video's `rf.py`)."""
    one_minus = 1 - sigmas
    if one_minus[-1].item() == 0:
        raise ValueError(
            "shift_terminal cannot stretch a schedule whose last sigma is 1 (e.g. a single step from pure noise; "
            "diffusers returns NaN timesteps there); use more steps or leave shift_terminal unset."
        )
    scale = one_minus[-1] / (1 - shift_terminal)
    return 1 - (one_minus / scale)


def as_float_table(values: Sequence[float] | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A user's custom sigmas or timesteps as a 1-D CPU tensor of `dtype` (numpy's `np.array(x).astype(dtype)`)."""
    table = values.detach().to("cpu") if isinstance(values, torch.Tensor) else torch.tensor(list(values), dtype=F64)
    return table.reshape(-1).to(dtype)
