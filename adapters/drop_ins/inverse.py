"""The inverse schedulers' drop-ins (`functional_sched.DDIMInverse`, `functional_sched.DPMSolverMultistepInverse`).

DDIMInverse's is DDIM's (`ddpm._AlphaBar`): the step found by the timestep each call passes, no sigma table, no step
or begin index, and diffusers' own step off the planned table. DPMSolverMultistepInverse's is the multistep one
(`model_outputs`, `lower_order_nums`, `add_noise`, sigmas on the CPU); diffusers' inverse class does not upcast, so
each step returns what its arithmetic promotes the sample and the model output to. (Its SDE variants, which return NaN
towards noise, are refused: no step draws noise.)
"""

from __future__ import annotations

from typing import Any

import diffusers
import torch
from diffusers.schedulers.scheduling_ddim_inverse import DDIMSchedulerOutput

from functional_sched.schedulers.inverse import DDIMInverse, DPMSolverMultistepInverse, noisiest_timestep

from ..drop_in import _Multistep
from .ddpm import _absent, _AlphaBar


class DDIMInverseScheduler(_AlphaBar, diffusers.DDIMInverseScheduler):
    """diffusers' `DDIMInverseScheduler` on `functional_sched.DDIMInverse`."""

    _functional_class = DDIMInverse
    _output_class = DDIMSchedulerOutput


class DPMSolverMultistepInverseScheduler(_Multistep, diffusers.DPMSolverMultistepInverseScheduler):
    """diffusers' `DPMSolverMultistepInverseScheduler` on `functional_sched.DPMSolverMultistepInverse`."""

    _functional_class = DPMSolverMultistepInverse
    # diffusers' inverse class finds its first step by the timestep alone: no begin index.
    begin_index = _absent("begin_index")  # type: ignore[assignment]
    set_begin_index = _absent("set_begin_index")  # type: ignore[assignment]

    def _set_timesteps(self, num_inference_steps: Any = None, device: Any = None, **arguments: Any) -> None:
        super()._set_timesteps(num_inference_steps, device, **arguments)
        self.noisiest_timestep = noisiest_timestep(self._functional)  # diffusers' attribute, set here as there

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        return torch.promote_types(sample.dtype, model_output.dtype)
