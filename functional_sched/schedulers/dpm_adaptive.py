"""k-diffusion's DPM-Solver adaptive (`sample_dpm_adaptive`): DPM-Solver-12 and -23 with error-controlled step
sizes, one `step` per model call, in a state of fixed structure.

k-diffusion's loop runs until it reaches sigma_min: each attempt is `order` model calls (a DPM-Solver-2 or -3 step
from t = -log sigma, with the lower order's solution beside it), the scaled difference of the two is the error, and a
PID controller accepts or rejects the attempt and proposes the next step size. Here every decision is data, never
control flow, so a whole loop compiles into one graph and rows step at different points of their solves:

- `num_inference_steps` is a budget of attempts (k-diffusion's `info['steps']`): the state's call table holds
  `order` calls per attempt. The budget's last attempt goes to sigma_min whatever its error (it is accepted and
  counted in `info(state)['forced']`), so every row ends at sigma_min however small the budget.
- A row that reached sigma_min is finished: a later call returns its sample as given and leaves its state as it was
  (a masked update, as torchode's per-sample status), and `steps_left` is 0 once every row is. An eager loop stops
  there; a graph runs the budget (`benchmarks/RESULTS.md` measures what that costs against fixed steps).
- Each row is its own solve (its log sigma, step size and controller history are per row) and the error norm is the
  row's: k-diffusion's is over the whole batch, which for a batch of one is the same. Rows of different requests step
  together as each alone.
- No timestep table exists before the data: `timesteps(state)` and `sigmas(state)` raise; `timestep(state)` is
  each row's sigma at this call (the sample's, or an attempt's intermediate point).

The arithmetic is k-diffusion's, per row: the times in the sample's working dtype (float32 for float32 and half
samples, as k-diffusion's 0-d tensors; float64 for float64), each product formed in its order, the controller in
float64 as its Python floats (its powers as exp(b log x), a few ulps from C's `pow`: below what the float32 step can
see). So float32 loops reproduce it bit for bit on the CPU, and an eager request of one row on CUDA too (its scalars
formed on the host, as k-diffusion's are).
"""

from __future__ import annotations

import functools
import math
import operator
import struct
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import torch

from ..machinery import checks, host, options
from ..machinery.brownian import Query
from ..machinery.options import Choice, Option, Real
from ..machinery.plan import Plan, as_dtype, coefficient_views, gather_step, single_plan
from ..machinery.record import record
from ..machinery.schedule import Schedule
from .k_samplers import SIGMA_MAX, SIGMA_MIN, KDiffusionScheduler, ancestral_step, root

# Columns of the call table, one row per model call: the call's place in its attempt (0 to order - 1) and whether the
# attempt is the budget's last (it goes to sigma_min and is accepted).
PHASE, FORCED = range(2)
# Columns of a row's attempt coefficients, made once per attempt (at the previous attempt's end, or `init`) from its
# log sigma s and step size: the sigma the model sees at each call (s, s1, s2; a finished row's own sigma at all), the
# multipliers of k-diffusion's updates to its intermediate points (u1 = x - TO_FIRST eps, u2 = x - TO_SECOND eps -
# SECOND_CORRECTION (eps_1 - eps)) and to the attempt's end (first = x - STEP eps; x_low = first - LOW_CORRECTION
# (eps_1 - eps); x_high = first - HIGH_CORRECTION (eps_last - eps)), the noise's scale sigma_up s_noise and the log
# sigma t where an accepted attempt lands. Each is its 0-d computation in k-diffusion's loop, in its order.
SIGMA_0, SIGMA_1, SIGMA_2, TO_FIRST, TO_SECOND, SECOND_CORRECTION, STEP, LOW_CORRECTION, HIGH_CORRECTION = range(9)
NOISE_SCALE, END = 9, 10
ATTEMPT_COLUMNS = 11
#: The controller's floor under the error (k-diffusion's `PIDStepSizeController.eps`), and how close to t_end a row is
#: finished (its loop's `s < t_end - 1e-5`).
ERROR_FLOOR, END_TOLERANCE = 1e-8, 1e-5


@record(host=("cursor",))
class DPMSolverAdaptiveState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64: model calls taken (`order` per attempt)
    log_sigma: torch.Tensor  # [R], the plan's dtype: t = -log sigma of each row's sample (k-diffusion's s)
    step_size: torch.Tensor  # [R], float64: the controller's next step in t (its `h`)
    inverse_errors: torch.Tensor  # [R, 2], float64: 1 / error of the last two accepted attempts (its `errs[1:]`)
    attempts: torch.Tensor  # [R], int64: attempts ended (k-diffusion's info['steps'])
    accepted: torch.Tensor  # [R], int64: attempts accepted (info['n_accept'])
    forced: torch.Tensor  # [R], bool: whether the budget's last attempt ended the row
    attempt_plan: torch.Tensor  # [R, ATTEMPT_COLUMNS], the plan's dtype: the current attempt's coefficients
    attempt_start: torch.Tensor  # [R, ...], the sample's dtype: the sample the current attempt started from
    previous_low: torch.Tensor  # [R, ...], the sample's dtype: the last accepted lower-order solution (its x_prev)
    eps: tuple[torch.Tensor, ...]  # (order - 1) x [R, ...]: the noise predictions of the attempt's earlier calls
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


#: The state's fields of the solve itself (per row: where it stands, its controller, its attempt's coefficients).
SOLVE_FIELDS = ("log_sigma", "step_size", "inverse_errors", "attempts", "accepted", "forced", "attempt_plan")
_solve_of = operator.attrgetter(*SOLVE_FIELDS)


class Solve(NamedTuple):
    """The solve's fields (`SOLVE_FIELDS`) of some rows, as one place holds them: the state's, or the host's copy."""

    log_sigma: torch.Tensor
    step_size: torch.Tensor
    inverse_errors: torch.Tensor
    attempts: torch.Tensor
    accepted: torch.Tensor
    forced: torch.Tensor
    attempt_plan: torch.Tensor


class HostSolve(NamedTuple):
    """The solve's fields as the host keeps them: Python numbers per row (exact values of the state's dtypes)."""

    log_sigma: tuple[float, ...]
    step_size: tuple[float, ...]
    inverse_errors: tuple[tuple[float, float], ...]
    attempts: tuple[int, ...]
    accepted: tuple[int, ...]
    forced: tuple[bool, ...]
    attempt_plan: tuple[tuple[float, ...], ...]


