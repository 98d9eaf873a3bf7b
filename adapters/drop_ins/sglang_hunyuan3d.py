"""Drop-ins of sglang's Hunyuan3D schedulers: `Hunyuan3DFlowMatchEulerDiscreteScheduler` (on
`Hunyuan3DFlowMatchEulerDiscrete`) and `Hunyuan3DConsistencyFlowMatchEulerDiscreteScheduler` (on
`Hunyuan3DConsistencyFlowMatchEulerDiscrete`); defined only where sglang's wheel is installed
(`functional_sched.adapters.sglang`), registered in `drop_in.SGLANG_DROP_INS`.

Each subclasses sglang's class and steps as flow-match Euler's drop-in does (float32 steps, the model output's dtype
out). What sglang exposes is kept as it has it: the Euler class's `num_inference_steps` only once a call without custom
sigmas set it, and its `scale_noise` (sglang's own method, the descending formula, which the ascending schedule does not
step by); the consistency class's `sigmas` stay its training grid, the schedule's sigmas are `sigmas_`, its step
returns `pred_original_sample` too (only with `return_dict=True`, as sglang's).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from functional_sched.schedulers.hunyuan3d import (
    Hunyuan3DConsistencyFlowMatchEulerDiscrete,
    Hunyuan3DFlowMatchEulerDiscrete,
)

from .. import sglang
from ..drop_in import FlowMatchEulerDiscreteScheduler as _FlowMatchEuler
from ..drop_in import _DropIn

if sglang.available():
    _MODULE = sglang.sglang_module(sglang.MODULES["Hunyuan3DFlowMatchEulerDiscreteScheduler"])

    class _Hunyuan3D(_DropIn):
        """What both share: sglang's float32 step, the model output's dtype out, its integer-timestep refusal."""

        _missing_timestep_is_last = False  # sglang's lookup raises IndexError for an unknown timestep
        _output_dtype = _FlowMatchEuler._output_dtype
        _core_sample = _FlowMatchEuler._core_sample

        def _check_timestep(self, timestep: Any) -> None:
            if isinstance(timestep, (int, torch.IntTensor, torch.LongTensor)):
                raise ValueError(self._integer_timestep_message)

        _integer_timestep_message: ClassVar[str]

    class Hunyuan3DFlowMatchEulerDiscreteScheduler(  # type: ignore[valid-type, misc]
        _Hunyuan3D, sglang.sglang_class("Hunyuan3DFlowMatchEulerDiscreteScheduler")
    ):
        """sglang's `Hunyuan3DFlowMatchEulerDiscreteScheduler` on `functional_sched.Hunyuan3DFlowMatchEulerDiscrete`."""

        _functional_class: ClassVar[type] = Hunyuan3DFlowMatchEulerDiscrete
        _output_class = _MODULE.Hunyuan3DFlowMatchSchedulerOutput
        _steps_on_default_tables = True  # sglang steps on its training tables before set_timesteps, as diffusers' Euler
        _exposed_sigmas = _FlowMatchEuler._exposed_sigmas  # on set_timesteps' device
        _integer_timestep_message = (
            "Passing integer indices as timesteps is not supported. Pass one of `scheduler.timesteps` as a timestep."
        )
        #: `num_inference_steps` as sglang sets it: by a `set_timesteps` without custom sigmas, kept through later ones.
        _counted: int | None = None

        @property
        def num_inference_steps(self) -> int:
            if self._counted is None:
                raise AttributeError(
                    f"'{type(self).__name__}' object has no attribute 'num_inference_steps' (sglang sets it only "
                    "in a set_timesteps call without custom sigmas)"
                )
            return self._counted

        def _validate_request(self, num_inference_steps: Any, sigmas: Any, mu: Any, timesteps: Any) -> None:
            if self.config.use_dynamic_shifting and mu is None:
                raise ValueError("Must pass a value for `mu` when `use_dynamic_shifting` is True")

        def _set_timesteps(self, num_inference_steps: Any = None, sigmas: Any = None, **arguments: Any) -> None:
            super()._set_timesteps(num_inference_steps, sigmas=sigmas, **arguments)
            if sigmas is None:
                self._counted = num_inference_steps

    class Hunyuan3DConsistencyFlowMatchEulerDiscreteScheduler(  # type: ignore[valid-type, misc]
        _Hunyuan3D, sglang.sglang_class("Hunyuan3DConsistencyFlowMatchEulerDiscreteScheduler")
    ):
        """sglang's `Hunyuan3DConsistencyFlowMatchEulerDiscreteScheduler` on
        `functional_sched.Hunyuan3DConsistencyFlowMatchEulerDiscrete`: `sigmas` is the PCM grid (construction's),
        `sigmas_` the schedule's (on the CPU), `step` returns `pred_original_sample` with `return_dict=True`."""

        _functional_class: ClassVar[type] = Hunyuan3DConsistencyFlowMatchEulerDiscrete
        _output_class = _MODULE.Hunyuan3DConsistencyFlowMatchSchedulerOutput
        _returns_x0 = True
        _integer_timestep_message = "Passing integer indices as timesteps is not supported."

        @property
        def sigmas(self) -> torch.Tensor:
            return self._default_tables[1]  # the grid: sglang's set_timesteps keeps it and writes `sigmas_`

        @property
        def sigmas_(self) -> torch.Tensor:
            if self._plan is None:
                raise AttributeError(
                    f"'{type(self).__name__}' object has no attribute 'sigmas_' (set_timesteps makes it)"
                )
            return self._tables["sigmas"]

        def _x0(self, x0: torch.Tensor, model_output: torch.Tensor) -> torch.Tensor:
            return x0.to(model_output.dtype)  # sglang casts its pred_original_sample as its prev_sample

        def _step(
            self, model_output: Any, timestep: Any, sample: Any, return_dict: bool = True, **arguments: Any
        ) -> Any:
            out = super()._step(model_output, timestep, sample, return_dict=return_dict, **arguments)
            return out if return_dict else out[:1]  # sglang's tuple holds prev_sample alone
