"""What every scheduler shares: building (and caching) plans, the state's rows, timesteps and noising."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from . import checks, host, options
from .plan import Plan, coefficient_views, copied, gather_rows, gather_step, per_row, working_dtype
from .schedule import MAX_INFERENCE_STEPS, Schedule, check_order, schedule

CustomTable = Sequence[float] | torch.Tensor | None


class Scheduler:
    """Base of the schedulers: frozen config (the subclass's declared options, `options.config`) plus pure functions
    of a state."""

    state_type: ClassVar[type]
    #: The class this scheduler reproduces, by its name in `reference_library`.
    diffusers_name: ClassVar[str]
    #: Whose class that is: "diffusers" (0.42.1), or "sglang" for the serving runtime's own schedulers (sglang
    #: 0.5.23's `multimodal_gen`, which follow diffusers' scheduler API: `functional_sched.adapters.sglang`).
    reference_library: ClassVar[str] = "diffusers"
    #: The coefficients a plan's table holds per (step, warm-up) entry: its layout, which a serialised state must
    #: share with the scheduler that loads it.
    plan_columns: ClassVar[int]
    #: The plan column holding each step's alpha_bar, for classes whose `add_noise` is diffusers' DDPM-style one
    #: (alpha_bar in the samples' dtype, then its square roots); None: noised by the sigma table (`_alpha_sigma`).
    _alpha_bar_column: ClassVar[int | None] = None

    def __attrs_post_init__(self) -> None:
        options.validate(self)
        self._check_options()

    # ------------------------------------------------------------------ hooks for the subclasses
    def _check_options(self) -> None:
        """Rules between options (each option's own domain is checked already); raise naming them."""

    def _check_schedule(self, schedule: Schedule) -> None:
        """What this scheduler needs of a schedule's arguments beyond `schedule()`'s checks (custom tables' range and
        order, step counts its schedule cannot represent); raise naming the argument. The default: custom values
        in the training range (`_custom_range`) and decreasing where the solver needs it (`_custom_tables_decrease`;
        strictly unless `_takes_repeats`), a step count of at most `max_inference_steps`."""
        for name in ("timesteps", "sigmas"):
            table = getattr(schedule, name)
            if table is not None and self._custom_values_matter:
                low, high, integral = self._custom_range(name)
                check_order(
                    self.name,
                    name,
                    table,
                    low,
                    high,
                    integral=integral,
                    repeats=self._takes_repeats,
                    ordered=self._custom_tables_decrease,
                )
        steps = schedule.num_inference_steps
        if steps is not None and steps > self.max_inference_steps:
            raise ValueError(
                f"{self.name}: num_inference_steps={steps} is more than this config's schedule can represent "
                f"({self.max_inference_steps}{self._steps_limit_reason()}); use fewer steps."
            )

    @property
    def max_inference_steps(self) -> int:
        """The most steps a schedule of this config may have."""
        return MAX_INFERENCE_STEPS

    def _steps_limit_reason(self) -> str:
        return ", functional_sched.machinery.schedule.MAX_INFERENCE_STEPS"

    #: Whether custom tables may repeat a value (a zero-length step): for solvers that never divide by a step's length.
    _takes_repeats: ClassVar[bool] = True
    #: Whether custom tables must decrease (False: a solver whose step is defined whatever the order of its sigmas).
    _custom_tables_decrease: ClassVar[bool] = True
    #: Whether diffusers' loop finds its first step by looking the timestep up (False: PNDM counts its calls).
    _looks_up_first_timestep: ClassVar[bool] = True
    #: Why a stochastic `step` is no Gaussian transition given its inputs (None: it is, `mean + std * noise` with the
    #: noise a fresh standard normal, whose log-density `functional_sched.step_log_prob` reads off the step).
    _not_gaussian: ClassVar[str | None] = None
    #: Whether the calls' timesteps are known at `init` (`timesteps(state)`, `sigmas(state)`); False for a sampler that
    #: chooses its steps from the data (DPM-Solver adaptive), whose calls are a budget: each row's sigma is
    #: `timestep(state)` at the call.
    timestep_table: ClassVar[bool] = True
    #: The state's per-row fields that are neither step counters (int64 [R]) nor shaped like the sample (a controller's
    #: [R] values): a payload's are checked against a fresh state's dtype and trailing shape (a float field of the
    #: plan's dtype follows the payload's plan), and their values by `_payload_problem`.
    _row_fields: ClassVar[tuple[str, ...]] = ()

    def _payload_problem(self, tensors: Mapping[str, torch.Tensor]) -> str | None:
        """What is wrong with the values of a payload's `_row_fields` (checked for dtypes and shapes already), or
        None: a handed-over state must never step into what no run of this scheduler produces."""
        return None

    @property
    def _resizes(self) -> bool:
        """Whether `step` may return another shape than the sample's (FlowMatchLCM's scale factors): loops over one
        latents shape refuse such a config."""
        return False

    @property
    def _custom_values_matter(self) -> bool:
        """Whether custom tables' values make the schedule (else only their length does: their range and order are
        not checked)."""
        return True

    def _custom_range(self, name: str) -> tuple[float, float, bool]:
        """(lowest, highest, whole numbers only) of custom `timesteps` or `sigmas` values."""
        raise NotImplementedError

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        raise NotImplementedError

    def _start(
        self,
        plan: Plan,
        sample: torch.Tensor,
        step_index: torch.Tensor,
        level: torch.Tensor,
        fingerprint: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> Any:
        """The state at `step_index` (warm-up `level`, for solvers that warm up) with fresh, owned buffers; by
        default a state of the plan and counters alone (single-step solvers keep nothing else)."""
        return self.state_type(plan=plan, step_index=step_index, fingerprint=fingerprint, cursor=cursor)

    def _warmup(self, state: Any) -> torch.Tensor | None:
        """The state's warm-up counter, for solvers whose coefficients depend on it (multistep); else None."""
        return None

    def _step_options(self) -> tuple[Any, ...]:
        """The options `step` branches on (the rest only shape the plan)."""
        raise NotImplementedError

    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, sigma) of the sample at a table sigma: x = alpha x0 + sigma eps."""
        raise NotImplementedError

    def _model_sigma(self, state: Any) -> torch.Tensor:
        """Each row's table sigma at the noise level the model sees this call, [R]: the sample's level, for the one-call
        schedulers (a solver whose second call evaluates the model elsewhere, e.g. KDPM2's midpoint, says so)."""
        return gather_rows(state.plan.sigmas, state.step_index)

    # ------------------------------------------------------------------ the contract
    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def stochastic(self) -> bool:
        """Whether `step` takes fresh noise (`noise=`) every step."""
        return False

    def _draws_noise(self, state: Any) -> bool:
        """Whether diffusers draws noise for this step of the state (a stochastic scheduler may skip the draw where the
        noise would be scaled by zero, e.g. Euler's churn outside [s_tmin, s_tmax]): what a caller matching its
        generator's stream asks before drawing. `step` ignores the noise's values where it draws none."""
        return self.stochastic

    @functools.cached_property
    def fingerprint(self) -> int:
        return checks.fingerprint(self.name, self._step_options())

    def plan(
        self,
        num_inference_steps: int | None = None,
        *,
        timesteps: CustomTable = None,
        sigmas: CustomTable = None,
        mu: float | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Plan:
        """The per-step tables of one schedule, on `device`: the caller's own copy (the tables are computed once per
        schedule and kept on the host; every call and every request gets its own device copy)."""
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"{self.name}.plan: dtype must be torch.float32 or torch.float64, got {dtype!r}.")
        device = checks.device(f"{self.name}.plan", "device", device)
        return copied(
            self._host_plan(self.schedule(num_inference_steps, timesteps=timesteps, sigmas=sigmas, mu=mu), dtype).plan,
            device,
        )

    def init(
        self,
        num_inference_steps: int | None = None,
        *,
        sample: torch.Tensor,
        timesteps: CustomTable = None,
        sigmas: CustomTable = None,
        mu: float | None = None,
        begin_index: int = 0,
    ) -> Any:
        """A fresh state for `sample` (its leading dim is rows), at step `begin_index` of the schedule.

        Give `num_inference_steps`, or custom `timesteps`/`sigmas` as diffusers' `set_timesteps` takes them;
        `mu` is the resolution shift of dynamically shifted schedules (Flux, Qwen-Image, LTX, Wan). The state owns
        its tensors: a copy of the plan, its counters, zeroed buffers; nothing of it is shared with another request.
        """
        if not isinstance(sample, torch.Tensor) or sample.dim() == 0 or not sample.is_floating_point():
            got = f"{sample.dtype} {list(sample.shape)}" if isinstance(sample, torch.Tensor) else checks.shown(sample)
            raise TypeError(
                f"{self.name}.init: sample must be a floating-point tensor with a leading rows dim, got {got}."
            )
        plan = self._host_plan(
            self.schedule(num_inference_steps, timesteps=timesteps, sigmas=sigmas, mu=mu), working_dtype(sample)
        )
        return self._init_on(plan, sample, begin_index)

    def timesteps(self, state: Any) -> torch.Tensor:
        """The timestep table, equal to diffusers' `scheduler.timesteps`: [N] for one schedule, [R, N] if stacked."""
        self._require_state(state, "timesteps")
        table = state.plan.timesteps
        return table[0] if table.shape[0] == 1 else table

    def sigmas(self, state: Any) -> torch.Tensor:
        """The sigma table with its final sigma, diffusers' `scheduler.sigmas`: [N + 1], or [R, N + 1] if stacked."""
        self._require_state(state, "sigmas")
        table = state.plan.sigmas
        return table[0] if table.shape[0] == 1 else table

    def timestep(self, state: Any) -> torch.Tensor:
        """The current timestep of each row, [R] (what the model is conditioned on)."""
        cursor = self._cursor(state)
        if checks.checking():
            self._check_state(state, cursor)
        if cursor is not None:
            if cursor.step >= cursor.owned.host.steps:
                checks.raise_finished(self.name, state)
            return cursor.owned.timestep(cursor.step)  # a view of the request's table, as diffusers' timesteps[i]
        try:
            return gather_rows(state.plan.timesteps, state.step_index)
        except IndexError:
            checks.raise_finished(self.name, state)
            raise

    def steps_taken(self, state: Any) -> int:
        """The step index of the state's rows (the steps they took), read without a device sync where the host
        knows it; rows at different steps raise (split them with `batching.split` first)."""
        self._require_state(state, "steps_taken")
        cursor = self._cursor(state)
        if cursor is not None:
            return cursor.step
        rows = self._rows(state)
        values = [part.step for part in rows.parts] if rows is not None else state.step_index.tolist()
        if not values or values.count(values[0]) != len(values):
            raise ValueError(f"{self.name}.steps_taken: the rows are at different steps {values}.")
        return values[0]

    def steps_left(self, state: Any) -> int:
        """How many steps the state's furthest-behind row still has to take; 0 when every row is finished.

        A state from `init`/`step`, or stacked from such states and stepped, answers without a device sync.
        """
        self._require_state(state, "steps_left")
        cursor = self._cursor(state)
        if cursor is not None:
            return max(cursor.owned.host.steps - cursor.step, 0)
        rows = self._rows(state)
        if rows is not None:
            return max(max(part.owned.host.steps - part.step for part in rows.parts), 0)
        return int((state.plan.num_steps - state.step_index).clamp(min=0).max())

    def init_noise_sigma(self, state: Any) -> torch.Tensor:
        """The standard deviation of the initial noise for each row, [R] (1 for these schedulers)."""
        self._require_state(state, "init_noise_sigma")
        return torch.ones(state.step_index.shape, dtype=state.plan.sigmas.dtype, device=state.step_index.device)

    def scale_model_input(self, state: Any, sample: torch.Tensor) -> torch.Tensor:
        """The model's input at the current step (these schedulers feed the sample as it is)."""
        if checks.checking():
            self._require_state(state, "scale_model_input")
            checks.check_rows(f"{self.name}.scale_model_input", "sample", sample, *self._rows_and_device(state))
        return sample

    def add_noise(self, state: Any, original_samples: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noise `original_samples` to each row's current step (img2img starts: init with `begin_index`)."""
        if checks.checking():
            self._require_state(state, "add_noise")
            checks.check_rows(self.name, "original_samples", original_samples, *self._rows_and_device(state))
            checks.check_like(self.name, "noise", noise, original_samples, "original_samples")
        if self._alpha_bar_column is not None:  # diffusers' DDPM-style add_noise: alpha_bar, then its square roots
            alpha_bar = gather_rows(state.plan.coefficients[:, :, 0, self._alpha_bar_column], state.step_index)
            alpha_bar = alpha_bar.to(original_samples.dtype)
            alpha_t, sigma_t = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
        else:
            sigma = gather_rows(state.plan.sigmas.to(original_samples.dtype), state.step_index)
            alpha_t, sigma_t = self._alpha_sigma(sigma)
        return per_row(alpha_t, original_samples) * original_samples + per_row(sigma_t, noise) * noise

    # ------------------------------------------------------------------ shared by the steps
    def schedule(
        self,
        num_inference_steps: int | None = None,
        *,
        timesteps: CustomTable = None,
        sigmas: CustomTable = None,
        mu: float | None = None,
    ) -> Schedule:
        """`init`'s schedule arguments, checked for this config (the step count, custom tables, `mu`) before anything
        is computed: what its plan is made and cached from, and what a serialised state is rebuilt from."""
        if torch.compiler.is_compiling():
            raise RuntimeError(
                f"{self.name}: init and plan cannot run inside torch.compile (a schedule's plan is made on the host, "
                "and each request gets its own copy of it). Make the state outside and pass it in, as SamplingLoop "
                "and denoise(..., state=state) take it."
            )
        checked = schedule(self.name, num_inference_steps, timesteps, sigmas, mu)
        self._check_schedule(checked)
        return checked

    def _host_plan(self, schedule: Schedule, dtype: torch.dtype) -> host.HostPlan:
        """The host plan of a checked schedule, from the process-wide cache (`host.HOST_PLANS`)."""

        def build() -> host.HostPlan:
            timesteps, sigmas = (
                None if table is None else table.tensor() for table in (schedule.timesteps, schedule.sigmas)
            )
            plan = self._build_plan(schedule.num_inference_steps, timesteps, sigmas, schedule.mu, dtype)
            return host.HostPlan(_first_timestep_once(self, _finite(self, plan)), self.fingerprint, schedule)

        return host.HOST_PLANS.get((self, schedule, dtype), build)

    def _check_begin_index(self, plan: host.HostPlan, begin_index: Any) -> int:
        value = checks.as_integer(begin_index)
        if value is None:
            raise TypeError(f"{self.name}.init: begin_index must be an integer, got {checks.shown(begin_index)}.")
        if not 0 <= value < plan.steps:
            raise ValueError(f"{self.name}.init: begin_index must be in [0, {plan.steps}), got {value}.")
        return value

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        """The plan of a schedule given as its tables: timesteps [N] and sigmas [N + 1] (the final sigma included, in
        the plan's dtype), the solver's coefficients computed from them as from the tables `_build_plan` makes."""
        raise NotImplementedError

    def _on_tables(self, state: Any, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Any:
        """`state`, at its step and warm-up level, carried onto the plan of these tables as they are (a drop-in's,
        which a pipeline edited in place: Cosmos 2 sets the final sigma to the one before). No schedule argument makes
        them, so the plan is this state's alone (no cache holds it, and a handoff of the state is refused)."""
        return self._carried(state, self._tables_plan(timesteps, sigmas, state.plan.coefficients.dtype))

    def _tables_plan(
        self, timesteps: torch.Tensor, sigmas: torch.Tensor, dtype: torch.dtype, *extra: Any
    ) -> host.HostPlan:
        """The host plan of a schedule given as its tables (`_plan_from_tables`, with any `extra` arguments a solver's
        takes), no schedule argument's: no cache holds it, and a state on it cannot be handed over."""
        with host.plain():
            tables = timesteps.detach().cpu().clone(), sigmas.detach().cpu().to(dtype)
            plan = _finite(self, self._plan_from_tables(*tables, *extra))
        return host.HostPlan(plan, self.fingerprint, None)

    def _init_on(self, host_plan: host.HostPlan, sample: torch.Tensor, begin_index: int) -> Any:
        """A fresh state for `sample` on `host_plan` at `begin_index` (what `init` does once it has the plan)."""
        begin_index = self._check_begin_index(host_plan, begin_index)
        owned = host.Owned(host_plan, sample)
        cursor = None if host.tracing() else host.Cursor(owned, begin_index, 0)
        return self._start(owned.plan, sample, owned.step(begin_index), owned.level(0), owned.fingerprint, cursor)

    def _replanned(
        self,
        state: Any,
        num_inference_steps: int | None,
        *,
        timesteps: CustomTable = None,
        sigmas: CustomTable = None,
        mu: float | None = None,
    ) -> Any:
        """`state`, at its step and warm-up level, carried onto this scheduler's plan of the schedule (another config
        of the same class built it: the drop-in re-plans when a step argument changes); its other fields kept."""
        schedule = self.schedule(num_inference_steps, timesteps=timesteps, sigmas=sigmas, mu=mu)
        return self._carried(state, self._host_plan(schedule, state.plan.coefficients.dtype))

    def _carried(self, state: Any, host_plan: host.HostPlan) -> Any:
        """`state` at its step and warm-up level on its own copy of `host_plan`, with a cursor."""
        owned = host.Owned(host_plan, state.step_index)
        step = self.steps_taken(state)
        warmup = self._warmup(state)
        level = 0 if warmup is None else int(warmup[0])
        counters = {"step_index": owned.step(step)}
        if warmup is not None:
            counters["lower_order_nums"] = owned.level(level)
        cursor = host.Cursor(owned, step, level)
        return state.replace(plan=owned.plan, fingerprint=owned.fingerprint, cursor=cursor, **counters)

    def _cursor(self, state: Any) -> host.Cursor | None:
        """The state's cursor, if eager code may trust it: not while tracing (compiled code never reads it), and
        only if it still speaks for the state (`_described`)."""
        return None if host.tracing() else self._described(state)

    def _described(self, state: Any) -> host.Cursor | None:
        """The state's cursor if the state's plan and counters are still the ones it describes (a state rebuilt
        with `replace` keeps a cursor that no longer speaks for it): what the host knows of where it stands."""
        if not isinstance(state, self.state_type):
            return None
        cursor = state.cursor
        if type(cursor) is not host.Cursor or not cursor.describes(state.plan, state.step_index, self._warmup(state)):
            return None
        return cursor

    def _rows(self, state: Any) -> host.Rows | None:
        """A stacked state's `host.Rows`, if eager code may trust it (as `_cursor`)."""
        if host.tracing() or not isinstance(state, self.state_type):  # first: compiled code never reads a host field
            return None
        rows = state.cursor
        if type(rows) is not host.Rows:
            return None
        return rows if rows.describes(state.plan, state.step_index, self._warmup(state)) else None

    def _check_step_rows(
        self,
        state: Any,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        cursor: host.Cursor | None,
        noise: Any,
        denoised: Any,
    ) -> None:
        """The state, and that the sample and the model output are floating-point tensors of its rows and device,
        the model output shaped like the sample (`_output_like_sample`); `noise` None or a tensor (a deterministic
        step ignores it, whatever it holds), `denoised` a bool."""
        if noise is not None and not isinstance(noise, torch.Tensor):
            raise TypeError(f"{self.name}.step: noise must be a torch.Tensor or None, got {checks.shown(noise)}.")
        if denoised is not True and denoised is not False:
            raise TypeError(f"{self.name}.step: denoised must be True or False, got {checks.shown(denoised)}.")
        if cursor is not None and cursor.owned.host.fingerprint == self.fingerprint:
            rows, device = cursor.owned.rows, cursor.owned.device  # all `_check_state` would find of it
        else:
            self._check_state(state, cursor)
            rows, device = state.step_index.shape[0], state.step_index.device
        checks.check_step_inputs(self.name, sample, model_output, rows, device, self._output_like_sample())

    def _output_like_sample(self) -> bool:
        """Whether the model output has the sample's shape (not where a model predicts extra channels)."""
        return True

    def _output_dtype(self, sample: torch.Tensor) -> torch.dtype:
        """The dtype `step` returns for `sample`: the sample's (sglang's pi-Flow keeps float32 for half samples)."""
        return sample.dtype

    def _require_state(self, state: Any, method: str) -> None:
        """A TypeError naming `method` unless `state` is this scheduler's kind of state."""
        if not isinstance(state, self.state_type):
            raise TypeError(
                f"{self.name}.{method}: state must be a {self.state_type.__name__} (from this scheduler's init() or "
                f"step()), got {checks.shown(state)}."
            )

    def _rows_and_device(self, state: Any) -> tuple[int, torch.device]:
        cursor = self._cursor(state)
        if cursor is not None:
            return cursor.owned.rows, cursor.owned.device
        return state.step_index.shape[0], state.step_index.device

    def _check_state(self, state: Any, cursor: host.Cursor | None) -> None:
        rows = self._rows(state) if cursor is None else None
        checks.check_state(self.name, state, self.state_type, self.fingerprint, cursor, rows)

    def _coefficients(self, state: Any, like: torch.Tensor, cursor: host.Cursor | None) -> tuple[torch.Tensor, ...]:
        """The step's coefficients, each broadcastable against `like`: one per row, for its step (and warm-up).

        With a cursor they are the host plan entry's 0-d CPU scalars, what diffusers multiplies by; otherwise one
        gather on the device serves all rows. The values and the arithmetic are the same.
        """
        if cursor is not None:
            if cursor.step >= cursor.owned.host.steps:
                checks.raise_finished(self.name, state)
            return cursor.owned.host.entry(cursor.step, cursor.level)
        try:
            return coefficient_views(gather_step(state.plan, state.step_index, self._warmup(state)), like)
        except IndexError:  # an index past the end: on the CPU the checks leave it to the lookup
            checks.raise_finished(self.name, state)
            raise

    def _advanced(self, state: Any, cursor: host.Cursor | None) -> dict[str, Any]:
        """The counters of the state after this step (and its cursor): views of the request's own tables by value
        when the host knows the step, else `+ 1` on the device (the warm-up capped at the plan's last level)."""
        warmup = self._warmup(state)
        last_level = state.plan.coefficients.shape[2] - 1
        if cursor is not None:
            owned, step, level = cursor.owned, cursor.step + 1, min(cursor.level + 1, last_level)
            advanced = {"step_index": owned.step(step), "cursor": host.Cursor(owned, step, level)}
            if warmup is not None:
                advanced["lower_order_nums"] = owned.level(level)
            return advanced
        rows = self._rows(state)
        advanced = {"step_index": state.step_index + 1}
        if warmup is not None:
            advanced["lower_order_nums"] = torch.clamp(warmup + 1, max=last_level)
        next_rows = (
            None
            if rows is None
            else rows.advanced(advanced["step_index"], advanced.get("lower_order_nums"), last_level)
        )
        return {**advanced, "cursor": next_rows}

    def __len__(self) -> int:
        return self.num_train_timesteps  # type: ignore[attr-defined]


def _finite(scheduler: Scheduler, plan: Plan) -> Plan:
    """`plan`, if every value a step can read is finite. A NaN or inf there means the config and schedule compute
    NaN or inf (diffusers returns them too): refused here, before any request steps into it. (Plans zero the
    warm-up levels a step cannot reach, whose coefficients may legitimately be undefined.)"""
    tables = (plan.coefficients, plan.sigmas, plan.timesteps)
    if all(bool(torch.isfinite(table).all()) for table in tables):
        return plan
    per_step = torch.cat(
        [plan.coefficients.flatten(2), plan.sigmas[:, :-1, None], plan.sigmas[:, 1:, None], plan.timesteps[..., None]],
        dim=-1,
    )
    step, steps = int((~torch.isfinite(per_step)).any(-1).any(0).nonzero()[0]), plan.timesteps.shape[1]
    start, end = plan.sigmas[0, step].item(), plan.sigmas[0, step + 1].item()
    why = (
        " It has zero length (the table's last sigma repeated, e.g. by final_sigmas_type='sigma_min' after Karras or "
        "exponential sigmas) and a higher-order update divides by it."
        if start == end
        else ""
    )
    raise ValueError(
        f"{scheduler.name}: step {step} of {steps} (sigma {start:.4g} -> {end:.4g}) computes NaN or inf with this "
        f"config and schedule, as diffusers 0.42.1 does.{why} Change the options or the step count."
    )


def _first_timestep_once(scheduler: Scheduler, plan: Plan) -> Plan:
    """`plan`, if its first timestep does not come again. diffusers' loop finds where it stands by looking the first
    timestep up, takes a repeat's second occurrence, skips a step and runs off the end of its schedule (an
    IndexError); and the model would be conditioned on one timestep at two noise levels. (Later repeats are
    stepped through by index, here as in diffusers.)"""
    timesteps = plan.timesteps[0]
    if not scheduler._looks_up_first_timestep:
        return plan
    if timesteps.shape[0] > 1 and bool((timesteps[1:] == timesteps[0]).any()):
        sigmas = plan.sigmas[0, : min(int((timesteps == timesteps[0]).sum()), 4)].tolist()
        raise ValueError(
            f"{scheduler.name}: the schedule's first timestep {timesteps[0].item():g} repeats (at sigmas "
            f"{', '.join(f'{sigma:.4g}' for sigma in sigmas)}, ...): diffusers 0.42.1 looks it up, skips a step and "
            "fails at the end, and the model would see one timestep for two noise levels. Change the step count, the "
            "spacing or the custom table."
        )
    return plan


def check_scheduler(owner: str, value: Any) -> None:
    """A TypeError naming `scheduler` unless `value` is a functional_sched scheduler (not a diffusers one)."""
    if not isinstance(value, Scheduler):
        hint = " (convert a diffusers scheduler with functional_sched.adapters.from_diffusers)"
        raise TypeError(f"{owner}: scheduler must be a functional_sched scheduler{hint}, got {checks.shown(value)}.")
