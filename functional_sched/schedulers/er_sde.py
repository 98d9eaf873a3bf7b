"""The ER-SDE solver (extended reverse-time SDE, orders 1 to 3) as ComfyUI runs it (`sample_er_sde` of
comfy/k_diffusion/sampling.py with its `SamplerER_SDE` node's noise scalers), one `step` per model call.

The model output is a denoiser's x0 at the sample's sigma, the sample unscaled (x = x0 + sigma eps: ComfyUI's
eps-prediction and VE models), on k-diffusion's sigma table (`KDiffusionScheduler`: custom sigmas or the Karras
schedule of the config's range). Every coefficient is made once in the plan with ComfyUI's float32 operations, so
float32 steps reproduce its loop bit for bit (tests/test_er_sde.py, against recorded trajectories).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch

from ..machinery import options
from ..machinery.options import Choice, Integer, Option, Real
from ..machinery.plan import Plan, single_plan
from .k_samplers import (
    RHO,
    SIGMA_MAX,
    SIGMA_MIN,
    KDiffusionMultistep,
    any_row_at,
)

#: The noise scalers of ComfyUI's `SamplerER_SDE` node (h(lambda), lambda = sigma / alpha): the paper's tuned one
#: (`sample_er_sde`'s default at eta = 1), the classical reverse-time SDE's, and the ODE's.
SOLVER_TYPES = ("ER-SDE", "Reverse-time SDE", "ODE")
#: ComfyUI's points of the Riemann sums that stand for the stage-2 and stage-3 integrals of 1 / h.
INTEGRATION_POINTS = 200
MAX_STAGE = 3


@attrs.frozen(init=False)
class _DefaultScaler(Choice):
    """`noise_scaler`: None only (`sample_er_sde`'s default); a callable is refused, saying what stands for the node's
    other scalers."""

    def __init__(self) -> None:
        self.__attrs_init__((None,))

    def check(self, owner: str, name: str, value: Any) -> Any:
        if value is not None:
            raise ValueError(
                f"{owner}: {name}={value!r} is not supported; choose one of None (ComfyUI's default scaler): the "
                "SamplerER_SDE node's others are solver_type='Reverse-time SDE' (with eta) and 'ODE'; other "
                "callables have no config form."
            )
        return value


# Columns of the table, one row per (call, warm-up level): the multipliers of the sample and of x0; the lambda
# differences the first and second divided differences divide by (this step's and the previous one's), the
# stage-2 multiplier; the half span the third difference divides by and the stage-3 multiplier; alpha_t and the
# noise's root variance; whether the call adds noise; the stage the call uses (0 for a call into sigma 0, which
# returns x0).
C_SAMPLE, C_DENOISED, D_LAMBDA, C_D, D_LAMBDA_OLD, HALF_SPAN, C_U, ALPHA_T, NOISE_SCALE, ADDS_NOISE, STAGE = range(11)


@options.config
class ERSDE(KDiffusionMultistep):
    """ER-SDE-Solver-1/2/3 in VE form (alpha = 1, lambda = sigma). Per interval [lambda_s, lambda_t] with the noise
    scaler h and r = h(lambda_t) / h(lambda_s): x' = r x + (1 - r) x0 (stage 1), plus
    (lambda_t - lambda_s + h(lambda_t) int 1 / h) D1 with D1 the divided difference of the last two x0 over lambda
    (stage 2), plus ((lambda_t - lambda_s)^2 / 2 + h(lambda_t) int (lambda - lambda_s) / h) D2 (stage 3), the
    integrals over [lambda_t, lambda_s] as ComfyUI's 200-point left Riemann sums, plus
    s_noise sqrt(lambda_t^2 - lambda_s^2 r^2) z. The last interval, into sigma 0, returns x0. The stage warms up from 1
    over the first `max_stage` steps after `init` (a request's history starts empty).

    `solver_type` picks the node's noise scaler: "ER-SDE" h(x) = x (e^(x^0.3) + 10) (`sample_er_sde`'s default,
    `noise_scaler=None`; eta does not apply), "Reverse-time SDE" h(x) = x^(eta + 1) (at eta = 0 the ODE), "ODE"
    h(x) = x with no noise (the node sets s_noise = 0). ComfyUI's function also takes any callable as
    `noise_scaler`: only its default (None) is config here, any other value is refused by name.
    `noise=` (standard normal, like the sample: ComfyUI's default Gaussian noise sampler) is required where noise is
    added: at every call into a positive sigma.

    ComfyUI's code (after the paper's reference code, which it cites) takes D2 = (D1 - D1_prev) /
    ((lambda_s - lambda_(i-2)) / 2) with first differences that are only first-order accurate, and its integrals as
    200-point Riemann sums: on the Gaussian problem 3 stages converge at second order (as 2 do), and the order falls
    once the step is below the sums' resolution (tests/specs/er_sde.py). Followed here, as practitioners run it.

    Implements ComfyUI's `sample_er_sde` (with its `SamplerER_SDE` node's options), the ER-SDE-Solver of Cui et al.
    (2023), "Elucidating the Solution Space of Extended Reverse-Time SDE for Diffusion Models".
    """

    sigma_min: float = Option(SIGMA_MIN, Real(above=0), examples=(0.002,))
    sigma_max: float = Option(SIGMA_MAX, Real(above=0), examples=(80.0,))
    rho: float = Option(RHO, Real(above=0), examples=(1.0, 3.0))
    solver_type: str = Option("ER-SDE", Choice(*SOLVER_TYPES))
    noise_scaler: None = Option(None, _DefaultScaler())
    max_stage: int = Option(MAX_STAGE, Integer(minimum=1, maximum=MAX_STAGE), examples=(1, 2))
    eta: float = Option(1.0, Real(at_least=0), examples=(0.0, 0.5))
    s_noise: float = Option(1.0, Real(at_least=0), examples=(0.0, 1.003))

    _kept: ClassVar[int] = 2
    reference_library: ClassVar[str] = "comfyui"
    diffusers_name: ClassVar[str] = "sample_er_sde"
    plan_columns: ClassVar[int] = STAGE + 1
    _noise_reason: ClassVar[str] = "ER-SDE with noise (solver_type other than 'ODE', eta > 0, s_noise > 0)"

    @property
    def _noise_weight(self) -> float:
        """The s_noise the node hands the loop: 0 for the ODE and the reverse-time SDE at eta = 0."""
        ode = self.solver_type == "ODE" or (self.solver_type == "Reverse-time SDE" and self.eta == 0)
        return 0.0 if ode else self.s_noise

    @property
    def stochastic(self) -> bool:
        return self._noise_weight > 0

    def _step_options(self) -> tuple[Any, ...]:
        return (self._noise_weight,)

    def _noise_scaler(self, x: torch.Tensor) -> torch.Tensor:
        """The node's h(x), in its operations (the ODE's is the reverse-time one at eta = 0, x ** 1)."""
        if self.solver_type == "ER-SDE":
            return x * ((x**0.3).exp() + 10.0)
        return x ** ((0 if self.solver_type == "ODE" else self.eta) + 1)

    def _plan_from_intervals(self, sigmas: torch.Tensor) -> Plan:
        """One row per interval, three warm-up levels each (level w uses stage min(w + 1, i + 1, max_stage) at step
        i); ComfyUI's float32 0-d operations (its lambdas from the whole table at once, as it computes them)."""
        h = self._noise_scaler
        lambdas = sigmas.log().neg().neg().exp()  # ComfyUI's er_lambdas: exp of minus the half log-SNR
        points = torch.arange(0, float(INTEGRATION_POINTS), dtype=sigmas.dtype)
        zero, one = (torch.full((), value, dtype=sigmas.dtype) for value in (0.0, 1.0))
        rows = []
        for i in range(len(sigmas) - 1):
            if sigmas[i + 1] == 0:  # x0 returned; the divisors 1, so the branch-free step divides by none of them
                rows.append([[zero, zero, one, zero, one, one, zero, zero, zero, zero, zero]] * MAX_STAGE)
                continue
            lambda_s, lambda_t = lambdas[i], lambdas[i + 1]
            alpha_s, alpha_t = sigmas[i] / lambda_s, sigmas[i + 1] / lambda_t
            r = h(lambda_t) / h(lambda_s)
            dt = lambda_t - lambda_s
            step = -dt / INTEGRATION_POINTS
            positions = lambda_t + points * step
            scaled = h(positions)
            c_d = alpha_t * (dt + torch.sum(1 / scaled) * step * h(lambda_t))
            c_u = alpha_t * (dt**2 / 2 + torch.sum((positions - lambda_s) / scaled) * step * h(lambda_t))
            noise_scale = (lambda_t**2 - lambda_s**2 * r**2).sqrt().nan_to_num(nan=0.0)
            head = [alpha_t / alpha_s * r, alpha_t * (1 - r)]
            tail = [alpha_t, noise_scale, one if self.stochastic else zero]
            levels = []
            for level in range(MAX_STAGE):
                stage = min(self.max_stage, level + 1, i + 1)
                second = [lambda_s - lambdas[i - 1], c_d] if stage >= 2 else [one, zero]
                third = (
                    [lambdas[i - 1] - lambdas[i - 2], (lambda_s - lambdas[i - 2]) / 2, c_u]
                    if stage == 3
                    else [one, one, zero]
                )
                levels.append([*head, *second, *third, *tail, zero + stage])
            rows.append(levels)
        coefficients = torch.stack([torch.stack([torch.stack(level) for level in row]) for row in rows])
        return single_plan(sigmas[:-1].to(torch.float32), sigmas, coefficients)

    def _draws_noise(self, state: Any) -> bool:
        """Whether any row is at a call into a positive sigma with noise, where ComfyUI draws it."""
        return any_row_at(self, state, ADDS_NOISE)

    def _noise_term(self, noise: torch.Tensor, c: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """ComfyUI's `alpha_t * noise * s_noise * sqrt(lambda_t^2 - lambda_s^2 r^2)` (s_noise = 1: exact, skipped)."""
        scaled = c[ALPHA_T] * noise
        weight = self._noise_weight
        return (scaled if weight == 1.0 else scaled * weight) * c[NOISE_SCALE]

    def _known_call(
        self, sample: torch.Tensor, x0: torch.Tensor, history: tuple[torch.Tensor, ...], noise: Any, c: Any
    ) -> torch.Tensor:
        """The eager call, where the host knows its stage: ComfyUI's own operations only."""
        (newer, older), stage = history, int(c[STAGE])
        if stage == 0:
            return x0.clone()
        x = c[C_SAMPLE] * sample + c[C_DENOISED] * x0
        if stage >= 2:
            first = (x0 - newer) / c[D_LAMBDA]
            x = x + c[C_D] * first
            if stage == 3:
                x = x + c[C_U] * ((first - (newer - older) / c[D_LAMBDA_OLD]) / c[HALF_SPAN])
        if self.stochastic:
            x = x + self._noise_term(noise, c)
        return x

    def _any_call(
        self, sample: torch.Tensor, x0: torch.Tensor, history: tuple[torch.Tensor, ...], noise: Any, c: Any
    ) -> torch.Tensor:
        """The call of any stage, per row: the third-stage update whose unused terms the plan zeroes (their divisors
        1), x0 where the stage is 0. Branch-free: compiles, and steps rows at different steps together."""
        newer, older = history
        first = (x0 - newer) / c[D_LAMBDA]
        second = (first - (newer - older) / c[D_LAMBDA_OLD]) / c[HALF_SPAN]
        x = c[C_SAMPLE] * sample + c[C_DENOISED] * x0
        x = x + c[C_D] * first
        x = x + c[C_U] * second
        if self.stochastic:
            x = x + self._noise_term(noise, c)
        return torch.where(c[STAGE] == 0, x0.to(x.dtype), x)
