"""The Euler family's drop-ins: `EulerDiscreteScheduler` and `EulerAncestralDiscreteScheduler`."""

from __future__ import annotations

from typing import Any, ClassVar

import diffusers
import torch
from diffusers.schedulers.scheduling_euler_ancestral_discrete import EulerAncestralDiscreteSchedulerOutput
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteSchedulerOutput

import functional_sched as fs

from .sigma_discrete import SigmaDiscreteDropIn


def _check_timestep(timestep: Any) -> None:
    """diffusers' refusal of an integer timestep (both Euler classes word it with `EulerDiscreteScheduler`)."""
    if isinstance(timestep, (int, torch.IntTensor, torch.LongTensor)):
        raise ValueError(
            "Passing integer indices (e.g. from `enumerate(timesteps)`) as timesteps to"
            " `EulerDiscreteScheduler.step()` is not supported. Make sure to pass"
            " one of the `scheduler.timesteps` as a timestep."
        )


class EulerDiscreteScheduler(SigmaDiscreteDropIn, diffusers.EulerDiscreteScheduler):
    """diffusers' `EulerDiscreteScheduler` on `functional_sched.EulerDiscrete` (the churn `step()` arguments re-plan
    the run where they differ from the config in force)."""

    _functional_class: ClassVar[type] = fs.EulerDiscrete
    _output_class = EulerDiscreteSchedulerOutput

    def _check_timestep(self, timestep: Any) -> None:
        _check_timestep(timestep)

    def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
        if not self._functional.stochastic:
            return None
        if not self._functional._draws_noise(state):
            return torch.zeros_like(sample)  # scaled by zero: diffusers draws none, so the generator keeps its stream
        return fs.randn_tensor(
            model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
        )


class EulerAncestralDiscreteScheduler(SigmaDiscreteDropIn, diffusers.EulerAncestralDiscreteScheduler):
    """diffusers' `EulerAncestralDiscreteScheduler` on `functional_sched.EulerAncestralDiscrete`: every step draws
    its noise from the `generator` as diffusers does (the model output's shape and dtype)."""

    _functional_class: ClassVar[type] = fs.EulerAncestralDiscrete
    _output_class = EulerAncestralDiscreteSchedulerOutput

    def _check_timestep(self, timestep: Any) -> None:
        _check_timestep(timestep)

    def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
        return fs.randn_tensor(
            model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
        )
