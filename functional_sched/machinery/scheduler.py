"""What every scheduler shares: building (and caching) plans, the state's rows, timesteps and noising."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.utils._pytree as pytree

from . import checks, host, options
from .plan import Plan, coefficient_views, gather_rows, gather_step, per_row, working_dtype

CustomTable = Sequence[float] | torch.Tensor | None


def _table_key(values: CustomTable) -> tuple[tuple[float, ...], str] | None:
    """A hashable key for custom timesteps/sigmas that keeps their dtype (it decides diffusers' precision)."""
    if values is None:
        return None
    if isinstance(values, torch.Tensor):
        return tuple(values.detach().cpu().reshape(-1).double().tolist()), str(values.dtype)
    return tuple(float(value) for value in values), "float64"


def _table(key: tuple[tuple[float, ...], str] | None) -> torch.Tensor | None:
    if key is None:
        return None
    values, dtype = key
    return torch.tensor(values, dtype=getattr(torch, dtype.removeprefix("torch.")))


class Scheduler:
    """Base of the schedulers: frozen config (the subclass's declared options, `options.config`) plus pure functions
    of a state."""

    state_type: ClassVar[type]
    #: diffusers' class that this scheduler reproduces.
    diffusers_name: ClassVar[str]
    #: The coefficients a plan's table holds per (step, warm-up) entry: its layout, which a serialised state must
    #: share with the scheduler that loads it.
    plan_columns: ClassVar[int]

    def __attrs_post_init__(self) -> None:
        options.validate(self)
        self._check_options()

    # ------------------------------------------------------------------ hooks for the subclasses
    def _check_options(self) -> None:
        """Rules between options (each option's own domain is checked already); raise naming them."""

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        raise NotImplementedError

    def _start(self, plan: Plan, sample: torch.Tensor, step_index: torch.Tensor, fingerprint: torch.Tensor) -> Any:
        raise NotImplementedError

    def _step_options(self) -> tuple[Any, ...]:
        """The options `step` branches on (the rest only shape the plan)."""
        raise NotImplementedError

    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    # ------------------------------------------------------------------ the contract
    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def stochastic(self) -> bool:
        """Whether `step` takes fresh noise (`noise=`) every step."""
        return False

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
        """The immutable per-step tables for one schedule; cached, so requests with equal arguments share them."""
        if num_inference_steps is not None and (
            isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1
        ):
            raise ValueError(
                f"{self.name}: num_inference_steps must be a positive integer, got {num_inference_steps!r}."
            )
        if mu is not None:
            mu = float(mu)
            if not math.isfinite(mu):
                raise ValueError(f"{self.name}: mu must be finite, got {mu!r}.")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"{self.name}: plans are float32 or float64, got {dtype}.")
        key = (num_inference_steps, _table_key(timesteps), _table_key(sigmas), mu, dtype)
        return _plan_on_device(self, key, _device_key(device))

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
        `mu` is the resolution shift of dynamically shifted schedules (Flux, Qwen-Image, LTX, Wan).
        """
        if not isinstance(sample, torch.Tensor) or sample.dim() == 0 or not sample.is_floating_point():
            raise TypeError(f"{self.name}.init: sample must be a floating-point tensor with a leading rows dim.")
        plan = self.plan(
            num_inference_steps,
            timesteps=timesteps,
            sigmas=sigmas,
            mu=mu,
            dtype=working_dtype(sample),
            device=sample.device,
        )
        steps = plan.timesteps.shape[1]
        if isinstance(begin_index, bool) or not isinstance(begin_index, int) or not 0 <= begin_index < steps:
            raise ValueError(f"{self.name}.init: begin_index must be in [0, {steps}), got {begin_index!r}.")
        rows = sample.shape[0]
        step_index = host.counter("step_index", begin_index, rows, sample.device)
        return self._start(plan, sample, step_index, self._fingerprint_on(sample.device))

    def timesteps(self, state: Any) -> torch.Tensor:
        """The timestep table, equal to diffusers' `scheduler.timesteps`: [N] for one schedule, [R, N] if stacked."""
        table = state.plan.timesteps
        return table[0] if table.shape[0] == 1 else table

    def sigmas(self, state: Any) -> torch.Tensor:
        """The sigma table with its final sigma, diffusers' `scheduler.sigmas`: [N + 1], or [R, N + 1] if stacked."""
        table = state.plan.sigmas
        return table[0] if table.shape[0] == 1 else table

    def timestep(self, state: Any) -> torch.Tensor:
        """The current timestep of each row, [R] (what the model is conditioned on)."""
        if checks.checking():
            self._check_state(state)
        plan = state.plan
        step = host.read(state.step_index) if not host.tracing() else None
        if step is not None and plan.timesteps.shape[0] == 1:
            if step >= plan.timesteps.shape[1]:
                checks.raise_finished(self.name, state)
            return plan.timesteps[0, step].expand(state.step_index.shape[0])  # a view, as diffusers' timesteps[i]
        try:
            return gather_rows(plan.timesteps, state.step_index)
        except IndexError:
            checks.raise_finished(self.name, state)
            raise

    def steps_taken(self, state: Any) -> int:
        """The step index of the state's rows (the steps they took), read without a device sync where the host
        knows it; rows at different steps raise (split them with `batching.split` first)."""
        index = state.step_index
        step = host.read(index) if not host.tracing() else None
        if step is None:
            values = index.tolist()
            if not values or values.count(values[0]) != len(values):
                raise ValueError(f"{self.name}.steps_taken: the rows are at different steps {values}.")
            step = values[0]
        return step

    def steps_left(self, state: Any) -> int:
        """How many steps the state's furthest-behind row still has to take; 0 when every row is finished.

        A state of one schedule whose step the host knows (from `init`/`step`) answers without a device sync.
        """
        plan, index = state.plan, state.step_index
        step = host.read(index) if not host.tracing() else None
        if step is not None and plan.num_steps.shape[0] == 1:
            return max(plan.timesteps.shape[1] - step, 0)
        return int((plan.num_steps - index).clamp(min=0).max())

    def init_noise_sigma(self, state: Any) -> torch.Tensor:
        """The standard deviation of the initial noise for each row, [R] (1 for these schedulers)."""
        return torch.ones(state.step_index.shape, dtype=state.plan.sigmas.dtype, device=state.step_index.device)

    def scale_model_input(self, state: Any, sample: torch.Tensor) -> torch.Tensor:
        """The model's input at the current step (these schedulers feed the sample as it is)."""
        return sample

    def add_noise(self, state: Any, original_samples: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noise `original_samples` to each row's current step (img2img starts: init with `begin_index`)."""
        if checks.checking():
            rows, device = state.step_index.shape[0], state.step_index.device
            checks.check_rows(self.name, "original_samples", original_samples, rows, device)
            checks.check_like(self.name, "noise", noise, original_samples, "original_samples")
        sigma = gather_rows(state.plan.sigmas.to(original_samples.dtype), state.step_index)
        alpha_t, sigma_t = self._alpha_sigma(sigma)
        return per_row(alpha_t, original_samples) * original_samples + per_row(sigma_t, noise) * noise

    # ------------------------------------------------------------------ shared by the steps
    def _fingerprint_on(self, device: torch.device) -> torch.Tensor:
        return checks.fingerprint_tensor(self.fingerprint, device)

    def _check_step_rows(self, state: Any, model_output: torch.Tensor, sample: torch.Tensor) -> None:
        """The state, and that the sample and the model output have its rows and device."""
        self._check_state(state)
        rows, device = state.step_index.shape[0], state.step_index.device
        checks.check_rows(self.name, "sample", sample, rows, device)
        checks.check_rows(self.name, "model_output", model_output, rows, device)

    def _check_state(self, state: Any) -> None:
        index = state.step_index
        step_known = not index.is_cpu and host.read(index) is not None  # a CPU read is free anyway
        checks.check_state(self.name, state, self.state_type, self.fingerprint, step_known)

    def _host_entry(self, state: Any, warmup: torch.Tensor | None) -> tuple[torch.Tensor, int, int] | None:
        """(host table, step, warm-up level) when the host knows them without a device read (see `host`)."""
        plan = state.plan
        if plan.coefficients.shape[0] != 1 or host.tracing():
            return None
        table = host.host_table(plan.coefficients)
        step = host.read(state.step_index) if table is not None else None
        level = 0 if warmup is None or step is None else host.read(warmup)
        return None if step is None or level is None else (table, step, level)

    def _coefficients(
        self, state: Any, like: torch.Tensor, warmup: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """The step's coefficients, each broadcastable against `like`: one per row, for its step (and warm-up).

        When the host knows the step (`host`), they are the plan entry's 0-d CPU scalars, what diffusers multiplies
        by; otherwise one gather on the device serves all rows. The values and the arithmetic are the same.
        """
        known = self._host_entry(state, warmup)
        if known is not None:
            table, step, level = known
            if step >= table.shape[1]:
                checks.raise_finished(self.name, state)
            return host.entry_scalars(table, step, level)
        try:
            return coefficient_views(gather_step(state.plan, state.step_index, warmup), like)
        except IndexError:  # an index past the end: on the CPU the checks leave it to the lookup
            checks.raise_finished(self.name, state)
            raise

    def _next(self, role: str, counter: torch.Tensor, cap: int | None = None) -> torch.Tensor:
        """`counter + 1` (at most `cap`): a shared counter when the host knows the value, else a device op."""
        if not host.tracing():
            value = host.read(counter)
            if value is not None:
                value = value + 1 if cap is None else min(value + 1, cap)
                return host.counter(role, value, counter.shape[0], counter.device)
        following = counter + 1
        return following if cap is None else torch.clamp(following, max=cap)

    def __len__(self) -> int:
        return self.num_train_timesteps  # type: ignore[attr-defined]


def _device_key(device: torch.device | str) -> str:
    """`cuda` and `cuda:0` (the current device) name one cache entry, as tensors' devices always carry an index."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


PlanKey = tuple[int | None, Any, Any, float | None, torch.dtype]  # steps, custom timesteps, custom sigmas, mu, dtype


@functools.lru_cache(maxsize=256)
def _cpu_plan(scheduler: Scheduler, key: PlanKey) -> Plan:
    num_inference_steps, timesteps, sigmas, mu, dtype = key
    return _finite(scheduler, scheduler._build_plan(num_inference_steps, _table(timesteps), _table(sigmas), mu, dtype))


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


@functools.lru_cache(maxsize=256)
def _plan_on_device(scheduler: Scheduler, key: PlanKey, device: str) -> Plan:
    """The CPU plan moved to `device` once; requests on that device share it."""
    cpu_plan = _cpu_plan(scheduler, key)
    plan = pytree.tree_map(lambda table: table.to(device), cpu_plan)
    host.remember_host_table(plan.coefficients, cpu_plan.coefficients)
    return plan
