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


@options.config
class FlowMatchScheduler(Scheduler):
    """Base of the classes on flow-match Euler's schedule (`FlowMatchEulerDiscrete`, `FlowMatchLCM`): its options in
    diffusers' order, their checks, the sigma tables (shifts, dynamic shifting with `mu`, Karras/exponential/beta,
    custom tables) and the plan's columns; a subclass adds its step."""

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

    plan_columns: ClassVar[int] = NEXT_SIGMA + 1

    def _check_options(self) -> None:
        common.check_sigma_range(self)
        if self.base_image_seq_len >= self.max_image_seq_len:
            raise ValueError(
                f"{self.name}: base_image_seq_len={self.base_image_seq_len} must be less than max_image_seq_len="
                f"{self.max_image_seq_len}: pipelines interpolate mu between them (Flux's calculate_shift divides by "
                "their difference)."
            )

    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return schedules.flow_alpha_sigma(sigma)

    # ------------------------------------------------------------------------------------------------ plan
    def _check_schedule(self, schedule: Schedule) -> None:
        owner = self.name
        if self.use_dynamic_shifting and schedule.mu is None:
            raise ValueError(
                f"{owner}: use_dynamic_shifting=True needs mu (the resolution shift, e.g. Flux's calculate_shift "
                "of the image sequence length); pass init(..., mu=...)."
            )
        timesteps, sigmas, steps = schedule.timesteps, schedule.sigmas, schedule.num_inference_steps
        if sigmas is not None and timesteps is not None and len(sigmas.values) != len(timesteps.values):
            raise ValueError(
                f"{owner}: sigmas ({len(sigmas.values)}) and timesteps ({len(timesteps.values)}) differ in length."
            )
        custom = sigmas if sigmas is not None else timesteps
        if custom is None and steps is None:
            raise ValueError(f"{owner}: give num_inference_steps, or custom sigmas or timesteps.")
        if custom is not None and steps is not None and len(custom.values) != steps:
            raise ValueError(
                f"{owner}: num_inference_steps={steps} but {len(custom.values)} custom values were given; "
                "leave num_inference_steps out or make them agree."
            )
        super()._check_schedule(schedule)

    #: Any order: an Euler step is defined whatever the sigmas' order, and Stable Audio 3's audio-to-audio pipeline
    #: starts at its noise level below the schedule's second sigma on purpose (as its original code does).
    _custom_tables_decrease: ClassVar[bool] = False

    @property
    def _custom_values_matter(self) -> bool:
        # Karras, exponential or beta sigmas between a registered sigma_min and sigma_max (Cosmos 2 passes
        # linspace(0, 1)): custom sigmas then give only the step count, as in diffusers.
        spaced = self.use_karras_sigmas or self.use_exponential_sigmas or self.use_beta_sigmas
        return not (spaced and self.sigma_min is not None and self.sigma_max is not None)

    def _custom_range(self, name: str) -> tuple[float, float, bool]:
        # Timesteps are sigmas times num_train_timesteps: both run from pure noise (sigma 1) to data (sigma 0).
        return (0.0, float(self.num_train_timesteps), False) if name == "timesteps" else (0.0, 1.0, False)

    def _training_sigma_range(self) -> tuple[float, float]:
        """sigma_min, sigma_max of the (statically shifted) training schedule, float32 as diffusers keeps them."""
        n = self.num_train_timesteps
        sigmas = torch.arange(n, 0, -1, dtype=torch.float32) / n
        if not self.use_dynamic_shifting:
            sigmas = schedules.shift_sigmas(sigmas, self.shift)
        return sigmas[-1].item(), sigmas[0].item()

    # Hooks of `_build_plan` (sglang's copy of the class rounds these steps differently: `schedulers/sglang_flow.py`).
    @property
    def _applied_shift(self) -> float:
        """The static shift `set_timesteps` applies (the training range keeps `shift`): FlowMatchEuler's `set_shift`."""
        return self.shift

    def _default_sigmas(self, n: int) -> torch.Tensor:
        """The unshifted sigmas of `n` steps where no custom table is given: the training range, linearly spaced."""
        train = self.num_train_timesteps
        sigma_min, sigma_max = self._training_sigma_range()
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

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        # The step's scalars exactly as diffusers forms them from float32 sigmas; a float64 plan keeps float64.
        current, following = sigmas[:-1], sigmas[1:]
        coefficients = torch.stack([current, following - current, 1.0 - following, following], dim=-1)
        return single_plan(timesteps, sigmas, coefficients[:, None])


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

    state_type: ClassVar[type] = FlowMatchEulerState
    diffusers_name: ClassVar[str] = "FlowMatchEulerDiscreteScheduler"

    def _check_options(self) -> None:
        super()._check_options()
        if self.set_shift is not None and (self.use_dynamic_shifting or self.set_shift == self.shift):
            object.__setattr__(self, "set_shift", None)  # the same schedule: one config for it (frozen, as `validate`)

    @property
    def _applied_shift(self) -> float:
        return self.shift if self.set_shift is None else self.set_shift

    @property
    def stochastic(self) -> bool:
        """Whether `step` takes fresh noise: with `stochastic_sampling`."""
        return self.stochastic_sampling

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
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check(state, model_output, sample, noise, denoised, cursor)
            if per_token_timesteps is not None:
                _check_per_token(self.name, per_token_timesteps, sample)
        c = self._coefficients(state, sample, cursor)
        work = as_dtype(sample, state.plan.coefficients.dtype)
        if per_token_timesteps is not None:
            prev_sample, x0 = self._per_token_update(state, model_output, work, noise, denoised, per_token_timesteps)
        else:
            x0 = None
            if self.stochastic_sampling or denoised:
                x0 = work - scaled(c[SIGMA], model_output, on_host=False)  # diffusers keeps these sigmas on the device
            if self.stochastic_sampling:
                prev_sample = plus(
                    scaled(c[NEXT_SIGMA], as_dtype(noise, work.dtype), on_host=False),
                    scaled(c[ONE_MINUS_NEXT_SIGMA], x0, on_host=False),
                    eager=cursor is not None,
                )
            else:
                prev_sample = plus(scaled(c[DT], model_output, on_host=False), work, eager=cursor is not None)
        new_state = state.replace(**self._advanced(state, cursor))
        if denoised:
            return as_dtype(prev_sample, sample.dtype), new_state, as_dtype(x0, sample.dtype)
        return as_dtype(prev_sample, sample.dtype), new_state

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
        token = per_token_timesteps / self.num_train_timesteps
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
