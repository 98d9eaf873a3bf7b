"""What a scheduler class contributes to the conformance suite: a `Spec` with a table of `Config`s.

    FLOW_MATCH = Spec(
        fs.FlowMatchEulerDiscrete,
        configs=(*pipelines(fs.FlowMatchEulerDiscrete), Config("stochastic", {"stochastic_sampling": True}), ...),
    )

Everything else has a default read off the class: the reference (diffusers' class of the same name), the hypothesis
strategy over its options (their declared domains and examples), the schedule arguments worth drawing. A test of
the suite takes a `Case`: one spec and one of its configs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import diffusers
import numpy as np
import torch

from functional_sched.adapters import _cases
from functional_sched.machinery import options as declarations

#: Custom tables for a step count: `lambda steps: {"sigmas": ...}` (what `init` and `set_timesteps` take).
Custom = Callable[[int], Mapping[str, Any]]
#: Which comparisons of a config are bit for bit: `exact(options, situation) -> bool`, where the situation is
#: "float32", "bfloat16", "float16" (sample and model output in that dtype) or "mixed" (float32 latents with a
#: bfloat16 model output). Where it says False, every step is held to the design's bound instead: 1e-5 of the
#: trajectory's norm, or one ulp of a half-precision result.
Exactness = Callable[[Mapping[str, Any], str], bool]


def always_exact(options: Mapping[str, Any], situation: str) -> bool:
    return True


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How a config sets its schedule: `steps` (default count), a custom table made for a step count, `mu`."""

    steps: int = 8
    mu: float | None = None
    custom: Custom | None = None

    def init_kwargs(self, steps: int | None = None) -> dict[str, Any]:
        """The arguments of `init` after the sample (what a pipeline passes to `set_timesteps` too)."""
        steps = steps or self.steps
        kwargs: dict[str, Any] = {"num_inference_steps": None if self.custom else steps}
        if self.custom:
            kwargs.update({key: tuple(float(value) for value in table) for key, table in self.custom(steps).items()})
        if self.mu is not None:
            kwargs["mu"] = self.mu
        return kwargs

    def reference_kwargs(self, steps: int | None = None) -> dict[str, Any]:
        """The same for the reference's `set_timesteps`: custom tables as float64 numpy arrays, fresh each call
        (diffusers' UniPC takes arrays only, and edits them in place)."""
        kwargs = self.init_kwargs(steps)
        return {
            key: np.array(value, dtype=np.float64) if isinstance(value, tuple) else value
            for key, value in kwargs.items()
        }


