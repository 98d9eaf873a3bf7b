"""The plan: everything a solver needs at step i that depends on the schedule alone, computed once per request.

A `Plan` holds one row per schedule (`S` rows: 1 for a single request, whose rows all share it, or one per row
after stacking requests) and one entry per step. A multistep solver's coefficients also depend on its warm-up
(how many steps it has taken, capped at its order), so its table has one entry per (step, warm-up). `step`
gathers row r's entry for `step_index[r]` (and its warm-up) in one indexing op, so rows at different steps, and
with different step counts (padded), step together in one call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from . import host
from .record import record

if TYPE_CHECKING:
    from .schedule import Schedule


@record(host=("schedules",))
class Plan:
    """Per-schedule tables. S: schedules (1, or one per row), N: steps (padded to the longest), W: warm-up levels
    (1 for one-step solvers, order + 1 for multistep ones), C: coefficients."""

    timesteps: torch.Tensor  # [S, N], diffusers' dtype (float32 for flow matching, else int64)
    sigmas: torch.Tensor  # [S, N + 1], working float dtype, ends with the final sigma
    num_steps: torch.Tensor  # [S], int64: real steps of each schedule (N for all but padded ones)
    coefficients: torch.Tensor  # [S, N, W, C], working float dtype: the solver's constants per (step, warm-up)
    # No leaf: the `Schedule` each of the S schedules was made from, where the host knows it (a plan from `init`,
    # stacked, split or copied; not one that went through a transform or a compiled graph). A serialised state
    # carries them, and the receiver rebuilds the tables from them instead of trusting the ones it is sent.
    schedules: tuple[Schedule, ...] | None


def tables(plan: Plan) -> tuple[torch.Tensor, ...]:
    """The plan's four tables, in field order."""
    return plan.timesteps, plan.sigmas, plan.num_steps, plan.coefficients


def copied(plan: Plan, device: torch.device | str | None = None) -> Plan:
    """A copy of the plan that shares no tensor with it (on `device`, default where it is): a request's own."""
    timesteps, sigmas, num_steps, coefficients = (
        table.to(table.device if device is None else device, copy=True) for table in tables(plan)
    )
    return Plan(
        timesteps=timesteps, sigmas=sigmas, num_steps=num_steps, coefficients=coefficients, schedules=plan.schedules
    )


def single_plan(timesteps: torch.Tensor, sigmas: torch.Tensor, coefficients: torch.Tensor) -> Plan:
    """The plan of one schedule (S = 1) from its [N] timesteps, [N + 1] sigmas and [N, W, C] coefficients."""
    return Plan(
        timesteps=timesteps[None],
        sigmas=sigmas[None],
        num_steps=torch.tensor([len(timesteps)]),
        coefficients=coefficients[None],
    )


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Entry `index[r]` of row r's schedule: [S, M, ...] x [R] -> [R, ...]; no host sync, compiles."""
    if table.shape[0] == 1:
        return table[0].index_select(0, index)
    return table[torch.arange(index.shape[0], device=index.device), index]


def gather_step(plan: Plan, step_index: torch.Tensor, warmup: torch.Tensor | None = None) -> torch.Tensor:
    """Each row's coefficients [R, C] for its step and, for multistep solvers, its warm-up level."""
    table = plan.coefficients
    if warmup is None:
        return gather_rows(table[:, :, 0], step_index)
    return gather_rows(table.flatten(1, 2), step_index * table.shape[2] + warmup)


