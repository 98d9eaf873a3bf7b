"""Drop-in of sglang's `SelfForcingFlowMatchScheduler` (on `SelfForcingFlowMatch`); defined only where sglang's wheel is
installed (`functional_sched.adapters.sglang`), registered in `drop_in.SGLANG_DROP_INS`.

sglang's class counts no steps: each `step` and `add_noise` looks every row's index up by its timestep (`argmin
|timesteps - t|`, a 2-D timestep flattened to one per row), so this drop-in does the same, stepping each row from its
own sigma to its next with the functional step. Its tables are sglang's: `timesteps` and `sigmas` [N] float32 (no final
sigma), made at construction for `num_inference_steps` and by every `set_timesteps(num_inference_steps,
denoising_strength)`; the result has the dtype sglang's arithmetic gives (the sample's and the model output's promoted
with float32: its sigmas are per-row float32 tensors). Where sglang differs: rows at different steps each step to
their own next sigma (sglang sends a whole batch to sigma 0 once any row is at its last step), `step(to_final=True)` is
refused by name (a jump to the end from mid-schedule, which no pipeline makes), float64 samples step in float64.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch

from functional_sched.machinery import checks
from functional_sched.schedulers.self_forcing import SelfForcingFlowMatch

from .. import sglang
from ..drop_in import _check_timesteps, _DropIn

if sglang.available():
    _MODULE = sglang.sglang_module(sglang.MODULES["SelfForcingFlowMatchScheduler"])

    class SelfForcingFlowMatchScheduler(_DropIn, _MODULE.SelfForcingFlowMatchScheduler):  # type: ignore[valid-type, misc]
        """sglang's `SelfForcingFlowMatchScheduler` on `functional_sched.SelfForcingFlowMatch`."""

        _functional_class: ClassVar[type] = SelfForcingFlowMatch
        _output_class = _MODULE.SelfForcingFlowMatchSchedulerOutput

        def _configure(self, **options: Any) -> None:
            super()._configure(**options)
            self._set_timesteps(self.config.num_inference_steps)  # sglang's constructor sets its table

        @property
        def timesteps(self) -> torch.Tensor:
            return self._tables["timesteps"]

        @property
        def sigmas(self) -> torch.Tensor:
            return self._tables["sigmas"]

        def set_shift(self, shift: float) -> None:
            """sglang's `set_shift`: the next `set_timesteps` shifts by `shift`."""
            self.shift = shift
            self._functional = attrs.evolve(self._functional, shift=float(shift))

        def _set_timesteps(
            self, num_inference_steps: int = 100, denoising_strength: float = 1.0, return_dict: bool = False, **_: Any
        ) -> None:
            if denoising_strength != self._functional.denoising_strength:
                self._functional = attrs.evolve(self._functional, denoising_strength=denoising_strength)
            plan = self._functional.plan(num_inference_steps, dtype=torch.float32)
            self._plan = plan
            self._tables = {"timesteps": plan.timesteps[0], "sigmas": plan.sigmas[0, :-1]}

        def _rows_index(self, timestep: torch.Tensor, rows: int, device: torch.device) -> torch.Tensor:
            """Each row's index in the table, as sglang looks it up: the nearest timestep (the first of ties)."""
            timestep = torch.as_tensor(timestep)
            if timestep.ndim == 2:
                timestep = timestep.flatten(0, 1)
            timestep = timestep.reshape(-1).to(device)
            table = self._tables["timesteps"].to(device)
            index = torch.argmin((table.unsqueeze(0) - timestep.unsqueeze(1)).abs(), dim=1)
            if index.shape[0] not in (1, rows):
                raise ValueError(
                    f"{type(self).__name__}: {index.shape[0]} timesteps for {rows} rows; give one, or one per row."
                )
            return index.expand(rows)

        def _step(
            self,
            model_output: torch.Tensor,
            timestep: torch.Tensor,
            sample: torch.Tensor,
            to_final: bool = False,
            return_dict: bool = False,
            **_: Any,
        ) -> Any:
            owner = f"{type(self).__name__}.step"
            if to_final:
                raise NotImplementedError(
                    f"functional_sched does not support {owner}(to_final=True): a jump to the final sigma from "
                    "mid-schedule, which no pipeline makes; step to the end, or step with a schedule that ends there."
                )
            checks.tensor(owner, "model_output", model_output)
            checks.tensor(owner, "sample", sample)
            _check_timesteps(owner, "timestep", timestep)
            out_dtype = torch.promote_types(torch.promote_types(sample.dtype, model_output.dtype), torch.float32)
            work = sample.to(out_dtype)
            index = self._rows_index(timestep, sample.shape[0], sample.device)
            state = self._functional.init(int(self._plan.timesteps.shape[1]), sample=work)
            prev_sample, _ = self._functional.step(state.replace(step_index=index), model_output, work)
            return (prev_sample,) if not return_dict else self._output_class(prev_sample=prev_sample)

        @property
        def num_inference_steps(self) -> int:
            # sglang's object sets no such attribute: diffusers' ConfigMixin reads it from the config (the
            # constructor's count), whatever `set_timesteps` planned since.
            return self.config.num_inference_steps

        def add_noise(
            self, original_samples: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor
        ) -> torch.Tensor:
            """sglang's `add_noise`: each row's sigma at its nearest timestep, `(1 - sigma) * x + sigma * noise`, in
            the noise's dtype."""
            owner = f"{type(self).__name__}.add_noise"
            checks.tensor(owner, "original_samples", original_samples)
            checks.check_like(owner, "noise", noise, original_samples, "original_samples")
            _check_timesteps(owner, "timestep", timestep)
            index = self._rows_index(timestep, original_samples.shape[0], noise.device)
            sigma = self._tables["sigmas"].to(noise.device)[index]
            sigma = sigma.reshape(-1, *([1] * (original_samples.dim() - 1)))
            return ((1 - sigma) * original_samples + sigma * noise).type_as(noise)

        def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
            return sample

        # What sglang's instance lacks (it counts no steps) and the base drop-in would add.
        @property
        def step_index(self) -> int | None:  # type: ignore[override]
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'step_index'")

        @property
        def begin_index(self) -> int | None:  # type: ignore[override]
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'begin_index'")

        @property
        def set_begin_index(self) -> Any:  # type: ignore[override]
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'set_begin_index'")
