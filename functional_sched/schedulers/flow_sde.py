"""Flow-matching SDE: Flow-GRPO's stochastic step on flow-match Euler's schedule (RL fine-tuning of SD3, Flux, ...).

Flow-GRPO turns the probability-flow ODE of rectified flow into a reverse-time SDE with the same marginals and samples
it by Euler-Maruyama, so that each step is a Gaussian transition whose log-probability a policy gradient can use
(`functional_sched.step_log_prob`). Its reference is `sde_step_with_logprob` in Flow-GRPO's
`flow_grpo/diffusers_patch/sd3_sde_with_logprob.py` (github.com/yifan123/flow_grpo, commit ac4c86e8, 2025-07-18),
applied to diffusers' `FlowMatchEulerDiscreteScheduler`'s sigmas; it is no class of diffusers or of a package.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Choice, Option, Real
from ..machinery.plan import Plan, as_dtype, plus, scaled, single_plan
from ..machinery.record import record
from .flow_match import FlowMatchScheduler

# Columns of the coefficient table: the step's sigma (x0 = x - sigma v), the sample's and the velocity's factors of
# the SDE's drift step, the step's length dt = sigma_next - sigma (negative), and the noise's scale std sqrt(-dt).
SIGMA, SAMPLE_SCALE, OUTPUT_SCALE, DT, NOISE = range(5)


@record(host=("cursor",))
class FlowMatchSDEState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class FlowMatchSDE(FlowMatchScheduler):
    """Euler-Maruyama steps of the reverse-time SDE of rectified flow that shares the probability-flow ODE's
    marginals, as Flow-GRPO samples it. From sigma to the next sigma s' (dt = s' - sigma < 0), with the diffusion
    coefficient std = noise_level sqrt(sigma / (1 - sigma)):

        x' = x (1 + std^2 / (2 sigma) dt) + v (1 + std^2 (1 - sigma) / (2 sigma)) dt + std sqrt(-dt) noise

    a Gaussian transition of mean the first two terms and standard deviation std sqrt(-dt). At sigma = 1 (the first
    step of a schedule from pure noise), where 1 - sigma is 0, the denominator is 1 - the schedule's second sigma, as
    Flow-GRPO takes it (`sigma_max = self.sigmas[1]`). `noise_level` = 0 is the deterministic Euler step of the ODE
    (then `noise=` is not needed); Flow-GRPO samples with 0.7 and evaluates with 0. The schedule and its options are
    flow-match Euler's (`FlowMatchScheduler`, diffusers 0.42.1's `FlowMatchEulerDiscreteScheduler`); the arithmetic is
    float32 (float64 for float64 samples), model output and sample upcast first as Flow-GRPO does, and the result is
    returned in the sample's dtype, as Flow-GRPO's pipeline casts it back. `invert_sigmas` is refused: the inverted
    schedule starts at sigma 0, which the step divides by.

    Implements the SDE sampler of Liu et al. (2025), "Flow-GRPO: Training Flow Matching Models via Online RL"
    (arXiv:2505.05470): its reverse-time SDE and Euler-Maruyama discretisation, as Flow-GRPO's `sde_step_with_logprob`
    computes them.
    """

    invert_sigmas: bool = Option(False, Choice(False))
    # Flow-GRPO's `noise_level` (a in its paper), an argument of its step there: the diffusion coefficient's scale;
    # its configs sample with 0.7 and evaluate with 0.
    noise_level: float = Option(0.7, Real(at_least=0), examples=(0.0, 1.0, 0.5), step_argument=True)

    state_type: ClassVar[type] = FlowMatchSDEState
    reference_library: ClassVar[str] = "flow_grpo"
    diffusers_name: ClassVar[str] = "sde_step_with_logprob"
    plan_columns: ClassVar[int] = NOISE + 1

    @property
    def stochastic(self) -> bool:
        """Whether `step` takes fresh noise: with `noise_level > 0`."""
        return self.noise_level > 0

    def _step_options(self) -> tuple[Any, ...]:
        return (self.stochastic,)

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        # Each scalar as Flow-GRPO forms it from the scheduler's sigmas (float32 for a float32 plan), elementwise.
        sigma, following = sigmas[:-1], sigmas[1:]
        sigma_max = sigmas[1]
        dt = following - sigma
        std = torch.sqrt(sigma / (1 - torch.where(sigma == 1, sigma_max, sigma))) * self.noise_level
        sample_scale = 1 + std**2 / (2 * sigma) * dt
        output_scale = 1 + std**2 * (1 - sigma) / (2 * sigma)
        noise_scale = std * torch.sqrt(-1 * dt)
        coefficients = torch.stack([sigma, sample_scale, output_scale, dt, noise_scale], dim=-1)
        return single_plan(timesteps, sigmas, coefficients[:, None])

    def step(
        self,
        state: FlowMatchSDEState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, FlowMatchSDEState] | tuple[torch.Tensor, FlowMatchSDEState, torch.Tensor]:
        """One SDE step of every row from its sigma to the next: `(prev_sample, new_state)`, in `sample`'s dtype.

        `noise` (standard normal, `sample`'s shape; Flow-GRPO draws it in float32,
        `functional_sched.randn_tensor(sample.shape, generator=g, dtype=torch.float32)`) is required with
        `noise_level > 0`. `denoised=True` also returns the step's x0 estimate, `sample - sigma * model_output`:
        `(prev_sample, new_state, x0)`. The step's log-probability: `functional_sched.step_log_prob`.
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
            if self.stochastic:
                checks.check_noise(self.name, f"noise_level={self.noise_level:g}", noise, sample)
        c = self._coefficients(state, sample, cursor)
        dtype = state.plan.coefficients.dtype
        work, output = as_dtype(sample, dtype), as_dtype(model_output, dtype)
        eager = cursor is not None
        prev_sample = _drift(c, work, output, eager)
        if self.stochastic:
            prev_sample = plus(scaled(c[NOISE], as_dtype(noise, dtype)), prev_sample, eager=eager)
        new_state = state.replace(**self._advanced(state, cursor))
        if denoised:
            x0 = work - scaled(c[SIGMA], output)
            return as_dtype(prev_sample, sample.dtype), new_state, as_dtype(x0, sample.dtype)
        return as_dtype(prev_sample, sample.dtype), new_state

    def _transition(
        self, state: FlowMatchSDEState, model_output: torch.Tensor, sample: torch.Tensor, cursor: host.Cursor | None
    ) -> tuple[torch.Tensor, torch.Tensor, FlowMatchSDEState]:
        """`step`'s Gaussian transition in closed form (`functional_sched.step_transition`): the drift, the noise's
        scale std sqrt(-dt) per row, and the state after the step."""
        c = self._coefficients(state, sample, cursor)
        dtype = state.plan.coefficients.dtype
        mean = _drift(c, as_dtype(sample, dtype), as_dtype(model_output, dtype), cursor is not None)
        return as_dtype(mean, sample.dtype), c[NOISE], state.replace(**self._advanced(state, cursor))


def _drift(c: tuple[torch.Tensor, ...], work: torch.Tensor, output: torch.Tensor, eager: bool) -> torch.Tensor:
    """The step's noise-free part, Flow-GRPO's `sample * a + model_output * b * dt`, its products in its order."""
    return plus(scaled(c[DT], scaled(c[OUTPUT_SCALE], output)), scaled(c[SAMPLE_SCALE], work), eager=eager)
