"""RES multistep, the refined exponential solver's second-order multistep method, and its ancestral variant, as
ComfyUI runs them (`sample_res_multistep` and `sample_res_multistep_ancestral` of its `comfy/k_diffusion/sampling.py`),
one `step` per model call.

As k-diffusion's samplers (`k_samplers.py`), the model output is the denoiser's x0 at the sample's sigma, the input
unscaled, and the timestep the sigma the model sees; the schedule is a custom sigma table with its final sigma
(`init(sigmas=...)`) or the Karras sigmas of `sigma_min`, `sigma_max` and `rho` (Stable Diffusion 1.5's range by
default). ComfyUI runs the same loop for flow models (its sigmas then the flow times in (0, 1], x0 from the velocity
as x - sigma v): give their table as custom sigmas. Every coefficient is ComfyUI's 0-d computation in the plan's
dtype, made once in the plan, and each product is formed in its loop's order, so float32 steps reproduce its loop bit
for bit (tests/test_res.py holds them to trajectories recorded from it).

ComfyUI's `_cfg_pp` variants of both samplers are not covered: they form the update from the unconditional x0 that a
post-CFG hook hands them besides the guided one (x0_uncond for the derivative and the history, the guided x0 added
as x + (x0 - x0_uncond)), so a step would need two model outputs, which `step`'s one-output contract does not take.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..machinery import options
from ..machinery.options import Option, Real
from ..machinery.plan import Plan, divided, single_plan
from .k_samplers import (
    RHO,
    SIGMA_MAX,
    SIGMA_MIN,
    KDiffusionMultistep,
    ancestral_step,
    any_row_at,
)

# Columns of the table, one row per (step, warm-up level): the second-order update's multipliers
# (`x' = exp(-h) x + h (b1 x0 + b2 x0_prev)`), the Euler update's sigma and step (`x' = x + (x - x0) / sigma dt`), the
# noise's scale sigma_up and whether the step adds it (into a positive sigma), and the order the step uses there.
EXP_NEG_H, H, B1, B2, SIGMA, DT, UP, ADDS_NOISE, ORDER = range(9)


@options.config
class RESMultistep(KDiffusionMultistep):
    """RES multistep: per interval [sigma_i, sigma_(i+1)], with t = -log sigma and h = t_(i+1) - t_i, the
    second-order multistep exponential integrator in data prediction,

        x' = exp(-h) x + h (b1 x0 + b2 x0_prev),  b2 = phi_2(-h) / c2,  b1 = phi_1(-h) - b2,

    where phi_1(z) = (e^z - 1) / z, phi_2(z) = (phi_1(z) - 1) / z and c2 = (t_(i-1) - t_i) / h is minus the previous
    step's length over this one's (so b2 < 0: x0 is extrapolated from the previous call's). The first step after
    `init` (no history) and the last, into sigma 0, are Euler steps x' = x + (x - x0) / sigma_i (sigma_(i+1) -
    sigma_i), as ComfyUI takes them. Deterministic: ComfyUI's `sample_res_multistep` is `res_multistep` with eta = 0
    (its `s_noise` then scales a zero sigma_up, and is not an option here).

    Implements ComfyUI's `sample_res_multistep` (read for its behaviour, GPL-3.0, no code of it here), the
    second-order multistep RES of Zhang, Tao, Chen et al. (2023), "Improved order analysis and design of exponential
    integrator for diffusion models" (arXiv:2308.02157).
    """

    sigma_min: float = Option(SIGMA_MIN, Real(above=0), examples=(0.002,))
    sigma_max: float = Option(SIGMA_MAX, Real(above=0), examples=(80.0,))
    rho: float = Option(RHO, Real(above=0), examples=(1.0, 3.0))

    #: The ancestral step's eta and noise scale, options of `RESMultistepAncestral` (eta = 0: sigma_up = 0, each step
    #: ends at sigma_(i+1) and adds no noise).
    eta: ClassVar[float] = 0.0
    s_noise: ClassVar[float] = 1.0
    _kept: ClassVar[int] = 1
    reference_library: ClassVar[str] = "comfyui"
    diffusers_name: ClassVar[str] = "sample_res_multistep"
    plan_columns: ClassVar[int] = ORDER + 1
    _noise_reason: ClassVar[str] = "RES multistep ancestral (the noise of each step into a positive sigma)"

    @property
    def stochastic(self) -> bool:
        return False

    def _step_options(self) -> tuple[Any, ...]:
        return ()

    def _plan_from_intervals(self, sigmas: torch.Tensor) -> Plan:
        """One row per interval, two warm-up levels each: level 0 (no previous x0) an Euler step to sigma_down, level
        1 ComfyUI's second-order step (from the second step on, but where sigma_down is 0: Euler there too)."""
        zero = torch.zeros((), dtype=sigmas.dtype)
        t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
        rows, previous_down = [], zero
        for i in range(len(sigmas) - 1):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            sigma_down, sigma_up = ancestral_step(sigma, sigma_next, self.eta)
            tail = [sigma, sigma_down - sigma, sigma_up, zero + float(sigma_next > 0)]
            euler = [zero, zero, zero, zero, *tail, zero + 1]
            second = euler
            if i > 0 and sigma_down != 0:
                # The previous step's length as ComfyUI measures it: from sigma_(i-1) to the previous sigma_down
                # (sigma_i at eta = 0; infinite where that was 0, which leaves the first-order term).
                t, t_old, t_next, t_prev = t_fn(sigma), t_fn(previous_down), t_fn(sigma_down), t_fn(sigmas[i - 1])
                h = t_next - t
                c2 = (t_prev - t_old) / h
                phi_1 = torch.expm1(-h) / -h
                phi_2 = (phi_1 - 1.0) / -h
                b1 = torch.nan_to_num(phi_1 - phi_2 / c2, nan=0.0)
                b2 = torch.nan_to_num(phi_2 / c2, nan=0.0)
                second = [h.neg().exp(), h, b1, b2, *tail, zero + 2]
            rows.append([euler, second])
            previous_down = sigma_down
        coefficients = torch.stack([torch.stack([torch.stack(level) for level in row]) for row in rows])
        return single_plan(sigmas[:-1].to(torch.float32), sigmas, coefficients)

    def _noise_term(self, noise: torch.Tensor, c: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """ComfyUI's `noise * s_noise * sigma_up` (the product by s_noise = 1 is exact: skipped)."""
        return (noise if self.s_noise == 1.0 else noise * self.s_noise) * c[UP]

    def _known_call(
        self, sample: torch.Tensor, x0: torch.Tensor, history: tuple[torch.Tensor, ...], noise: Any, c: Any
    ) -> torch.Tensor:
        """The eager call, where the host knows its order: ComfyUI's own operations only."""
        (previous,), order = history, int(c[ORDER])
        if order == 2:
            x = c[EXP_NEG_H] * sample + c[H] * (c[B1] * x0 + c[B2] * previous)
        else:
            x = sample + divided(sample - x0, c[SIGMA]) * c[DT]
        if self.stochastic and float(c[ADDS_NOISE]) > 0:
            x = x + self._noise_term(noise, c)
        return x

    def _any_call(
        self, sample: torch.Tensor, x0: torch.Tensor, history: tuple[torch.Tensor, ...], noise: Any, c: Any
    ) -> torch.Tensor:
        """The call of either order, per row, chosen by the row's plan entry (branch-free: compiles, and steps rows
        at different steps together; the second-order multipliers are 0 where a row takes an Euler step)."""
        (previous,) = history
        second = c[EXP_NEG_H] * sample + c[H] * (c[B1] * x0 + c[B2] * previous)
        euler = sample + divided(sample - x0, c[SIGMA]) * c[DT]
        x = torch.where(c[ORDER] == 2, second, euler)
        if self.stochastic:
            x = torch.where(c[ADDS_NOISE] > 0, x + self._noise_term(noise, c), x)
        return x


@options.config
class RESMultistepAncestral(RESMultistep):
    """RES multistep ancestral: per interval, with (sigma_down, sigma_up) of the ancestral step (eta), RES
    multistep's update to sigma_down (h = t(sigma_down) - t_i; c2 from the previous step as ComfyUI measures it, from
    sigma_(i-1) to the previous sigma_down), then s_noise sigma_up z where sigma_(i+1) > 0. A step whose sigma_down is
    0 (the last, or any where eta is that large) is an Euler step to 0 plus the noise. eta = 0 is `RESMultistep`.

    `noise=` (standard normal, like the sample) is required; steps into a positive sigma read it (`_draws_noise`;
    ComfyUI draws it there, eta = 0 included). ComfyUI follows the same loop for flow models (its VE ancestral noise,
    not the rectified-flow renoising its Euler ancestral switches to), and multiplies s_noise by its model sampling's
    `noise_scale` where that has one: give the product as s_noise.

    Implements ComfyUI's `sample_res_multistep_ancestral` (read for its behaviour, GPL-3.0, no code of it here),
    ancestral sampling with the multistep RES of Zhang, Tao, Chen et al. (2023), "Improved order analysis and design
    of exponential integrator for diffusion models" (arXiv:2308.02157).
    """

    eta: float = Option(1.0, Real(at_least=0), examples=(0.0, 0.5, 2.0))
    s_noise: float = Option(1.0, Real(at_least=0), examples=(0.5, 1.003))

    diffusers_name: ClassVar[str] = "sample_res_multistep_ancestral"

    @property
    def stochastic(self) -> bool:
        return True

    def _step_options(self) -> tuple[Any, ...]:
        return (self.s_noise,)

    def _draws_noise(self, state: Any) -> bool:
        """Whether any row is at a step into a positive sigma, where ComfyUI draws noise."""
        return any_row_at(self, state, ADDS_NOISE)
