"""One column of sglang's `FlowMatchPairScheduler` (MOVA's paired video/audio sampler), stepped as its `step_from_to`.

sglang 0.5.23 (`multimodal_gen/runtime/models/schedulers/flow_match_pair.py`) keeps a pair of timestep columns (video,
audio), optionally rebuilt each with its own shift by the `dual_sigma_shift` post-processing that MOVA's pipeline
sets, and steps each modality from one column timestep to the next with sigmas looked up on the 1000-step TRAINING
grid that its constructor built (nearest training timestep), not the column's own sigmas. A pair is two states of
this class, one per `modality`, on the same step count.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..machinery import options
from ..machinery.options import Choice, Option, Optional, Real
from .self_forcing import SglangFlowMatch, linspace_sigmas


@options.config
class FlowMatchPair(SglangFlowMatch):
    """Euler steps of rectified flow on one column of sglang's `FlowMatchPairScheduler`: the model sees the column's
    timesteps t_i; the step is `x_{i+1} = x_i + (q(t_{i+1}) - q(t_i)) v_i`, q(t) the sigma of the training grid's
    timestep nearest t (ties to the first), q = 0 past the last step (1 where the table rises).

    The column is sglang's `set_timesteps(N, denoising_strength)` table (`pair_postprocess=None`), or with
    `pair_postprocess="dual_sigma_shift"` the one `set_pair_postprocess_by_name("dual_sigma_shift", visual_shift=...,
    ...)` rebuilds for `modality` (its shift, denoising strength and exponential-shift mu; None: the scheduler's).
    The training grid is `set_timesteps(num_train_timesteps)` with `shift` (the constructor's). sglang's other
    post-processings (`quadratic_perp_bulge_swap`, `v2a_sequential`, `a2v_sequential`, `v2a`, `a2v`) are used by no
    pipeline and are not supported (`from_sglang` refuses them by name).

    Implements Euler steps of rectified flow (Liu et al., 2022) as MOVA samples its two modalities (OpenMOSS, 2025,
    "MOVA").
    """

    denoising_strength: float = Option(1.0, Real(above=0, at_most=1), examples=(0.5,))
    pair_postprocess: str | None = Option(None, Choice(None, "dual_sigma_shift"))
    visual_shift: float | None = Option(None, Optional(Real(above=0)), examples=(5.0,))
    audio_shift: float | None = Option(None, Optional(Real(above=0)), examples=(3.0,))
    visual_denoising_strength: float = Option(1.0, Real(above=0, at_most=1), examples=(0.8,))
    audio_denoising_strength: float = Option(1.0, Real(above=0, at_most=1), examples=(0.6,))
    visual_exponential_shift_mu: float | None = Option(None, Optional(Real(at_least=-50, at_most=50)), examples=(0.9,))
    audio_exponential_shift_mu: float | None = Option(None, Optional(Real(at_least=-50, at_most=50)), examples=(0.4,))
    # Which column of the pair this scheduler steps (ours: sglang steps both with one object).
    modality: str = Option("visual", Choice("visual", "audio"))

    diffusers_name: ClassVar[str] = "FlowMatchPairScheduler"

    def _column(self, num_inference_steps: int) -> torch.Tensor:
        """The column's sigmas [N] (its timesteps over num_train_timesteps), float32, as sglang makes the pair."""
        if self.pair_postprocess is None:
            return linspace_sigmas(
                self, num_inference_steps, self.shift, self.denoising_strength, self.exponential_shift_mu
            )
        shift, strength, mu = (
            (self.visual_shift, self.visual_denoising_strength, self.visual_exponential_shift_mu)
            if self.modality == "visual"
            else (self.audio_shift, self.audio_denoising_strength, self.audio_exponential_shift_mu)
        )
        shift = self.shift if shift is None else shift
        mu = self.exponential_shift_mu if mu is None else mu
        return linspace_sigmas(self, num_inference_steps, shift, strength, mu)

    def training_grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(timesteps, sigmas) of the training grid, float32: sglang's `train_timesteps`, `train_sigmas`."""
        sigmas = linspace_sigmas(self, self.num_train_timesteps, self.shift, 1.0, self.exponential_shift_mu)
        return sigmas * self.num_train_timesteps, sigmas

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Any:
        assert num_inference_steps is not None
        timesteps = self._column(num_inference_steps) * self.num_train_timesteps
        train_timesteps, train_sigmas = self.training_grid()
        nearest = (train_timesteps[None, :] - timesteps[:, None]).abs().argmin(dim=1)  # sglang's timestep_to_sigma
        sigmas = torch.cat([train_sigmas[nearest], torch.full((1,), self._final_sigma())])
        return self._plan_from_tables(timesteps, sigmas.to(dtype))
