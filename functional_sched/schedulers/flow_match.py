"""Flow-matching Euler: diffusers' `FlowMatchEulerDiscreteScheduler` (SD3, Flux, Qwen-Image, HunyuanVideo, LTX)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Flag, Integer, Option, Optional, Real
from ..machinery.plan import Plan, as_dtype, plus, scaled, single_plan
from ..machinery.record import record
from ..machinery.schedule import Schedule
from ..machinery.scheduler import Scheduler
from ..math import schedules
from . import common

# Columns of the coefficient table.
SIGMA, DT, ONE_MINUS_NEXT_SIGMA, NEXT_SIGMA = range(4)


@record(host=("cursor",))
class FlowMatchEulerState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


class FlowEuler(Scheduler):
    """The step every flow-match Euler class shares: `x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v_i` from the plan's
    columns (sigma, step length, 1 - next sigma, next sigma), its x0 estimate `x_i - sigma_i v_i` (`_estimate`), with
    `stochastic` the renoising step `x_{i+1} = (1 - sigma_{i+1}) x0_i + sigma_{i+1} noise`. A subclass makes the sigma
    table; the class attributes below say how its reference rounds the products `coefficient * v`."""

    state_type: ClassVar[type] = FlowMatchEulerState
    plan_columns: ClassVar[int] = NEXT_SIGMA + 1
    #: Any order: an Euler step is defined whatever the sigmas' order (Stable Audio 3's audio-to-audio pipeline starts
    #: at its noise level below the schedule's second sigma on purpose, as its original code does).
    _custom_tables_decrease: ClassVar[bool] = False
    #: Whether the reference multiplies by 0-d sigmas kept on the CPU rather than on the sample's device, and whether
    #: it writes the model output first: how a half-precision product rounds (`machinery.plan.scaled`).
    _sigmas_on_host: ClassVar[bool] = False
    _tensor_first: ClassVar[bool] = False
    #: Whether the reference multiplies the model output by per-row float32 sigma tensors (float32 products for
    #: half-precision outputs: sglang's SelfForcing `sigma.reshape(-1, 1, 1, 1)`).
    _float32_products: ClassVar[bool] = False
    #: Whether `step` renoises its x0 estimate (diffusers' option, declared by `FlowMatchEulerDiscrete`).
    stochastic_sampling: ClassVar[bool] = False

    @property
    def stochastic(self) -> bool:
        """Whether `step` takes fresh noise: with `stochastic_sampling`."""
        return self.stochastic_sampling

    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return schedules.flow_alpha_sigma(sigma)

    def _step_options(self) -> tuple[Any, ...]:
        return ()

    def _custom_range(self, name: str) -> tuple[float, float, bool]:
        # Timesteps are sigmas times num_train_timesteps: both run from pure noise (sigma 1) to data (sigma 0).
        train = float(self.num_train_timesteps)  # type: ignore[attr-defined]
        return (0.0, train, False) if name == "timesteps" else (0.0, 1.0, False)

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        # The step's scalars exactly as diffusers forms them from float32 sigmas; a float64 plan keeps float64.
        current, following = sigmas[:-1], sigmas[1:]
        coefficients = torch.stack([current, following - current, 1.0 - following, following], dim=-1)
        return single_plan(timesteps, sigmas, coefficients[:, None])

    # ------------------------------------------------------------------------------------------------ step
    def step(
        self,
        state: FlowMatchEulerState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, FlowMatchEulerState] | tuple[torch.Tensor, FlowMatchEulerState, torch.Tensor]:
        """One Euler step from each row's sigma to its next: `(prev_sample, new_state)`, in `sample`'s dtype (float32
        arithmetic; float64 for float64 samples). `denoised=True` also returns the step's x0 estimate, `sample -
        sigma * model_output` (`sample + (1 - sigma) * model_output` up an ascending table): `(prev_sample,
        new_state, x0)`. `noise` is ignored."""
        return self._step(state, model_output, sample, noise, denoised)

    def _step(
        self,
        state: FlowMatchEulerState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        noise: torch.Tensor | None,
        denoised: bool,
        per_token_timesteps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, FlowMatchEulerState] | tuple[torch.Tensor, FlowMatchEulerState, torch.Tensor]:
        """`step`'s work; `per_token_timesteps` is the argument of diffusers' `FlowMatchEulerDiscrete.step` (and of
        MOSS-Image's, which is that), no other class's."""
        cursor = self._cursor(state)
        eager = cursor is not None
        if checks.checking(eager=eager):
            self._check(state, model_output, sample, noise, denoised, cursor)
            if per_token_timesteps is not None:
                _check_per_token(self.name, per_token_timesteps, sample)
        c = self._coefficients(state, sample, cursor)
        work = as_dtype(sample, state.plan.coefficients.dtype)
        if per_token_timesteps is None:
            prev_sample, x0 = self._update(c, model_output, work, noise, denoised, eager)
        else:
            prev_sample, x0 = self._per_token_update(state, model_output, work, noise, denoised, per_token_timesteps)
        new_state = state.replace(**self._advanced(state, cursor))
        if denoised:
            return as_dtype(prev_sample, sample.dtype), new_state, as_dtype(x0, sample.dtype)
        return as_dtype(prev_sample, sample.dtype), new_state

    def _check(
        self,
        state: FlowMatchEulerState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        noise: torch.Tensor | None,
        denoised: bool,
        cursor: host.Cursor | None,
    ) -> None:
        self._check_step_rows(state, model_output, sample, cursor, noise, denoised)

    def _times(self, coefficient: torch.Tensor, model_output: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`coefficient * model_output` as the reference's step rounds it (the class attributes above); `dtype` is the
        plan's."""
        if self._float32_products:
            return as_dtype(model_output, dtype) * coefficient
        return scaled(coefficient, model_output, on_host=self._sigmas_on_host, tensor_first=self._tensor_first)

    def _estimate(
        self, c: tuple[torch.Tensor, ...], model_output: torch.Tensor, work: torch.Tensor, eager: bool
    ) -> torch.Tensor:
        """The step's x0 estimate, `x - sigma v` (in the plan's dtype)."""
        return work - self._times(c[SIGMA], model_output, work.dtype)

    def _update(
        self,
        c: tuple[torch.Tensor, ...],
        model_output: torch.Tensor,
        work: torch.Tensor,
        noise: torch.Tensor | None,
        denoised: bool,
        eager: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prev_sample, x0 where `denoised` or stochastic, else None), in the plan's dtype."""
        x0 = self._estimate(c, model_output, work, eager) if denoised or self.stochastic_sampling else None
        if self.stochastic_sampling:
            return self._renoised(c, x0, as_dtype(noise, work.dtype), eager), x0
        return plus(self._times(c[DT], model_output, work.dtype), work, eager=eager), x0

    @staticmethod
    def _renoised(c: tuple[torch.Tensor, ...], x0: torch.Tensor, noise: torch.Tensor, eager: bool) -> torch.Tensor:
        """`(1 - sigma_next) x0 + sigma_next noise`, as diffusers forms it (its sigmas on the device)."""
        return plus(
            scaled(c[NEXT_SIGMA], noise, on_host=False), scaled(c[ONE_MINUS_NEXT_SIGMA], x0, on_host=False), eager=eager
        )

    def _per_token_update(
        self,
        state: FlowMatchEulerState,
        model_output: torch.Tensor,
        work: torch.Tensor,
        noise: torch.Tensor | None,
        denoised: bool,
        per_token_timesteps: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`step`'s (prev_sample, x0 or None) with a sigma per token (`per_token_timesteps`): diffusers' arithmetic."""
        token = per_token_timesteps / self.num_train_timesteps  # type: ignore[attr-defined]
        table = state.plan.sigmas  # [S, N + 1]: every sigma of each row's schedule (padding repeats the last)
        rows, lead = work.shape[0], token.dim()
        table = table.expand(rows, -1) if table.shape[0] != rows else table
        sigmas = table.view(rows, table.shape[1], *([1] * (lead - 1)))
        below = torch.where(sigmas < token.unsqueeze(1) - 1e-6, sigmas, sigmas.new_zeros(()))
        trailing = [1] * (work.dim() - lead)
        current, following = token.view(*token.shape, *trailing), below.amax(dim=1).view(*token.shape, *trailing)
        x0 = work - current * model_output if self.stochastic_sampling or denoised else None
        if self.stochastic_sampling:
            prev_sample = (1.0 - following) * x0 + following * as_dtype(noise, work.dtype)
        else:
            prev_sample = work + (current - following) * model_output
        return prev_sample, x0


@options.config
class FlowMatchScheduler(FlowEuler):
    """Base of the classes on flow-match Euler's schedule (`FlowMatchEulerDiscrete`, `FlowMatchLCM`): its options in
    diffusers' order, their checks and the sigma tables (shifts, dynamic shifting with `mu`, Karras/exponential/beta,
    custom tables), stepped by `FlowEuler`'s step."""

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS.but(domain=Integer(minimum=1, maximum=1_000_000))
    shift: float = Option(1.0, Real(above=0), examples=(3.0, 0.7, 7.0, 12.5))
    use_dynamic_shifting: bool = common.USE_DYNAMIC_SHIFTING
    # Read by pipelines (Flux's calculate_shift of the image sequence length gives mu), not by the scheduler.
    base_shift: float | None = Option(0.5, Optional(Real()))
    max_shift: float | None = Option(1.15, Optional(Real()))
    base_image_seq_len: int = Option(256, Integer(minimum=1))
    max_image_seq_len: int = Option(4096, Integer(minimum=1))
    invert_sigmas: bool = Option(False, Flag())
    shift_terminal: float | None = common.SHIFT_TERMINAL.but(examples=(0.02, 0.1, 0.3))
    use_karras_sigmas: bool = common.USE_KARRAS_SIGMAS
    use_exponential_sigmas: bool = common.USE_EXPONENTIAL_SIGMAS
    use_beta_sigmas: bool = common.USE_BETA_SIGMAS
    sigma_min: float | None = common.REGISTERED_SIGMA_MIN
    sigma_max: float | None = common.REGISTERED_SIGMA_MAX
    time_shift_type: str = common.TIME_SHIFT_TYPE

    def _check_options(self) -> None:
        common.check_sigma_range(self)
        if self.base_image_seq_len >= self.max_image_seq_len:
            raise ValueError(
                f"{self.name}: base_image_seq_len={self.base_image_seq_len} must be less than max_image_seq_len="
                f"{self.max_image_seq_len}: pipelines interpolate mu between them (Flux's calculate_shift divides by "
                "their difference)."
            )

    # ------------------------------------------------------------------------------------------------ plan
    def _check_schedule(self, schedule: Schedule) -> None:
        owner = self.name
        if self.use_dynamic_shifting and schedule.mu is None and not self._verbatim(schedule):
            raise ValueError(
                f"{owner}: use_dynamic_shifting=True needs mu (the resolution shift, e.g. Flux's calculate_shift "
                "of the image sequence length); pass init(..., mu=...)."
            )
        check_step_count(owner, schedule, "sigmas or timesteps")
        super()._check_schedule(schedule)

    def _verbatim(self, schedule: Schedule) -> bool:
        """Whether the schedule's custom sigmas are taken as they are (no shift, so no mu needed): never here (sglang's
        LTX-2 class takes custom sigmas without mu so)."""
        return False

    @property
    def _custom_values_matter(self) -> bool:
        # Karras, exponential or beta sigmas between a registered sigma_min and sigma_max (Cosmos 2 passes
        # linspace(0, 1)): custom sigmas then give only the step count, as in diffusers.
        spaced = self.use_karras_sigmas or self.use_exponential_sigmas or self.use_beta_sigmas
        return not (spaced and self.sigma_min is not None and self.sigma_max is not None)

    # Hooks of `_build_plan` (sglang's copy of the class rounds these steps differently: `schedulers/sglang_flow.py`).
    @property
    def _applied_shift(self) -> float:
        """The static shift `set_timesteps` applies (the training range keeps `shift`): FlowMatchEuler's `set_shift`."""
        return self.shift

    def _default_sigmas(self, n: int) -> torch.Tensor:
        """The unshifted sigmas of `n` steps where no custom table is given: the training range, linearly spaced."""
        train = self.num_train_timesteps
        sigma_min, sigma_max = training_sigma_range(train, self.shift, self.use_dynamic_shifting)
        return schedules.np_linspace(sigma_max * train, sigma_min * train, n) / train

    def _time_shifted(self, sigmas: torch.Tensor, mu: float) -> torch.Tensor:
        """Dynamic shifting by `mu` (Flux's resolution shift)."""
        return schedules.time_shift(sigmas, mu, self.time_shift_type)

    def _stretched(self, sigmas: torch.Tensor) -> torch.Tensor:
        """The shifted sigmas stretched to end at `shift_terminal`."""
        return schedules.stretch_to_terminal(sigmas, self.shift_terminal)

    def _spacing_ends(self, sigmas: torch.Tensor) -> tuple[float, float]:
        """The smallest and largest sigma Karras, exponential and beta spacings run between: a pipeline's registered
        range (Cosmos 2's) in place of the schedule's ends, as diffusers reads it."""
        smallest = self.sigma_min if self.sigma_min is not None else sigmas[-1].item()
        largest = self.sigma_max if self.sigma_max is not None else sigmas[0].item()
        return smallest, largest

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        custom = sigmas if sigmas is not None else timesteps
        n = len(custom) if custom is not None else num_inference_steps

        train = self.num_train_timesteps
        if timesteps is not None:
            timesteps = timesteps.to(torch.float32)
        if sigmas is None:
            sigmas = self._default_sigmas(n) if timesteps is None else timesteps / train
        else:
            sigmas = sigmas.to(torch.float32)

        if self.use_dynamic_shifting:
            sigmas = self._time_shifted(sigmas, mu)
        else:
            sigmas = schedules.shift_sigmas(sigmas, self._applied_shift)
        if self.shift_terminal and self._custom_values_matter:  # else Karras & co. replace them: only n counts
            sigmas = self._stretched(sigmas)
        smallest, largest = self._spacing_ends(sigmas)
        if self.use_karras_sigmas:
            sigmas = schedules.karras_sigmas(smallest, largest, n)
        elif self.use_exponential_sigmas:
            sigmas = schedules.exponential_sigmas(smallest, largest, n)
        elif self.use_beta_sigmas:
            sigmas = schedules.beta_sigmas(smallest, largest, n)

        sigmas = sigmas.to(torch.float32)
        timesteps = timesteps if timesteps is not None else sigmas * train
        if self.invert_sigmas:
            sigmas = 1.0 - sigmas
            timesteps = sigmas * train
            sigmas = torch.cat([sigmas, torch.ones(1)])
        else:
            sigmas = torch.cat([sigmas, torch.zeros(1)])

        return self._plan_from_tables(timesteps, sigmas.to(dtype))


@options.config
class FlowMatchEulerDiscrete(FlowMatchScheduler):
    """Euler steps of the probability-flow ODE of rectified flow, x' = v(x, sigma).

    `x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v_i`; with `stochastic_sampling`, `x_{i+1} = (1 - sigma_{i+1}) x0_i +
    sigma_{i+1} noise` instead, where x0_i = x_i - sigma_i v_i. Options and schedule as diffusers 0.42.1.

    Implements Euler steps of rectified flow (Liu et al., 2022; Esser et al., 2024, "Scaling Rectified Flow
    Transformers for High-Resolution Image Synthesis").
    """

    stochastic_sampling: bool = Option(False, Flag())
    # diffusers' (and sglang's) `set_shift(s)` after construction: `set_timesteps` then shifts by s, within the sigma
    # range that `__init__` fixed from `shift` (sglang's loader calls it with the pipeline's flow_shift). None, or
    # `shift`'s own value, for `shift` alone (stored as None); no effect with dynamic shifting (stored as None too).
    set_shift: float | None = Option(None, Optional(Real(above=0)), examples=(5.0, 7.0), set_by="set_shift")

    diffusers_name: ClassVar[str] = "FlowMatchEulerDiscreteScheduler"

    def _check_options(self) -> None:
        super()._check_options()
        if self.set_shift is not None and (self.use_dynamic_shifting or self.set_shift == self.shift):
            object.__setattr__(self, "set_shift", None)  # the same schedule: one config for it (frozen, as `validate`)

    @property
    def _applied_shift(self) -> float:
        return self.shift if self.set_shift is None else self.set_shift

    def _step_options(self) -> tuple[Any, ...]:
        return (self.stochastic_sampling,)

    # ------------------------------------------------------------------------------------------------ step
    def step(
        self,
        state: FlowMatchEulerState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
        per_token_timesteps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, FlowMatchEulerState] | tuple[torch.Tensor, FlowMatchEulerState, torch.Tensor]:
        """One Euler step from each row's current sigma to its next: `(prev_sample, new_state)`.

        The result has `sample`'s dtype; the arithmetic is float32 (float64 for float64 samples) as in diffusers.
        `noise` (standard normal, like `sample`) is required with `stochastic_sampling`, ignored otherwise.
        `denoised=True` also returns the step's x0 estimate, `sample - sigma * model_output` (diffusers'
        `pred_original_sample`): `(prev_sample, new_state, x0)`; the deterministic step computes it only then.

        `per_token_timesteps` (the per-row timestep generalised: a timestep per token, or per any leading block of the
        sample, shaped as `sample.shape[:k]`) steps each token from its own sigma to the largest of its row's schedule
        below it, as diffusers' `step(per_token_timesteps=...)` (LTX's conditioning): then the update is
        `sample + (sigma - next) * model_output` (diffusers' sign), and the state advances one step as usual.
        """
        return self._step(state, model_output, sample, noise, denoised, per_token_timesteps)

    def _transition(
        self, state: FlowMatchEulerState, model_output: torch.Tensor, sample: torch.Tensor, cursor: host.Cursor | None
    ) -> tuple[torch.Tensor, torch.Tensor, FlowMatchEulerState]:
        """`step`'s Gaussian transition in closed form (`functional_sched.step_transition`), with
        `stochastic_sampling`: `_renoised`'s first term (1 - sigma') x0, the noise's scale sigma' per row, the state
        after."""
        c = self._coefficients(state, sample, cursor)
        x0 = self._estimate(c, model_output, as_dtype(sample, state.plan.coefficients.dtype), cursor is not None)
        mean = scaled(c[ONE_MINUS_NEXT_SIGMA], x0, on_host=False)
        return as_dtype(mean, sample.dtype), c[NEXT_SIGMA], state.replace(**self._advanced(state, cursor))

    def _check(
        self,
        state: FlowMatchEulerState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        noise: torch.Tensor | None,
        denoised: bool,
        cursor: host.Cursor | None,
    ) -> None:
        self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
        if self.stochastic_sampling:
            checks.check_noise(self.name, "stochastic_sampling=True", noise, sample)


def training_sigma_range(num_train_timesteps: int, shift: float, dynamic: bool) -> tuple[float, float]:
    """The smallest and largest sigma of the training table `(1..N) / N`, float32, statically shifted by `shift` unless
    `dynamic`: diffusers' `sigma_min`, `sigma_max` (Hunyuan3D's ascending table's first and last entry)."""
    sigmas = torch.arange(num_train_timesteps, 0, -1, dtype=torch.float32) / num_train_timesteps
    if not dynamic:
        sigmas = schedules.shift_sigmas(sigmas, shift)
    return sigmas[-1].item(), sigmas[0].item()


def check_step_count(owner: str, schedule: Schedule, custom: str) -> None:
    """A step count or custom tables (`custom`: the kinds a class takes, e.g. "sigmas or timesteps"), of one length
    where several are given."""
    timesteps, sigmas, steps = schedule.timesteps, schedule.sigmas, schedule.num_inference_steps
    if sigmas is not None and timesteps is not None and len(sigmas.values) != len(timesteps.values):
        raise ValueError(
            f"{owner}: sigmas ({len(sigmas.values)}) and timesteps ({len(timesteps.values)}) differ in length."
        )
    given = sigmas if sigmas is not None else timesteps
    if given is None and steps is None:
        raise ValueError(f"{owner}: give num_inference_steps, or custom {custom}.")
    if given is not None and steps is not None and len(given.values) != steps:
        raise ValueError(
            f"{owner}: num_inference_steps={steps} but {len(given.values)} custom values were given; "
            "leave num_inference_steps out or make them agree."
        )


def _check_per_token(owner: str, per_token_timesteps: Any, sample: torch.Tensor) -> None:
    """Per-token timesteps: a real tensor shaped as the sample's leading dims (rows first), on its device."""
    checks.tensor(owner, "per_token_timesteps", per_token_timesteps, floating=False)
    shape, lead = tuple(per_token_timesteps.shape), per_token_timesteps.dim()
    if lead == 0 or shape != tuple(sample.shape[:lead]) or per_token_timesteps.dtype == torch.bool:
        raise ValueError(
            f"{owner}: per_token_timesteps must be a real tensor shaped as the sample's leading dims (rows first, "
            f"e.g. {tuple(sample.shape[:-1])} for one per token), got {per_token_timesteps.dtype} {shape}."
        )
    if per_token_timesteps.device != sample.device:
        raise ValueError(
            f"{owner}: per_token_timesteps is on {per_token_timesteps.device}, the sample on {sample.device}."
        )