class SolveCursor(host.Cursor):
    """A cursor that also knows the rows' solve on the host, as k-diffusion keeps its controller in Python: the solve's
    fields as Python numbers, whether each row has finished, and the state's tensors of them (by identity) that it
    speaks for. An eager step then forms each attempt's scalars on the host and reads the device once an attempt (its
    error), as k-diffusion's `float(error)` does; a state rebuilt with `replace` of any of them loses it (the step then
    reads them once)."""

    __slots__ = ("finished", "ids", "mirrors", "numbers", "solve")

    def __init__(self, cursor: host.Cursor, solve: HostSolve, mirrors: Solve, finished: tuple[bool, ...]) -> None:
        super().__init__(cursor.owned, cursor.step, cursor.level)
        self.solve, self.mirrors, self.finished = solve, mirrors, finished
        self.ids = tuple(map(id, mirrors))
        # A request of one row multiplies by its attempt's coefficients as Python numbers (exact values of the plan's
        # dtype: what 0-d tensors of them give, at the cost of none).
        self.numbers = solve.attempt_plan[0] if len(solve.attempt_plan) == 1 else None


def _sigma(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


@options.config
class DPMSolverAdaptive(KDiffusionScheduler):
    """DPM-Solver-12 (`order=2`) or DPM-Solver-23 (`order=3`) with adaptive step size, from `sigma_max` to
    `sigma_min`. An attempt from t = -log sigma of length h (at most to t_end = -log sigma_min): order 3 calls the
    model at t, t + h/3 and t + 2h/3 and compares DPM-Solver-3's step with DPM-Solver-2's (r1 = 1/3); order 2 calls it
    at t and t + h/2 and compares DPM-Solver-2 with DPM-Solver-1. The error is the RMS of their difference over
    max(atol, rtol max(|x_low|, |x_prev|)), per row; a PID controller (coefficients `pcoeff`, `icoeff`, `dcoeff` over
    the order, 1.5 with eta) scales h by 1 + atan(factor - 1) and accepts where that is >= `accept_safety`. With eta > 0
    each attempt steps to the ancestral step's sigma_down and an accepted one adds s_noise sigma_up z.

    `num_inference_steps` is the budget of attempts (each `order` calls; see the module docstring); `noise=` is
    required where eta > 0 and read at an attempt's last call, used where the attempt is accepted: Brownian noise
    (`functional_sched.brownian_noise`, one seed per row) draws the same increment over an accepted interval whatever
    was rejected before, as k-diffusion's `BrownianTreeNoiseSampler`. `info(state)` gives each row's counts.

    Implements `sample_dpm_adaptive` of k-diffusion (Crowson), the adaptive step size DPM-Solver of Lu et al. (2022),
    "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in Around 10 Steps" (section 3.3 and
    appendix C), with a PID controller after Söderlind (2003), "Digital filters in adaptive time-stepping".
    """

    sigma_min: float = Option(SIGMA_MIN, Real(above=0), examples=(0.002,))
    sigma_max: float = Option(SIGMA_MAX, Real(above=0), examples=(80.0,))
    order: int = Option(3, Choice(2, 3))
    rtol: float = Option(0.05, Real(above=0), examples=(0.01, 0.2))
    atol: float = Option(0.0078, Real(above=0), examples=(0.001, 0.05))
    h_init: float = Option(0.05, Real(above=0), examples=(0.5, 2.0))
    pcoeff: float = Option(0.0, Real(at_least=0), examples=(0.3,))
    icoeff: float = Option(1.0, Real(at_least=0), examples=(0.9, 0.5))
    dcoeff: float = Option(0.0, Real(at_least=0), examples=(0.2,))
    accept_safety: float = Option(0.81, Real(above=0), examples=(0.9, 0.5))
    eta: float = Option(0.0, Real(at_least=0), examples=(1.0, 0.5))
    s_noise: float = Option(1.0, Real(at_least=0), examples=(0.5, 1.003))

    state_type: ClassVar[type] = DPMSolverAdaptiveState
    diffusers_name: ClassVar[str] = "sample_dpm_adaptive"
    plan_columns: ClassVar[int] = FORCED + 1
    timestep_table: ClassVar[bool] = False
    _row_fields: ClassVar[tuple[str, ...]] = (
        "log_sigma",
        "step_size",
        "inverse_errors",
        "attempts",
        "accepted",
        "forced",
        "attempt_plan",
    )
    _looks_up_first_timestep: ClassVar[bool] = False
    _noise_reason: ClassVar[str] = "DPM-Solver adaptive with eta > 0 (the noise of an accepted attempt)"
    _not_gaussian: ClassVar[str | None] = (
        "an attempt's noise is added only where the controller accepts it, a decision made from the model output"
    )

    @property
    def stochastic(self) -> bool:
        return self.eta > 0

    def _step_options(self) -> tuple[Any, ...]:
        return (
            self.order,
            self.rtol,
            self.atol,
            self.pcoeff,
            self.icoeff,
            self.dcoeff,
            self.accept_safety,
            self.eta,
            self.s_noise,
            self.sigma_min,
        )

    # ------------------------------------------------------------------------------------------------ the budget
    def _check_schedule(self, schedule: Schedule) -> None:
        if schedule.sigmas is not None:
            raise ValueError(
                f"{self.name}: custom sigmas are not supported; k-diffusion's sample_dpm_adaptive chooses its own "
                "between sigma_min and sigma_max (num_inference_steps is its budget of attempts)."
            )
        if schedule.num_inference_steps is None:
            raise ValueError(
                f"{self.name}: give num_inference_steps, the budget of attempts (order model calls each): a bound on "
                "k-diffusion's loop, which runs until done, so the state and a graph have a fixed length."
            )
        super()._check_schedule(schedule)

    @property
    def max_inference_steps(self) -> int:
        return super().max_inference_steps // self.order

    def _steps_limit_reason(self) -> str:
        return f" attempts of {self.order} model calls"

    def _payload_problem(self, tensors: Mapping[str, torch.Tensor]) -> str | None:
        """A handed-over solve's controller: counts that a run makes (accepted <= attempts, order calls each, within
        the calls taken), a positive step size and inverse errors, a log sigma within [t_start, t_end]."""
        attempts, accepted, calls = tensors["attempts"], tensors["accepted"], tensors["step_index"]
        if bool(((accepted < 0) | (accepted > attempts) | (attempts * self.order > calls)).any()):
            return (
                f"attempts {attempts.tolist()} and accepted {accepted.tolist()} are no counts of {calls.tolist()} calls"
            )
        if bool((tensors["step_size"] <= 0).any()) or bool((tensors["inverse_errors"] < 0).any()):
            return "the controller's step size or inverse errors are not positive"
        log_sigma = tensors["log_sigma"]
        t_start, t_end, _ = self._times_of(log_sigma.dtype)
        if bool(((log_sigma < t_start) | (log_sigma > t_end)).any()):
            return f"log_sigma {log_sigma.tolist()} lies outside [{t_start}, {t_end}] (-log of sigma_max, sigma_min)"
        # The attempt's coefficients are a function of the rest: made again here, they must agree (float rounding
        # between hosts aside, as the plan's tables).
        calls = tensors["plan.coefficients"][..., 0, FORCED]
        index = (tensors["step_index"] - tensors["step_index"] % self.order).clamp(max=calls.shape[1] - 1)
        forced = (calls[0].index_select(0, index) if calls.shape[0] == 1 else calls.gather(1, index[:, None])[:, 0]) > 0
        expected = self._attempt(log_sigma, tensors["step_size"], forced)
        if not bool(torch.isclose(tensors["attempt_plan"], expected, rtol=1e-5, atol=1e-6).all()):
            return "the attempt's coefficients are not those of its log sigma and step size"
        return None

    def _check_begin_index(self, plan: host.HostPlan, begin_index: Any) -> int:
        value = super()._check_begin_index(plan, begin_index)
        if value:
            raise ValueError(
                f"{self.name}.init: begin_index must be 0 (an adaptive solve starts at sigma_max; to start lower, as "
                f"img2img does, set sigma_max), got {value}."
            )
        return value

    @functools.cached_property
    def _log_times(self) -> dict[torch.dtype, tuple[float, float, float]]:
        """`_times_of` for each plan dtype, made once per config (here, not inside a compiled step)."""
        return {dtype: _log_times(self.sigma_max, self.sigma_min, dtype) for dtype in (torch.float32, torch.float64)}

    def _check_options(self) -> None:
        super()._check_options()
        self._log_times  # noqa: B018 - made at construction, so that a compiled step only reads it

    def _times_of(self, dtype: torch.dtype) -> tuple[float, float, float]:
        """(t_start, t_end, the finished bound t_end - 1e-5) in `dtype` as Python floats (exact in `dtype`), as
        k-diffusion takes the logarithms of sigma_max's and sigma_min's 0-d tensors and rounds its loop's bound."""
        return self._log_times[dtype]

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        """`order` calls per attempt of the budget. The plan's tables hold no timesteps (the data chooses them):
        sigma_max at every call and sigma_min after the last, the range the solve covers (never shown)."""
        assert num_inference_steps is not None
        calls = num_inference_steps * self.order
        phases = torch.arange(calls, dtype=dtype) % self.order
        forced = (torch.arange(calls) >= calls - self.order).to(dtype)
        coefficients = torch.stack([phases, forced], dim=1)
        sigmas = torch.tensor([self.sigma_max] * calls + [self.sigma_min], dtype=dtype)
        return single_plan(sigmas[:-1].to(torch.float32), sigmas, coefficients[:, None])

    def _plan_from_intervals(self, sigmas: torch.Tensor) -> Plan:
        raise NotImplementedError  # the call table is made from the budget directly (`_build_plan`)

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        raise NotImplementedError(f"{self.name}: its call table is made from the budget of attempts (init(n)).")

    def _start(
        self,
        plan: Plan,
        sample: torch.Tensor,
        step_index: torch.Tensor,
        level: torch.Tensor,
        fingerprint: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> DPMSolverAdaptiveState:
        rows, device, dtype = sample.shape[0], sample.device, plan.coefficients.dtype
        buffers = torch.zeros((self.order + 1, *sample.shape), dtype=sample.dtype, device=device).unbind(0)
        # Made on the host (as k-diffusion forms its scalars), then the state's tensors on the sample's device.
        log_sigma, step_size = (self._times_of(dtype)[0],) * rows, (self.h_init,) * rows
        one_attempt = plan.coefficients.shape[1] <= self.order  # a budget of one: it is forced
        with host.plain():  # numbers, whatever mode the state's tensors are made under (fake ones for shapes)
            attempt_plan = self._host_attempts(log_sigma, step_size, (one_attempt,) * rows, (False,) * rows, dtype)
        on_host = HostSolve(
            log_sigma=log_sigma,
            step_size=step_size,
            inverse_errors=((0.0, 0.0),) * rows,
            attempts=(0,) * rows,
            accepted=(0,) * rows,
            forced=(False,) * rows,
            attempt_plan=attempt_plan,
        )
        solve = _solve_tensors(on_host, dtype, device)
        if cursor is not None and device.type != "meta":  # shape inference: no values for the host to read
            cursor = SolveCursor(cursor, on_host, solve, (False,) * rows)
        return DPMSolverAdaptiveState(
            plan=plan,
            step_index=step_index,
            **solve._asdict(),
            attempt_start=buffers[0],
            previous_low=buffers[1],
            eps=buffers[2:],
            fingerprint=fingerprint,
            cursor=cursor,
        )

    def _described(self, state: Any) -> host.Cursor | None:
        """The state's cursor (a `SolveCursor`, or a plain one after a handoff) if it still speaks for the state."""
        if not isinstance(state, self.state_type):
            return None
        cursor = state.cursor
        return (
            cursor if isinstance(cursor, host.Cursor) and cursor.describes(state.plan, state.step_index, None) else None
        )

    def _host_solve(self, state: Any, cursor: host.Cursor | None) -> SolveCursor | None:
        """The cursor, where it knows the state's solve on the host (its mirrors are the state's solve fields)."""
        if not isinstance(cursor, SolveCursor):
            return None
        # By identity (the cursor holds the tensors, so no other can take their ids).
        return cursor if cursor.ids == tuple(map(id, _solve_of(state))) else None

    def _buffer(self, state: Any) -> torch.Tensor:
        return state.attempt_start

    # ------------------------------------------------------------------------------------------------ queries
    def timesteps(self, state: Any) -> torch.Tensor:
        self._require_state(state, "timesteps")
        raise self._no_table("timesteps")

    def sigmas(self, state: Any) -> torch.Tensor:
        self._require_state(state, "sigmas")
        raise self._no_table("sigmas")

    def _no_table(self, method: str) -> TypeError:
        return TypeError(
            f"{self.name}.{method}: an adaptive solve has no table: its sigmas are chosen from the data as it runs. "
            "Condition the model on timestep(state) (each row's sigma at this call), loop while steps_left(state), "
            "and read info(state) for the steps taken."
        )

    def finished(self, state: Any) -> torch.Tensor:
        """[R] bool: whether each row has reached sigma_min (later calls leave it as it is)."""
        self._require_state(state, "finished")
        return self._finished(state.log_sigma)

    def _finished(self, log_sigma: torch.Tensor) -> torch.Tensor:
        return log_sigma >= self._times_of(log_sigma.dtype)[2]  # k-diffusion's loop runs while s < t_end - 1e-5

    def steps_left(self, state: Any) -> int:
        """The calls the furthest-behind unfinished row may still take (its budget's rest); 0 once every row has
        reached sigma_min. A state from `init`/`step` answers on the host; another reads its rows' progress from the
        device (a sync)."""
        cursor = self._cursor(state)  # a cursor only for a state of this class
        left = super().steps_left(state) if cursor is None else max(cursor.owned.host.steps - cursor.step, 0)
        if left == 0:
            return 0
        known = self._host_solve(state, cursor)
        finished = all(known.finished) if known is not None else bool(self.finished(state).all())
        return 0 if finished else left

    def info(self, state: Any) -> dict[str, torch.Tensor]:
        """k-diffusion's `return_info` per row ([R] tensors): `steps` (attempts), `nfe` (model calls in them),
        `n_accept`, `n_reject`; and `finished`, `forced` (ended by the budget's last attempt), `sigma` (now)."""
        self._require_state(state, "info")
        return {
            "steps": state.attempts.clone(),
            "nfe": state.attempts * self.order,
            "n_accept": state.accepted.clone(),
            "n_reject": state.attempts - state.accepted,
            "finished": self.finished(state),
            "forced": state.forced.clone(),
            "sigma": _sigma(state.log_sigma),
        }

    def init_noise_sigma(self, state: Any) -> torch.Tensor:
        """The initial noise's standard deviation per row, [R]: `sigma_max` (k-diffusion's callers draw
        `randn * sigma_max`)."""
        self._require_state(state, "init_noise_sigma")
        dtype = state.plan.sigmas.dtype
        return torch.full(state.step_index.shape, self.sigma_max, dtype=dtype, device=state.step_index.device)

    def timestep(self, state: Any) -> torch.Tensor:
        """Each row's sigma at this call, [R]: where its sample is at an attempt's first call (and once finished),
        else the attempt's intermediate point (k-diffusion's s1, s2)."""
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_state(state, cursor)
        phase = self._columns(state, cursor)[0]
        if isinstance(phase, int):
            return state.attempt_plan[:, SIGMA_0 + phase].clone()
        return state.attempt_plan.gather(1, phase.long()[:, None] + SIGMA_0)[:, 0]

    def _model_sigma(self, state: Any) -> torch.Tensor:
        return self.timestep(state)

    def add_noise(self, state: Any, original_samples: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noise `original_samples` to each row's sigma now (at `init`, sigma_max): x0 + sigma noise."""
        if checks.checking():
            self._require_state(state, "add_noise")
            checks.check_rows(self.name, "original_samples", original_samples, *self._rows_and_device(state))
            checks.check_like(self.name, "noise", noise, original_samples, "original_samples")
        sigma = _sigma(state.log_sigma).to(original_samples.dtype)
        return original_samples + sigma.view(-1, *([1] * (noise.dim() - 1))) * noise

    # ------------------------------------------------------------------------------------------------ noise
    def _draws_noise(self, state: Any) -> bool:
        """Whether any row is at an attempt's last call (where an accepted attempt adds noise), with eta > 0."""
        if not self.stochastic:
            return False
        phase = self._columns(state, self._cursor(state))[0]
        return phase == self.order - 1 if isinstance(phase, int) else bool((phase == self.order - 1).any())

    def _brownian_queries(self, state: Any) -> list[Query | None]:
        """Per row, the interval k-diffusion's tree is queried on where this attempt is accepted: (sigma(s),
        sigma(t)) in a tree over [sigma_min, sigma_max]; None where the row draws none. Host reads."""
        self._require_state(state, "brownian_noise")
        cursor = self._cursor(state)
        phase = self._columns(state, cursor)[0]
        with host.plain():
            attempt, log_sigma = state.attempt_plan.cpu(), state.log_sigma.cpu()
            starts, ends = attempt[:, SIGMA_0], _sigma(attempt[:, END])
            last = (phase == self.order - 1) if isinstance(phase, int) else (phase == self.order - 1).cpu().tolist()
            live = (~self._finished(log_sigma)).tolist()
        low, high = (float(torch.tensor(value, dtype=starts.dtype)) for value in (self.sigma_min, self.sigma_max))
        at_last = [last] * len(live) if isinstance(last, bool) else last
        return [
            Query(low, high, start, end) if self.eta and drawn and alive else None
            for start, end, drawn, alive in zip(starts, ends, at_last, live, strict=True)
        ]

    # ------------------------------------------------------------------------------------------------ the step
    def _columns(self, state: Any, cursor: host.Cursor | None, ahead: int = 0) -> tuple[Any, Any]:
        """(phase, forced) of this call (or of the call `ahead` of it, within the budget): Python values where the
        host knows the step (a cursor), else [R] gathered from the plan."""
        if cursor is not None:  # the plan's columns, from the call's index (`_build_plan` makes them so)
            calls = cursor.owned.host.steps
            if cursor.step >= calls:
                checks.raise_finished(self.name, state)
            call = min(cursor.step + ahead, calls - 1)
            return call % self.order, call >= calls - self.order
        index = state.step_index
        if ahead:
            last = state.plan.num_steps - 1
            index = torch.minimum(index + ahead, last if last.shape[0] == index.shape[0] else last.expand_as(index))
        try:
            row = gather_step(state.plan, index)
        except IndexError:
            checks.raise_finished(self.name, state)
            raise
        return row[:, PHASE], row[:, FORCED] > 0

    @property
    def _fractions(self) -> tuple[float, ...]:
        """The attempt's call points as fractions of its length (k-diffusion's r1, r2)."""
        return (1 / 3, 2 / 3) if self.order == 3 else (1 / 2,)

    def _attempt(
        self, log_sigma: torch.Tensor, step_size: torch.Tensor, forced: Any, any_finished: bool = True
    ) -> torch.Tensor:
        """The coefficients [R, ATTEMPT_COLUMNS] of each row's attempt from log sigma s with step size h (to
        t_end where `forced`, a bool or [R] bools): k-diffusion's t = min(t_end, s + h), with eta the ancestral step's
        t_ = min(t_end, -log sigma_down) and sigma_up, and every multiplier of its steps to t_ (`ATTEMPT_COLUMNS`).
        `any_finished` False: the host knows no row has finished (their masks are skipped)."""
        t_end = self._times_of(log_sigma.dtype)[1]
        finished = self._finished(log_sigma) if any_finished else None
        # A finished row's attempt is never used: it runs from a unit before its end, so that nothing divides by a
        # zero length (whose gradient, though masked, would be NaN); the model sees the row's own sigma.
        s = log_sigma if finished is None else torch.where(finished, log_sigma - 1, log_sigma)
        t = torch.clamp(s + step_size.to(s.dtype), max=t_end)  # its float32 `s + pid.h`
        if forced is True:
            t = torch.full_like(t, t_end)
        elif forced is not False:
            t = torch.where(forced, torch.full_like(t, t_end), t)
        zero = torch.zeros_like(s)
        if self.eta:
            sigma_down = ancestral_step(_sigma(s), _sigma(t), self.eta)[0]
            step_end = torch.clamp(sigma_down.log().neg(), max=t_end)
            noise_scale = root(_sigma(t) ** 2 - _sigma(step_end) ** 2) * self.s_noise
        else:
            step_end, noise_scale = t, zero
        sigmas, multipliers = self._multipliers(s, step_end, step_end - s, _exp_neg, _expm1, zero, _unrounded)
        if finished is not None:
            sigmas = torch.where(finished[:, None], _sigma(log_sigma)[:, None], torch.stack(sigmas, 1)).unbind(1)
        columns = [*sigmas, *multipliers]
        return torch.stack([*columns, noise_scale, t], dim=1)

    def _multipliers(
        self, s: Any, step_end: Any, h: Any, exp_neg: Any, expm1: Any, zero: Any, rounded: Any
    ) -> tuple[list[Any], list[Any]]:
        """k-diffusion's sigmas and multipliers of an attempt from s to step_end, of length h: the model's three sigmas
        and the columns TO_FIRST to HIGH_CORRECTION, each its 0-d computation in its order. On [R] tensors (`rounded`
        the identity: their operations round themselves) or on one row's Python floats (`rounded` rounds each result
        to the plan's dtype, which for + - * / of float32 values equals the float32 operation); `exp_neg` and `expm1`
        evaluate a list of values at once, with torch's elementwise functions either way."""
        fractions = self._fractions
        r1 = fractions[0]
        parts = [rounded(rounded(fraction) * h) for fraction in fractions]  # r h, r a float32 scalar as torch's
        sigma_0, *inner, sigma_end = exp_neg([s, *(rounded(s + part) for part in parts), step_end])
        expm1s = expm1([*parts, h])
        to_first = rounded(inner[0] * expm1s[0])
        step = rounded(sigma_end * expm1s[-1])
        if self.order == 3:
            r2 = fractions[1]
            to_second = rounded(inner[1] * expm1s[1])
            second_correction = rounded(
                rounded(inner[1] * rounded(r2 / r1)) * rounded(rounded(_divide(expm1s[1], parts[1])) - 1)
            )
            low_correction = rounded(rounded(sigma_end / rounded(2 * r1)) * expm1s[-1])
            high_correction = rounded(rounded(sigma_end / rounded(r2)) * rounded(rounded(_divide(expm1s[-1], h)) - 1))
            sigmas = [sigma_0, inner[0], inner[1]]
        else:  # DPM-Solver-1 (x_low = first) against DPM-Solver-2; the third call's columns unused
            to_second = second_correction = low_correction = zero
            high_correction = rounded(rounded(sigma_end / rounded(2 * r1)) * expm1s[-1])
            sigmas = [sigma_0, inner[0], inner[0]]
        return sigmas, [to_first, to_second, second_correction, step, low_correction, high_correction]

    def _host_attempts(
        self,
        log_sigma: tuple[float, ...],
        step_size: tuple[float, ...],
        forced: tuple[bool, ...],
        finished: tuple[bool, ...],
        dtype: torch.dtype,
    ) -> tuple[tuple[float, ...], ...]:
        """`_attempt` on the host: each row's coefficients as Python numbers, made as `_attempt` makes them (the same
        `_multipliers`; per row in Python floats rounded to `dtype` for a few rows without eta, else `_attempt` on host
        tensors)."""
        if self.eta or len(log_sigma) > 4:
            coefficients = self._attempt(
                torch.tensor(log_sigma, dtype=dtype), torch.tensor(step_size, dtype=torch.float64), torch.tensor(forced)
            )
            return tuple(map(tuple, coefficients.tolist()))
        rounded = _round32 if dtype == torch.float32 else _unrounded
        t_end = self._times_of(dtype)[1]

        def exp_neg(values: list[float]) -> list[float]:
            return torch.tensor(values, dtype=dtype).neg().exp().tolist()

        def expm1(values: list[float]) -> list[float]:
            return torch.tensor(values, dtype=dtype).expm1().tolist()

        rows = []
        for own, step, to_end, done in zip(log_sigma, step_size, forced, finished, strict=True):
            s = rounded(own - 1) if done else own  # a finished row's unused attempt, as `_attempt` makes it
            t = t_end if to_end else min(rounded(s + rounded(step)), t_end)
            sigmas, multipliers = self._multipliers(s, t, rounded(t - s), exp_neg, expm1, 0.0, rounded)
            if done:
                sigmas = exp_neg([own]) * 3
            rows.append((*sigmas, *multipliers, 0.0, t))
        return tuple(rows)

    def step(
        self,
        state: DPMSolverAdaptiveState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> Any:
        """One model call of every row: `(next_sample, new_state)`, or with `denoised=True` also x0. `model_output`
        is the denoiser's x0 at `timestep(state)`; the update works with k-diffusion's eps = (x - x0) / sigma. At an
        attempt's last call the returned sample is the accepted solution, or the attempt's start where rejected; a
        finished row's sample comes back as given (whatever its model output), its solve no longer moving."""
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check(state, model_output, sample, noise, denoised, cursor)
        # Meta tensors (shape inference) have no values for the host to read: they take the device path.
        known = None
        if cursor is not None and state.step_index.device.type != "meta":
            known = self._host_solve(state, cursor) or self._read_solve(state, cursor)
        if known is None:
            phase, forced = self._columns(state, None)
            prev_sample, changes = self._any_call(state, sample, model_output, phase, forced, noise)
            new_state = state.replace(**self._advanced(state, cursor), **changes)
        else:
            phase, forced = self._columns(state, cursor)
            prev_sample, changes, known = self._known_call(state, sample, model_output, phase, forced, noise, known)
            owned, step = cursor.owned, cursor.step + 1  # `_advanced` for a state without warm-up, its cursor ours
            cursor = SolveCursor(host.Cursor(owned, step, 0), *known)
            new_state = state.replace(step_index=owned.step(step), cursor=cursor, **changes)
        prev_sample = as_dtype(prev_sample, sample.dtype)
        if denoised:
            return prev_sample, new_state, as_dtype(model_output, sample.dtype).clone()
        return prev_sample, new_state

    def _read_solve(self, state: DPMSolverAdaptiveState, cursor: host.Cursor) -> SolveCursor:
        """The host's copy of a state's solve where it has none (a state handed over, or rebuilt): one read."""
        with host.plain():
            solve = _host_copy(state)
        mirrors = Solve(*_solve_of(state))
        return SolveCursor(cursor, solve, mirrors, self._host_finished(solve.log_sigma, state.log_sigma.dtype))

    def _host_finished(self, log_sigma: tuple[float, ...], dtype: torch.dtype) -> tuple[bool, ...]:
        bound = self._times_of(dtype)[2]
        return tuple(value >= bound for value in log_sigma)

    def _known_call(
        self,
        state: DPMSolverAdaptiveState,
        sample: torch.Tensor,
        model_output: torch.Tensor,
        phase: int,
        forced: bool,
        noise: Any,
        known: SolveCursor,
    ) -> tuple[torch.Tensor, dict[str, Any], tuple[HostSolve, Solve, tuple[bool, ...]]]:
        """The eager call, where the host knows the call's phase and the rows' solve: k-diffusion's operations only,
        its scalars on the host (a request of one row multiplies by Python numbers, as k-diffusion by its 0-d host
        tensors; rows by the state's copy of their coefficients), the device read once an attempt. Returns the next
        sample, the state's changes and what the next state's cursor knows."""
        # Python numbers where they compute as the plan's tensors would (a half sample computes in float32 with them)
        numbers = known.numbers is not None and sample.dtype == state.attempt_plan.dtype
        c = known.numbers if numbers else coefficient_views(state.attempt_plan, sample)
        eps = _over_sigma(sample - model_output, c[SIGMA_0 + phase])
        solve, mirrors, finished = known.solve, known.mirrors, known.finished
        if phase == 0:
            prev_sample, changes = self._first_call(state, sample, eps, c, known.step == 0)
        elif phase < self.order - 1:
            prev_sample, changes = self._middle_call(state, eps, c)
        else:
            x_low, x_high, error = self._solutions(state, eps, c)
            error = error.cpu()  # the attempt's one device read (k-diffusion's `float(error)`; no mode is active here)
            dtype = state.log_sigma.dtype
            next_forced = self._columns(state, known, ahead=1)[1]
            rows = sample.shape[0]
            solve, accept, finished = self._decide_on_host(
                solve, finished, error, (forced,) * rows, (next_forced,) * rows, dtype
            )
            mirrors = _solve_tensors(solve, dtype, sample.device)
            prev_sample, changes = self._land(state, x_low, x_high, c, noise, accept, mirrors)
        if not all(done for done in known.finished) and any(known.finished):
            live = _to_device(torch.tensor([not done for done in known.finished]), sample.device)
            prev_sample = torch.where(_rows(live, sample), prev_sample, sample)
        elif all(known.finished):
            prev_sample = sample.clone()
        return prev_sample, changes, (solve, mirrors, finished)

    def _land(
        self,
        state: DPMSolverAdaptiveState,
        x_low: torch.Tensor,
        x_high: torch.Tensor,
        c: Any,
        noise: Any,
        accept: list[bool],
        mirrors: Solve,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """The samples an attempt's decision leaves, where the host knows it per row: the higher order's solution
        (plus noise with eta) where accepted, the attempt's start where rejected; x_prev likewise."""
        x = state.attempt_start
        if self.eta:
            x_high = x_high + c[NOISE_SCALE] * noise
        if all(accept):
            solution, previous_low = x_high.to(x.dtype), x_low.to(x.dtype)
        elif not any(accept):
            solution, previous_low = x, state.previous_low
        else:
            mask = _rows(_to_device(torch.tensor(accept), x.device), x)
            solution = torch.where(mask, x_high.to(x.dtype), x)
            previous_low = torch.where(mask, x_low.to(x.dtype), state.previous_low)
        changes = {"attempt_start": solution, "previous_low": previous_low, **mirrors._asdict()}
        return solution.clone(), changes

    def _first_call(
        self, state: DPMSolverAdaptiveState, sample: torch.Tensor, eps: torch.Tensor, c: Any, very_first: Any
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """An attempt's first call: keep its start and eps; step to the first intermediate point (k-diffusion's
        u1 = x - sigma(s1) expm1(r1 h) eps). The very first call's sample is also x_prev."""
        changes = {
            "attempt_start": sample.to(state.attempt_start.dtype, copy=True),
            "eps": (as_dtype(eps, sample.dtype), *state.eps[1:]),
        }
        if very_first is True:
            changes["previous_low"] = changes["attempt_start"].clone()
        elif very_first is not False:
            changes["previous_low"] = torch.where(_rows(very_first, sample), sample, state.previous_low)
        return sample - c[TO_FIRST] * eps, changes

    def _middle_call(
        self, state: DPMSolverAdaptiveState, eps: torch.Tensor, c: Any
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """DPM-Solver-3's second call: keep its eps; step to the second intermediate point (k-diffusion's u2)."""
        x, eps_0 = state.attempt_start, state.eps[0]
        return (x - c[TO_SECOND] * eps_0) - c[SECOND_CORRECTION] * (eps - eps_0), {
            "eps": (eps_0, as_dtype(eps, x.dtype))
        }

    def _solutions(
        self, state: DPMSolverAdaptiveState, eps: torch.Tensor, c: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """An attempt's last call: its lower- and higher-order solutions and each row's error, the RMS of their
        difference over max(atol, rtol max(|x_low|, |x_prev|))."""
        x, eps_0 = state.attempt_start, state.eps[0]
        first = x - c[STEP] * eps_0
        x_low = first - c[LOW_CORRECTION] * (state.eps[1] - eps_0) if self.order == 3 else first
        x_high = first - c[HIGH_CORRECTION] * (eps - eps_0)
        delta = torch.clamp(self.rtol * torch.maximum(x_low.abs(), state.previous_low.abs()), min=self.atol)
        scaled = (x_low - x_high) / delta
        if scaled.is_cuda and scaled.shape[0] > 1 and not host.tracing():
            # CUDA splits a reduction over rows otherwise than over one row's alone: each row's norm as a request of
            # one row takes it, so that rows stacked decide as each alone (eager; a graph's own rounding is its own).
            error = torch.stack([torch.linalg.vector_norm(row) for row in scaled])
        else:
            error = torch.linalg.vector_norm(scaled, dim=tuple(range(1, x.dim())))
        return x_low, x_high, error / math.prod(x.shape[1:]) ** 0.5

    def _decide(
        self, solve: Solve, error: torch.Tensor, live: torch.Tensor, forced: torch.Tensor, next_forced: Any
    ) -> tuple[Solve, torch.Tensor]:
        """The controller's decision on each row's attempt and the solve after it, on the device: accepted rows move to
        t, every row takes its next step size, and the next attempt's coefficients are made. A finished row (`live`
        False) never accepts nor counts. Returns (the solve, accept)."""
        accept, step_size, inverse_errors = self._controller(
            solve.attempts, solve.step_size, solve.inverse_errors, error, forced
        )
        accept, forced = accept & live, forced & live
        log_sigma = torch.where(accept, solve.attempt_plan[:, END], solve.log_sigma)
        step_size = torch.where(live, step_size, solve.step_size)
        decided = Solve(
            log_sigma=log_sigma,
            step_size=step_size,
            inverse_errors=torch.where(live[:, None], inverse_errors, solve.inverse_errors),
            attempts=solve.attempts + live.long(),
            accepted=solve.accepted + accept.long(),
            forced=solve.forced | forced,
            attempt_plan=self._attempt(log_sigma, step_size, next_forced),
        )
        return decided, accept

    def _controller(
        self,
        attempts: torch.Tensor,
        step_size: torch.Tensor,
        inverse_errors: torch.Tensor,
        error: torch.Tensor,
        forced: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`_propose` for every row at once, on float64 tensors: (accept, the next step size, the last two accepted
        inverse errors [R, 2])."""
        inverse = 1 / (error.double() + ERROR_FLOOR)
        first = attempts == 0  # its errs start as three copies of the first inverse error
        older = torch.where(first[:, None], inverse[:, None], inverse_errors)
        accept, step_size, errors = self._propose(inverse, older[:, 0], older[:, 1], step_size, forced, _TENSORS)
        return accept, step_size, torch.stack(errors, dim=1)

    def _propose(
        self, inverse: Any, newer: Any, older: Any, step_size: Any, forced: Any, ops: Any
    ) -> tuple[Any, Any, tuple[Any, Any]]:
        """k-diffusion's `PIDStepSizeController.propose_step` on 1 / error and the last two accepted ones, in float64:
        (accept, the next step size, the last two accepted inverse errors after it); a forced attempt is accepted. On
        tensors of rows (`_TENSORS`) or one row's Python floats (`_NUMBERS`: their arithmetic is the same IEEE
        arithmetic, their log, exp and atan torch's, so both round alike). Its powers are exp(b log x): torch's `pow`
        of float64 rounds otherwise in its vectorised loop than one element at a time (a row's step size would depend
        on its batch), `exp`, `log` and `atan` alike in both; the step sizes lie within a few ulps of k-diffusion's C
        `pow` and `math.atan`, below what the float32 t = s + float32(h) can see."""
        pid_order = 1.5 if self.eta else self.order
        exponents = (self.pcoeff + self.icoeff + self.dcoeff, -(self.pcoeff + 2 * self.dcoeff), self.dcoeff)
        factor = ops.exp(exponents[0] / pid_order * ops.log(inverse))
        for errors, exponent in ((newer, exponents[1] / pid_order), (older, exponents[2] / pid_order)):
            if exponent:  # x ** 0 is 1, and a product by it exact: skipped (the default controller's)
                factor = factor * ops.exp(exponent * ops.log(errors))
        factor = 1 + ops.atan(factor - 1)
        accept = (factor >= self.accept_safety) | forced
        return accept, step_size * factor, (ops.where(accept, inverse, newer), ops.where(accept, newer, older))

    def _decide_on_host(
        self,
        solve: HostSolve,
        finished: tuple[bool, ...],
        error: torch.Tensor,
        forced: tuple[bool, ...],
        next_forced: tuple[bool, ...],
        dtype: torch.dtype,
    ) -> tuple[HostSolve, list[bool], tuple[bool, ...]]:
        """`_decide` on the host: the controller per row on its Python floats (`_propose`, which rounds as on the
        device's tensors), the bookkeeping in Python, then the next attempt's coefficients (`_host_attempts`), each
        row with its own flags (`forced`: this attempt is the budget's last; `next_forced`: the next one is). Returns
        (the solve, accept, finished)."""
        live = [not done for done in finished]
        errors = error.double().tolist()
        accept, step_size, inverse_errors = [], [], []
        for row, alive in enumerate(live):
            decision = False, solve.step_size[row], solve.inverse_errors[row]  # a finished row's stays
            if alive:
                inverse = 1 / (errors[row] + ERROR_FLOOR)  # IEEE as the tensors' reciprocal times 1
                newer, older = solve.inverse_errors[row] if solve.attempts[row] else (inverse, inverse)
                decision = self._propose(inverse, newer, older, solve.step_size[row], forced[row], _NUMBERS)
            accept.append(bool(decision[0]))
            step_size.append(decision[1])
            inverse_errors.append(tuple(decision[2]))
        step_size, inverse_errors = tuple(step_size), tuple(inverse_errors)
        log_sigma = tuple(
            attempt[END] if taken else now
            for attempt, taken, now in zip(solve.attempt_plan, accept, solve.log_sigma, strict=True)
        )
        now_finished = self._host_finished(log_sigma, dtype)
        decided = HostSolve(
            log_sigma=log_sigma,
            step_size=step_size,
            inverse_errors=inverse_errors,
            attempts=tuple(count + alive for count, alive in zip(solve.attempts, live, strict=True)),
            accepted=tuple(count + taken for count, taken in zip(solve.accepted, accept, strict=True)),
            forced=tuple(was or (last and alive) for was, last, alive in zip(solve.forced, forced, live, strict=True)),
            attempt_plan=self._host_attempts(log_sigma, step_size, next_forced, now_finished, dtype),
        )
        return decided, accept, now_finished

    def _decide_rows_on_host(
        self, state: DPMSolverAdaptiveState, error: torch.Tensor, forced: torch.Tensor, next_forced: torch.Tensor
    ) -> tuple[Solve, torch.Tensor]:
        """`_decide` for an eager state without the host's copy of its solve (rows stacked from several requests, a
        state rebuilt): its solve read once, decided on the host as each request alone decides, copied back."""
        device, dtype = state.log_sigma.device, state.log_sigma.dtype
        with host.plain():
            solve = _host_copy(state)
            error, forced_rows, next_rows = error.cpu(), forced.tolist(), next_forced.tolist()
        finished = self._host_finished(solve.log_sigma, dtype)
        decided, accept, _ = self._decide_on_host(solve, finished, error, tuple(forced_rows), tuple(next_rows), dtype)
        return _solve_tensors(decided, dtype, device), _to_device(torch.tensor(accept), device)

    def _any_call(
        self,
        state: DPMSolverAdaptiveState,
        sample: torch.Tensor,
        model_output: torch.Tensor,
        phase: torch.Tensor,
        forced: torch.Tensor,
        noise: Any,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """The call of any phase, per row, on the device: every phase's update, each row taking its own phase's
        (branch-free: compiles, and steps rows at different calls together); a finished row's sample as given."""
        c = coefficient_views(state.attempt_plan, sample)
        sigma = state.attempt_plan.gather(1, phase.long()[:, None] + SIGMA_0)[:, 0]
        eps = _over_sigma(sample - model_output, _rows(sigma, sample))
        live = ~self._finished(state.log_sigma)
        calls = {0: self._first_call(state, sample, eps, c, state.step_index == 0)}
        if self.order == 3:
            calls[1] = self._middle_call(state, eps, c)
        x_low, x_high, error = self._solutions(state, eps, c)
        next_forced = self._columns(state, None, ahead=1)[1]
        if host.tracing() or sample.device.type == "meta":
            solve = Solve(*(getattr(state, name) for name in SOLVE_FIELDS))
            decided, accept = self._decide(solve, error, live, forced, next_forced)
        else:  # eager: decided on the host, as each request alone decides (a device's log, exp, atan round otherwise)
            decided, accept = self._decide_rows_on_host(state, error, forced, next_forced)
        if self.eta:
            x_high = x_high + c[NOISE_SCALE] * noise
        x, mask = state.attempt_start, _rows(accept, state.attempt_start)
        solution = torch.where(mask, x_high.to(x.dtype), x)
        previous_low = torch.where(mask, x_low.to(x.dtype), state.previous_low)
        calls[self.order - 1] = solution, {"attempt_start": solution, "previous_low": previous_low, **decided._asdict()}
        prev_sample, changes = sample, {}
        for call, (update, updated) in calls.items():
            at = phase == call
            prev_sample = torch.where(_rows(at, sample), update, prev_sample)
            for name, value in updated.items():
                changes[name] = _masked(at, value, changes.get(name, getattr(state, name)))
        return torch.where(_rows(live, sample), prev_sample, sample), changes


def _log_times(sigma_max: float, sigma_min: float, dtype: torch.dtype) -> tuple[float, float, float]:
    t_start, t_end = (torch.tensor(value, dtype=dtype).log().neg() for value in (sigma_max, sigma_min))
    return float(t_start), float(t_end), float(t_end - END_TOLERANCE)


def _rows(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[R] values viewed as [R, 1, ..., 1] against `like`."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _host_copy(state: DPMSolverAdaptiveState) -> HostSolve:
    """A state's solve as the host keeps it (one read of each field)."""
    values = [field.tolist() for field in _solve_of(state)]
    return HostSolve(*(tuple(map(tuple, value)) if isinstance(value[0], list) else tuple(value) for value in values))


def _divide(a: Any, b: Any) -> Any:
    """a / b with IEEE's answers where b is 0 (Python floats raise; tensors give them): inf, or NaN for 0 / 0."""
    if isinstance(b, float) and b == 0.0:
        return math.nan if a == 0.0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _solve_tensors(solve: HostSolve, dtype: torch.dtype, device: torch.device) -> Solve:
    """The state's tensors of a host solve on `device`, each of its own and contiguous (as the device path makes them:
    a compiled step's guards see the same strides). Off the CPU, one copy without a sync: every field's values in
    one float64 host tensor (exact: float32 values, counts, flags), then each field cast out of it on the device."""
    rows = range(len(solve.log_sigma))
    if device.type == "cpu":
        return Solve(
            log_sigma=torch.tensor(solve.log_sigma, dtype=dtype),
            step_size=torch.tensor(solve.step_size, dtype=torch.float64),
            inverse_errors=torch.tensor(solve.inverse_errors, dtype=torch.float64),
            attempts=torch.tensor(solve.attempts, dtype=torch.int64),
            accepted=torch.tensor(solve.accepted, dtype=torch.int64),
            forced=torch.tensor(solve.forced, dtype=torch.bool),
            attempt_plan=torch.tensor(solve.attempt_plan, dtype=dtype),
        )
    packed = _to_device(
        torch.tensor(
            [
                [
                    solve.log_sigma[row],
                    solve.step_size[row],
                    *solve.inverse_errors[row],
                    solve.attempts[row],
                    solve.accepted[row],
                    solve.forced[row],
                    *solve.attempt_plan[row],
                ]
                for row in rows
            ],
            dtype=torch.float64,
        ),
        device,
    )

    def field(columns: Any, field_dtype: torch.dtype) -> torch.Tensor:
        return packed[:, columns].to(field_dtype, memory_format=torch.contiguous_format, copy=True)

    return Solve(
        log_sigma=field(0, dtype),
        step_size=field(1, torch.float64),
        inverse_errors=field(slice(2, 4), torch.float64),
        attempts=field(4, torch.int64),
        accepted=field(5, torch.int64),
        forced=field(6, torch.bool),
        attempt_plan=field(slice(7, None), dtype),
    )


_FLOAT32 = struct.Struct("f")


def _round32(value: float) -> float:
    """`value` rounded to float32, as a float32 tensor holds it (to nearest; inf beyond its range)."""
    try:
        return _FLOAT32.unpack(_FLOAT32.pack(value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def _unrounded(value: Any) -> Any:
    return value


def _exp_neg(values: list[torch.Tensor]) -> list[torch.Tensor]:
    """exp(-t) of [R] tensors, in one operation (each value as its own 0-d operation makes it)."""
    return list(torch.stack(values, dim=1).neg().exp().unbind(1))


def _expm1(values: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.stack(values, dim=1).expm1().unbind(1))


def _over_sigma(value: torch.Tensor, sigma: Any) -> torch.Tensor:
    """k-diffusion's eps = (x - x0) / sigma, sigma its 0-d host tensor: on CUDA PyTorch divides by a host scalar as a
    product by its float32 reciprocal, so rows whose sigmas are device tensors take that product there too (a row then
    rounds as k-diffusion's loop of it alone); elsewhere, and for a Python number, the division itself."""
    if isinstance(sigma, torch.Tensor) and value.is_cuda:
        return value * (1 / sigma)
    return value / sigma


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor's copy on `device`, without a sync: from pinned memory, asynchronously (the host tensor is never
    written again, and the pinned block is not reused before the copy has run). The tensor itself on the CPU."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


class _TensorOps:
    """`_propose`'s functions on tensors of rows."""

    log, exp, atan, where = staticmethod(torch.log), staticmethod(torch.exp), staticmethod(torch.atan), torch.where


class _NumberOps:
    """`_propose`'s functions on one row's Python floats: torch's log, exp and atan (as the tensors' round), on the
    host."""

    @staticmethod
    def log(value: float) -> float:
        return torch.tensor(value, dtype=torch.float64).log().item()

    @staticmethod
    def exp(value: float) -> float:
        return torch.tensor(value, dtype=torch.float64).exp().item()

    @staticmethod
    def atan(value: float) -> float:
        return torch.tensor(value, dtype=torch.float64).atan().item()

    @staticmethod
    def where(condition: bool, a: float, b: float) -> float:
        return a if condition else b


_TENSORS, _NUMBERS = _TensorOps(), _NumberOps()


def _masked(where: torch.Tensor, new: Any, old: Any) -> Any:
    """`new` in the rows where `where` ([R] bool) holds, else `old` (a tensor, or a tuple of them)."""
    if isinstance(new, tuple):
        return tuple(_masked(where, a, b) for a, b in zip(new, old, strict=True))
    return torch.where(where.view(-1, *([1] * (new.dim() - 1))), new, old)
