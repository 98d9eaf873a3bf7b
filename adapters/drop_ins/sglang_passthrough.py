"""Drop-in of sglang's `ComfyUIPassThroughScheduler` (sglang's ComfyUI mode) on `functional_sched.ComfyUIPassThrough`;
defined only where sglang's wheel is installed (`functional_sched.adapters.sglang`), registered in
`drop_in.SGLANG_DROP_INS`.

What covering a pass-through means: the drop-in's `step` is the core's identity step (a copy of the sample, one call
counted in the state), its `set_timesteps` the core's plan of sglang's schedule (the caller's timesteps, a list
truncated to int64, a tensor kept; one timestep 0 where none are given), and every attribute sglang's denoising stage
reads or writes is there as sglang has it: `timesteps` (empty before `set_timesteps`), `shift` (`set_shift`),
`step_index` (the calls since construction or since the stage wrote `_step_index = None`: sglang's count, which
`set_timesteps` does not reset), `begin_index` (kept, read by nothing), no `sigmas` and no `num_inference_steps`.
sglang's step never runs out of schedule (ComfyUI calls it once per model evaluation, whatever the table holds): a
state past its plan, or made for another batch, is replaced by a fresh one. `add_noise` returns the clean samples, as
sglang's does. The result of a step is a copy of the sample (sglang hands back the very tensor it was given).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

import functional_sched as fs
from functional_sched.machinery import checks

from .. import sglang
from ..drop_in import _check_timesteps, _DropIn

if sglang.available():
    _MODULE = sglang.sglang_module(sglang.MODULES["ComfyUIPassThroughScheduler"])

    class ComfyUIPassThroughScheduler(_DropIn, _MODULE.ComfyUIPassThroughScheduler):  # type: ignore[valid-type, misc]
        """sglang's `ComfyUIPassThroughScheduler` on `functional_sched.ComfyUIPassThrough`."""

        _functional_class: ClassVar[type] = fs.ComfyUIPassThrough
        _output_class = _MODULE.ComfyUIPassThroughSchedulerOutput

        def _configure(self, **options: Any) -> None:
            sglang.refuse_dropped(self, given=options)
            super()._configure(**options)
            self._step_index: int | None = 0  # sglang's count (its denoising stage writes None before a request)
            self._timestep_table: torch.Tensor | None = None

        @property
        def timesteps(self) -> torch.Tensor:
            return self._default_tables[0] if self._plan is None else self._tables["timesteps"]

        @property
        def sigmas(self) -> torch.Tensor:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'sigmas'")

        @property
        def num_inference_steps(self) -> int | None:  # type: ignore[override]
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'num_inference_steps'")

        @property
        def step_index(self) -> int | None:
            return self._step_index

        def _set_timesteps(
            self, num_inference_steps: int = 1, timesteps: Any = None, device: Any = None, **_: Any
        ) -> None:
            # sglang reads neither the step count nor custom sigmas; nor `set_begin_index`'s value or its step count,
            # which set_timesteps leaves as they are.
            if isinstance(timesteps, torch.Tensor) and device is None:
                device = timesteps.device
            plan = self._functional.plan(timesteps=timesteps, device=device if device is not None else "cpu")
            self._plan, self._tables, self._versions = plan, {"timesteps": plan.timesteps[0]}, {}
            self._request, self._state = None, None

        def _step(
            self,
            model_output: torch.Tensor,
            timestep: Any,
            sample: torch.Tensor,
            return_dict: bool = False,
            **_: Any,
        ) -> Any:
            owner = f"{type(self).__name__}.step"
            checks.tensor(owner, "model_output", model_output)
            checks.tensor(owner, "sample", sample)
            _check_timesteps(owner, "timestep", timestep)
            if self._step_index is None:
                self._step_index = 0
            self._step_index += 1
            state = self._state
            if (
                state is None
                or self._functional.steps_left(state) == 0
                or state.step_index.shape[0] != sample.shape[0]
                or state.step_index.device != sample.device
            ):
                table = self.timesteps if self._plan is not None else None
                state = self._functional.init(sample=sample, timesteps=table)
            prev_sample, self._state = self._functional.step(state, model_output, sample)
            return (prev_sample,) if not return_dict else self._output_class(prev_sample=prev_sample)
