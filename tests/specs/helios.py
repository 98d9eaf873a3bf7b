"""The conformance tables of the Helios schedulers: diffusers 0.42.1's `HeliosScheduler` (`Helios`) and
`HeliosDMDScheduler` (`HeliosDMD`), and sglang 0.5.23's own `HeliosScheduler` (`SglangHelios`; its
`HeliosDMDScheduler` is an alias of it).

Helios' pipelines first: the base model's one stage (the checkpoint's dynamic exponential shift with mu = 1.919 for
384x640, `sigmas=linspace(0.999, 0, n + 1)[:-1]`), Helios-Mid's pyramid (three UniPC stages, gamma 1/3), and
Helios-Distilled's DMD pyramid (linear, the first chunk amplified); then the options' corners.

The references are the libraries' objects behind diffusers' scheduler API (`set_timesteps(num_inference_steps, sigmas=,
mu=)`, `timesteps`, `sigmas`, `step(...)[0]`), adapted, never recomputed:
- `stage_index` and `is_amplify_first_chunk` (arguments of their `set_timesteps`, config of ours) are constructor
  arguments of the reference that its `set_timesteps` passes on; custom sigmas in a pyramid stage, which the
  libraries ignore, raise there;
- `set_begin_index(k)`, which both libraries accept and ignore (their steps count from 0), starts that count at k;
- neither has diffusers' `add_noise` (their DMD `add_noise` takes the tables): the img2img column starts from the
  sample as given;
- a DMD step gets what the pipeline passes (`cur_sampling_step`, `dmd_noisy_tensor`, `dmd_sigmas`, `dmd_timesteps`,
  `all_timesteps`): the noise drawn from the driver's generator (as ours is) but at the last step (which returns x0),
  and the sample viewed with a frame dim (their DMD sigmas are shaped for 5-D video latents).
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Mapping
from typing import Any

import diffusers
import numpy as np
import torch

import functional_sched as fs
from functional_sched.schedulers.helios import Helios, HeliosDMD, SglangHelios
from functional_sched.testing import Config, Refusal, Schedule, Spec

#: The base pipeline's mu for 384x640 (sglang's helios_denoising.py: calculate_shift(9 * 48 * 80 / 4)).
BASE_MU = 1.919


def base_sigmas(steps: int) -> dict[str, Any]:
    """What Helios' base pipeline passes: `sigmas=np.linspace(0.999, 0.0, n + 1)[:-1]`."""
    return {"sigmas": np.linspace(0.999, 0.0, steps + 1)[:-1]}


@functools.cache
def reference_class(library: str, name: str) -> type:
    if library == "sglang":
        from functional_sched.adapters.sglang import sglang_class

        base = sglang_class(name)
    else:
        base = getattr(diffusers, name)

    class HeliosReference(base):  # type: ignore[misc, valid-type]
        """The library's class with diffusers' `set_timesteps`/`step` calls, as Helios' pipelines make them."""

        def __init__(self, stage_index: int = 0, is_amplify_first_chunk: bool = False, **options: Any) -> None:
            super().__init__(**options)
            self.stage_index, self.is_amplify_first_chunk = stage_index, is_amplify_first_chunk
            if library == "sglang":
                self.config.__class__ = mapping_config()
            self.dmd = name == "HeliosDMDScheduler" or options.get("scheduler_type") == "dmd"

        def set_timesteps(
            self, num_inference_steps: int | None = None, sigmas: Any = None, mu: Any = None, device: Any = None
        ) -> None:
            if sigmas is not None and self.config.stages > 1:
                raise ValueError("custom sigmas in a pyramid stage: the reference ignores them")
            if num_inference_steps is None:
                num_inference_steps = len(sigmas)
            super().set_timesteps(
                num_inference_steps,
                self.stage_index,
                device=device,
                sigmas=sigmas,
                mu=mu,
                is_amplify_first_chunk=self.is_amplify_first_chunk,
            )
            self.calls = 0

        def set_begin_index(self, begin_index: int = 0) -> None:
            """Both libraries take a begin index and ignore it (their steps count from 0): it starts that count."""
            super().set_begin_index(begin_index)
            self._step_index = self.calls = begin_index

        def step(
            self,
            model_output: torch.Tensor,
            timestep: Any,
            sample: torch.Tensor,
            generator: torch.Generator | None = None,
            return_dict: bool = True,
            stage_index: int = 0,
            is_amplify_first_chunk: bool = False,
            **ignored: Any,
        ) -> Any:
            # stage_index and is_amplify_first_chunk (ours are config, `step_argument`) made the schedule already.
            if not self.dmd:
                return super().step(model_output, timestep, sample, return_dict=return_dict)
            index, steps = self.calls, len(self.timesteps)
            self.calls += 1
            noise = None
            if index < steps - 1:
                noise = fs.randn_tensor(tuple(sample.shape), generator=generator, dtype=model_output.dtype)
            video = sample.dim() != 5
            view = (lambda x: x.unsqueeze(2)) if video else (lambda x: x)
            out = super().step(
                view(model_output),
                timestep,
                view(sample),
                return_dict=False,
                cur_sampling_step=index,
                dmd_noisy_tensor=None if noise is None else view(noise),
                dmd_sigmas=self.sigmas,
                dmd_timesteps=self.timesteps,
                all_timesteps=self.timesteps,
            )[0]
            out = out.squeeze(2) if video else out
            return (out,)

    # sglang's None defaults stand for these (its __init__ fills them in).
    filled = {"stage_range": [0, 1 / 3, 2 / 3, 1], "disable_corrector": []}
    parameters = [
        parameter.replace(default=filled[parameter.name])
        if parameter.default is None and parameter.name in filled
        else parameter
        for parameter in inspect.signature(base.__init__).parameters.values()
        if parameter.kind is not parameter.VAR_KEYWORD
    ]
    HeliosReference.__init__.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    HeliosReference.__name__ = HeliosReference.__qualname__ = name  # what from_diffusers/from_sglang look up
    if library == "sglang":  # no ConfigMixin: a config's round trip as diffusers' classes make it
        HeliosReference.from_config = classmethod(lambda cls, config: cls(**dict(config)))  # type: ignore[attr-defined]
        HeliosReference.register_to_config = lambda self, **keys: vars(self.config).update(keys)  # type: ignore[attr-defined]
    return HeliosReference


