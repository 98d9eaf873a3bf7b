"""Flow-matching LCM: diffusers' `FlowMatchLCMScheduler` (few-step flow models; scale-wise generation as in SwD)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..machinery import checks, host, options
from ..machinery.options import Choice, Option, Optional
from ..machinery.plan import Plan, as_dtype
from ..machinery.record import record
from .flow_match import FlowMatchScheduler

#: The spatial dims (the sample's after rows and channels) each `upscale_mode` interpolates, as
#: `torch.nn.functional.interpolate` takes them.
_MODE_DIMS = MappingProxyType(
    {
        "nearest": (1, 2, 3),
        "linear": (1,),
        "bilinear": (2,),
        "bicubic": (2,),
        "trilinear": (3,),
        "area": (1, 2, 3),
        "nearest-exact": (1, 2, 3),
    }
)


@record(host=("cursor",))
class FlowMatchLCMState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    # [R, D], the plan's dtype (whole numbers): each row's spatial size (sample.shape[2:]) at init, what scale_factors
    # multiply. Floating so that it is no step counter to the serialiser, in the plan's dtype as every float leaf is.
    init_size: torch.Tensor
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class FlowMatchLCM(FlowMatchScheduler):
    """Multistep consistency sampling on a rectified-flow schedule: x0_i = x_i - sigma_i v_i, then
    `x_{i+1} = (1 - sigma_{i+1}) x0_i + sigma_{i+1} noise`, fresh noise every step (`noise=` is required; diffusers
    draws it at the last step too, where it is scaled by the final sigma, 0). The schedule and its options are
    flow-match Euler's (`FlowMatchScheduler`), as diffusers 0.42.1 computes them.

    Scale-wise generation (`scale_factors`, `upscale_mode`): before the renoising of step i < N - 1, x0_i is
    interpolated to `round(scale_factors[i] * size)` per spatial dim, `size` the sample's at init, so the sample
    changes resolution between steps (N = len(scale_factors) + 1). The factors are config (a new resolution is a new
    graph); the state carries the initial size. The next resolution is the noise's: `noise_shape(state, sample)` gives
    it, drawn as diffusers draws it with `randn_tensor(noise_shape, generator=g, dtype=torch.float32)`.

    Implements the multistep sampling of Latent Consistency Models (Luo et al., 2023, "Latent Consistency Models:
    Synthesizing High-Resolution Images with Few-Step Inference") on flow matching, with the scale-wise schedule of
    Starodubcev et al. (2025), "Scale-wise Distillation of Diffusion Models".
    """

    # Scale-wise generation: one factor per step but the last (diffusers: None or [] for none; here None).
    scale_factors: tuple[float, ...] | None = Option(None, Optional(options.Numbers(above=0)))
    upscale_mode: str = Option("bicubic", Choice(*_MODE_DIMS))

    state_type: ClassVar[type] = FlowMatchLCMState
    diffusers_name: ClassVar[str] = "FlowMatchLCMScheduler"

    @property
    def stochastic(self) -> bool:
        """Always: every step renoises its x0 estimate."""
        return True

    @property
    def _resizes(self) -> bool:
        return self.scale_factors is not None

    def _step_options(self) -> tuple[Any, ...]:
        return (self.scale_factors, self.upscale_mode)

    # ------------------------------------------------------------------------------------------------ state
    def _start(
        self,
        plan: Plan,
        sample: torch.Tensor,
        step_index: torch.Tensor,
        level: torch.Tensor,
        fingerprint: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> FlowMatchLCMState:
        rows = step_index.shape[0]
        size = [list(sample.shape[2:])] * rows
        init_size = torch.tensor(size, dtype=plan.sigmas.dtype).to(step_index.device)  # [rows, D], also for D = 0
        return FlowMatchLCMState(
            plan=plan, step_index=step_index, init_size=init_size, fingerprint=fingerprint, cursor=cursor
        )

    def _init_on(self, host_plan: host.HostPlan, sample: torch.Tensor, begin_index: int) -> Any:
        if self.scale_factors is not None:
            self._check_scale_wise(host_plan.steps, sample)
        return super()._init_on(host_plan, sample, begin_index)

    def _check_scale_wise(self, steps: int, sample: torch.Tensor) -> None:
        """A schedule of one step per factor and one more, and a sample whose spatial dims the mode interpolates to
        sizes of at least 1 (diffusers finds out at its first step, or inside `interpolate`)."""
        factors = self.scale_factors
        assert factors is not None
        if steps != len(factors) + 1:
            raise ValueError(
                f"{self.name}: scale_factors holds {len(factors)} factors (one per step but the last), so the schedule "
                f"must have {len(factors) + 1} steps, not {steps}; diffusers 0.42.1 raises at its first step."
            )
        dims = sample.dim() - 2
        if dims not in _MODE_DIMS[self.upscale_mode]:
            allowed = " or ".join(f"{2 + dims_}-D" for dims_ in _MODE_DIMS[self.upscale_mode])
            raise ValueError(
                f"{self.name}: upscale_mode={self.upscale_mode!r} interpolates {allowed} samples (rows, channels, "
                f"then the spatial dims), got a {sample.dim()}-D sample {tuple(sample.shape)}."
            )
        for factor in factors:
            if min((round(factor * size) for size in sample.shape[2:]), default=1) < 1:
                raise ValueError(
                    f"{self.name}: scale_factors {factor:g} makes a size below 1 of the sample's "
                    f"{tuple(sample.shape[2:])}; use larger factors or a larger sample."
                )

    def noise_shape(self, state: FlowMatchLCMState, sample: torch.Tensor) -> torch.Size:
        """The shape of the noise the next `step` takes, the shape of its result: the sample's, or with
        `scale_factors` the next resolution's (`round(scale_factors[i] * size)` of the initial size, for steps
        i < N - 1). Rows must share it (rows stacked within one resolution stage)."""
        self._require_state(state, "noise_shape")
        checks.tensor(f"{self.name}.noise_shape", "sample", sample)
        factors = self.scale_factors
        if factors is None:
            return sample.shape
        cursor = self._cursor(state)
        steps = [cursor.step] * state.step_index.shape[0] if cursor is not None else state.step_index.tolist()
        sizes = {
            tuple(round(factors[step] * int(size)) for size in init) if step < len(factors) else sample.shape[2:]
            for step, init in zip(steps, state.init_size.tolist(), strict=True)
        }
        if len(sizes) != 1:
            raise ValueError(
                f"{self.name}.noise_shape: the rows step to different resolutions {sorted(sizes)}; stack only rows "
                "of one resolution stage."
            )
        return torch.Size((*sample.shape[:2], *sizes.pop()))

    # ------------------------------------------------------------------------------------------------ step
    def step(
        self,
        state: FlowMatchLCMState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, FlowMatchLCMState] | tuple[torch.Tensor, FlowMatchLCMState, torch.Tensor]:
        """One consistency step of every row: `(prev_sample, new_state)`, or `(prev_sample, new_state, x0)` with
        `denoised=True` (x0 at the sample's resolution, before any interpolation). `noise` is required: standard
        normal, shaped as `noise_shape(state, sample)` (the sample's shape without `scale_factors`), drawn as
        diffusers draws it (float32). The arithmetic is float32 (float64 for float64 samples) as in diffusers; the
        result has `sample`'s dtype and the noise's shape: compiled code takes the next resolution from it.
        """
        return self._step(state, model_output, sample, noise, denoised)

    def _update(
        self,
        c: tuple[torch.Tensor, ...],
        model_output: torch.Tensor,
        work: torch.Tensor,
        noise: torch.Tensor,
        denoised: bool,
        eager: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Flow-match Euler's stochastic step, its x0 interpolated first where the noise is of the next resolution.
        x0 = self._estimate(c, model_output, work, eager)
        estimate = x0
        if x0.shape[2:] != noise.shape[2:]:  # static shapes: a step into a new resolution stage
            estimate = F.interpolate(x0, size=tuple(noise.shape[2:]), mode=self.upscale_mode)
        return self._renoised(c, estimate, as_dtype(noise, work.dtype), eager), x0

    def _check(
        self,
        state: FlowMatchLCMState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        noise: torch.Tensor | None,
        denoised: bool,
        cursor: host.Cursor | None,
    ) -> None:
        self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
        if self.scale_factors is None:
            checks.check_noise(self.name, "every step", noise, sample)
            return
        if noise is None:
            raise ValueError(
                f"{self.name}: every step needs noise=...: draw it with functional_sched.randn_tensor("
                "sched.noise_shape(state, sample), generator=..., dtype=torch.float32) as diffusers does."
            )
        checks.tensor(self.name, "noise", noise)
        expected = self.noise_shape(state, sample)
        if noise.shape != expected:
            raise ValueError(
                f"{self.name}: noise has shape {tuple(noise.shape)}, but this step goes to {tuple(expected)} "
                "(scale_factors of the initial size); draw it with sched.noise_shape(state, sample)."
            )
        if noise.device != sample.device:
            raise ValueError(f"{self.name}: noise is on {noise.device}, but sample on {sample.device}; move it there.")
