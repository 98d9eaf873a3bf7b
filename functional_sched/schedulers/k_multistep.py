"""Linear multistep samplers on Karras' ODE derivative that ComfyUI runs beyond diffusers: the gradient estimation
sampler (`sample_gradient_estimation`) and iPNDM with variable step sizes (`sample_ipndm_v`), one `step` per model
call.

Both step the probability-flow ODE dx/dsigma = d(x, sigma) = (x - x0) / sigma over a sigma table that ends in 0, as
k-diffusion's samplers do (`k_samplers.py`: the model output is the denoiser's x0 at the sample, the input unscaled),
with a combination of this call's derivative and the previous calls' ones:

    x' = x + (sigma_(i+1) - sigma_i) sum_k w_k d_(i-k),            x' = x0 where sigma_(i+1) = 0.

The weights depend on the table alone, so they sit in the plan, one row per (step, warm-up level); the state keeps
the previous derivatives as a fixed number of buffers shaped like the sample (zero at init, newest first). Terms a
level does not use have weight 0 and add exact zeros, so one branch-free update serves the eager and the compiled
path alike, bit for bit; an eager call only skips the update where it returns x0. The warm-up restarts at `init`
(img2img's `begin_index` too), as ComfyUI's loop restarts on the table's tail.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import torch

from ..machinery import checks, options
from ..machinery.options import Integer, Option, Real
from ..machinery.plan import Plan, as_dtype, single_plan
from ..machinery.schedule import Schedule
from .k_samplers import RHO, SIGMA_MAX, SIGMA_MIN, KDiffusionHistoryState, KDiffusionMultistep

# Columns of the table, one row per (step, warm-up level): the sample's sigma (the derivative divides by it), the
# step's length sigma_(i+1) - sigma_i, whether the step returns x0 (into sigma 0), then the weights.
SIGMA, DT, FINAL, WEIGHTS = range(4)


class SigmaMultistepScheduler(KDiffusionMultistep):
    """What the two share: the table, the state, the derivative and the step into sigma 0. A subclass gives the
    number of derivatives it keeps (`_kept`), each step's weights per warm-up level (`_weights`) and how the update
    combines them (`_update`, in ComfyUI's order of operations)."""

    reference_library: ClassVar[str] = "comfyui"
    _noise_reason: ClassVar[str] = "none"

    @property
    def stochastic(self) -> bool:
        return False

    def _weights(self, sigmas: torch.Tensor, i: int, level: int) -> list[float]:
        """The weights of step i at warm-up `level` (steps taken since init), from the table [N + 1]: this call's
        derivative's, then the history's (zero past `_kept`: a plan has `plan_columns` whatever the options)."""
        raise NotImplementedError

    def _update(
        self, sample: torch.Tensor, d: torch.Tensor, history: tuple[torch.Tensor, ...], c: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        raise NotImplementedError

    def _plan_from_intervals(self, sigmas: torch.Tensor) -> Plan:
        dtype, levels = sigmas.dtype, self._kept + 1
        rows = []
        for i in range(len(sigmas) - 1):
            head = [sigmas[i], sigmas[i + 1] - sigmas[i], torch.tensor(float(sigmas[i + 1] == 0), dtype=dtype)]
            weights = [torch.tensor(self._weights(sigmas, i, level), dtype=torch.float64) for level in range(levels)]
            rows.append(torch.stack([torch.cat([torch.stack(head), w.to(dtype)]) for w in weights]))
        return single_plan(sigmas[:-1].to(torch.float32), sigmas, torch.stack(rows))

    def _step_options(self) -> tuple[Any, ...]:
        return ()

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
        `denoised=True`. `model_output` is the denoiser's x0 at the sample; `noise` is ignored (deterministic). The
        arithmetic is ComfyUI's, in the promoted dtype of the sample and the output; the result in the sample's."""
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check(state, model_output, sample, noise, denoised, cursor)
        c = self._coefficients(state, sample, cursor)
        x0 = model_output
        d = (sample - x0) / c[SIGMA]
        if cursor is not None and float(c[FINAL]) > 0:
            prev_sample = x0.clone()
        else:
            history = tuple(as_dtype(entry, d.dtype) for entry in state.history)
            prev_sample = self._update(sample, d, history, c)
            if cursor is None:
                prev_sample = torch.where(c[FINAL] > 0, x0.to(prev_sample.dtype), prev_sample)
        history = (as_dtype(d, sample.dtype), *state.history[:-1])  # d is this step's own tensor
        new_state = state.replace(**self._advanced(state, cursor), history=history)
        prev_sample = as_dtype(prev_sample, sample.dtype)
        if denoised:
            return prev_sample, new_state, as_dtype(x0, sample.dtype).clone()
        return prev_sample, new_state


@options.config
class GradientEstimation(SigmaMultistepScheduler):
    """The gradient estimation sampler: Euler steps on Karras' ODE whose derivative is extrapolated from the last
    two, d_bar = ge_gamma d_i + (1 - ge_gamma) d_(i-1) (the first step plain Euler; into sigma 0, x0). ComfyUI adds the
    correction as a second product, x' = (x + d dt) + ((ge_gamma - 1)(d_i - d_(i-1))) dt, and so does this step (its
    bits). ge_gamma = 2 is ComfyUI's default; ge_gamma = 1 is Euler.

    Implements the gradient estimation sampler of Permenter & Yuan (2023), "Interpreting and Improving Diffusion
    Models from an Optimization Perspective" (arXiv:2306.04848, ICML 2024), as ComfyUI's `sample_gradient_estimation`
    runs it (without its CFG++ variant, which needs the unconditional output). Measured on the Gaussian problem it
    converges at first order at ge_gamma = 2 and at second order at ge_gamma = 1.5 (Adams-Bashforth 2 on even
    steps).
    """

    sigma_min: float = Option(SIGMA_MIN, Real(above=0), examples=(0.002,))
    sigma_max: float = Option(SIGMA_MAX, Real(above=0), examples=(80.0,))
    rho: float = Option(RHO, Real(above=0), examples=(1.0, 3.0))
    ge_gamma: float = Option(2.0, Real(at_least=1, at_most=4), examples=(1.0, 1.5, 2.5))

    diffusers_name: ClassVar[str] = "sample_gradient_estimation"
    plan_columns: ClassVar[int] = WEIGHTS + 2

    @property
    def _kept(self) -> int:
        return 1

    def _weights(self, sigmas: torch.Tensor, i: int, level: int) -> list[float]:
        """1 for this call's derivative; ge_gamma - 1 for the difference from the last one, from the second step on
        (as a float32 value: ComfyUI multiplies float32 tensors by the Python number)."""
        correction = torch.tensor(self.ge_gamma - 1, dtype=sigmas.dtype).item() if level else 0.0
        return [1.0, correction]

    def _update(
        self, sample: torch.Tensor, d: torch.Tensor, history: tuple[torch.Tensor, ...], c: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        x = sample + d * c[DT]
        return x + (c[WEIGHTS + 1] * (d - history[0])) * c[DT]


@options.config
class IPNDMVariableStep(SigmaMultistepScheduler):
    """iPNDM with variable step sizes: Adams-Bashforth on Karras' ODE in sigma, of order min(max_order, steps taken
    + 1), its weights made for the table's uneven steps h_n = sigma_(n+1) - sigma_n (into sigma 0, x0). With
    a = h_n / h_(n-1), b = h_(n-1) / h_(n-2), c = h_(n-2) / h_(n-3), q = h_(n-1) (h_(n-1) + h_(n-2)) / (h_(n-2)
    (h_(n-2) + h_(n-3))), T = 1/2 - h_n^2 / (6 h_(n-1) (h_(n-1) + h_(n-2))) and T2 (ComfyUI's fourth-order term):

        order 2: (1 + a/2, -a/2)
        order 3: (1 + a/2 + T, -a/2 - (1 + b) T, b T)
        order 4: (1 + a/2 + T + T2, -a/2 - (1 + b) T - (1 + b + q) T2, b T + (b + q (1 + c)) T2, -b q T2)

    They follow ComfyUI (diff-sampler's `ipndm_v`), not the exact variable-step Adams-Bashforth weights. On even steps
    orders 2 and 3 are Adams-Bashforth's, (3, -1)/2 and (23, -16, 5)/12, but order 4 is (57, -65, 43, -11)/24, not
    (55, -59, 37, -9)/24 (exact for quadratic derivatives only); on uneven steps order 3 is exact for linear ones
    only, and order 4's weights sum to 1 only where b = c. Measured on the Gaussian problem, every max_order above 1
    converges at second order (the first step is Euler's). The weights are formed in
    float64 and rounded once to the plan's dtype (ComfyUI forms them in float32): a float32 loop is within 1e-6 of
    ComfyUI's, not bit for bit.

    Implements iPNDM of Zhang & Chen (2023), "Fast Sampling of Diffusion Models with Exponential Integrator" (section
    5), with variable step sizes as ComfyUI's `sample_ipndm_v` runs it (after zju-pi's diff-sampler).
    """

    sigma_min: float = Option(SIGMA_MIN, Real(above=0), examples=(0.002,))
    sigma_max: float = Option(SIGMA_MAX, Real(above=0), examples=(80.0,))
    rho: float = Option(RHO, Real(above=0), examples=(1.0, 3.0))
    max_order: int = Option(4, Integer(minimum=1, maximum=4), examples=(1, 2, 3))

    diffusers_name: ClassVar[str] = "sample_ipndm_v"
    plan_columns: ClassVar[int] = WEIGHTS + 4

    def _check_schedule(self, schedule: Schedule) -> None:
        if schedule.sigmas is not None and self.max_order > 1:
            values = schedule.sigmas.values
            if any(first == second for first, second in itertools.pairwise(values)):
                raise ValueError(
                    f"{self.name}: custom sigmas repeat a value (a step of length 0): its weights divide by the "
                    "previous steps' lengths (ComfyUI's sample_ipndm_v returns NaN); give distinct sigmas."
                )
        super()._check_schedule(schedule)

    @property
    def _kept(self) -> int:
        return max(self.max_order - 1, 1)

    def _weights(self, sigmas: torch.Tensor, i: int, level: int) -> list[float]:
        return self._order_weights(sigmas.tolist(), i, min(self.max_order, level + 1, i + 1))

    @staticmethod
    def _order_weights(s: list[float], i: int, order: int) -> list[float]:
        """The four weights of step i at `order` (zero past it), in float64, from the table's values `s`."""
        h = [s[i + 1 - k] - s[i - k] for k in range(order)]  # h_n, h_(n-1), ...: this step's length, then earlier
        if order == 1:
            return [1.0, 0.0, 0.0, 0.0]
        a = h[0] / h[1]
        if order == 2:
            return [1 + a / 2, -a / 2, 0.0, 0.0]
        b = h[1] / h[2]
        t = 0.5 - h[0] ** 2 / (6 * h[1] * (h[1] + h[2]))
        if order == 3:
            return [1 + a / 2 + t, -a / 2 - (1 + b) * t, b * t, 0.0]
        c, q = h[2] / h[3], h[1] * (h[1] + h[2]) / (h[2] * (h[2] + h[3]))
        s1, s2 = h[0] + h[1], h[0] + h[1] + h[2]
        t2 = ((1 - h[0] / (3 * s1)) / 2 + (1 - h[0] / (2 * s1)) * h[0] / (6 * s2)) * (
            h[0] * s1 * s2 / (h[1] * (h[1] + h[2]) * (h[1] + h[2] + h[3]))
        )
        second = -a / 2 - (1 + b) * t - (1 + b + q) * t2
        return [1 + a / 2 + t + t2, second, b * t + (b + q * (1 + c)) * t2, -b * q * t2]

    def _update(
        self, sample: torch.Tensor, d: torch.Tensor, history: tuple[torch.Tensor, ...], c: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        combined = c[WEIGHTS] * d
        for k, previous in enumerate(history):
            combined = combined + c[WEIGHTS + 1 + k] * previous
        return sample + c[DT] * combined