@functools.cache
def mapping_config() -> type:
    """sglang's `HeliosSchedulerConfig` (plain attributes) read as diffusers' config is, also as a mapping."""
    from functional_sched.adapters.sglang import sglang_module

    class HeliosSchedulerConfig(sglang_module("scheduling_helios").HeliosSchedulerConfig):  # type: ignore[misc]
        def keys(self) -> Any:
            return vars(self).keys()

        def items(self) -> Any:
            return vars(self).items()

        def __getitem__(self, key: str) -> Any:
            return vars(self)[key]

    return HeliosSchedulerConfig


def reference(library: str, name: str) -> Any:
    return lambda options: reference_class(library, name)(**options)


# --------------------------------------------------------------- drop-in columns: the classes as the pipelines use them
#: The options of ours that are arguments of the libraries' `set_timesteps` (`step_argument` options).
STAGE = ("stage_index", "is_amplify_first_chunk")


def helios_built(cls: type, options: Mapping[str, Any]) -> Any:
    """The library's class (or the drop-in) built with the config's options but the stage, which `set_timesteps`
    takes."""
    return cls(**{name: value for name, value in options.items() if name not in STAGE})


def helios_schedule(scheduler: Any, options: Mapping[str, Any], kwargs: dict[str, Any]) -> None:
    """The pipelines' `set_timesteps(n, stage_index, sigmas=, mu=, is_amplify_first_chunk=)` (the count of custom
    sigmas where they are given)."""
    steps = kwargs.get("num_inference_steps") or len(kwargs["sigmas"])
    stage = {name: options[name] for name in STAGE if name in options}
    scheduler.set_timesteps(
        steps,
        stage.get("stage_index", 0),
        sigmas=kwargs.get("sigmas"),
        mu=kwargs.get("mu"),
        **{key: value for key, value in stage.items() if key != "stage_index"},
    )
    _DMD_STEPS.pop(scheduler, None)


def helios_step(
    scheduler: Any,
    options: Mapping[str, Any],
    model_output: torch.Tensor,
    timestep: Any,
    sample: torch.Tensor,
    return_dict: bool = True,
    generator: torch.Generator | None = None,
    **step_options: Any,
) -> Any:
    """A UniPC or Euler step as the pipelines call it (the stage made the schedule: no step options); a DMD step with
    what Helios-Distilled passes (`dmd_step`)."""
    if options.get("scheduler_type") == "dmd":
        return dmd_step(scheduler, options, model_output, timestep, sample, return_dict, generator)
    takes = inspect.signature(scheduler.step).parameters
    extra = {"generator": generator} if "generator" in takes and generator is not None else {}
    return scheduler.step(model_output, timestep, sample, return_dict=return_dict, **extra)


