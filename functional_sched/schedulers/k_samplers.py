"""What k-diffusion's samplers share, as a base of this package's schedulers of that kind (`k_dpm.py` and the
samplers beyond diffusers): a sigma table that ends in 0 (custom, or the Karras schedule of the config's range), a
denoiser's output (the data prediction x0 at the sample's sigma, the input unscaled: k-diffusion's
`model(x, sigma) -> x0`), noise levels x = x0 + sigma eps, and the model fed the sample at the sigma `timestep`
gives. Every coefficient is made once in the plan in k-diffusion's own float32 arithmetic, so float32 steps can
reproduce its loops bit for bit.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..machinery import checks, host
from ..machinery.plan import Plan, as_dtype
from ..machinery.record import record
from ..machinery.schedule import Schedule
from ..machinery.scheduler import Scheduler
from . import edm

#: Stable Diffusion 1.5's sigma range (its VP training schedule's smallest and largest sigma, float32), k-diffusion's
#: `CompVisDenoiser(model).sigma_min` and `.sigma_max`, and Karras et al.'s rho.
SIGMA_MIN, SIGMA_MAX, RHO = 0.029167532920837402, 14.614642143249512, 7.0


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float, dtype: torch.dtype) -> torch.Tensor:
    """k-diffusion's `get_sigmas_karras(n, sigma_min, sigma_max, rho)`: n sigmas and a final 0, its float32 operations
    (EDM's spacing on a float32 ramp), then cast to `dtype`."""
    sigmas = edm.karras_sigmas(torch.linspace(0, 1, n), sigma_min, sigma_max, rho)
    return torch.cat([sigmas, sigmas.new_zeros([1])]).to(dtype)


def root(value: torch.Tensor) -> torch.Tensor:
    """`value ** 0.5`, whose derivative at 0 is 0 rather than inf (a zero there is a clamp's or a minimum's constant,
    e.g. sigma_down = 0: an infinite derivative times its zero change would make a gradient NaN)."""
    zero = value == 0
    return torch.where(zero, torch.zeros_like(value), torch.where(zero, torch.ones_like(value), value) ** 0.5)


def ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """k-diffusion's `get_ancestral_step`: (sigma_down, sigma_up) of an ancestral step, elementwise (0-d tensors, or
    one per row), differentiable where its square roots meet 0 (`root`)."""
    if not eta:
        return sigma_to, torch.zeros_like(sigma_to)
    candidate = eta * root(sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2)
    sigma_up = torch.where(candidate < sigma_to, candidate, sigma_to)  # Python's min(sigma_to, candidate)
    return root(sigma_to**2 - sigma_up**2), sigma_up


class KDiffusionScheduler(Scheduler):
    """What the k-diffusion samplers share: the sigma table (custom, or Karras from the config), a denoiser's output,
    noise levels x = x0 + sigma eps, and the model fed the sample as it is at the sigma `timestep` gives."""

    reference_library: ClassVar[str] = "k-diffusion"
    #: The model output is the denoiser's x0 (what the Gaussian accuracy problem feeds a class of this kind).
    prediction_type: ClassVar[str] = "sample"
    _takes_repeats: ClassVar[bool] = False  # the steps divide by their log-sigma lengths

    def _check_options(self) -> None:
        if self.sigma_min >= self.sigma_max:
            raise ValueError(
                f"{self.name}: sigma_min={self.sigma_min!r} must be less than sigma_max={self.sigma_max!r}."
            )

    @property
    def stochastic(self) -> bool:
        return True

    # ------------------------------------------------------------------------------------------------ schedule
    def _check_schedule(self, schedule: Schedule) -> None:
        owner = self.name
        if schedule.timesteps is not None:
            raise ValueError(f"{owner}: custom timesteps are not supported; give custom sigmas (k-diffusion's table).")
        if schedule.mu is not None:
            raise ValueError(f"{owner}: mu is not used by this scheduler (it has no dynamic shifting).")
        if (schedule.num_inference_steps is None) == (schedule.sigmas is None):
            raise ValueError(f"{owner}: give exactly one of num_inference_steps or custom sigmas.")
        if schedule.sigmas is not None:
            values = schedule.sigmas.values
            if len(values) < 2:
                raise ValueError(f"{owner}: custom sigmas need at least two values (a step's start and the final one).")
            if any(value <= 0 for value in values[:-1]) or values[-1] < 0:
                raise ValueError(
                    f"{owner}: custom sigmas must be positive (the last may be 0): a step takes their logarithm, got "
                    f"{[value for value in values if value <= 0][:3]}."
                )
        super()._check_schedule(schedule)

    def _custom_range(self, name: str) -> tuple[float, float, bool]:
        return (0.0, math.inf, False)

    def _sigma_table(self, n: int | None, sigmas: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """k-diffusion's sigma table [N + 1] (the final sigma included) in float32 (cast to `dtype`)."""
        if sigmas is not None:
            return sigmas.to(torch.float32).to(dtype)
        assert n is not None
        return karras_sigmas(n, self.sigma_min, self.sigma_max, self.rho, dtype)

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        return self._plan_from_intervals(self._sigma_table(num_inference_steps, sigmas, dtype))

    def _plan_from_intervals(self, sigmas: torch.Tensor) -> Plan:
        """The plan of k-diffusion's sigma table [N + 1]."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------ model side
    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ones_like(sigma), sigma  # x = x0 + sigma eps

    def init_noise_sigma(self, state: Any) -> torch.Tensor:
        """The initial noise's standard deviation per row, [R]: the table's first sigma (k-diffusion's callers draw
        `randn * sigmas[0]`)."""
        self._require_state(state, "init_noise_sigma")
        first = state.plan.sigmas[:, 0]
        rows = state.step_index.shape[0]
        return first.expand(rows) if first.shape[0] == 1 else first

    def _check(
        self,
        state: Any,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        noise: torch.Tensor | None,
        denoised: bool,
        cursor: host.Cursor | None,
    ) -> None:
        """The step's inputs: the state's (then its buffer's shape and dtype are the sample's), and the noise where the
        config takes it."""
        self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
        buffer = self._buffer(state)
        checks.check_sample_matches_state(self.name, sample, buffer.shape, buffer.dtype)
        if self.stochastic:
            checks.check_noise(self.name, self._noise_reason, noise, sample)

    def _buffer(self, state: Any) -> torch.Tensor:
        """A tensor of the state shaped like the sample, in its dtype."""
        raise NotImplementedError

    _noise_reason: ClassVar[str]


def any_row_at(scheduler: Scheduler, state: Any, column: int) -> bool:
    """Whether a plan column flags the current call of any row (not past its schedule's end): a host read."""
    cursor = scheduler._cursor(state)
    if cursor is not None:
        if cursor.step >= cursor.owned.host.steps:
            return False
        return bool(cursor.owned.host.entry(cursor.step, 0)[column] > 0)
    with host.plain():
        table, steps = state.plan.coefficients[:, :, 0, column].detach().cpu(), state.step_index.detach().cpu()
        lengths = state.plan.num_steps.detach().cpu()
    rows = torch.arange(steps.shape[0]) if table.shape[0] > 1 else torch.zeros_like(steps)
    inside = (steps >= 0) & (steps < lengths[rows])
    return bool((table[rows, steps.clamp(0, table.shape[1] - 1)] > 0)[inside].any())


@record(host=("cursor",))
class KDiffusionHistoryState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    lower_order_nums: torch.Tensor  # [R], int64: steps taken since init, capped at the last warm-up level
    history: tuple[
        torch.Tensor, ...
    ]  # K x [R, ...], the sample's dtype: earlier calls' x0 or derivatives, newest first
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


class KDiffusionMultistep(KDiffusionScheduler):
    """A sampler of one call an interval that keeps `_kept` earlier calls' results (buffers shaped like the sample,
    zero at init) and a warm-up level: its plan has a row per interval and a level per warm-up step."""

    state_type: ClassVar[type] = KDiffusionHistoryState
    _kept: ClassVar[int]

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        return self._plan_from_intervals(sigmas)

    def _warmup(self, state: Any) -> torch.Tensor | None:
        return state.lower_order_nums

    def _start(
        self,
        plan: Plan,
        sample: torch.Tensor,
        step_index: torch.Tensor,
        level: torch.Tensor,
        fingerprint: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> KDiffusionHistoryState:
        history = tuple(torch.zeros_like(sample, memory_format=torch.contiguous_format) for _ in range(self._kept))
        return KDiffusionHistoryState(
            plan=plan,
            step_index=step_index,
            lower_order_nums=level,
            history=history,
            fingerprint=fingerprint,
            cursor=cursor,
        )

    def _buffer(self, state: Any) -> torch.Tensor:
        return state.history[0]

    def step(
        self,
        state: KDiffusionHistoryState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> Any:
        """One model call of every row: `(next_sample, new_state)`, or `(next_sample, new_state, x0)` with
        `denoised=True`. `model_output` is the denoiser's x0 at the sample; `noise` standard normal like the sample
        where the config adds noise. The update is `_known_call` where the host knows the call's plan entry (the
        reference's own operations), else `_any_call` (per row, branch-free); then x0 enters the history, newest
        first. The arithmetic in the promoted dtype of the sample and the output; the result in the sample's dtype.
        (A sampler whose history keeps something else than x0 steps itself.)"""
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check(state, model_output, sample, noise, denoised, cursor)
        c = self._coefficients(state, sample, cursor)
        x0 = model_output
        update = self._known_call if cursor is not None else self._any_call
        prev_sample = update(sample, x0, state.history, noise, c)
        history = (x0.to(sample.dtype) if x0.dtype != sample.dtype else x0.clone(), *state.history[:-1])
        new_state = state.replace(**self._advanced(state, cursor), history=history)
        prev_sample = as_dtype(prev_sample, sample.dtype)
        if denoised:
            return prev_sample, new_state, as_dtype(x0, sample.dtype).clone()
        return prev_sample, new_state

    def _known_call(
        self, sample: torch.Tensor, x0: torch.Tensor, history: tuple[torch.Tensor, ...], noise: Any, c: Any
    ) -> torch.Tensor:
        """The eager call, where the host knows its plan entry (its 0-d host scalars `c`)."""
        raise NotImplementedError

    def _any_call(
        self, sample: torch.Tensor, x0: torch.Tensor, history: tuple[torch.Tensor, ...], noise: Any, c: Any
    ) -> torch.Tensor:
        """The call of any plan entry, per row (`c` broadcast against the sample): branch-free."""
        raise NotImplementedError
