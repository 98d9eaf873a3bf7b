"""LTX's ancestral rectified-flow Euler: diffusers' `LTXEulerAncestralRFScheduler` (ComfyUI's
`sample_euler_ancestral_RF`; LTX-2's DFR temporal refine runs it with eta = 0.5)."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Choice, Option, Real
from ..machinery.plan import Plan, as_dtype, plus, scaled, single_plan
from ..machinery.record import record
from ..machinery.schedule import Schedule
from ..machinery.scheduler import Scheduler
from ..math import schedules
from .flow_match import FlowMatchEulerDiscrete, FlowMatchScheduler

# Columns of the coefficient table: the step's sigma (x0 = x - sigma v), sigma_down / sigma and 1 - that (the Euler
# step to sigma_down in (x, x0) space), alpha_next / alpha_down (the rescale to the next sigma's alpha), the renoise's
# standard deviation, and 1 at a final step (into sigma ~ 0: diffusers returns x0 there; the other columns then
# make the update x0 exactly: 0, 1, 1, 0).
SIGMA, RATIO, ONE_MINUS_RATIO, ALPHA_RATIO, RENOISE, FINAL = range(6)

_FLOW = options.declared(FlowMatchEulerDiscrete)
#: FlowMatchEuler's schedule options: diffusers builds this class's schedule from a step count with
#: `FlowMatchEulerDiscreteScheduler.from_config(self.config)`, so they are config keys it reads where present (a config
#: taken over from LTX-Video's FlowMatchEuler, `from_config(pipe.scheduler.config)`), not constructor parameters.
_SCHEDULE_OPTIONS = (
    "shift",
    "use_dynamic_shifting",
    "base_shift",
    "max_shift",
    "base_image_seq_len",
    "max_image_seq_len",
    "shift_terminal",
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "sigma_min",
    "sigma_max",
    "time_shift_type",
)


@record(host=("cursor",))
class LTXEulerAncestralRFState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class LTXEulerAncestralRF(Scheduler):
    """Ancestral Euler steps of rectified flow: x0 = x - sigma v; with sigma_down = sigma_next (1 + (sigma_next /
    sigma - 1) eta), an Euler step to sigma_down, x' = (sigma_down / sigma) x + (1 - sigma_down / sigma) x0, then
    rescaled to the next sigma's alpha with fresh noise, x_next = (alpha_next / alpha_down) x' + s_noise
    sqrt(sigma_next^2 - sigma_down^2 alpha_next^2 / alpha_down^2) noise (`noise=` required when eta > 0 and
    s_noise > 0; diffusers draws it, in float32, at every step but a final one). A step into sigma ~ 0 (below 1e-8)
    returns x0. eta = 0 is the deterministic flow Euler step.

    Schedule, as diffusers' `set_timesteps`: from a step count, FlowMatchEuler's (its options are registered config
    keys here, `mu` where it shifts dynamically); or custom `sigmas` holding the final sigma too (N + 1 values for N
    steps, as LTX-2's pipelines pass their distilled sigmas and 0), `timesteps` standing for sigmas where no sigmas
    are given (diffusers' alias; ignored beside them), timesteps = sigmas * num_train_timesteps, `mu` ignored.
    diffusers' timestep table then holds the final sigma's timestep too, which no step starts from (its pipelines
    loop over `timesteps[:-1]`): ours holds the N steps' (the drop-in shows diffusers' table). The step works in
    float32 (float64 for float64 samples) and returns the sample's dtype. `invert_sigmas` is refused: the inverted
    schedule starts at sigma 0, which the step divides by.

    Implements ComfyUI's `sample_euler_ancestral_RF` (k-diffusion's Euler ancestral, Karras et al. 2022, Algorithm 2
    with ancestral noise, for the rectified-flow parametrisation of Liu et al. 2022), as diffusers 0.42.1 does.
    """

    num_train_timesteps: int = _FLOW["num_train_timesteps"]
    eta: float = Option(1.0, Real(at_least=0), examples=(0.5, 0.0))
    s_noise: float = Option(1.0, Real(at_least=0), examples=(0.5, 0.0))
    shift: float = _FLOW["shift"].but(registered=True)
    use_dynamic_shifting: bool = _FLOW["use_dynamic_shifting"].but(registered=True)
    base_shift: float | None = _FLOW["base_shift"].but(registered=True)
    max_shift: float | None = _FLOW["max_shift"].but(registered=True)
    base_image_seq_len: int = _FLOW["base_image_seq_len"].but(registered=True)
    max_image_seq_len: int = _FLOW["max_image_seq_len"].but(registered=True)
    invert_sigmas: bool = Option(False, Choice(False), registered=True)
    shift_terminal: float | None = _FLOW["shift_terminal"].but(registered=True)
    use_karras_sigmas: bool = _FLOW["use_karras_sigmas"].but(registered=True)
    use_exponential_sigmas: bool = _FLOW["use_exponential_sigmas"].but(registered=True)
    use_beta_sigmas: bool = _FLOW["use_beta_sigmas"].but(registered=True)
    sigma_min: float | None = _FLOW["sigma_min"]
    sigma_max: float | None = _FLOW["sigma_max"]
    time_shift_type: str = _FLOW["time_shift_type"].but(registered=True)

    state_type: ClassVar[type] = LTXEulerAncestralRFState
    diffusers_name: ClassVar[str] = "LTXEulerAncestralRFScheduler"
    plan_columns: ClassVar[int] = FINAL + 1
    #: Custom sigmas in any order, as diffusers takes them: a table that divides by a zero sigma computes NaN, which
    #: the plan refuses (`scheduler._finite`).
    _custom_tables_decrease: ClassVar[bool] = False

    @property
    def stochastic(self) -> bool:
        """Whether `step` takes fresh noise: with eta > 0 and s_noise > 0."""
        return self.eta > 0 and self.s_noise > 0

    def _step_options(self) -> tuple[Any, ...]:
        return (self.stochastic, self.s_noise if self.stochastic else None)

    def _check_options(self) -> None:
        FlowMatchScheduler._check_options(self)  # type: ignore[arg-type]

    @functools.cached_property
    def _flow(self) -> FlowMatchEulerDiscrete:
        """The FlowMatchEuler whose schedule diffusers takes for a step count (built from this config)."""
        schedule_options = {name: getattr(self, name) for name in _SCHEDULE_OPTIONS}
        return FlowMatchEulerDiscrete(num_train_timesteps=self.num_train_timesteps, **schedule_options)

    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return schedules.flow_alpha_sigma(sigma)

    # ------------------------------------------------------------------------------------------------ plan
    def _check_schedule(self, schedule: Schedule) -> None:
        owner = self.name
        custom = schedule.sigmas if schedule.sigmas is not None else schedule.timesteps
        steps = schedule.num_inference_steps
        if custom is None:
            if steps is None:
                raise ValueError(f"{owner}: give num_inference_steps, or custom sigmas (with the final one).")
            if self.use_dynamic_shifting and schedule.mu is None:
                raise ValueError(
                    f"{owner}: use_dynamic_shifting=True needs mu for a schedule from a step count (the resolution "
                    "shift, e.g. calculate_shift of the sequence length); pass init(..., mu=...)."
                )
        else:
            if len(custom.values) < 2:
                raise ValueError(
                    f"{owner}: custom sigmas hold the final sigma too (N + 1 values for N steps, e.g. [..., 0.0]), got "
                    f"{len(custom.values)} value."
                )
            if steps is not None and steps != len(custom.values) - 1:
                raise ValueError(
                    f"{owner}: num_inference_steps={steps} but the {len(custom.values)} custom sigmas (with the final "
                    f"one) make {len(custom.values) - 1} steps; leave num_inference_steps out or make them agree."
                )
        super()._check_schedule(schedule)

    def _custom_range(self, name: str) -> tuple[float, float, bool]:
        # Sigmas in the flow's [0, 1]; timesteps stand for sigmas in diffusers (its alias), which it steps whatever
        # their values: the training timesteps' range, where its steps stay finite.
        return (0.0, float(self.num_train_timesteps), False) if name == "timesteps" else (0.0, 1.0, False)

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        if sigmas is None and timesteps is None:
            flow = self._flow._build_plan(num_inference_steps, None, None, mu, torch.float32)
            timesteps, sigmas = flow.timesteps[0], flow.sigmas[0]
        else:
            sigmas = (sigmas if sigmas is not None else timesteps).to(torch.float32)
            timesteps = (sigmas * float(self.num_train_timesteps))[:-1]
        return self._plan_from_tables(timesteps, sigmas.to(dtype))

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        # Each scalar as diffusers forms it from its (float32) sigmas, elementwise.
        sigma, following = sigmas[:-1], sigmas[1:]
        final = following.double().abs() < 1e-8
        sigma_down = following * (1.0 + (following / sigma - 1.0) * self.eta)
        alpha_next, alpha_down = 1.0 - following, 1.0 - sigma_down
        ratio = sigma_down / sigma
        renoise = (following**2 - sigma_down**2 * alpha_next**2 / (alpha_down**2 + 1e-12)).clamp(min=0.0).sqrt()
        alpha_ratio = alpha_next / (alpha_down + 1e-12)
        one, zero = torch.ones_like(sigma), torch.zeros_like(sigma)
        columns = [
            sigma,
            torch.where(final, zero, ratio),
            torch.where(final, one, 1.0 - ratio),
            torch.where(final, one, alpha_ratio),
            torch.where(final, zero, renoise),
            final.to(sigmas.dtype),
        ]
        return single_plan(timesteps, sigmas, torch.stack(columns, dim=-1)[:, None])

    # ------------------------------------------------------------------------------------------------ step
    def _draws_noise(self, state: Any) -> bool:
        """Whether diffusers draws noise at this step of any row: stochastic, and not a final step."""
        if not self.stochastic:
            return False
        final = self._coefficients(state, state.step_index, self._cursor(state))[FINAL]
        return bool((final == 0).any())

    def step(
        self,
        state: LTXEulerAncestralRFState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, LTXEulerAncestralRFState] | tuple[torch.Tensor, LTXEulerAncestralRFState, torch.Tensor]:
        """One ancestral step of every row: `(prev_sample, new_state)`, or `(prev_sample, new_state, x0)` with
        `denoised=True`. `noise` (standard normal like the sample; diffusers draws it in float32) is required when
        eta > 0 and s_noise > 0, and ignored at a final step (diffusers draws none there)."""
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
            if self.stochastic:
                checks.check_noise(self.name, f"eta={self.eta:g} with s_noise={self.s_noise:g}", noise, sample)
        c = self._coefficients(state, sample, cursor)
        dtype = state.plan.coefficients.dtype
        work = as_dtype(sample, dtype)
        x0 = work - scaled(c[SIGMA], as_dtype(model_output, dtype))
        eager = cursor is not None
        if eager and bool(c[FINAL]):  # the host knows it: diffusers returns x0 itself
            prev_sample = x0
        else:
            prev_sample = plus(scaled(c[ONE_MINUS_RATIO], x0), scaled(c[RATIO], work), eager=eager)
            if self.stochastic:
                fresh = scaled(c[RENOISE], as_dtype(noise, dtype), tensor_first=True)
                if self.s_noise != 1.0:
                    fresh = fresh * self.s_noise
                prev_sample = plus(fresh, scaled(c[ALPHA_RATIO], prev_sample), eager=eager)
        new_state = state.replace(**self._advanced(state, cursor))
        if denoised:
            return as_dtype(prev_sample, sample.dtype), new_state, as_dtype(x0, sample.dtype)
        return as_dtype(prev_sample, sample.dtype), new_state
