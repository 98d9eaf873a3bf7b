"""Drop-in of sglang's `HeliosScheduler` (Helios' base, Mid and Distilled pipelines in sglang; its
`HeliosDMDScheduler` is an alias of it) on `functional_sched.SglangHelios`; defined only where sglang's wheel is
installed (`functional_sched.adapters.sglang`), registered in `drop_in.SGLANG_DROP_INS`.

sglang's class is no diffusers ConfigMixin: its `config` is a plain-attribute object that its pipeline rewrites after
construction (`stages`, `scheduler_type`, `gamma`, then `init_sigmas_for_each_stage()`; `set_shift` writes
`config.shift`). The drop-in keeps that object and the per-stage tables sglang's methods make (`ori_start_sigmas`,
`timesteps_per_stage`, ... which the pyramid stage reads), and maps them at every `set_timesteps` (`from_sglang`:
tables made from other options than the config holds are refused by name). `set_timesteps(n, stage_index, device,
sigmas, mu, is_amplify_first_chunk)` plans the stage (diffusers' Helios drop-in's rules, `helios.py`); `step` runs
UniPC or Euler steps (the solver history read from the state: `model_outputs`, `timestep_list`, `lower_order_nums`,
`last_sample`, `this_order`), or with `scheduler_type="dmd"` DMD steps taking the pipeline's `cur_sampling_step`,
`dmd_noisy_tensor` (the stage's start point) and the scheduler's own `dmd_sigmas`/`dmd_timesteps`; it returns
`(prev_sample,)` or sglang's `HeliosSchedulerOutput`, as sglang's does. Before any `set_timesteps` the tables are
sglang's training tables (`init_sigmas`), which `init_sigmas_for_each_stage()` rebuilds.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from functional_sched.schedulers.helios import SglangHelios

from .. import sglang
from ..drop_in import _MANAGED, _DropIn, _Multistep, _owned, _Request
from .helios import _Helios


class _Planned(_DropIn):
    """`set_timesteps`' planning without the check of a diffusers config for keys registered since construction
    (sglang's config is a plain object: `_remap` maps it at every call)."""

    def _set_timesteps(
        self, num_inference_steps: Any = None, device: Any = None, sigmas: Any = None, mu: Any = None
    ) -> None:
        self._validate_request(num_inference_steps, sigmas, mu, None)
        request = _Request(num_inference_steps, None, sigmas, self._resolve_mu(mu))
        self._planned(request, device if device is not None else "cpu")
        self._request, self._state, self._begin_index, self._exposed, self._from_edits = request, None, None, {}, False


if sglang.available():
    _MODULE = sglang.sglang_module(sglang.MODULES["HeliosScheduler"])

    class HeliosScheduler(_Helios, _Planned, _Multistep, _MODULE.HeliosScheduler):  # type: ignore[valid-type, misc]
        """sglang's `HeliosScheduler` on `functional_sched.SglangHelios` (UniPC, Euler or DMD steps)."""

        _functional_class: ClassVar[type] = SglangHelios
        _output_class = _MODULE.HeliosSchedulerOutput
        init_noise_sigma = property(doc="none")  # type: ignore[assignment]  # sglang's has none
        add_noise = _MODULE.HeliosScheduler.add_noise  # sglang's own (it takes the tables), not `_Multistep`'s

        def _configure(self, **options: Any) -> None:
            reference = self._diffusers_class(**options)  # sglang's checks; its config object and stage tables
            self._functional = sglang.from_sglang(reference)
            for name, value in vars(reference).items():
                if name not in _MANAGED:
                    object.__setattr__(self, name, _owned(value))
            self._default_tables = (reference.timesteps, reference.sigmas)
            self._plan: Any = None
            self._tables: dict[str, torch.Tensor] = {}
            self._versions: dict[str, int] = {}
            self._request = None
            self._begin_index: int | None = None
            self._state: Any = None
            self._exposed: dict[str, Any] = {}

        def _remap(self) -> None:
            self._functional = sglang.from_sglang(self)  # the config object as the pipeline left it

        # sglang's `init_sigmas` (called by `init_sigmas_for_each_stage`) writes the training tables: they become the
        # tables exposed until the next `set_timesteps`.
        @property
        def timesteps(self) -> torch.Tensor:
            return _DropIn.timesteps.fget(self)  # type: ignore[attr-defined]

        @timesteps.setter
        def timesteps(self, value: torch.Tensor) -> None:
            self._default_tables = (value, self._default_tables[1])
            self._plan, self._request, self._state = None, None, None

        @property
        def sigmas(self) -> torch.Tensor:
            return _DropIn.sigmas.fget(self)  # type: ignore[attr-defined]

        @sigmas.setter
        def sigmas(self, value: torch.Tensor) -> None:
            self._default_tables = (self._default_tables[0], value)
            self._plan, self._request, self._state = None, None, None

        @property
        def num_inference_steps(self) -> int | None:  # type: ignore[override]
            return None if self._request is None else self._helios_steps  # sglang's: None until set_timesteps

        @property
        def step_index(self) -> int | None:
            if self._functional.scheduler_type == "dmd":
                return None  # sglang's DMD step counts nothing (the pipeline passes `cur_sampling_step`)
            return _DropIn.step_index.fget(self)  # type: ignore[attr-defined]

        def _step(
            self,
            model_output: torch.Tensor,
            timestep: Any = None,
            sample: torch.Tensor | None = None,
            return_dict: bool = True,
            **kwargs: Any,
        ) -> Any:
            if self._functional.scheduler_type == "dmd":
                arguments = ("cur_sampling_step", "dmd_noisy_tensor", "dmd_sigmas", "dmd_timesteps")
                cur, noisy, sigmas, timesteps = (kwargs.get(name, 0 if name[0] == "c" else None) for name in arguments)
                (prev_sample,) = self._dmd_step(
                    model_output, timestep, sample, None, False, cur, noisy, sigmas, timesteps
                )
            else:
                prev_sample, _, _ = self._solver_step(model_output, timestep, sample, None, False)
            return self._output_class(prev_sample=prev_sample) if return_dict else (prev_sample,)
