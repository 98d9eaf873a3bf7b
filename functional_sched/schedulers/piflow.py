"""pi-Flow: diffusers' `PiflowScheduler` and sglang's copy of it (Kandinsky 6's distilled video, audio and SR models).

The model is called once per step and predicts x0 on a grid of `n_grid` points of the step's segment of (unshifted)
flow time: its output holds `n_grid` predictions per sample channel, `[..., n_grid * C]` for a sample `[..., C]`. A
network-free policy then integrates the flow from the step's start to its end in small Euler substeps, the velocity at
each being `(x - x0(t)) / sigma`, x0(t) interpolated linearly on the grid. Every substep's time, sigma and
interpolation weights depend on the schedule alone, so the plan holds them: a step's entry is its substeps, one row
each (`[N, K, C]`, K the most substeps of any step plus one that is never active); a row steps through its own
step's substeps with `torch.where`, the rest of the table doing nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Integer, Option, Optional, Real
from ..machinery.plan import Plan, as_dtype, gather_rows, single_plan
from ..machinery.record import record
from ..machinery.schedule import Schedule
from ..machinery.scheduler import Scheduler
from ..math import schedules
from . import common

# Columns of a substep's entry: whether it moves the sample, the sigma the velocity divides by (clamped at eps), the
# sigma it moves by, the grid point below the substep's time and the two interpolation weights, the step's sigma.
ACTIVE, DIVISOR, DSIGMA, LOWER, W_LOWER, W_UPPER, SIGMA = range(7)


@record(host=("cursor",))
class PiflowState:
    plan: Plan  # coefficients [S, N, K, 7]: a row per substep of each step
    step_index: torch.Tensor  # [R], int64
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class Piflow(Scheduler):
    """pi-Flow's policy rollout between grid-x0 predictions of a distilled flow model (Kandinsky 6).

    Schedule (float32, as diffusers): `segment = 1 / (n - (1 - final_step_size_scale))`, unshifted times
    `raw_i = 1 - i * segment`, then `raw_n = eps`; `sigma_i = shift * raw_i / (1 + (shift - 1) raw_i)`, timesteps
    `1000 sigma_i`, a final sigma of 0. Step i: `x0_k = x - sigma_i * out_k` on the grid, then
    `round((raw_i - raw_{i+1}) * num_policy_substeps)` Euler substeps (at least one) of `x' = (x - x0(t)) / sigma`
    in shifted time. The result has the sample's dtype, computed in float32 (float64 for float64 samples).

    Implements the DX policy of Chen et al. (2025), "pi-Flow: Policy-Based Few-Step Generation via Imitation
    Distillation", as diffusers 0.42.1 runs it for Kandinsky 6.
    """

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS.but(domain=Integer(minimum=1, maximum=1_000_000))
    shift: float = Option(5.0, Real(above=0), examples=(1.0, 3.0, 7.0))
    n_grid: int = Option(10, Integer(minimum=2, maximum=1024), examples=(2, 4))
    eps: float = Option(1e-6, Real(above=0, below=1), examples=(1e-4,))
    final_step_size_scale: float = Option(0.5, Real(above=0, at_most=1), examples=(1.0, 0.25))
    num_policy_substeps: int = Option(128, Integer(minimum=1, maximum=4096), examples=(1, 32))

    state_type: ClassVar[type] = PiflowState
    diffusers_name: ClassVar[str] = "PiflowScheduler"
    plan_columns: ClassVar[int] = SIGMA + 1

    def _step_options(self) -> tuple[Any, ...]:
        return (self.n_grid,)

    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return schedules.flow_alpha_sigma(sigma)

    def _output_like_sample(self) -> bool:
        return False  # n_grid predictions per channel: [..., n_grid * C]

    # ------------------------------------------------------------------------------------------------ plan
    def _check_schedule(self, schedule: Schedule) -> None:
        given = [name for name in ("timesteps", "sigmas", "mu") if getattr(schedule, name) is not None]
        if given:
            raise ValueError(
                f"{self.name}: {', '.join(given)} not supported; its distilled schedule is set by "
                "num_inference_steps alone (diffusers raises too)."
            )
        if schedule.num_inference_steps is None:
            raise ValueError(f"{self.name}: give num_inference_steps.")
        super()._check_schedule(schedule)

    def _custom_range(self, name: str) -> tuple[float, float, bool]:
        return (0.0, float(self.num_train_timesteps), False) if name == "timesteps" else (0.0, 1.0, False)

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        assert num_inference_steps is not None
        raw = self._raw_times(num_inference_steps)
        sigmas = schedules.shift_sigmas(raw, self.shift)
        timesteps = sigmas * self.num_train_timesteps
        return self._plan_from_tables(timesteps, torch.cat([sigmas, sigmas.new_zeros(1)]).to(dtype), raw)

    def _raw_times(self, num_inference_steps: int) -> torch.Tensor:
        """The steps' unshifted times, float32 as diffusers' `_piflow_raw_timesteps`."""
        segment = 1.0 / (num_inference_steps - (1.0 - self.final_step_size_scale))
        return 1.0 - torch.arange(num_inference_steps, dtype=torch.float32) * segment

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor, raw: torch.Tensor | None = None) -> Plan:
        """The substeps of each step, each scalar as diffusers computes it per row in float32."""
        steps = timesteps.shape[0]
        start = sigmas[:-1].to(torch.float32)
        if raw is None:  # tables alone: the unshifted times of their sigmas
            raw = self._unwarped(start)
        ends = torch.cat([raw[1:], raw.new_full((1,), self.eps)])
        entries = [self._substeps(raw[i : i + 1], ends[i : i + 1], start[i : i + 1]) for i in range(steps)]
        most = max(entry.shape[0] for entry in entries) + 1  # one more, never active: padding repeats it
        table = torch.stack([torch.cat([entry, _idle(entry, most - entry.shape[0])]) for entry in entries])
        return single_plan(timesteps, sigmas, table.to(sigmas.dtype))

    def _unwarped(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma / (self.shift + (1 - self.shift) * sigma)

    def _substeps(self, raw_src: torch.Tensor, raw_dst: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """[k, 7]: one step's k substeps, as diffusers' `policy_rollout_fm` and `DXPolicy.pi` make them (float32)."""
        segment = raw_src - raw_dst
        policy_dst = (self._unwarped(sigma) - segment).clamp(min=0)
        policy_segment = (self._unwarped(sigma) - policy_dst).clamp(min=self.eps)
        count = (segment * self.num_policy_substeps).round().long().clamp(min=1)
        substep = segment / count
        raw_t, start, rows = raw_src, sigma, []
        for _ in range(int(count)):
            t = ((self._unwarped(sigma) - policy_dst) / policy_segment).clamp(0, 1) * (self.n_grid - 1)
            lower = t.floor().long().clamp(0, self.n_grid - 2)
            raw_t = (raw_t - substep).clamp(min=0)
            next_sigma = schedules.shift_sigmas(raw_t, self.shift)
            weights = (lower + 1 - t, t - lower)
            rows.append(
                torch.cat(
                    [
                        torch.ones(1),
                        sigma.clamp(min=self.eps),
                        next_sigma - sigma,
                        lower.to(torch.float32),
                        *weights,
                        start,
                    ]
                )
            )
            sigma = next_sigma
        return torch.stack(rows)

    # ------------------------------------------------------------------------------------------------ step
    def step(
        self,
        state: PiflowState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, PiflowState] | tuple[torch.Tensor, PiflowState, torch.Tensor]:
        """One step's policy rollout from each row's current sigma to its next: `(prev_sample, new_state)`.

        `model_output` is `[..., n_grid * C]` for a sample `[..., C]` (grid point-major in the last dim, as
        Kandinsky 6's transformer lays it out); one shaped like the sample is the same prediction at every grid point
        (what diffusers computes from it repeated `n_grid` times; diffusers itself refuses it). `denoised=True` also
        returns the model's x0 at the step's start (the grid's last point, `sample - sigma * out[..., -C:]`):
        `(prev_sample, new_state, x0)`. `noise` is ignored.
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
            self._check_grid(model_output, sample)
        dtype = state.plan.coefficients.dtype
        work = as_dtype(sample, dtype)
        rows = sample.shape[0]
        if model_output.shape == sample.shape:  # one prediction: the same at every grid point (broadcast)
            grid = model_output.unsqueeze(1)
        else:
            grid = model_output.reshape(*model_output.shape[:-1], self.n_grid, sample.shape[-1]).movedim(-2, 1)
        trailing = [1] * (sample.dim() - 1)
        if cursor is not None:
            if cursor.step >= cursor.owned.host.steps:
                checks.raise_finished(self.name, state)
            block = state.plan.coefficients[0, cursor.step]  # [K, 7] on the device: a view, no gather
            host_block = cursor.owned.host.plan.coefficients[0, cursor.step]
            lower = host_block[:, LOWER].tolist()
            active = int(host_block[:, ACTIVE].sum())
            sigma = block[0, SIGMA].expand(rows).reshape(rows, 1, *trailing)
            x0_grid = (work.unsqueeze(1) - sigma * grid).expand(rows, self.n_grid, *sample.shape[1:])
            for k in range(active):
                c = block[k]
                index = int(lower[k])
                x0 = c[W_LOWER] * x0_grid[:, index] + c[W_UPPER] * x0_grid[:, index + 1]
                work = work + (work - x0) / c[DIVISOR] * c[DSIGMA]
        else:
            try:
                block = gather_rows(state.plan.coefficients, state.step_index)  # [R, K, 7]
            except IndexError:
                checks.raise_finished(self.name, state)
                raise
            block = block.view(rows, block.shape[1], block.shape[2], *trailing)
            x0_grid = work.unsqueeze(1) - block[:, 0, SIGMA].unsqueeze(1) * grid
            x0_grid = x0_grid.expand(rows, self.n_grid, *sample.shape[1:])
            gather_shape = (rows, 1, *x0_grid.shape[2:])
            for k in range(block.shape[1] - 1):  # the last row is never active
                c = block[:, k]
                index = c[:, LOWER].long().unsqueeze(1).expand(gather_shape)
                below = x0_grid.gather(1, index).squeeze(1)
                above = x0_grid.gather(1, index + 1).squeeze(1)
                x0 = c[:, W_LOWER] * below + c[:, W_UPPER] * above
                moved = work + (work - x0) / c[:, DIVISOR] * c[:, DSIGMA]
                work = torch.where(c[:, ACTIVE] > 0, moved, work)
        new_state = state.replace(**self._advanced(state, cursor))
        out = self._output_dtype(sample)
        if denoised:
            return as_dtype(work, out), new_state, as_dtype(x0_grid[:, -1], out)
        return as_dtype(work, out), new_state

    def _check_grid(self, model_output: torch.Tensor, sample: torch.Tensor) -> None:
        widened = (*sample.shape[:-1], self.n_grid * sample.shape[-1])
        if model_output.shape != sample.shape and tuple(model_output.shape) != widened:
            raise ValueError(
                f"{self.name}: model_output has shape {tuple(model_output.shape)}; it must hold n_grid={self.n_grid} "
                f"predictions per channel of the sample in its last dim, {widened} (or one, shaped like the sample)."
            )


def _idle(entry: torch.Tensor, count: int) -> torch.Tensor:
    """`count` inactive substeps after a step's last (its values repeated: finite, so no gradient turns NaN)."""
    idle = entry[-1:].repeat(count, 1)
    idle[:, ACTIVE] = 0.0
    return idle


@options.config
class SglangPiflow(Piflow):
    """sglang's `PiflowScheduler` (its Kandinsky 6 and Kandinsky 6 SR pipelines): diffusers' pi-Flow step and schedule,
    returning float32 for half-precision samples (sglang keeps the policy's float32 result across steps, as the
    native sampler does, where diffusers casts back). `nfe` is sglang's config key the SR pipeline reads as its step
    count; the scheduler never reads it (nor does ours).
    """

    nfe: int | None = Option(None, Optional(Integer(minimum=1)), examples=(4,))

    reference_library: ClassVar[str] = "sglang"
    diffusers_name: ClassVar[str] = "PiflowScheduler"

    def _output_dtype(self, sample: torch.Tensor) -> torch.dtype:
        """float32 (float64 for float64 samples): sglang returns the rollout's float32 result as it is."""
        return torch.float64 if sample.dtype == torch.float64 else torch.float32