#: The DMD loop's step count of each scheduler since its `set_timesteps` (Helios-Distilled's `cur_sampling_step`).
_DMD_STEPS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def dmd_step(
    scheduler: Any,
    options: Mapping[str, Any],
    model_output: torch.Tensor,
    timestep: Any,
    sample: torch.Tensor,
    return_dict: bool = True,
    generator: torch.Generator | None = None,
    **step_options: Any,
) -> Any:
    """Helios-Distilled's DMD step: `cur_sampling_step` the loop's count (from the first timestep's place in the
    table), `dmd_noisy_tensor` the renoising noise (drawn from `generator`, or a fixed seed,
    in the model output's dtype; none at the last step), the scheduler's own tables; the sample viewed with a frame
    dim (the DMD sigmas are shaped for 5-D video latents)."""
    index = _DMD_STEPS.get(scheduler)
    if index is None:  # a loop starting mid-table: the place of its first timestep (the nearest in the table)
        index = int(torch.argmin((scheduler.timesteps.double() - torch.as_tensor(timestep).double()).abs()))
    _DMD_STEPS[scheduler] = index + 1
    noise = None
    if index < len(scheduler.timesteps) - 1:
        generator = generator if generator is not None else torch.Generator().manual_seed(index)
        noise = fs.randn_tensor(tuple(sample.shape), generator=generator, dtype=model_output.dtype)
    view = (lambda x: x.unsqueeze(2)) if sample.dim() != 5 else (lambda x: x)
    out = scheduler.step(
        view(model_output),
        timestep,
        view(sample),
        return_dict=return_dict,
        cur_sampling_step=index,
        dmd_noisy_tensor=None if noise is None else view(noise),
        dmd_sigmas=scheduler.sigmas,
        dmd_timesteps=scheduler.timesteps,
        all_timesteps=scheduler.timesteps,
    )
    squeezed = out.prev_sample if return_dict else out[0]
    squeezed = squeezed.squeeze(2) if sample.dim() != 5 else squeezed
    if return_dict:
        out.prev_sample = squeezed
        return out
    return (squeezed, *out[1:])


def exact(options: Mapping[str, Any], situation: str) -> bool:
    return situation == "float32"


DISTILLED = {"scheduler_type": "dmd", "stages": 3, "time_shift_type": "linear"}
MID = {"stages": 3, "gamma": 1 / 3}
DYNAMIC = {"use_dynamic_shifting": True, "time_shift_type": "exponential"}

SGLANG_HELIOS = Spec(
    SglangHelios,
    reference=reference("sglang", "HeliosScheduler"),
    exact=exact,
    noise_dtype=None,
    configs=(
        Config("helios-base", DYNAMIC, Schedule(steps=8, mu=BASE_MU, custom=base_sigmas)),
        Config("helios-mid-stage0", {**MID, **DYNAMIC}, Schedule(steps=8, mu=BASE_MU)),
        Config("helios-mid-stage2", {**MID, **DYNAMIC, "stage_index": 2}, Schedule(steps=8, mu=0.9)),
        Config("helios-distilled-amplified", {**DISTILLED, "is_amplify_first_chunk": True}, Schedule(steps=3)),
        Config("helios-distilled-stage1", {**DISTILLED, "stage_index": 1}, Schedule(steps=3)),
        Config("default", {}),
        Config("shift3-linear", {"shift": 3.0}),
        Config("shift3-exponential", {"shift": 3.0, "time_shift_type": "exponential"}),
        Config("euler", {"scheduler_type": "euler", **DYNAMIC}, Schedule(mu=BASE_MU, custom=base_sigmas)),
        Config("euler-pyramid", {"scheduler_type": "euler", "stages": 3, "stage_index": 1}),
        Config("order3", {"solver_order": 3, **DYNAMIC}, Schedule(steps=12, mu=BASE_MU, custom=base_sigmas)),
        Config("order1-bh1", {"solver_order": 1, "solver_type": "bh1", "stages": 3, "stage_index": 2}),
        Config("no-lower-order-final", {"lower_order_final": False, "stages": 3}),
        Config("disable-corrector", {"disable_corrector": (0, 1, 2, 5), "stages": 3, "stage_index": 1}),
        Config("dmd-one-stage", {"scheduler_type": "dmd"}, Schedule(steps=4)),
        Config("dmd-dynamic", {**DISTILLED, **DYNAMIC}, Schedule(steps=4, mu=0.8)),
        Config("two-stages", {"stages": 2, "stage_range": (0.0, 0.5, 1.0), "gamma": 0.5, "stage_index": 1}),
    ),
    refusals=(
        # The references assert shift == 1 under dynamic shifting.
        Refusal("dynamic-with-shift", {"use_dynamic_shifting": True, "shift": 3.0}, "asserts shift == 1"),
        # bh1 from a first sigma of 1 (one stage, computed sigmas): B(h) = -h is infinite, the sample NaN.
        Refusal("bh1-from-sigma-one", {"solver_type": "bh1"}, "computes NaN or inf", at="init"),
        # Dynamic shifting without mu: the references compute exp(None) or None / ..., a TypeError.
        Refusal("dynamic-without-mu", {"use_dynamic_shifting": True}, "needs mu", Schedule(mu=None), at="init"),
    ),
    unsupported={"thresholding": True, "predict_x0": False, "prediction_type": "epsilon", "use_flow_sigmas": False},
    reference_noises_as_it_steps=False,
    # The drop-in columns hold the drop-in to sglang's class (a plain config object; the stage a `set_timesteps`
    # argument), as Helios' pipelines drive it.
    drop_in_reference=helios_built,
    drop_in_schedule=helios_schedule,
    drop_in_step=helios_step,
)

