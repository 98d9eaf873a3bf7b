"""The plan: everything a solver needs at step i that depends on the schedule alone, computed once per request.

A `Plan` holds one row per schedule (`S` rows: 1 for a single request, whose rows all share it, or one per row
after stacking requests) and one entry per step. `step` gathers entry `step_index[r]` of its row's schedule,
so rows at different steps, and with different step counts (padded), step together in one call.
"""

from __future__ import annotations

import torch

from ._record import record


@record
class Plan:
    """Per-schedule tables. S: schedules (1, or one per row), N: steps (padded to the longest), C: coefficients."""

    timesteps: torch.Tensor  # [S, N], diffusers' dtype (float32 for flow matching, else int64)
    sigmas: torch.Tensor  # [S, N + 1], working float dtype, ends with the final sigma
    num_steps: torch.Tensor  # [S], int64: real steps of each schedule (N for all but padded ones)
    orders: torch.Tensor  # [S, N], int64: highest order step i may use (lower-order final steps)
    coefficients: torch.Tensor  # [S, N, C], working float dtype: the solver's per-step constants


def gather_rows(table: torch.Tensor, step_index: torch.Tensor) -> torch.Tensor:
    """Entry `step_index[r]` of row r's schedule: [S, N, ...] x [R] -> [R, ...]; no host sync, compiles."""
    if table.shape[0] == 1:
        return table[0].index_select(0, step_index)
    return table[torch.arange(step_index.shape[0], device=step_index.device), step_index]


def select_block(row: torch.Tensor, offset: int, order: torch.Tensor, width: int, count: int) -> torch.Tensor:
    """Each row's block of `width` coefficients for the order it uses: blocks of orders 1..count start at `offset`.

    [R, C] x [R] -> [R, width]; a gather, so rows at different orders select in one call.
    """
    blocks = row[:, offset : offset + count * width].reshape(row.shape[0], count, width)
    return blocks.gather(1, (order - 1).view(-1, 1, 1).expand(-1, 1, width)).squeeze(1)


def per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[R] values viewed as [R, 1, ..., 1] to broadcast against `like`, in `like`'s dtype.

    Casting first is what diffusers' 0-d coefficient tensors get from type promotion: a bf16 sample is scaled by
    the coefficient rounded to bf16, a float32 sample by the float32 coefficient.
    """
    return values.to(like.dtype).view(values.shape[0], *([1] * (like.dim() - 1)))


def scaled(coefficient: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """`coefficient * tensor` with per-row [R] coefficients."""
    return per_row(coefficient, tensor) * tensor


def divided(tensor: torch.Tensor, coefficient: torch.Tensor) -> torch.Tensor:
    """`tensor / coefficient` with per-row [R] coefficients, rounded as torch divides by diffusers' 0-d CPU scalars.

    For half types, and for any float on CUDA, torch multiplies by the reciprocal of the scalar's original
    (float32) value instead of dividing (`div_true_kernel`); on the CPU, float32 and float64 divide exactly.
    """
    if tensor.device.type == "cpu" and tensor.dtype in (torch.float32, torch.float64):
        return tensor / per_row(coefficient, tensor)
    opmath = torch.float64 if tensor.dtype == torch.float64 else torch.float32
    reciprocal = per_row(torch.reciprocal(coefficient.to(opmath)), tensor.to(opmath))
    return (tensor.to(opmath) * reciprocal).to(tensor.dtype)


def working_dtype(sample: torch.Tensor) -> torch.dtype:
    """float64 samples get float64 plans (accuracy); everything else float32, diffusers' working precision."""
    return torch.float64 if sample.dtype == torch.float64 else torch.float32
