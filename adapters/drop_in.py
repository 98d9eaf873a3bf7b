"""Drop-in diffusers schedulers backed by the functional core: `pipe.scheduler = as_diffusers(pipe.scheduler)`.

Each class here is a subclass of the diffusers class it replaces (every `isinstance` holds) and carries its name,
constructor, config, `set_timesteps` and `step` signatures, so `DPMSolverMultistepScheduler.from_config(...)`,
`save_config`/`from_pretrained` and a pipeline's `inspect.signature(scheduler.step)` checks work unchanged. Inside, an
object holds the functional scheduler (`_functional`), the plan of the last `set_timesteps` (`_plan`, with the
arguments that made it in `_request`, and the tables it exposes as `timesteps`/`sigmas`), the `set_begin_index`
value, and the functional state (`_state`, made at the first `step`, when the sample's shape, dtype and device are
known); each `step` threads that state through the pure core. Every other public attribute of diffusers' instance is
there too: the construction tables copied from one (its own tensors), the solver history read from the state.

What a pipeline writes is taken, not ignored: tables edited in place re-plan the steps (`_with_table_edits`), a
history assigned or sliced is written back into the state (`_Multistep._with_edits`), keys registered after
construction re-map the config at the next `set_timesteps`. Outputs are cast to the dtype diffusers returns: the
model output's for FlowMatchEuler (float32 for a per-token step), the converted model output's for DPM-Solver, the
sample's for UniPC. FlowMatchEuler's `set_shift` re-maps the config (option `set_shift`). Not supported: UniPC's
`solver_p`, float64 samples bit for bit
(the core keeps float64 where diffusers computes in float32).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import attrs
import diffusers
import numpy as np
import torch
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteSchedulerOutput
from diffusers.schedulers.scheduling_utils import SchedulerOutput

import functional_sched as fs
from functional_sched.machinery import checks, options
from functional_sched.machinery.plan import as_dtype
from functional_sched.machinery.scheduler import Scheduler

from .diffusers import from_diffusers, options_for, registered_config, set_by_calls, to_diffusers_config
from .sglang import from_sglang

__all__ = [
    "DPMSolverMultistepScheduler",
    "FlowMatchEulerDiscreteScheduler",
    "UniPCMultistepScheduler",
    "as_diffusers",
    "for_request",
]


#: What the drop-in computes itself (from its plan and state) rather than copies from diffusers' instance.
_MANAGED = frozenset(
    {
        "timesteps",
        "sigmas",
        "num_inference_steps",
        "model_outputs",
        "lower_order_nums",
        "last_sample",
        "timestep_list",
        "this_order",
        "_step_index",
        "_begin_index",
    }
)


def _owned(value: Any) -> Any:
    """A copy of a tensor, array or list this instance keeps as its own (other values as they are)."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, list):
        return [_owned(item) for item in value]
    return value


#: Every drop-in class by its (diffusers') name, registered as it is defined: the three below, and each family's in
#: `functional_sched.adapters.drop_ins` (imported at the end of this module).
DROP_INS: dict[str, type[_DropIn]] = {}
#: The drop-ins of sglang's own classes (`functional_sched.adapters.sglang`), by sglang's name: some share a name
#: with diffusers' class (sglang's copy of it), so they are kept apart. Defined only where sglang's wheel is.
SGLANG_DROP_INS: dict[str, type[_DropIn]] = {}


def reference_class(scheduler_class: type[Scheduler]) -> type:
    """The class `scheduler_class` reproduces: diffusers', or sglang's (`Scheduler.reference_library`)."""
    if scheduler_class.reference_library == "sglang":
        from .sglang import sglang_class

        return sglang_class(scheduler_class.diffusers_name)
    return getattr(diffusers, scheduler_class.diffusers_name)


def drop_in_class(scheduler_class: type[Scheduler]) -> type[_DropIn] | None:
    """The drop-in of one of our classes (None where it has none)."""
    registry = DROP_INS if scheduler_class.reference_library == "diffusers" else SGLANG_DROP_INS
    found = registry.get(scheduler_class.diffusers_name)
    return found if found is not None and found._functional_class is scheduler_class else None


#: The options of each functional class that diffusers takes as `step()` arguments (`Option.step_argument`).
_STEP_OPTIONS: dict[type, set[str]] = {}


class _Request(NamedTuple):
    """The `set_timesteps` arguments that made the plan (the state is initialised with the same ones)."""

    num_inference_steps: int | None
    timesteps: Any
    sigmas: Any
    mu: float | None

    @property
    def custom(self) -> dict[str, Any]:
        """The keyword arguments of `init`, `plan` and `_replanned` beside the step count."""
        return {"timesteps": self.timesteps, "sigmas": self.sigmas, "mu": self.mu}