HELIOS = Spec(
    Helios,
    reference=reference("diffusers", "HeliosScheduler"),
    exact=exact,
    configs=(
        Config("helios-base", {"stages": 1}, Schedule(steps=8, mu=BASE_MU, custom=base_sigmas)),
        Config("helios-mid-stage0", {"use_dynamic_shifting": True}, Schedule(steps=8, mu=BASE_MU)),
        Config("helios-mid-stage1", {"use_dynamic_shifting": True, "stage_index": 1}, Schedule(steps=8, mu=1.2)),
        Config("default", {}),
        Config("stage2-linear", {"stage_index": 2, "time_shift_type": "linear"}),
        Config("one-stage-shift3", {"stages": 1, "shift": 3.0}),
        Config("euler", {"scheduler_type": "euler", "stage_index": 1}),
        Config("order3", {"solver_order": 3, "stage_index": 1}, Schedule(steps=12)),
        Config("bh1", {"solver_type": "bh1"}),
        Config("disable-corrector", {"disable_corrector": (0, 1, 2, 5)}),
    ),
    refusals=(
        Refusal("dynamic-with-shift", {"use_dynamic_shifting": True, "shift": 3.0}, "asserts shift == 1"),
        Refusal("bh1-from-sigma-one", {"solver_type": "bh1", "stages": 1}, "computes NaN or inf", at="init"),
    ),
    unsupported={
        "thresholding": True,
        "predict_x0": False,
        "prediction_type": "epsilon",
        "use_flow_sigmas": False,
        "solver_p": diffusers.DDIMScheduler(),
    },
    reference_noises_as_it_steps=False,
    # The drop-in columns hold the drop-in to diffusers' class (the stage an argument of `set_timesteps`; UniPC's
    # 4-tuple from `step`), as Helios' pipelines drive it.
    drop_in_reference=helios_built,
    drop_in_schedule=helios_schedule,
    drop_in_step=helios_step,
)

HELIOS_DMD = Spec(
    HeliosDMD,
    reference=reference("diffusers", "HeliosDMDScheduler"),
    exact=exact,
    noise_dtype=None,
    configs=(
        Config("helios-distilled-amplified", {"is_amplify_first_chunk": True}, Schedule(steps=3)),
        Config("helios-distilled-stage2", {"stage_index": 2}, Schedule(steps=3)),
        Config("default", {}),
        Config("one-stage", {"stages": 1}),
        Config("one-stage-shift3", {"stages": 1, "shift": 3.0}),
        Config("dynamic-exponential", {"use_dynamic_shifting": True, "time_shift_type": "exponential"}, Schedule(mu=1)),
    ),
    unsupported={"prediction_type": "epsilon", "use_flow_sigmas": False},
    reference_noises_as_it_steps=False,
    # The drop-in columns hold the drop-in to diffusers' class (the stage an argument of `set_timesteps`), given
    # Helios-Distilled's DMD arguments with each step.
    drop_in_reference=helios_built,
    drop_in_schedule=helios_schedule,
    drop_in_step=dmd_step,
)
