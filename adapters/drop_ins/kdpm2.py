"""The drop-ins of KDPM2 and KDPM2 ancestral (`functional_sched.KDPM2Discrete`, `KDPM2AncestralDiscrete`), on the
two-call machinery of Heun's (`heun.TwoCallDropIn`): `sample` (and the ancestral `dt`) read from the state and plan,
the midpoint tables (`sigmas_interpol`, `sigmas_up`, `sigmas_down`) from the plan, diffusers' sigma table with its
two extra final sigmas."""

from __future__ import annotations

from typing import Any, ClassVar

import diffusers
import torch
from diffusers.schedulers.scheduling_k_dpm_2_ancestral_discrete import KDPM2AncestralDiscreteSchedulerOutput
from diffusers.schedulers.scheduling_k_dpm_2_discrete import KDPM2DiscreteSchedulerOutput

import functional_sched as fs
from functional_sched.schedulers.heun import DT

from .heun import TwoCallDropIn, absent, run_value


class _KDPM2DropIn(TwoCallDropIn):
    """What both KDPM2 drop-ins share."""

    def _exposed_sigmas(self, plan: Any) -> torch.Tensor:
        table = plan.sigmas[0].cpu()
        return torch.cat([table, table[-1:], table[-1:]])  # diffusers' table: the final sigma thrice

    def _planned_sigmas(self, exposed: torch.Tensor) -> torch.Tensor:
        return exposed[:-2]

    def _set_timesteps(self, *args: Any, **kwargs: Any) -> None:
        super()._set_timesteps(*args, **kwargs)
        # diffusers makes its midpoint tables here, and keeps them through edits of `sigmas` until the next call.
        tables = self._functional._exposed_tables(self._plan.sigmas[0].cpu())
        self._midpoint_tables = {name: table.to(self._plan.sigmas.device) for name, table in tables.items()}

    def _table(self, name: str) -> torch.Tensor:
        """diffusers' midpoint table `name` of the last `set_timesteps` (the constructor's before one)."""
        return (vars(self).get("_midpoint_tables") or vars(self)["_construction"])[name]

    def _kept(self) -> dict[str, Any]:
        names = ("sigmas_interpol", "sigmas_up", "sigmas_down") if self._functional.stochastic else ("sigmas_interpol",)
        return {name.removeprefix("sigmas_"): self._table(name)[0::2].cpu() for name in names}

    def _sample(self) -> torch.Tensor | None:
        return self._state.sample if self._mid_interval() else None

    sample = run_value("sample", _sample)
    sigmas_interpol = run_value("sigmas_interpol", lambda self: self._table("sigmas_interpol"))


class KDPM2DiscreteScheduler(_KDPM2DropIn, diffusers.KDPM2DiscreteScheduler):
    """diffusers' `KDPM2DiscreteScheduler` on `functional_sched.KDPM2Discrete`."""

    _functional_class: ClassVar[type] = fs.KDPM2Discrete
    _output_class = KDPM2DiscreteSchedulerOutput


class KDPM2AncestralDiscreteScheduler(_KDPM2DropIn, diffusers.KDPM2AncestralDiscreteScheduler):
    """diffusers' `KDPM2AncestralDiscreteScheduler` on `functional_sched.KDPM2AncestralDiscrete`: the noise of each
    interval's second call drawn as diffusers draws it (in the model output's dtype, from the step's generator)."""

    _functional_class: ClassVar[type] = fs.KDPM2AncestralDiscrete
    _output_class = KDPM2AncestralDiscreteSchedulerOutput

    def _dt(self) -> torch.Tensor:
        # diffusers sets it at each first call and keeps it (its second call leaves it): the last first call's.
        if not self._stepped_once():
            absent(self, "dt")
        taken = self.step_index
        return self._entry(taken - 1 if self._mid_interval() else taken - 2)[DT].clone()

    dt = run_value("dt", _dt)
    sigmas_up = run_value("sigmas_up", lambda self: self._table("sigmas_up"))
    sigmas_down = run_value("sigmas_down", lambda self: self._table("sigmas_down"))

    def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
        if not self._functional._draws_noise(state):
            return sample  # diffusers draws none at a first call (the generator keeps its stream); the step reads none
        return fs.randn_tensor(
            model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
        )
