"""Drop-in of sglang's `DPMSolverMultistepScheduler` (sglang 0.5.23's wrapper of diffusers' class, SANA's and
wan_animate_2's) on `SglangDPMSolverMultistep`. Defined only where sglang's wheel is installed
(`adapters.sglang.available()`).

It is diffusers' DPM-Solver drop-in with the wrapper's surface: `set_timesteps(sigmas=...)` (custom sigmas as given,
truncated timesteps), no `step_index` or `num_inference_steps` attribute, `set_begin_index` and `set_shift` kept but
read by nothing (the wrapper forwards neither: its inner scheduler finds where it stands, and each row's noise level
in `add_noise`, by timestep), and `mu` failing as the inner scheduler's assertion does. Options sglang takes and
drops (`use_dynamic_shifting`, `time_shift_type`, a registered `sigma_min`/`sigma_max`) are refused by name.
"""

from __future__ import annotations

from typing import Any

import functional_sched as fs
from functional_sched.adapters import sglang
from functional_sched.adapters.drop_in import DPMSolverMultistepScheduler as _DiffusersDPM
from functional_sched.adapters.drop_in import _Multistep

if sglang.available():

    class DPMSolverMultistepScheduler(_Multistep, sglang.sglang_class("DPMSolverMultistepScheduler")):
        """sglang's `DPMSolverMultistepScheduler` on `functional_sched.SglangDPMSolverMultistep`."""

        _functional_class = fs.SglangDPMSolverMultistep
        _output_dtype = _DiffusersDPM._output_dtype
        _noise = _DiffusersDPM._noise

        def _configure(self, **options: Any) -> None:
            sglang.refuse_dropped(self, given=options)
            super()._configure(**options)
            self._wrapper_begin_index: int | None = None

        def _set_timesteps(self, *args: Any, **kwargs: Any) -> None:
            sglang.refuse_dropped(self)  # keys registered since construction (from_config registers unknown ones then)
            super()._set_timesteps(*args, **kwargs)

        def set_begin_index(self, begin_index: int = 0) -> None:
            # Kept, as the wrapper keeps it, and never read: the first step finds its index by its timestep.
            self._wrapper_begin_index = begin_index

        @property
        def begin_index(self) -> int | None:
            return self._wrapper_begin_index

        @property
        def step_index(self) -> int | None:  # type: ignore[override]
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'step_index'")

        @property
        def num_inference_steps(self) -> int | None:  # type: ignore[override]
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'num_inference_steps'")

        def _resolve_mu(self, mu: float | None) -> float | None:
            # The inner diffusers scheduler: `assert use_dynamic_shifting and ...`, which the wrapper never sets.
            assert mu is None
            return None
