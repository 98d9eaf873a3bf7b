"""Drop-ins of sglang's UniPC classes (sglang 0.5.23's `multimodal_gen`): `FlowUniPCMultistepScheduler` (Wan's
original flow UniPC) on `FlowUniPCMultistep`, and sglang's copy of `UniPCMultistepScheduler` on
`SglangUniPCMultistep`. Defined only where sglang's wheel is installed (`adapters.sglang.available()`).

Both are diffusers' UniPC drop-in with sglang's differences: sigmas kept on `set_timesteps`' device, and, for
FlowUniPC, `set_shift(s)` and `set_timesteps(..., shift=s)` (the option `set_shift`: for the next plans, or for this
one), an unknown first timestep raising sglang's IndexError rather than taking the last index, and no
`init_noise_sigma` (sglang's latent stage reads it as 1).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import torch

import functional_sched as fs
from functional_sched.adapters import sglang
from functional_sched.adapters.drop_in import UniPCMultistepScheduler as _DiffusersUniPC
from functional_sched.adapters.drop_in import _Multistep

if sglang.available():

    class _SglangUniPC(_Multistep):
        """What sglang's two UniPC drop-ins share beyond diffusers' UniPC's (its history read-outs, borrowed)."""

        timestep_list = _DiffusersUniPC.timestep_list
        this_order = _DiffusersUniPC.this_order
        last_sample = _DiffusersUniPC.last_sample
        _edited_fields = _DiffusersUniPC._edited_fields

        def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
            return sample.dtype

        def _exposed_sigmas(self, plan: Any) -> torch.Tensor:  # sglang leaves them on set_timesteps' device
            return plan.sigmas[0]

    class UniPCMultistepScheduler(_SglangUniPC, sglang.sglang_class("UniPCMultistepScheduler")):
        """sglang's copy of diffusers' `UniPCMultistepScheduler` on `functional_sched.SglangUniPCMultistep`."""

        _functional_class = fs.SglangUniPCMultistep

        def _validate_request(self, num_inference_steps: Any, sigmas: Any, mu: Any, timesteps: Any) -> None:
            pass  # sglang takes dynamic shifting without mu (the static flow_shift); the core checks the rest

        def _resolve_mu(self, mu: float | None) -> float | None:
            # sglang: `assert use_dynamic_shifting and time_shift_type == "exponential"`, then config.flow_shift =
            # exp(mu), which later calls without mu keep using (as the core's flow_shift, here).
            if mu is not None:
                assert self.config.use_dynamic_shifting and self.config.time_shift_type == "exponential"
                self.config.flow_shift = np.exp(mu)
                self._functional = attrs.evolve(self._functional, flow_shift=float(self.config.flow_shift))
            return mu

    class FlowUniPCMultistepScheduler(_SglangUniPC, sglang.sglang_class("FlowUniPCMultistepScheduler")):
        """sglang's `FlowUniPCMultistepScheduler` (Wan's UniPC) on `functional_sched.FlowUniPCMultistep`."""

        _functional_class = fs.FlowUniPCMultistep
        _missing_timestep_is_last = False  # sglang raises IndexError for a timestep its table lacks

        @property
        def init_noise_sigma(self) -> float:  # type: ignore[override]
            # sglang's class has none (its latent stage reads getattr(scheduler, "init_noise_sigma", 1)).
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'init_noise_sigma'")

        def _set_timesteps(
            self,
            num_inference_steps: int | None = None,
            device: str | torch.device | None = None,
            sigmas: Any = None,
            mu: float | None = None,
            shift: float | None = None,
        ) -> None:
            # The shift in force: `set_shift`'s (config.shift, an attribute over the constructor's item), or this
            # call's; the range stays the constructor's (from_sglang's mapping).
            self._functional = sglang.from_sglang(self)
            if shift is not None and not self._functional.use_dynamic_shifting:
                self._functional = attrs.evolve(self._functional, set_shift=float(shift))
            self._built_from = repr(dict(self.config))
            super()._set_timesteps(num_inference_steps, device, sigmas, mu)