def _signed(impl: Callable[..., Any], reference: Callable[..., Any]) -> Callable[..., Any]:
    """A method with `reference`'s signature (binding errors included) that calls `impl(self, **arguments)`: generated
    with that parameter list, so a call binds as fast as any Python call (`Signature.bind` cost a drop-in's `step`
    several microseconds)."""
    signature = inspect.signature(reference)
    head, forwarded, defaults, keyword_only = [], [], {}, False
    for parameter in signature.parameters.values():
        name = parameter.name
        if parameter.kind is parameter.VAR_KEYWORD:
            head.append(f"**{name}")
            forwarded.append(f"**{name}")
            continue
        if parameter.kind is parameter.VAR_POSITIONAL and name == "args":  # sglang's `*args`, which it ignores
            head.append("*args")
            keyword_only = True
            continue
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.VAR_POSITIONAL):
            raise TypeError(f"drop-in: {reference.__qualname__} has a parameter kind the drop-in cannot mirror")
        if parameter.kind is parameter.KEYWORD_ONLY and not keyword_only:
            head.append("*")
            keyword_only = True
        if parameter.default is parameter.empty:
            head.append(name)
        else:
            defaults[f"_default_{name}"] = parameter.default
            head.append(f"{name}=_default_{name}")
        if name != "self":
            forwarded.append(f"{name}={name}")
    namespace: dict[str, Any] = {"_impl": impl, **defaults}
    exec(f"def method({', '.join(head)}):\n    return _impl(self, {', '.join(forwarded)})\n", namespace)
    method = namespace["method"]
    method.__signature__ = signature  # type: ignore[attr-defined]
    method.__name__ = reference.__name__
    method.__qualname__ = reference.__qualname__
    method.__doc__ = reference.__doc__
    return method