@dataclasses.dataclass(frozen=True)
class Config:
    """One representative config: the options (diffusers' names, the same for ours and the reference) and its
    schedule."""

    id: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    schedule: Schedule = Schedule()


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A config (and schedule) where the reference breaks down (raises, or returns NaN or inf) and ours refuses
    up front: `match` is a regular expression of our error. `at` is where we refuse: "construction" or "init"."""

    id: str
    options: Mapping[str, Any]
    match: str
    schedule: Schedule = Schedule()
    at: str = "construction"


@dataclasses.dataclass(frozen=True)
class Order:
    """A convergence order to measure on the closed-form Gaussian problem (`testing.gaussian`): the final error of
    a float64 loop falls like N^-order over `counts` steps (`at_least`: no slower than that)."""

    id: str
    options: Mapping[str, Any]
    order: float
    counts: tuple[int, ...] = (20, 40, 80, 160)
    at_least: bool = False


#: `Spec.reference`'s default: diffusers' class named by the scheduler's `diffusers_name`, built with the options.
DIFFUSERS: Any = object()


def diffusers_reference(scheduler_class: type) -> Callable[[Mapping[str, Any]], Any]:
    """Builds diffusers' class of `scheduler_class.diffusers_name` with a config's options (not its `step()`
    arguments, which `step` takes; registered options as a pipeline sets them, `built_as_diffusers`); sglang's class
    of that name for a class whose `reference_library` is sglang (loaded by `adapters.sglang.sglang_class`)."""
    if scheduler_class.reference_library == "sglang":
        return sglang_reference(scheduler_class.diffusers_name, scheduler_class)
    reference_class = getattr(diffusers, scheduler_class.diffusers_name)
    return lambda config: built_as_diffusers(reference_class, scheduler_class, config)


def sglang_reference(name: str, scheduler_class: type) -> Callable[[Mapping[str, Any]], Any]:
    """Builds sglang's scheduler class `name` with a config's options, as `diffusers_reference` builds diffusers':
    the reference of our class for sglang's pipelines (a listed class of sglang's, or one of diffusers' whose sglang
    copy a second spec holds to the same numbers)."""
    from functional_sched.adapters.sglang import sglang_class

    # Loaded at the first build, not here: a suite collects without sglang's wheel (its cases then fail, saying how
    # to install it).
    return lambda config: built_as_diffusers(sglang_class(name), scheduler_class, config)


def built_as_diffusers(diffusers_class: type, scheduler_class: type, config: Mapping[str, Any]) -> Any:
    """`diffusers_class` (diffusers' or a drop-in) built as a diffusers user builds it with a config's options: the
    constructor takes the options but for `step()` arguments and registered ones (`Option.registered`), which
    `register_to_config` then adds where set, as the pipeline that registers them does, and those set by a method
    (`Option.set_by`, FlowMatchEuler's `set_shift`), called where set."""
    declared = declarations.declared(scheduler_class)  # an undeclared option (one we refuse) goes to the constructor
    given = {key: value for key, value in config.items() if key not in declared or not declared[key].step_argument}
    registered = {key: given.pop(key) for key in list(given) if key in declared and declared[key].registered}
    set_by = {key: given.pop(key) for key in list(given) if key in declared and declared[key].set_by is not None}
    built = diffusers_class(**given)
    built.register_to_config(**{key: value for key, value in registered.items() if value is not None})
    for key, value in set_by.items():
        if value is not None:
            getattr(built, declared[key].set_by)(value)
    return built


@dataclasses.dataclass(frozen=True)
class Spec:
    """A scheduler class's entry in the conformance suite.

    `configs`: representative configs, real pipelines' first; the default run checks each property on the first,
    the slow run on all. `reference`: builds the reference scheduler (diffusers' API: `set_timesteps`, `timesteps`,
    `sigmas`, `step`) for options; `None` for a class with no runnable reference (its parity columns are not
    generated); the hypothesis grid over its options reads their declarations (`testing.strategies`). `exact`:
    which comparisons are bit for bit. `refusals`: where the reference breaks down
    and ours refuses. `orders`: convergence orders. `noise_dtype`: the dtype the reference draws a stochastic step's
    noise in (`torch.Generator` draws differ by dtype; None: the model output's dtype). `unsupported`: the
    reference's options we do not declare, each with a value other than its default (`from_diffusers` must refuse it
    by name). `held`: options the drawn
    configs keep at their default, because the toy model cannot serve them (e.g. an output with extra channels).
    """

    scheduler: type
    configs: Sequence[Config]
    reference: Callable[[Mapping[str, Any]], Any] | None = DIFFUSERS
    exact: Exactness = always_exact
    refusals: Sequence[Refusal] = ()
    orders: Sequence[Order] = ()
    noise_dtype: torch.dtype | None = torch.float32
    unsupported: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    held: tuple[str, ...] = ()
    #: Whether a config's x0 estimate (`denoised=True`) is the model's x0 at the sample it saw; not where the step
    #: moves the sample first (Euler's churn forms x0 at the churned sigma from the output at the unchurned one).
    x0_is_models: Callable[[Mapping[str, Any]], bool] = lambda options: True
    #: Whether custom sigmas hold the final sigma too (N + 1 values for N steps: Euler's), not just the steps'.
    sigmas_include_final: bool = False
    #: Our step's noise where the reference draws its own, not from the driver's generator (DPM-SDE's Brownian tree,
    #: seeded by its config): `reference_noise(case, reference, scheduler, state, like)`, called after the reference's
    #: step, gives the noise that reproduces what it drew. None: drawn from the driver's generator as the reference
    #: draws from its own.
    reference_noise: Callable[..., torch.Tensor] | None = None
    #: Whether the suite's drop-in columns drive its drop-in; False where the drop-in's `step` takes more from its
    #: caller than `drop_in_step` can give (CogVideoXDPM: the previous x0 and timestep), tested on its own.
    drop_in_columns: bool = True
    #: Whether a step's sample depends on the model's output; False for a pass-through (sglang's ComfyUI mode, whose
    #: step returns the sample as given), where differentiating a loop through the model (the checkpointed loop's
    #: gradients and saved bytes) has nothing to measure.
    depends_on_model: bool = True
    #: Drop-in columns the reference itself cannot run: "history" (its solver history is no attribute a pipeline can
    #: edit), "img2img" (its `order` is not the model calls per timestep, so the img2img pipelines' start index runs
    #: past its table): sglang's DPM wrapper, whose history lives in the diffusers scheduler it holds and whose `order`
    #: is `solver_order` (tests/test_sglang_dpm.py covers what applies).
    drop_in_gaps: tuple[str, ...] = ()
    #: Whether the reference's `add_noise`/`scale_noise` noises to the noise level of the step it names, which the
    #: img2img column holds ours to; False where it does not (sglang's Hunyuan3D `scale_noise` is diffusers'
    #: descending formula on an ascending schedule: at its first step, pure noise, it returns the clean sample).
    reference_noises_as_it_steps: bool = True
    #: A reference that is a whole sampling loop, not a scheduler object stepped call by call (k-diffusion's samplers):
    #: `reference_loop(case, steps, model, noise, noise_sampler) -> sample` runs it once from standard normal `noise`
    #: (scaled by its first sigma, as its callers scale it) on the case's schedule (`case.init_kwargs(steps)`; a
    #: schedule it cannot take raises), calling `model(x, sigma) -> output` at each model call and
    #: `noise_sampler(sigma, sigma_next)` where it draws noise (or its own seeded source, which `reference_noise` then
    #: reproduces on our side). The parity columns then compare every model call's input and the final sample
    #: (`parity.loop_parity_run`); the columns that need a scheduler object of diffusers' API (`reference`, None by
    #: default with a loop) are not generated.
    reference_loop: Callable[..., torch.Tensor] | None = None
    #: The drop-in columns' reference where `reference` is not the class the drop-in replaces (an adapter giving the
    #: core's parity columns diffusers' API over it): `drop_in_reference(cls, options)` builds `cls` from a config's
    #: options as its pipelines build it, called with that class (`adapters.drop_in.reference_class`: diffusers' or
    #: sglang's own) and with the drop-in alike. None: `reference` is that class, the drop-in built as
    #: `built_as_diffusers` builds it. Whether the class has a diffusers config (`save_config`, `from_config`), and
    #: whether its `step` takes `return_dict` or returns a bare tensor, the columns read off the class itself.
    drop_in_reference: Callable[[type, Mapping[str, Any]], Any] | None = None
    #: How a pipeline sets the schedule of the drop-in and of its reference, where not as
    #: `set_timesteps(**schedule kwargs)`: `drop_in_schedule(scheduler, options, kwargs)` with the config's options and
    #: the schedule's `reference_kwargs` (Helios' pyramid stage, an argument of `set_timesteps`; MOVA's stage, the
    #: pair's post-processing after `set_timesteps`).
    drop_in_schedule: Callable[[Any, Mapping[str, Any], dict[str, Any]], None] | None = None
    #: How a pipeline steps the drop-in and its reference, where not as `step(model_output, timestep, sample,
    #: return_dict=..., generator=..., **step options)`: `drop_in_step(scheduler, options, model_output, timestep,
    #: sample, return_dict=..., **kwargs)` returns what the pipeline's call returns (MOVA's `step_from_to` between a
    #: column's timesteps, a bare tensor; Helios-Distilled's DMD arguments); `kwargs` are what the column passes
    #: (`generator`, the step options).
    drop_in_step: Callable[..., Any] | None = None
    #: Whether the step's decisions follow its rounding (DPM-Solver adaptive's accept/reject and step sizes, made from
    #: an error norm): inductor's reductions and libm calls round otherwise than eager, so a loop compiled with it may
    #: take other step sizes. Its inductor columns then hold the final sample (every row finished) to
    #: `DECISIONS_TOLERANCE` of eager's instead of each step to float32 rounding; the eager backend stays bit-equal.
    decisions_follow_rounding: bool = False

    def __post_init__(self) -> None:
        if not self.configs:
            raise ValueError(f"Spec({self.scheduler.__name__}): give at least one config.")
        ids = [config.id for config in self.configs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"Spec({self.scheduler.__name__}): config ids repeat: {ids}.")
        if self.reference is DIFFUSERS and self.reference_loop is not None:
            object.__setattr__(self, "reference", None)
        if self.reference is DIFFUSERS:
            name = getattr(self.scheduler, "diffusers_name", None)
            library = getattr(self.scheduler, "reference_library", "diffusers")
            if name is None or (library == "diffusers" and not hasattr(diffusers, name)):
                raise ValueError(
                    f"Spec({self.scheduler.__name__}): diffusers has no class named by its diffusers_name ({name!r}); "
                    "pass reference=... (builds an object with diffusers' scheduler API from options), or None."
                )
            object.__setattr__(self, "reference", diffusers_reference(self.scheduler))

    @property
    def name(self) -> str:
        return self.scheduler.__name__

    def __repr__(self) -> str:
        return f"Spec({self.name})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis' and IPython's pretty printer
        printer.text(repr(self))

    def case(self, config: Config | Mapping[str, Any], schedule: Schedule | None = None) -> Case:
        """A case of this spec for a config (or for bare options, as the hypothesis grid draws them)."""
        if not isinstance(config, Config):
            config = Config("drawn", dict(config), schedule or Schedule())
        return Case(self, config)


@dataclasses.dataclass(frozen=True)
class Case:
    """One spec and one of its configs: what a conformance test takes."""

    spec: Spec
    config: Config

    @property
    def id(self) -> str:
        return f"{self.spec.name}-{self.config.id}"

    def __repr__(self) -> str:
        return f"Case({self.spec.name}, {dict(self.options)!r}, {self.config.schedule!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    @property
    def options(self) -> Mapping[str, Any]:
        return self.config.options

    @property
    def steps(self) -> int:
        return self.config.schedule.steps

    def scheduler(self, **overrides: Any) -> Any:
        return self.spec.scheduler(**{**self.options, **overrides})

    def reference(self) -> Any:
        assert self.spec.reference is not None, f"{self.spec.name} has no reference"
        return self.spec.reference(dict(self.options))

    def init_kwargs(self, steps: int | None = None) -> dict[str, Any]:
        return self.config.schedule.init_kwargs(steps)

    def reference_kwargs(self, steps: int | None = None) -> dict[str, Any]:
        return self.config.schedule.reference_kwargs(steps)

    @property
    def reference_step_kwargs(self) -> dict[str, Any]:
        """The config's options that diffusers takes as `step()` arguments (`Option.step_argument`)."""
        declared = declarations.declared(self.spec.scheduler)
        return {name: value for name, value in self.options.items() if declared[name].step_argument}

    @property
    def stochastic(self) -> bool:
        return bool(self.scheduler().stochastic)

    def exact(self, situation: str = "float32") -> bool:
        return self.spec.exact(self.options, situation)


def pipelines(scheduler_class: type) -> tuple[Config, ...]:
    """The real-pipeline configs of `scheduler_class` (`functional_sched.adapters`' report grid), as `Config`s: the
    published `scheduler_config.json` options and the `set_timesteps` arguments of each pipeline."""
    return tuple(
        Config(
            _slug(case.label),
            dict(case.config),
            Schedule(steps=8, mu=case.mu, custom=_pipeline_sigmas if case.pipeline_sigmas else None),
        )
        for case in _cases.GRID
        if case.diffusers_name == scheduler_class.diffusers_name
    )


def _pipeline_sigmas(steps: int) -> dict[str, Any]:
    """What Flux and Qwen-Image pipelines pass: `sigmas=np.linspace(1.0, 1 / n, n)`."""
    return {"sigmas": np.linspace(1.0, 1 / steps, steps)}


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", label.lower()).strip("-")
