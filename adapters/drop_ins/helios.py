"""Drop-ins of diffusers' Helios schedulers: `HeliosScheduler` on `functional_sched.Helios` and `HeliosDMDScheduler`
on `functional_sched.HeliosDMD`.

`set_timesteps(num_inference_steps, stage_index, device, sigmas, mu, is_amplify_first_chunk)` plans the stage it
names (config of ours: the functional scheduler is re-made with it); the tables are exposed in diffusers' dtypes and
on `device`, the per-stage tables (`ori_start_sigmas`, `timesteps_per_stage`, ... which Helios' pyramid pipeline reads)
are diffusers' from construction. UniPC's `step` returns what diffusers' does (`(prev_sample, None, last_sample,
this_order)`, or `HeliosSchedulerOutput` with them) and its solver history reads from the state (`model_outputs`,
`timestep_list`, `lower_order_nums`, `last_sample`, `this_order`); Euler's returns `(prev_sample,)`. DMD's `step`
takes what the pipeline passes: `dmd_noisy_tensor` is the noise the step renoises with (the stage's start point);
`dmd_sigmas`, `dmd_timesteps` and `all_timesteps` must be this scheduler's own tables (they are, in diffusers'
pipeline); the step is at `cur_sampling_step`, whatever came before (the libraries keep no DMD count); its `add_noise`
(which takes the tables) is diffusers'. As the libraries, `set_begin_index` is kept and read nowhere (steps count
from 0), Euler and DMD steps take a sample of another shape mid-loop, and tables edited in place are stepped from
exactly (the edited sigmas exposed as written). Not mirrored: `HeliosScheduler.step_unipc`'s external history
arguments (no pipeline passes them).
"""

from __future__ import annotations

from typing import Any

import attrs
import diffusers
import torch
from diffusers.schedulers.scheduling_helios import HeliosSchedulerOutput
from diffusers.schedulers.scheduling_helios_dmd import HeliosDMDSchedulerOutput

import functional_sched as fs
from functional_sched.adapters.diffusers import options_for
from functional_sched.adapters.drop_in import UniPCMultistepScheduler, _DropIn, _Multistep
from functional_sched.machinery import host
from functional_sched.machinery.plan import single_plan
from functional_sched.schedulers.helios import exact_sigmas


