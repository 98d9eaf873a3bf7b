"""KDPM2: diffusers' `KDPM2DiscreteScheduler` and `KDPM2AncestralDiscreteScheduler` (k-diffusion's DPM2 and DPM2 a).

Two model calls per interval on Heun's machinery (`heun.TwoCallScheduler`): the first call steps to the interval's
log-midpoint sigma_mid = sqrt(s_k s_(k+1)) (ancestral: the midpoint of s_k and sigma_down), the second evaluates the
model there (at the midpoint's sigma and timestep: diffusers' `sigmas_interpol`, interpolated timesteps in the call
table) and takes the whole interval from the stored start sample with that derivative, the midpoint method. The
ancestral variant steps down to sigma_down and adds fresh noise of standard deviation sigma_up at each second call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from ..machinery import host, options
from ..machinery.options import Choice, Option
from ..machinery.plan import Plan
from ..machinery.record import record
from ..math import schedules
from . import common
from .heun import TwoCallScheduler, interval_ends


@record(host=("cursor",))
class KDPM2State:
    plan: Plan
    step_index: torch.Tensor  # [R], int64: calls taken (two per interval but the last)
    sample: torch.Tensor  # [R, ...], the sample's dtype: the sample the interval started from (diffusers' `sample`)
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


def _sigma_to_t(sigmas: torch.Tensor, log_sigmas: torch.Tensor) -> torch.Tensor:
    """diffusers' `_sigma_to_t` of float32 torch sigmas over its float32 log-sigma table, one sigma at a time as
    `set_timesteps` calls it (its numpy calls then return torch tensors: the arithmetic is float32 throughout)."""
    log_sigma = torch.stack([schedules.np_log(value.clamp(min=1e-10).reshape(1))[0] for value in sigmas])
    distances = log_sigma[None, :] - log_sigmas[:, None]
    low = torch.cumsum(distances >= 0, dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
    low_value, high_value = log_sigmas[low], log_sigmas[low + 1]
    weight = ((low_value - log_sigma) / (low_value - high_value)).clamp(0, 1)
    return (1 - weight) * low + weight * (low + 1)


@options.config
class _KDPM2Base(TwoCallScheduler):
    """The options and schedule both KDPM2 classes share; each gives its midpoints (`_midpoints`)."""

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    beta_start: float = common.BETA_START.but(default=0.00085)
    beta_end: float = common.BETA_END.but(default=0.012)
    beta_schedule: str = common.BETA_SCHEDULE
    trained_betas: tuple[float, ...] | None = common.TRAINED_BETAS
    use_karras_sigmas: bool = common.USE_KARRAS_SIGMAS
    use_exponential_sigmas: bool = common.USE_EXPONENTIAL_SIGMAS
    use_beta_sigmas: bool = common.USE_BETA_SIGMAS
    # diffusers' step raises NotImplementedError for "sample".
    prediction_type: str = Option("epsilon", Choice("epsilon", "v_prediction"))
    timestep_spacing: str = common.TIMESTEP_SPACING
    steps_offset: int = common.STEPS_OFFSET

    state_type: ClassVar[type] = KDPM2State

    #: Which interval's midpoint timestep follows each interval's start in the call table: the next one's (KDPM2:
    #: s_k's call is followed by the midpoint of [s_k, s_(k+1)], which diffusers files under k + 1) or its own (a).
    _midpoint_offset: ClassVar[int]

    def _midpoints(self, sigmas: torch.Tensor) -> dict[str, torch.Tensor]:
        """diffusers' interval tables of the schedule's sigmas [N + 1], float32 as it computes them: `interpol` (the
        model's sigma at second calls), and the ancestral `up` and `down`."""
        raise NotImplementedError

    def _kept_midpoints(self, ends: torch.Tensor, kept: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The midpoint tables of the interval sigmas `ends` [N + 1], or diffusers' as `kept` gives them (its
        `sigmas_interpol`, ... are not recomputed when a pipeline edits `sigmas`), in `ends`' dtype."""
        tables = self._midpoints(ends)
        return {name: kept[name].to(ends.dtype) if name in kept else table for name, table in tables.items()}

    def _timestep_table(self, timesteps: torch.Tensor) -> torch.Tensor:
        # diffusers keeps the float64 timesteps of spaced sigmas (Karras' rounded), and casts the midpoints' to them.
        if self.use_karras_sigmas:
            return timesteps.round()
        return timesteps

    def _call_timesteps(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        train_sigmas = schedules.vp_sigmas(self._training_cumprod())
        interpol = self._midpoints(sigmas.to(torch.float32))["interpol"]
        midpoint_timesteps = _sigma_to_t(interpol, schedules.np_log(train_sigmas)).to(timesteps.dtype)
        offset = self._midpoint_offset
        chosen = midpoint_timesteps[offset : offset + timesteps.shape[0] - 1]
        return torch.cat([timesteps[:1], torch.stack([chosen, timesteps[1:]], dim=-1).flatten()])

    def sigmas(self, state: Any) -> torch.Tensor:
        """diffusers' sigma table: the plan's (one per call and the final one), then the final sigma twice more."""
        table = super().sigmas(state)
        return torch.cat([table, table[..., -1:], table[..., -1:]], dim=-1)

    def sigmas_interpol(self, state: Any) -> torch.Tensor:
        """diffusers' `sigmas_interpol` table (the midpoint sigmas, repeated as its tables are), [2N + 2]."""
        self._require_state(state, "sigmas_interpol")
        return self._exposed_tables(state.plan.sigmas[0])["sigmas_interpol"]

    def _exposed_tables(self, call_sigmas: torch.Tensor) -> dict[str, torch.Tensor]:
        """diffusers' midpoint tables by its attribute names (`sigmas_interpol`; ancestral: `sigmas_up`,
        `sigmas_down`), float32, [2N + 2] each, from a plan's call table of sigmas [2N]."""
        tables = self._midpoints(interval_ends(call_sigmas).to(torch.float32))
        return {
            f"sigmas_{name}": torch.cat([table[:1], table[1:].repeat_interleave(2), table[-1:]])
            for name, table in tables.items()
        }


@options.config
class KDPM2Discrete(_KDPM2Base):
    """DPM-Solver-2 in Karras' form: an Euler step to the log-midpoint sigma_mid = sqrt(s_k s_(k+1)), the model
    there, and the interval's step from its start with that derivative. Second order per interval.

    Implements Algorithm 2's deterministic midpoint variant from Karras et al. (2022), "Elucidating the Design Space
    of Diffusion-Based Generative Models" (DPM2 of k-diffusion, after Lu et al. (2022), "DPM-Solver"), with diffusers
    0.42.1's options, schedule and call table.
    """

    diffusers_name: ClassVar[str] = "KDPM2DiscreteScheduler"
    _midpoint_offset: ClassVar[int] = 1

    def _midpoints(self, sigmas: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"interpol": sigmas.log().lerp(sigmas.roll(1).log(), 0.5).exp()}

    def _call_coefficients(
        self, sigmas: torch.Tensor, kept: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ends = interval_ends(sigmas)
        interpol = self._kept_midpoints(ends, kept)["interpol"][1:]  # [N]: interval k's midpoint
        start, end = ends[:-1], ends[1:]
        # call 2k: x0 at s_k, step to the midpoint; call 2k + 1: x0 at the midpoint, step s_k -> s_(k+1).
        sigma_in = torch.stack([start, interpol], dim=-1).flatten()[:-1]
        dt = torch.stack([interpol - start, end - start], dim=-1).flatten()[:-1]
        return sigma_in, dt, torch.zeros_like(dt)


@options.config
class KDPM2AncestralDiscrete(_KDPM2Base):
    """DPM2 ancestral: the midpoint step of `KDPM2Discrete` down to sigma_down = sqrt(s'^2 - sigma_up^2) (midpoint
    between s_k and sigma_down), then fresh noise of standard deviation sigma_up = sqrt(s'^2 (s^2 - s'^2) / s^2) at
    each interval's second call (`noise=` required; the last interval, one call into sigma = 0, adds none).

    Implements k-diffusion's `sample_dpm_2_ancestral` (Karras et al. (2022), "Elucidating the Design Space of
    Diffusion-Based Generative Models", with ancestral noise as in Ho et al. (2020)), with diffusers 0.42.1's options,
    schedule and call table.
    """

    diffusers_name: ClassVar[str] = "KDPM2AncestralDiscreteScheduler"
    _midpoint_offset: ClassVar[int] = 0

    @property
    def stochastic(self) -> bool:
        """Always: each interval's second call adds fresh noise."""
        return True

    def _midpoints(self, sigmas: torch.Tensor) -> dict[str, torch.Tensor]:
        following = sigmas.roll(-1)
        following[-1] = 0.0
        up = (following**2 * (sigmas**2 - following**2) / sigmas**2) ** 0.5
        down = (following**2 - up**2) ** 0.5
        down[-1] = 0.0
        interpol = sigmas.log().lerp(down.log(), 0.5).exp()
        interpol[-2:] = 0.0
        return {"interpol": interpol, "up": up, "down": down}

    def _call_coefficients(
        self, sigmas: torch.Tensor, kept: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ends = interval_ends(sigmas)
        tables = self._kept_midpoints(ends, kept)
        start = ends[:-1]
        interpol, up, down = (tables[name][:-1] for name in ("interpol", "up", "down"))  # [N]: interval k's
        # call 2k: x0 at s_k, step to the midpoint; call 2k + 1: x0 at the midpoint, step s_k -> sigma_down, noise.
        sigma_in = torch.stack([start, interpol], dim=-1).flatten()[:-1]
        dt = torch.stack([interpol - start, down - start], dim=-1).flatten()[:-1]
        noise_scale = torch.stack([torch.zeros_like(up), up], dim=-1).flatten()[:-1]
        return sigma_in, dt, noise_scale
