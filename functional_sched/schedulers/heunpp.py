"""Heun++ (ComfyUI's `sample_heunpp2`): Heun's method with a third model call that looks one interval ahead, one
`step` per model call.

Per interval [sigma_i, sigma_(i+1)] of a sigma table that ends in s_end (its last value), with d(x, sigma) =
(x - x0) / sigma (Karras' ODE; the model output is the denoiser's x0 at the sample, `k_samplers.py`) and
sigma_0 the table's first sigma:

    an interval into s_end       one call:    x' = x + d dt                                   (Euler)
    the interval before that     two calls:   x_2 = x + d dt,  x' = x + (w1 d + w2 d_2) dt,
                                              w2 = sigma_(i+1) / (2 sigma_0),  w1 = 1 - w2
    every other interval         three calls: x_2 = x + d dt,  x_3 = x_2 + d_2 (sigma_(i+2) - sigma_(i+1)),
                                              x' = x + (w1 d + w2 d_2 + w3 d_3) dt,
                                              w2 = sigma_(i+1) / (3 sigma_0),  w3 = sigma_(i+2) / (3 sigma_0),
                                              w1 = 1 - w2 - w3

where d_2 is the derivative at x_2 (sigma_(i+1)) and d_3 at x_3 (sigma_(i+2), past the interval's end). The weights
lean on the interval's start derivative as sigma falls (they tend to Euler's), so the method is of first order
(measured on the Gaussian problem). The plan has one row per call, its timestep the sigma the model sees; the
state keeps the interval's start sample and its first two derivatives (buffers shaped like the sample, zero at
init). Each call is one update, x' = base + (u d_1 + v d_2 + w d) dt with base the sample or the interval's start,
whose unused terms add exact zeros, so the eager and the compiled path agree bit for bit, and with ComfyUI's loop
(its weights formed as it forms them, in the table's float32).

`begin_index` should be an interval's first call. sigma_0 is the whole table's first sigma: ComfyUI's img2img runs
the sampler on the table's tail, whose first sigma then weighs (`init(sigmas=tail)` reproduces it). ComfyUI's
`s_churn`, `s_tmin`, `s_tmax` and `s_noise` (Karras' churn, 0 by default and in its KSampler node) are not taken.

Implements ComfyUI's `sample_heunpp2` (after Carzit's sd-webui-samplers-scheduler), extending Algorithm 1 (Heun's
2nd-order deterministic sampler) of Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based
Generative Models".
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Option, Real
from ..machinery.plan import Plan, as_dtype, single_plan
from ..machinery.record import record
from .k_samplers import RHO, SIGMA_MAX, SIGMA_MIN, KDiffusionScheduler

# Columns of the table, one row per call: the sigma the model sees (the derivative divides by it), the length the
# update steps over, the weights of the interval's first derivative, of its second and of this call's, whether the
# update starts from the interval's start (else from the sample), and whether the call keeps its sample and
# derivative as the interval's start and first derivative, or its derivative as the second.
SIGMA, DT, W_FIRST, W_SECOND, W_OWN, FROM_START, KEEPS_FIRST, KEEPS_SECOND = range(8)


@record(host=("cursor",))
class HeunPlusPlusState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64: calls taken (three per interval but the last two intervals)
    interval_start: torch.Tensor  # [R, ...], the sample's dtype: the sample the current interval started from
    first_derivative: torch.Tensor  # [R, ...], the sample's dtype: d at the interval's start
    second_derivative: torch.Tensor  # [R, ...], the sample's dtype: d at the interval's second call
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class HeunPlusPlus(KDiffusionScheduler):
    """Heun++: per interval, Euler to its end, Euler on to the next sigma, and the interval's step with a weighted
    mean of the three derivatives (two calls before the last interval, one in it). See the module's docstring.

    Implements ComfyUI's `sample_heunpp2`, after Karras et al. (2022), "Elucidating the Design Space of
    Diffusion-Based Generative Models" (Heun's method, its Algorithm 1).
    """

    sigma_min: float = Option(SIGMA_MIN, Real(above=0), examples=(0.002,))
    sigma_max: float = Option(SIGMA_MAX, Real(above=0), examples=(80.0,))
    rho: float = Option(RHO, Real(above=0), examples=(1.0, 3.0))

    reference_library: ClassVar[str] = "comfyui"
    state_type: ClassVar[type] = HeunPlusPlusState
    diffusers_name: ClassVar[str] = "sample_heunpp2"
    plan_columns: ClassVar[int] = KEEPS_SECOND + 1
    _noise_reason: ClassVar[str] = "none"

    @property
    def stochastic(self) -> bool:
        return False

    def _step_options(self) -> tuple[Any, ...]:
        return ()

    def _plan_from_intervals(self, sigmas: torch.Tensor) -> Plan:
        """One, two or three rows per interval, as ComfyUI's loop calls its model; the weights in the table's dtype
        by ComfyUI's operations (`w2 = sigma_(i+1) / (3 sigma_0)`, `w1 = 1 - w2 - w3`)."""
        zero, one = torch.zeros((), dtype=sigmas.dtype), torch.ones((), dtype=sigmas.dtype)
        end, rows, model_sigmas = sigmas[-1], [], []
        for i in range(len(sigmas) - 1):
            sigma, sigma_next, dt = sigmas[i], sigmas[i + 1], sigmas[i + 1] - sigmas[i]
            if sigma_next == end:  # Euler
                rows.append([sigma, dt, zero, zero, one, zero, zero, zero])
                model_sigmas.append(sigma)
                continue
            rows.append([sigma, dt, zero, zero, one, zero, one, zero])
            if sigmas[i + 2] == end:  # Heun, its second derivative weighted by sigma_(i+1) / (2 sigma_0)
                w2 = sigma_next / (2 * sigmas[0])
                rows.append([sigma_next, dt, 1 - w2, zero, w2, one, zero, zero])
                model_sigmas += [sigma, sigma_next]
                continue
            w = 3 * sigmas[0]
            w2, w3 = sigma_next / w, sigmas[i + 2] / w
            rows.append([sigma_next, sigmas[i + 2] - sigma_next, zero, zero, one, zero, zero, one])
            rows.append([sigmas[i + 2], dt, 1 - w2 - w3, w2, w3, one, zero, zero])
            model_sigmas += [sigma, sigma_next, sigmas[i + 2]]
        table = torch.stack([*model_sigmas, sigmas[-1]])
        coefficients = torch.stack([torch.stack(row) for row in rows])
        return single_plan(table[:-1].to(torch.float32), table, coefficients[:, None])

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        raise NotImplementedError(f"{self.name}: its call table is made from ComfyUI's sigmas (init(sigmas=...)).")

    def _start(
        self,
        plan: Plan,
        sample: torch.Tensor,
        step_index: torch.Tensor,
        level: torch.Tensor,
        fingerprint: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> HeunPlusPlusState:
        buffers = tuple(torch.zeros_like(sample, memory_format=torch.contiguous_format) for _ in range(3))
        return HeunPlusPlusState(
            plan=plan,
            step_index=step_index,
            interval_start=buffers[0],
            first_derivative=buffers[1],
            second_derivative=buffers[2],
            fingerprint=fingerprint,
            cursor=cursor,
        )

    def _buffer(self, state: Any) -> torch.Tensor:
        return state.interval_start

    def step(
        self,
        state: HeunPlusPlusState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> Any:
        """One model call of every row: `(next_sample, new_state)`, or `(next_sample, new_state, x0)` with
        `denoised=True`. `model_output` is the denoiser's x0 at the sample; `noise` is ignored (deterministic). The
        arithmetic is ComfyUI's, in the promoted dtype of the sample and the output; the result in the sample's."""
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check(state, model_output, sample, noise, denoised, cursor)
        c = self._coefficients(state, sample, cursor)
        d = (sample - model_output) / c[SIGMA]
        first, second = (as_dtype(entry, d.dtype) for entry in (state.first_derivative, state.second_derivative))
        if cursor is not None:
            prev_sample, kept = self._known_call(state, sample, d, first, second, c)
        else:
            combined = (c[W_FIRST] * first + c[W_SECOND] * second) + c[W_OWN] * d
            base = torch.where(c[FROM_START] > 0, as_dtype(state.interval_start, sample.dtype), sample)
            prev_sample = base + combined * c[DT]
            keeps_first, keeps_second = c[KEEPS_FIRST] > 0, c[KEEPS_SECOND] > 0
            kept = (
                torch.where(keeps_first, sample.to(state.interval_start.dtype), state.interval_start),
                torch.where(keeps_first, d.to(sample.dtype), state.first_derivative),
                torch.where(keeps_second, d.to(sample.dtype), state.second_derivative),
            )
        new_state = state.replace(
            **self._advanced(state, cursor),
            interval_start=kept[0],
            first_derivative=kept[1],
            second_derivative=kept[2],
        )
        prev_sample = as_dtype(prev_sample, sample.dtype)
        if denoised:
            return prev_sample, new_state, as_dtype(model_output, sample.dtype).clone()
        return prev_sample, new_state

    def _known_call(
        self,
        state: HeunPlusPlusState,
        sample: torch.Tensor,
        d: torch.Tensor,
        first: torch.Tensor,
        second: torch.Tensor,
        c: tuple[torch.Tensor, ...],
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The eager call, where the host knows what it does: ComfyUI's operations only, the zero terms skipped."""
        kept = (state.interval_start, state.first_derivative, state.second_derivative)
        if float(c[FROM_START]) == 0:
            if float(c[KEEPS_FIRST]) > 0:
                kept = (sample.clone(), as_dtype(d, sample.dtype), kept[2])
            elif float(c[KEEPS_SECOND]) > 0:
                kept = (kept[0], kept[1], as_dtype(d, sample.dtype))
            return sample + d * c[DT], kept
        combined = c[W_FIRST] * first
        if float(c[W_SECOND]) != 0:
            combined = combined + c[W_SECOND] * second
        return as_dtype(state.interval_start, d.dtype) + (combined + c[W_OWN] * d) * c[DT], kept