class _Helios(_DropIn):
    """What the Helios drop-ins share: the stage's plan, the exact tables, no timestep look-up."""

    def _set_timesteps(
        self,
        num_inference_steps: int | None = None,
        stage_index: int | None = None,
        device: str | torch.device | None = None,
        sigmas: Any = None,
        mu: float | None = None,
        is_amplify_first_chunk: bool = False,
    ) -> None:
        self._remap()
        self._ignored_begin = None
        if stage_index is None and self.config.stages > 1:
            raise ValueError(f"{type(self).__name__}.set_timesteps: stages={self.config.stages} needs a stage_index.")
        self._helios_steps = num_inference_steps  # diffusers' attribute: the count as given (DMD's one more)
        if self._functional.scheduler_type == "dmd" and num_inference_steps is not None:
            self._helios_steps = num_inference_steps * 2 + 1 if is_amplify_first_chunk else num_inference_steps + 1
        stage = {"stage_index": stage_index or 0}
        if self._functional.scheduler_type == "dmd":
            stage["is_amplify_first_chunk"] = bool(is_amplify_first_chunk)
        self._functional = attrs.evolve(self._functional, **stage)
        if num_inference_steps is not None and sigmas is not None:
            num_inference_steps = None  # diffusers takes the count from the custom sigmas
        super()._set_timesteps(num_inference_steps, device, sigmas, mu)

    def _remap(self) -> None:
        """The functional scheduler of the config in effect (keys registered since: mapped again, or refused)."""
        if repr(dict(self.config)) != self._built_from:
            self._functional = self._functional_class(**options_for(self._functional_class, self))
            self._built_from = repr(dict(self.config))

    @property
    def num_inference_steps(self) -> int | None:  # type: ignore[override]
        if self._request is None:  # diffusers sets it in set_timesteps only
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'num_inference_steps'")
        return self._helios_steps

    def _exposed_sigmas(self, plan: Any) -> torch.Tensor:  # diffusers' dtype, on set_timesteps' device
        return exact_sigmas(plan)[0]

    def _planned_sigmas(self, exposed: torch.Tensor) -> torch.Tensor:
        return exposed  # in the reference's dtype: float64 tables keep their exact sigmas (`_on_edited_tables`)

    def _on_edited_tables(self, state: Any, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Any:
        """The plan of the edited tables as Helios plans its own (`_build_plan`: the coefficients formed from the
        tables in their dtype, each step's exact sigma kept), then rounded to the state's plan dtype."""
        functional, dtype = self._functional, state.plan.coefficients.dtype
        with host.plain():
            timesteps, sigmas = timesteps.detach().cpu().clone(), sigmas.detach().cpu()
            plan = single_plan(timesteps, sigmas.to(dtype), functional._table(timesteps, sigmas).to(dtype))
        return functional._carried(state, host.HostPlan(plan, functional.fingerprint, None))

    def _with_table_edits(self, state: Any) -> Any:
        """`_DropIn`'s, the edited sigmas then exposed as written (the plan's exact table ends in 0, whatever the
        final sigma was edited to)."""
        if "sigmas" not in self._edited_tables():
            return super()._with_table_edits(state)
        edited = self._tables["sigmas"].clone()
        state = super()._with_table_edits(state)
        self._tables["sigmas"] = edited
        self._versions["sigmas"] = edited._version
        return state

    def _index_for_timestep(self, timestep: Any, schedule_timesteps: torch.Tensor | None = None) -> int:
        return 0  # diffusers' Helios steps count from 0, whatever timestep they are called at

    # The libraries keep a begin index and read it nowhere (their steps count from 0): kept apart from the drop-in's.
    _ignored_begin: int | None = None

    @property
    def begin_index(self) -> int | None:
        return self._ignored_begin

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._ignored_begin = begin_index

    def _core_sample(self, sample: torch.Tensor, state: Any, out_dtype: torch.dtype) -> torch.Tensor:
        return sample if state is None else sample.to(state.history[0].dtype)

    def _with_edits(self, state: Any, work: torch.Tensor) -> Any:
        """Euler and DMD steps keep nothing between steps: a sample that changed shape (ChronoEdit's frames sliced
        mid-loop) steps on from a fresh state at the same step, as the libraries' do; UniPC's history as `_Multistep`
        takes its edits."""
        if self._functional.scheduler_type != "unipc" and tuple(state.history[0].shape) != tuple(work.shape):
            state = self._started(work, self._functional.steps_taken(state))
        return super()._with_edits(state, work)

    # ------------------------------------------------------------------------------------------------ DMD
    _start_point: torch.Tensor | None = None

    def _dmd_step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | None,
        return_dict: bool,
        cur_sampling_step: int,
        dmd_noisy_tensor: torch.Tensor | None,
        dmd_sigmas: torch.Tensor | None,
        dmd_timesteps: torch.Tensor | None,
    ) -> Any:
        """A DMD step as the pipelines call it: x0 at step `cur_sampling_step`, renoised toward the stage's start point
        (`dmd_noisy_tensor`) at the next one (the last returns x0); the tables must be this scheduler's own. The step
        is the pipeline's count's, as the libraries' (which keep no count): whatever this object stepped before (a
        begin index, a timestep's look-up), a step at another count starts a fresh state there."""
        owner = f"{type(self).__name__}.step"
        if self._plan is not None and not 0 <= cur_sampling_step < len(self.timesteps):
            steps = len(self.timesteps)
            raise ValueError(f"{owner}: cur_sampling_step={cur_sampling_step} is outside the {steps} steps.")
        if self._plan is not None and (
            self._state is None or self._functional.steps_taken(self._state) != cur_sampling_step
        ):
            self._state = self._started(sample, cur_sampling_step)
        taken = cur_sampling_step
        for name, table in (("dmd_sigmas", dmd_sigmas), ("dmd_timesteps", dmd_timesteps)):
            own = self.sigmas if name == "dmd_sigmas" else self.timesteps
            if table is None or not torch.equal(table.to(own.device), own):
                raise ValueError(f"{owner}: {name} must be this scheduler's own table (scheduler.{name[4:]}).")
        last = taken == len(self.timesteps) - 1
        if dmd_noisy_tensor is None and not last:
            raise ValueError(f"{owner}: dmd_noisy_tensor (the stage's start point) is needed but at the last step.")
        self._start_point = dmd_noisy_tensor if dmd_noisy_tensor is not None else torch.zeros_like(model_output)
        try:
            return _DropIn._step(self, model_output, timestep, sample, generator, None, return_dict)
        finally:
            self._start_point = None

    def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
        return self._start_point  # DMD's start point (None for UniPC and Euler)

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        if self._functional.scheduler_type == "unipc":
            return sample.dtype
        if self._functional.scheduler_type == "euler":
            return model_output.dtype
        # DMD returns the start point's dtype, and x0 in the model output's at the last step.
        last = self._state is not None and self._functional.steps_left(self._state) == 1
        return model_output.dtype if last or self._start_point is None else self._start_point.dtype

    # ------------------------------------------------------------------------------------------------ UniPC
    @property
    def this_order(self) -> int:
        """The order of the last UniPC step, as the reference sets it in `step` (and keeps through `set_timesteps`)."""
        order = self.__dict__.get("_this_order")
        if order is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'this_order'")
        return order

    def _order_taken(self) -> int:
        """The order of the step just taken: the reference's `min(order cap, lower_order_nums + 1)`."""
        step, order = self._functional.steps_taken(self._state), self.config.solver_order
        cap = min(order, len(self.timesteps) - (step - 1)) if self.config.lower_order_final else order
        return min(cap, min(step - 1, order) + 1)

    def _level(self) -> int:
        return 0 if self._functional.scheduler_type != "unipc" else _Multistep._level(self)  # type: ignore[arg-type]

    @property
    def model_outputs(self) -> list[torch.Tensor | None]:
        if self._functional.scheduler_type != "unipc":  # Euler and DMD keep no history: the list stays empty
            return [None] * self.config.solver_order
        return _Multistep.model_outputs.fget(self)  # type: ignore[attr-defined]

    @model_outputs.setter
    def model_outputs(self, value: list[torch.Tensor | None]) -> None:
        _Multistep.model_outputs.fset(self, value)  # type: ignore[attr-defined]

    timestep_list = UniPCMultistepScheduler.timestep_list
    last_sample = UniPCMultistepScheduler.last_sample
    _edited_fields = UniPCMultistepScheduler._edited_fields

    def _solver_step(
        self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, generator: Any, return_dict: bool
    ) -> tuple[torch.Tensor, Any, Any]:
        """A UniPC or Euler step: (prev_sample, last_sample, this_order), the last two None for Euler."""
        (prev_sample,) = _DropIn._step(self, model_output, timestep, sample, generator, None, False)
        if self._functional.scheduler_type != "unipc":
            return prev_sample, None, None
        self._this_order = self._order_taken()
        return prev_sample, self.last_sample, self._this_order


