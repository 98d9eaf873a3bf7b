"""The drop-ins of DPM-Solver's relatives (`functional_sched.schedulers.deis`, `.dpm_singlestep`): DEIS and singlestep
DPM-Solver, on the multistep drop-in (`model_outputs`, `lower_order_nums`, `add_noise`, sigmas on the CPU).

Neither class upcasts: each returns what its arithmetic promotes the sample and the model output to. Both take `mu`
as DPM-Solver does (`config.flow_shift = exp(mu)`, kept by later `set_timesteps` calls). The singlestep one also
exposes the sample its current step started from (`sample`, edits taken) and the order list of the schedule
(`order_list`), and, as diffusers, sets `lower_order_final=True` in its config for good the first time a schedule needs
it (steps no multiple of the order, or a final sigma of zero).
"""

from __future__ import annotations

from typing import Any

import diffusers
import torch

import functional_sched as fs

from ..drop_in import DPMSolverMultistepScheduler, _like, _Multistep


class _Relative(_Multistep):
    """What the two share: diffusers' `set_timesteps(mu=...)`, no `mu` required for dynamic shifting, no upcast."""

    _resolve_mu = DPMSolverMultistepScheduler._resolve_mu

    def _validate_request(self, num_inference_steps: Any, sigmas: Any, mu: Any, timesteps: Any) -> None:
        pass  # diffusers' DEIS and singlestep DPM-Solver use `flow_shift` where dynamic shifting has no `mu`

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        return torch.promote_types(sample.dtype, model_output.dtype)


class DEISMultistepScheduler(_Relative, diffusers.DEISMultistepScheduler):
    """diffusers' `DEISMultistepScheduler` on `functional_sched.DEISMultistep`."""

    _functional_class = fs.DEISMultistep


class DPMSolverSinglestepScheduler(_Relative, diffusers.DPMSolverSinglestepScheduler):
    """diffusers' `DPMSolverSinglestepScheduler` on `functional_sched.DPMSolverSinglestep`."""

    _functional_class = fs.DPMSolverSinglestep

    def _validate_request(self, num_inference_steps: Any, sigmas: Any, mu: Any, timesteps: Any) -> None:
        # diffusers' set_timesteps registers lower_order_final=True where the schedule needs it; later schedules keep
        # it (the drop-in then rebuilds its functional scheduler from the config, as for any key registered).
        steps = num_inference_steps if num_inference_steps is not None else None
        if steps is None and timesteps is not None:
            steps = len(timesteps)
        config = self.config
        if steps is None or config.lower_order_final:
            return
        if steps % config.solver_order != 0 or config.final_sigmas_type == "zero":
            self.register_to_config(lower_order_final=True)

    def _noise(self, model_output, sample, generator, variance_noise, state=None):  # type: ignore[no-untyped-def]
        if self.config.algorithm_type != "sde-dpmsolver++":
            return None
        # diffusers draws in the converted output's dtype: the model's own for sample prediction, else promoted.
        dtype = (
            model_output.dtype if self.config.prediction_type == "sample" else self._output_dtype(model_output, sample)
        )
        return fs.randn_tensor(sample.shape, generator=generator, device=model_output.device, dtype=dtype)

    @property
    def order_list(self) -> list[int]:
        """The order of each step, diffusers' `get_order_list` of the schedule (of the training steps before one)."""
        if self._plan is None:
            return list(self.__dict__["_constructed_order_list"])
        functional = self._functional
        assert isinstance(functional, fs.DPMSolverSinglestep)
        return functional.order_list(len(self.timesteps))

    @order_list.setter
    def order_list(self, value: list[int]) -> None:
        self.__dict__["_constructed_order_list"] = list(value)  # what diffusers' constructor computed

    @property
    def sample(self) -> torch.Tensor | None:
        """The sample the current singlestep started from (None before the first step)."""
        exposed = self.__dict__.get("_exposed", {}).get("sample")
        if exposed is not None:
            return exposed[0]
        state = self._state
        value = None if state is None else state.start_sample
        self._exposed["sample"] = (value, id(value))
        return value

    @sample.setter
    def sample(self, value: torch.Tensor | None) -> None:
        # The constructor's assignment (None) lands here before `_exposed` exists, and is dropped when it is made.
        self.__dict__.setdefault("_exposed", {})["sample"] = (value, None)

    def _edited_fields(self, work: torch.Tensor) -> dict[str, Any]:
        exposed = self._exposed.get("sample")
        if exposed is None or exposed[1] is not None or exposed[0] is None:
            return {}
        return {"start_sample": _like(exposed[0], work, "sample")}
