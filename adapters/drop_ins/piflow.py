"""pi-Flow's drop-in: diffusers' `PiflowScheduler` on `functional_sched.Piflow` (Kandinsky 6's distilled pipelines).

Its `step` takes the widened model output (`n_grid` predictions per channel, the last dim) as diffusers' does, and
returns the sample's dtype. As diffusers: an integer timestep is refused, a timestep not in the schedule raises
ValueError, and there is no `add_noise` or `scale_noise`. Not kept: diffusers' private `_piflow_raw_timesteps` (the
plan holds the substeps instead).
"""

from __future__ import annotations

from typing import Any, ClassVar

import diffusers
import torch
from diffusers.schedulers.scheduling_piflow import PiflowSchedulerOutput

from functional_sched.schedulers.piflow import Piflow

from ..drop_in import _DropIn

_INTEGER_TIMESTEP = (
    "Passing integer indices as timesteps to PiflowScheduler.step() is not supported; "
    "pass a value from scheduler.timesteps instead"
)


class PiflowDropIn(_DropIn):
    """What diffusers' and sglang's pi-Flow drop-ins share: timestep checks and lookup, sigmas on the plan's device."""

    def _check_timestep(self, timestep: Any) -> None:
        if isinstance(timestep, (int, torch.IntTensor, torch.LongTensor)):
            raise ValueError(_INTEGER_TIMESTEP)

    def _index_for_timestep(self, timestep: Any, schedule_timesteps: torch.Tensor | None = None) -> int:
        schedule = self.timesteps if schedule_timesteps is None else schedule_timesteps
        value = torch.as_tensor(timestep, device=schedule.device, dtype=schedule.dtype)
        candidates = (schedule == value).nonzero().flatten()
        if not candidates.numel():
            raise ValueError(f"timestep {value.item()} is not in the Piflow schedule")
        return int(candidates[1 if candidates.numel() > 1 else 0])

    def _on_edited_tables(self, state: Any, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Any:
        # diffusers steps from the edited sigmas but its own unshifted times (`_piflow_raw_timesteps`, untouched).
        functional = self._functional
        raw = functional._raw_times(timesteps.shape[0])
        return functional._carried(
            state, functional._tables_plan(timesteps, sigmas, state.plan.coefficients.dtype, raw)
        )

    def _exposed_sigmas(self, plan: Any) -> torch.Tensor:  # diffusers leaves them on set_timesteps' device
        return plan.sigmas[0]

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        return self._functional._output_dtype(sample)


class PiflowScheduler(PiflowDropIn, diffusers.PiflowScheduler):
    """diffusers' `PiflowScheduler` on `functional_sched.Piflow`."""

    _functional_class: ClassVar[type] = Piflow
    _output_class = PiflowSchedulerOutput