class HeliosScheduler(_Helios, _Multistep, diffusers.HeliosScheduler):
    """diffusers' `HeliosScheduler` on `functional_sched.Helios` (UniPC or Euler steps)."""

    _functional_class = fs.Helios
    _output_class = HeliosSchedulerOutput
    # diffusers' HeliosScheduler has neither (an unreadable property: `hasattr` is False, as on diffusers' object).
    add_noise = property(doc="none")  # type: ignore[assignment]
    init_noise_sigma = property(doc="none")  # type: ignore[assignment]

    def _step(
        self,
        model_output: torch.Tensor,
        timestep: Any = None,
        sample: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> Any:
        prev_sample, last, order = self._solver_step(model_output, timestep, sample, generator, return_dict)
        if self._functional.scheduler_type != "unipc":
            return HeliosSchedulerOutput(prev_sample=prev_sample) if return_dict else (prev_sample,)
        if not return_dict:
            return (prev_sample, None, last, order)
        return HeliosSchedulerOutput(prev_sample=prev_sample, model_outputs=None, last_sample=last, this_order=order)


class HeliosDMDScheduler(_Helios, diffusers.HeliosDMDScheduler):
    """diffusers' `HeliosDMDScheduler` on `functional_sched.HeliosDMD`."""

    _functional_class = fs.HeliosDMD
    _output_class = HeliosDMDSchedulerOutput

    def _step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        cur_sampling_step: int = 0,
        dmd_noisy_tensor: torch.Tensor | None = None,
        dmd_sigmas: torch.Tensor | None = None,
        dmd_timesteps: torch.Tensor | None = None,
        all_timesteps: torch.Tensor | None = None,
    ) -> Any:
        return self._dmd_step(
            model_output,
            timestep,
            sample,
            generator,
            return_dict,
            cur_sampling_step,
            dmd_noisy_tensor,
            dmd_sigmas,
            dmd_timesteps,
        )

    @property
    def step_index(self) -> int | None:
        return None  # diffusers' DMD step counts nothing (the pipeline passes `cur_sampling_step`)

    # DMD keeps no solver history: diffusers' class has none of these (its `last_sample` stays None).
    model_outputs = timestep_list = this_order = property(doc="none")  # type: ignore[assignment]
