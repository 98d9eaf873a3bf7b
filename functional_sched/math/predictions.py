"""Converting a model's output into the quantity a solver integrates, shared by DPM-Solver and UniPC.

Data-prediction solvers (DPM-Solver++, UniPC with `predict_x0`) integrate x0; noise-prediction ones integrate
epsilon. `alpha`, `sigma` are the current step's coefficients of x_t = alpha x0 + sigma eps, `raw_sigma` the
schedule's sigma (what flow prediction uses), each [R, 1, ..., 1]. The arithmetic runs in the sample's dtype,
as diffusers' does.
"""

from __future__ import annotations

import math

import torch

from ..machinery.plan import divided, scaled

DATA_PREDICTIONS = ("epsilon", "sample", "v_prediction", "flow_prediction")
NOISE_PREDICTIONS = ("epsilon", "sample", "v_prediction")


def to_data(
    prediction_type: str,
    model_output: torch.Tensor,
    sample: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    raw_sigma: torch.Tensor,
) -> torch.Tensor:
    """The model's estimate of x0."""
    if prediction_type == "epsilon":
        return divided(sample - scaled(sigma, model_output), alpha)
    if prediction_type == "sample":
        return model_output
    if prediction_type == "v_prediction":
        return scaled(alpha, sample) - scaled(sigma, model_output)
    # flow_prediction: the model predicts the velocity noise - x0.
    return sample - scaled(raw_sigma, model_output)


def to_noise(
    prediction_type: str,
    model_output: torch.Tensor,
    sample: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
) -> torch.Tensor:
    """The model's estimate of epsilon."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "sample":
        return divided(sample - scaled(alpha, model_output), sigma)
    return scaled(alpha, model_output) + scaled(sigma, sample)  # v_prediction


def threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Dynamic thresholding, Saharia et al. (2022), "Photorealistic Text-to-Image Diffusion Models ...", sec. 2.3.

    Each row is clipped to [-s, s] and divided by s, where s is the `ratio` quantile of |x0| clamped to
    [1, max_value].
    """
    dtype = x0.dtype
    rows = x0.reshape(x0.shape[0], -1)
    if dtype not in (torch.float32, torch.float64):
        rows = rows.float()  # quantile needs it, and clamp has no CPU half kernel
    s = _quantile(rows.abs(), ratio).clamp(min=1, max=max_value).unsqueeze(1)
    return (torch.clamp(rows, -s, s) / s).reshape(x0.shape).to(dtype)


def _quantile(rows: torch.Tensor, q: float) -> torch.Tensor:
    """`torch.quantile(rows, q, dim=1)` (linear interpolation), bit for bit, in a form every torch compiles.

    torch 2.11 cannot trace `torch.quantile` (a data-dependent `aten.equal` inside); here the rank is host
    arithmetic on static sizes, rounded to the input's precision as torch rounds it.
    """
    rank = _rounded(_rounded(q, rows.dtype) * (rows.shape[1] - 1), rows.dtype)
    below, above = math.floor(rank), math.ceil(rank)
    ordered = rows.sort(dim=1).values
    return torch.lerp(ordered[:, below], ordered[:, above], _rounded(rank - below, rows.dtype))


def _rounded(value: float, dtype: torch.dtype) -> float:
    """A Python float rounded to float32 (half to even) when `dtype` is float32; as is for float64."""
    if dtype == torch.float64 or value == 0:
        return value
    mantissa, exponent = math.frexp(value)
    return math.ldexp(round(mantissa * 2**24), exponent - 24)