class _DropIn:
    """What the drop-ins share; each subclass names its functional class and gets its reference class's signatures.

    A drop-in subclasses this, then the class it replaces (`class XScheduler(_DropIn, diffusers.XScheduler)`), which
    brings `SchedulerMixin` and `ConfigMixin` in the order its library has them (sglang's classes list them the other
    way round)."""

    _functional_class: ClassVar[type[Scheduler]]
    _diffusers_class: ClassVar[type]
    _output_class: ClassVar[type] = SchedulerOutput
    _missing_timestep_is_last: ClassVar[bool] = True
    order = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_functional_class" not in cls.__dict__:
            return  # a shared base (_Multistep), not a drop-in
        reference = reference_class(cls._functional_class)
        if cls.__name__ != reference.__name__:
            raise TypeError(f"drop-in {cls.__name__} must carry its reference's name {reference.__name__}")
        if not issubclass(cls, reference):
            raise TypeError(f"drop-in {cls.__name__} must subclass the class it replaces, {reference}")
        registry = DROP_INS if cls._functional_class.reference_library == "diffusers" else SGLANG_DROP_INS
        registry.setdefault(cls.__name__, cls)  # the package's own; a subclass made elsewhere (a test's) takes no name
        cls._diffusers_class = reference
        cls._compatibles = list(getattr(reference, "_compatibles", ()))  # MOVA's sglang classes: no SchedulerMixin
        cls.order = getattr(reference, "order", 1)  # DDPMWuerstchen's has none (its pipelines read getattr(.., 1))
        init = _signed(cls._configure, reference.__init__)
        # A reference with no config (MOVA's FlowMatchScheduler/Pair keep their options as attributes): none either.
        cls.__init__ = register_to_config(init) if issubclass(reference, diffusers.ConfigMixin) else init  # type: ignore[misc]
        cls.set_timesteps = _signed(cls._set_timesteps, reference.set_timesteps)  # type: ignore[method-assign]
        cls.step = _signed(cls._step, reference.step)  # type: ignore[method-assign]

    # ------------------------------------------------------------------------------------------------ construction
    def _configure(self, **options: Any) -> None:
        # from_diffusers' mapping takes the options (and refuses unsupported ones) from a throwaway diffusers instance,
        # and the attributes diffusers computes at construction (betas, alphas_cumprod, sigma_min, the default
        # timestep table, ...) are that instance's, copied: each drop-in owns its tensors.
        reference = self._diffusers_class(**options)
        self._functional: Scheduler = self._functional_class(**options_for(self._functional_class, reference))
        for name, value in vars(reference).items():
            if name not in _MANAGED and not name.startswith("_internal"):
                object.__setattr__(self, name, _owned(value))
        tables = (getattr(reference, name, None) for name in ("timesteps", "sigmas"))  # DDPMWuerstchen has neither
        self._default_tables = tuple(_owned(table) for table in tables)
        self._built_from = repr(dict(self.config))  # a key registered later (Cosmos 2's) rebuilds at set_timesteps
        self._plan: Any = None
        self._tables: dict[str, torch.Tensor] = {}  # what `timesteps` and `sigmas` expose of the plan
        self._versions: dict[str, int] = {}
        self._request: _Request | None = None
        self._begin_index: int | None = None
        self._state: Any = None
        self._exposed: dict[str, Any] = {}  # the solver history as last read or written (`_Multistep`)

    # ------------------------------------------------------------------------------------------------ read-outs
    @property
    def timesteps(self) -> torch.Tensor:
        if self._plan is None:
            return self._default_tables[0]  # diffusers' table from construction, before set_timesteps
        return self._tables["timesteps"]

    @property
    def sigmas(self) -> torch.Tensor:
        if self._plan is None:
            return self._default_tables[1]
        return self._tables["sigmas"]

    def _planned(self, request: _Request, device: str | torch.device) -> None:
        """The plan of `request` (float32, as diffusers' tables), and the tables exposed from it."""
        with torch.inference_mode(False):  # tables with version counters: an edit to them is seen (`_with_table_edits`)
            plan = self._functional.plan(
                request.num_inference_steps, **request.custom, dtype=torch.float32, device=device
            )
            self._tables = {"timesteps": plan.timesteps[0], "sigmas": self._exposed_sigmas(plan)}
        self._versions = {name: table._version for name, table in self._tables.items()}
        self._plan = plan

    def _exposed_sigmas(self, plan: Any) -> torch.Tensor:
        """The sigma table as diffusers keeps it: on the CPU (DPM-Solver, UniPC)."""
        return plan.sigmas[0].cpu()

    def _planned_sigmas(self, exposed: torch.Tensor) -> torch.Tensor:
        """The plan's sigma table (the steps' sigmas and the final one) of the `sigmas` diffusers exposes."""
        return exposed

    def _edited_tables(self) -> list[str]:
        """The tables (`timesteps`, `sigmas`) written into since they were planned (their version counters moved)."""
        return [name for name, table in self._tables.items() if table._version != self._versions[name]]

    def _with_table_edits(self, state: Any) -> Any:
        """`state` re-planned from `timesteps` and `sigmas` as they now are, where a pipeline wrote into them since
        `set_timesteps` (Cosmos 2 sets the final sigma to the one before): the steps from here read the edited tables,
        as diffusers' do. A state with such a plan cannot be handed over (no schedule argument gives it)."""
        if not self._edited_tables():
            return state
        timesteps, sigmas = self._tables["timesteps"], self._planned_sigmas(self._tables["sigmas"])
        if timesteps.shape[0] + 1 != sigmas.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: timesteps ({timesteps.shape[0]}) and sigmas ({sigmas.shape[0]}) were edited "
                "into tables of inconsistent lengths; sigmas holds one more value (the final sigma)."
            )
        with torch.inference_mode(False):
            state = self._on_edited_tables(state, timesteps, sigmas)
            self._plan = state.plan
            self._from_edits = True
            self._tables = {"timesteps": self._plan.timesteps[0], "sigmas": self._exposed_sigmas(self._plan)}
        self._versions = {name: table._version for name, table in self._tables.items()}
        return state

    def _on_edited_tables(self, state: Any, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Any:
        """`state` on the plan of the edited tables (`_with_table_edits`); a drop-in whose diffusers class keeps more
        than these tables through an edit (Heun's `dt`, KDPM2's midpoint tables) passes that too."""
        return self._functional._on_tables(state, timesteps, sigmas)

    @property
    def num_inference_steps(self) -> int | None:
        return None if self._request is None else int(self._plan.timesteps.shape[1])

    @property
    def step_index(self) -> int | None:
        if self._state is None:
            return None
        return self._functional.steps_taken(self._state)

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    def scale_model_input(self, sample: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return sample

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    # ------------------------------------------------------------------------------------------------ schedule
    def _set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: Any = None,
        mu: float | None = None,
        timesteps: Any = None,
    ) -> None:
        self._validate_request(num_inference_steps, sigmas, mu, timesteps)
        if repr(dict(self.config)) != self._built_from:  # keys registered since: mapped again, or refused by name
            self._functional = self._functional_class(**options_for(self._functional_class, self))
            self._built_from = repr(dict(self.config))
        mu = self._resolve_mu(mu)
        self._planned(_Request(num_inference_steps, timesteps, sigmas, mu), device if device is not None else "cpu")
        self._request = _Request(num_inference_steps, timesteps, sigmas, mu)
        self._state = None
        self._begin_index = None
        self._exposed = {}
        self._from_edits = False

    def _validate_request(self, num_inference_steps: Any, sigmas: Any, mu: Any, timesteps: Any) -> None:
        """diffusers' own checks where the core would word them differently (the core checks the rest)."""
        if getattr(self.config, "use_dynamic_shifting", False) and mu is None and not self._dpm:
            raise ValueError("`mu` must be passed when `use_dynamic_shifting` is set to be `True`")

    @property
    def _dpm(self) -> bool:
        return isinstance(self._functional, fs.DPMSolverMultistep)

    def _resolve_mu(self, mu: float | None) -> float | None:
        return mu

    # ------------------------------------------------------------------------------------------------ step
    def _step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
        per_token_timesteps: torch.Tensor | None = None,
        **step_arguments: Any,  # options in diffusers, or ignored by it (FlowMatchEuler's s_churn, s_tmin, ...)
    ) -> Any:
        if (
            type(model_output) is not torch.Tensor
            or type(sample) is not torch.Tensor
            or (
                type(timestep) is not torch.Tensor
                or timestep.dim()
                or timestep.dtype == torch.bool
                or timestep.is_complex()
            )
        ):  # the common call (tensors, a 0-d timestep) needs no more than the core's own checks
            owner = f"{type(self).__name__}.step"
            checks.tensor(owner, "model_output", model_output)
            checks.tensor(owner, "sample", sample)
            _check_timesteps(owner, "timestep", timestep, single=True)
        self._check_timestep(timestep)
        if self._plan is None:
            if not self._steps_on_default_tables:
                raise ValueError(
                    "Number of inference steps is 'None', you need to run 'set_timesteps' after creating the scheduler"
                )
            self._on_default_tables()
        self._take_step_arguments(step_arguments)
        # diffusers does not cast a per-token step back to the model's dtype: it returns float32.
        out_dtype = torch.float32 if per_token_timesteps is not None else self._output_dtype(model_output, sample)
        state = self._state
        if state is None:
            index = self._begin_index if self._begin_index is not None else self._index_for_timestep(timestep)
            work = self._core_sample(sample, None, out_dtype)
            state = self._started(work, index)
        else:
            work = self._core_sample(sample, state, out_dtype)
        state = self._with_edits(self._with_table_edits(state), work)
        noise = self._noise(model_output, work, generator, variance_noise, state)
        per_token = {} if per_token_timesteps is None else {"per_token_timesteps": per_token_timesteps}
        per_token.update(self._passed_through(step_arguments))
        if self._returns_x0:
            prev_sample, self._state, x0 = self._functional.step(
                state, model_output, work, noise=noise, denoised=True, **per_token
            )
        else:
            prev_sample, self._state = self._functional.step(state, model_output, work, noise=noise, **per_token)
        self._exposed = {}
        prev_sample = as_dtype(prev_sample, out_dtype)
        if self._returns_x0:
            x0 = self._x0(x0, model_output)
            return (prev_sample, x0) if not return_dict else self._output_class(prev_sample, x0)
        if not return_dict:
            return (prev_sample,)
        return self._output_class(prev_sample=prev_sample)

    #: Whether the plan in force was made from tables a pipeline edited (`_with_table_edits`), not from the request.
    _from_edits: bool = False

    #: Whether diffusers' `step` returns the x0 estimate too (`pred_original_sample`: Euler, Heun, DDIM, ...).
    _returns_x0: ClassVar[bool] = False

    def _x0(self, x0: torch.Tensor, model_output: torch.Tensor) -> torch.Tensor:
        """The x0 estimate as diffusers returns it (the core's is in the stepped sample's dtype)."""
        return x0

    def _passed_through(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """diffusers `step()` arguments the core's `step` takes as they are (EDM Euler's `pred_original_sample`)."""
        return {}

    def _take_step_arguments(self, arguments: dict[str, Any]) -> None:
        """diffusers takes some options with every `step()` call (Euler's `s_churn`, ...); ours are config
        (`Option.step_argument`), so that `step` stays branch-free. A call with values other than the config in force
        re-plans, and the run goes on from the step it is at. Arguments no option of ours declares (FlowMatchEuler's
        `s_churn`, which diffusers ignores too) are ignored."""
        step_options = _STEP_OPTIONS.get(type(self._functional))
        if step_options is None:
            declared = options.declared(type(self._functional)).items()
            step_options = _STEP_OPTIONS[type(self._functional)] = {
                name for name, option in declared if option.step_argument
            }
        changes = {
            name: value
            for name, value in arguments.items()
            if name in step_options and value != getattr(self._functional, name)
        }
        if not changes:
            return
        self._functional = attrs.evolve(self._functional, **changes)
        if self._edited_tables() or self._from_edits:
            # Tables a pipeline edited (now, or before the plan in force was made from them): the next
            # `_with_table_edits` re-plans from them as they are, with the new options, as diffusers steps from them.
            self._versions = dict.fromkeys(self._versions, -1)
            return
        request = self._request
        assert request is not None
        self._planned(request, self._plan.timesteps.device)
        if self._state is not None:
            self._state = self._functional._replanned(self._state, request.num_inference_steps, **request.custom)

    def _started(self, work: torch.Tensor, begin_index: int) -> Any:
        """A fresh state of the request's schedule for `work`, at `begin_index` (of the tables themselves where no
        request made them: construction's, `_on_default_tables`)."""
        request = self._request
        if request is None:
            timesteps, sigmas = self._tables["timesteps"], self._planned_sigmas(self._tables["sigmas"])
            with torch.inference_mode(False):
                host_plan = self._functional._tables_plan(timesteps, sigmas, work.dtype)
                return self._functional._init_on(host_plan, work, begin_index)
        return self._functional.init(
            request.num_inference_steps, sample=work, **request.custom, begin_index=begin_index
        )

    #: Whether diffusers' `step` runs before `set_timesteps`, on the tables made at construction (Euler's).
    _steps_on_default_tables: ClassVar[bool] = False

    def _on_default_tables(self) -> None:
        """Step on the tables made at construction, as diffusers does before any `set_timesteps` (their plan is the
        tables' own, `_tables_plan`)."""
        timesteps, sigmas = (table.clone() for table in self._default_tables)
        with torch.inference_mode(False):
            self._plan = self._functional._tables_plan(timesteps, self._planned_sigmas(sigmas), torch.float32).plan
            self._tables = {"timesteps": timesteps, "sigmas": sigmas}
        self._versions = {name: table._version for name, table in self._tables.items()}
        self._request, self._state, self._exposed, self._from_edits = None, None, {}, True

    def _check_timestep(self, timestep: Any) -> None:
        pass

    def _with_edits(self, state: Any, work: torch.Tensor) -> Any:
        """`state` with the edits made to what the drop-in exposes of it since the last step (`_Multistep`)."""
        return state

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        raise NotImplementedError

    def _core_sample(self, sample: torch.Tensor, state: Any, out_dtype: torch.dtype) -> torch.Tensor:
        return sample

    def _noise(
        self,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None,
        variance_noise: torch.Tensor | None,
        state: Any,
    ) -> torch.Tensor | None:
        """The step's noise, drawn as diffusers draws it (None for a deterministic step)."""
        return None

    # ------------------------------------------------------------------------------------------------ indices
    def _index_for_timestep(self, timestep: Any, schedule_timesteps: torch.Tensor | None = None) -> int:
        """diffusers' `index_for_timestep`: the second match if repeated; not found -> the last index (DPM/UniPC)
        or diffusers' IndexError (FlowMatchEuler, `_missing_timestep_is_last = False`)."""
        if schedule_timesteps is None:
            schedule_timesteps = self.timesteps
            if isinstance(timestep, torch.Tensor):
                timestep = timestep.to(schedule_timesteps.device)
        candidates = (schedule_timesteps == timestep).nonzero()
        if len(candidates) == 0 and self._missing_timestep_is_last:
            return len(self.timesteps) - 1
        return candidates[1 if len(candidates) > 1 else 0].item()

    def _noising_sigma(self, like: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The sigma of each row by diffusers' `add_noise`/`scale_noise` index rules, broadcastable to `like`."""
        sigmas = self.sigmas.to(device=like.device, dtype=like.dtype)
        schedule = self.timesteps.to(like.device)
        timesteps = timesteps.to(like.device)
        if self._begin_index is None:
            indices = [self._index_for_timestep(t, schedule) for t in timesteps]
        elif self.step_index is not None:
            indices = [self.step_index] * timesteps.shape[0]
        else:
            indices = [self._begin_index] * timesteps.shape[0]
        sigma = sigmas[indices].flatten()
        while sigma.dim() < like.dim():
            sigma = sigma.unsqueeze(-1)
        return sigma


# ---------------------------------------------------------------------------------------------------- the classes
class FlowMatchEulerDiscreteScheduler(_DropIn, diffusers.FlowMatchEulerDiscreteScheduler):
    """diffusers' `FlowMatchEulerDiscreteScheduler` on `functional_sched.FlowMatchEulerDiscrete`."""

    _functional_class = fs.FlowMatchEulerDiscrete
    _output_class = FlowMatchEulerDiscreteSchedulerOutput
    _missing_timestep_is_last = False  # diffusers' FlowMatchEuler raises IndexError for an unknown timestep

    def _exposed_sigmas(self, plan: Any) -> torch.Tensor:  # diffusers leaves them on set_timesteps' device
        return plan.sigmas[0]

    def _check_timestep(self, timestep: Any) -> None:
        if isinstance(timestep, (int, torch.IntTensor, torch.LongTensor)):
            raise ValueError(
                "Passing integer indices (e.g. from `enumerate(timesteps)`) as timesteps to"
                " `FlowMatchEulerDiscreteScheduler.step()` is not supported. Make sure to pass"
                " one of the `scheduler.timesteps` as a timestep."
            )

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        return model_output.dtype

    def set_shift(self, shift: float) -> None:
        """diffusers' `set_shift` (the next `set_timesteps` shifts by `shift` within the range of the config's shift):
        the option `set_shift`, mapped again from this object as `from_diffusers` maps it."""
        super().set_shift(shift)
        self._functional = self._functional_class(**options_for(self._functional_class, self))

    def _core_sample(self, sample: torch.Tensor, state: Any, out_dtype: torch.dtype) -> torch.Tensor:
        return as_dtype(sample, torch.float32)  # diffusers upcasts the sample and steps in float32

    def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
        if not self._functional.stochastic_sampling:
            return None
        return fs.randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=torch.float32)

    def scale_noise(
        self,
        sample: torch.Tensor,
        timestep: float | torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        owner = f"{type(self).__name__}.scale_noise"
        checks.check_like(owner, "noise", noise, checks.tensor(owner, "sample", sample), "sample")
        _check_timesteps(owner, "timestep", timestep)
        sigma = self._noising_sigma(sample, timestep)
        return sigma * noise + (1.0 - sigma) * sample


class _Multistep(_DropIn):
    """DPM-Solver and UniPC: `init_noise_sigma`, `add_noise`, sigmas kept on the CPU, and the solver history as
    diffusers exposes it (`model_outputs`, `lower_order_nums`, UniPC's `last_sample`), read from the state and
    written back into it: a pipeline or test that assigns or edits them (ChronoEdit slices the history's frames, and
    the sample's shape changes with them) steps from what it wrote, as with diffusers."""

    init_noise_sigma = 1.0

    @property
    def model_outputs(self) -> list[torch.Tensor | None]:
        exposed = self._exposed.get("model_outputs")
        if exposed is not None:
            return exposed[0]
        order, state = self.config.solver_order, self._state
        filled = 0 if state is None else self._level()
        view = [
            None if state is None or index < order - filled else entry
            for index, entry in enumerate(state.history if state is not None else [None] * order)
        ]
        self._exposed["model_outputs"] = (view, [id(entry) for entry in view])
        return view

    @model_outputs.setter
    def model_outputs(self, value: list[torch.Tensor | None]) -> None:
        if not isinstance(value, (list, tuple)):
            raise TypeError(
                f"{type(self).__name__}: model_outputs must be a list of tensors (or None), one per history entry, "
                f"got {checks.shown(value)}."
            )
        self._exposed["model_outputs"] = (list(value), None)

    @property
    def lower_order_nums(self) -> int:
        exposed = self._exposed.get("lower_order_nums")
        return exposed if exposed is not None else (0 if self._state is None else self._level())

    @lower_order_nums.setter
    def lower_order_nums(self, value: int) -> None:
        self._exposed["lower_order_nums"] = checks.integer(type(self).__name__, "lower_order_nums", value, minimum=0)

    def _level(self) -> int:
        """The warm-up level of the state: how many history entries are filled (diffusers' `lower_order_nums`)."""
        cursor = self._functional._cursor(self._state)
        return cursor.level if cursor is not None else int(self._state.lower_order_nums[0])

    def _edited_history(self) -> list[torch.Tensor | None] | None:
        exposed = self._exposed.get("model_outputs")
        if exposed is None:
            return None
        view, identities = exposed
        return None if identities is not None and [id(entry) for entry in view] == identities else list(view)

    def _with_edits(self, state: Any, work: torch.Tensor) -> Any:
        history, level = self._edited_history(), self._exposed.get("lower_order_nums")
        changes = self._edited_fields(work)
        if history is None and level is None and not changes:
            return state
        step = self._functional.steps_taken(state)
        if tuple(state.history[0].shape) != tuple(work.shape):  # the sample changed shape with the history
            state = self._started(work, step).replace(lower_order_nums=state.lower_order_nums)
        if history is not None:
            order = self.config.solver_order
            entries = ([None] * order + history)[-order:]
            changes["history"] = tuple(
                torch.zeros_like(work) if entry is None else _like(entry, work, "model_outputs") for entry in entries
            )
        if level is not None:
            if not 0 <= level <= step:
                # diffusers would read sigmas[step_index - 1] for a history older than the schedule: sigmas[-1].
                raise ValueError(
                    f"{type(self).__name__}: lower_order_nums={level} at step {step}: a solver history cannot hold "
                    f"more steps than were taken (0 to {step}); no pipeline sets it so."
                )
            changes["lower_order_nums"] = torch.full_like(state.lower_order_nums, min(level, self.config.solver_order))
        request = self._request
        return self._functional._replanned(state.replace(**changes), request.num_inference_steps, **request.custom)

    def _edited_fields(self, work: torch.Tensor) -> dict[str, Any]:
        """Further state fields a subclass exposes and takes edits of (UniPC's `last_sample`)."""
        return {}

    def _core_sample(self, sample: torch.Tensor, state: Any, out_dtype: torch.dtype) -> torch.Tensor:
        if state is None:  # the state's dtype: diffusers' converted outputs promote with the sample
            return sample.to(torch.promote_types(sample.dtype, out_dtype))
        return sample.to(state.history[0].dtype)

    def add_noise(
        self,
        original_samples: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.IntTensor,
    ) -> torch.Tensor:
        owner = f"{type(self).__name__}.add_noise"
        checks.tensor(owner, "original_samples", original_samples)
        checks.check_like(owner, "noise", noise, original_samples, "original_samples")
        _check_timesteps(owner, "timesteps", timesteps)
        sigma = self._noising_sigma(original_samples, timesteps)
        alpha_t, sigma_t = self._functional._alpha_sigma(sigma)
        return alpha_t * original_samples + sigma_t * noise


class DPMSolverMultistepScheduler(_Multistep, diffusers.DPMSolverMultistepScheduler):
    """diffusers' `DPMSolverMultistepScheduler` on `functional_sched.DPMSolverMultistep`."""

    _functional_class = fs.DPMSolverMultistep

    def _resolve_mu(self, mu: float | None) -> float | None:
        # diffusers: `assert use_dynamic_shifting and time_shift_type == "exponential"`, then config.flow_shift =
        # exp(mu), which later set_timesteps calls without mu keep using; so does the drop-in.
        if mu is None:
            return None
        assert self.config.use_dynamic_shifting and self.config.time_shift_type == "exponential"
        shift = np.exp(mu)
        self.config.flow_shift = shift
        self._functional = attrs.evolve(self._functional, flow_shift=float(shift))
        return None

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        functional = self._functional
        assert isinstance(functional, fs.DPMSolverMultistep)
        if functional.data_prediction:
            keeps_model_dtype = functional.prediction_type == "sample"
        else:
            keeps_model_dtype = functional.prediction_type == "epsilon" and not functional.thresholding
        return model_output.dtype if keeps_model_dtype else torch.promote_types(sample.dtype, model_output.dtype)

    def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
        if not self.config.algorithm_type.startswith("sde-"):
            return None
        if variance_noise is not None:
            return variance_noise.to(device=model_output.device, dtype=torch.float32)
        # diffusers draws the converted model output's shape, which is the sample's.
        return fs.randn_tensor(sample.shape, generator=generator, device=model_output.device, dtype=torch.float32)


class UniPCMultistepScheduler(_Multistep, diffusers.UniPCMultistepScheduler):
    """diffusers' `UniPCMultistepScheduler` on `functional_sched.UniPCMultistep`."""

    _functional_class = fs.UniPCMultistep

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        return sample.dtype

    @property
    def timestep_list(self) -> list[torch.Tensor | None]:
        """The timesteps of the history's entries, as diffusers keeps them (None where an entry is not filled)."""
        order, state = self.config.solver_order, self._state
        if state is None:
            return [None] * order
        step, filled = self._functional.steps_taken(state), self._level()
        return [None if index < order - filled else self.timesteps[step - order + index] for index in range(order)]

    @property
    def this_order(self) -> int:
        """The order of the last step, as diffusers sets it in `step` (before the first step it has none)."""
        if self._state is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'this_order' (no step taken yet)")
        step = self._functional.steps_taken(self._state)
        highest = self._functional._orders(len(self.timesteps))
        return min(int(highest[step - 1]), self._level())

    @property
    def last_sample(self) -> torch.Tensor | None:
        exposed = self._exposed.get("last_sample")
        if exposed is not None:
            return exposed[0]
        state = self._state
        value = None if state is None or self._level() == 0 else state.last_sample
        self._exposed["last_sample"] = (value, id(value))
        return value

    @last_sample.setter
    def last_sample(self, value: torch.Tensor | None) -> None:
        self._exposed["last_sample"] = (value, None)

    def _edited_fields(self, work: torch.Tensor) -> dict[str, Any]:
        exposed = self._exposed.get("last_sample")
        if exposed is None or exposed[1] is not None or exposed[0] is None:
            return {}
        return {"last_sample": _like(exposed[0], work, "last_sample")}


def _like(value: Any, work: torch.Tensor, name: str) -> torch.Tensor:
    """An edited history entry as the state keeps it: the sample's shape, dtype and device, its own copy."""
    checks.tensor(f"drop-in {name}", name, value)
    if tuple(value.shape) != tuple(work.shape):
        raise ValueError(
            f"{name} was set to a tensor of shape {tuple(value.shape)}, but the sample stepped is {tuple(work.shape)}; "
            "edit the history and the latents alike."
        )
    return value.to(device=work.device, dtype=work.dtype, copy=True)


def _check_timesteps(owner: str, name: str, value: Any, *, single: bool = False) -> None:
    """A timestep as diffusers' `step` takes it (a number, or a tensor of one), or timesteps per row as `add_noise`
    takes them (a tensor, or a number): a TypeError naming `name` otherwise."""
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool or (single and value.numel() != 1):
            what = "a number or a tensor of one" if single else "a real tensor"
            raise TypeError(f"{owner}: {name} must be {what}, got a {value.dtype} tensor {list(value.shape)}.")
    elif checks.as_real(value) is None:
        raise TypeError(f"{owner}: {name} must be a number or a tensor, got {checks.shown(value)}.")


def as_diffusers(scheduler: Any) -> _DropIn:
    """The drop-in for a diffusers scheduler (its config in effect) or a functional one (`to_diffusers_config`).

    A diffusers option that functional_sched does not support raises `from_diffusers`' NotImplementedError; a class
    it lacks raises too. The result starts a fresh run: call `set_timesteps` on it, as on a new scheduler.
    """
    if isinstance(scheduler, Scheduler):
        functional = scheduler
        config: dict[str, Any] = {}
    else:
        sglangs = any(cls.__module__.startswith("sglang.") for cls in type(scheduler).__mro__)
        functional = from_sglang(scheduler) if sglangs else from_diffusers(scheduler)
        config = dict(scheduler.config) if isinstance(scheduler, diffusers.ConfigMixin) else {}
    drop_in = drop_in_class(type(functional))
    if drop_in is None:
        raise NotImplementedError(f"as_diffusers: {type(functional).__name__} has no drop-in yet.")
    if not issubclass(drop_in, diffusers.ConfigMixin):  # sglang's MOVA and Helios classes: constructor options only
        taken = inspect.signature(drop_in.__init__).parameters  # (MOVA's pair post-processing: set by its stage)
        return drop_in(**{key: value for key, value in to_diffusers_config(functional).items() if key in taken})
    result = drop_in.from_config({**config, **to_diffusers_config(functional)})
    result.register_to_config(**registered_config(functional))  # keys no constructor takes (Cosmos 2's sigma range)
    for method, value in set_by_calls(functional).items():  # options set by a method (FlowMatchEuler's set_shift)
        getattr(result, method)(value)
    return result


def for_request(pipe: Any) -> Any:
    """A per-request view of a diffusers pipeline: run `for_request(pipe)(...)` from as many threads as you like.

    The result is a shallow copy of `pipe` whose `scheduler` is a fresh drop-in with the same config
    (`as_diffusers(pipe.scheduler)`, from a drop-in or a diffusers scheduler). It shares every model, tokenizer,
    processor and hook with `pipe` (no weights are copied); it does not share the scheduler, its plan or its state,
    nor the pipeline's instance attributes (a request's `_guidance_scale`, `_num_timesteps`, ... land on the copy).
    `pipe` is left as it was: the same `scheduler`, the same `config` object, unmodified. Calls on the copy are as
    thread-safe as the shared models' forward passes (plain inference is; shared offload hooks may not be).
    """
    request = copy.copy(pipe)
    request.scheduler = as_diffusers(pipe.scheduler)  # `__setattr__` rebinds the copy's config, never `pipe`'s
    return request


# The families' drop-ins (they subclass `_DropIn`, defined above): importing them registers them in DROP_INS.
from . import drop_ins  # noqa: E402, F401


def __getattr__(name: str) -> type[_DropIn]:
    """`drop_in.EulerDiscreteScheduler` and the other families' classes, as the three above are reached."""
    if name in DROP_INS:
        return DROP_INS[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_drop_in(scheduler: Any) -> bool:
    """Whether `scheduler` is one of functional_sched's drop-ins (not diffusers' class it subclasses)."""
    return isinstance(scheduler, _DropIn)