def coefficient_views(row: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The C columns of [R, C] coefficients as [R, 1, ..., 1] views that broadcast against `like` (one op)."""
    return row.view(*row.shape, *([1] * (like.dim() - 1))).unbind(1)


def as_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`tensor.to(dtype)` without the dispatch when it is already that dtype, or is a plan entry's 0-d host scalar
    cast before (eager steps pay per call)."""
    if tensor.dtype == dtype:
        return tensor
    if tensor.dim() == 0 and tensor.is_cpu and not host.tracing():
        return host.cast(tensor, dtype)
    return tensor.to(dtype)


def scaled(
    coefficient: torch.Tensor, tensor: torch.Tensor, *, on_host: bool = True, tensor_first: bool = False
) -> torch.Tensor:
    """`coefficient * tensor` for a broadcastable per-row coefficient, rounded as torch rounds diffusers' product.

    diffusers multiplies by a 0-d float32 coefficient, on the host (`on_host`: DPM-Solver and UniPC keep their sigmas
    on the CPU) or on the sample's device (flow-match Euler; UniPC's rho weights, made in the sample's dtype). Type
    promotion rounds a device coefficient, and on the CPU a host one, to a half-precision tensor's dtype before the
    product; a CUDA kernel takes a host coefficient at float precision and rounds only the product. Where diffusers
    writes the tensor first (`tensor_first`: `model_output * (-sigma / ...)`), the CPU kernel too multiplies at the
    coefficient's precision and rounds the product.
    """
    if coefficient.dtype == tensor.dtype:
        return coefficient * tensor
    if on_host and tensor.is_cuda:  # either order: one kernel, the product at float precision, then rounded
        return as_dtype(coefficient * tensor, tensor.dtype)  # a host 0-d coefficient keeps the tensor's dtype itself
    if on_host and tensor_first:
        if _as_diffusers_holds(coefficient, tensor):
            return tensor * coefficient  # diffusers' own operation (an eager step's host scalar): one kernel, its bits
        return as_dtype(coefficient * as_dtype(tensor, coefficient.dtype), tensor.dtype)
    return as_dtype(coefficient, tensor.dtype) * tensor


def plus(fresh: torch.Tensor, tensor: torch.Tensor, *, eager: bool) -> torch.Tensor:
    """`tensor + fresh`, where `fresh` is a step's own intermediate: added into it in an `eager` step (one that holds
    its state's cursor) where it has `tensor`'s dtype, shape and strides: one allocation less, and the same bits
    (addition commutes) in the same layout (a sum takes `tensor`'s, and the next model call's numerics depend on it).
    Out of place otherwise: a transform may batch `tensor` alone, and a compiler fuses the sum anyway."""
    if eager and fresh.dtype == tensor.dtype and fresh.shape == tensor.shape and fresh.stride() == tensor.stride():
        return fresh.add_(tensor)
    return tensor + fresh


def _as_diffusers_holds(coefficient: torch.Tensor, tensor: torch.Tensor) -> bool:
    """Whether a coefficient is what diffusers holds, a 0-d float32 CPU scalar (an eager step's plan entry; or one of
    the tensor's dtype): then diffusers' own operation on it is one kernel and gives its bits, whatever the tensor's
    dtype and device."""
    return coefficient.dim() == 0 and coefficient.is_cpu and coefficient.dtype in (torch.float32, tensor.dtype)


def divided(tensor: torch.Tensor, coefficient: torch.Tensor) -> torch.Tensor:
    """`tensor / coefficient`, rounded as torch divides by diffusers' 0-d CPU scalar coefficients.

    On CUDA, torch multiplies by the reciprocal of the scalar's original (float32) value instead of dividing
    (`div_true_kernel`); on the CPU it divides exactly, half types by that float32 value in float32, rounded once.
    """
    if _as_diffusers_holds(coefficient, tensor):
        return tensor / coefficient  # diffusers' own operation (an eager step's host scalar): one kernel, its bits
    if tensor.is_cpu and tensor.dtype in (torch.float32, torch.float64):
        return tensor / as_dtype(coefficient, tensor.dtype)
    opmath = torch.float64 if tensor.dtype == torch.float64 else torch.float32
    if tensor.is_cpu:
        return (tensor.to(opmath) / coefficient.to(opmath)).to(tensor.dtype)
    return (tensor.to(opmath) * torch.reciprocal(coefficient.to(opmath))).to(tensor.dtype)


def per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[R] values viewed as [R, 1, ..., 1] to broadcast against `like`, in `like`'s dtype."""
    return values.to(like.dtype).view(values.shape[0], *([1] * (like.dim() - 1)))


def by_warmup(by_order: torch.Tensor, highest_order: torch.Tensor) -> torch.Tensor:
    """[N, order, C] blocks -> [N, order + 1, C]: warm-up level w uses order min(highest_order[i], w + 1).

    Levels a step cannot reach (more steps taken than its index) are zero: their blocks may hold inf or nan.
    """
    steps, max_order = by_order.shape[0], by_order.shape[1]
    warmup = torch.arange(max_order + 1)
    order = torch.minimum(highest_order[:, None], warmup[None, :] + 1)  # [N, W]
    table = by_order.gather(1, (order - 1)[..., None].expand(-1, -1, by_order.shape[2]))
    reachable = warmup[None, :] <= torch.arange(steps)[:, None]
    return torch.where(reachable[..., None], table, torch.zeros_like(table))


def working_dtype(sample: torch.Tensor) -> torch.dtype:
    """float64 samples get float64 plans (accuracy); everything else float32, diffusers' working precision."""
    return torch.float64 if sample.dtype == torch.float64 else torch.float32
