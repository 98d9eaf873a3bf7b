"""DDPMWuerstchen: diffusers' `DDPMWuerstchenScheduler` (Wuerstchen, Stable Cascade's prior and decoder), ancestral
DDPM steps on a continuous cosine schedule.

diffusers' timesteps are ratios in [0, 1]: `set_timesteps(n)` makes linspace(1, 0, n + 1) (float32), or takes a
custom table (Wuerstchen's prior passes one), and the pipelines step from every timestep of the table but the last
(`timesteps[:-1]`), each to the next. Our timestep table is those N, the steps' own; the sigma table holds the noise
level sqrt(1 - alpha_bar) of all N + 1 (the last is where the loop ends). The schedule is

    alpha_bar(t) = clamp(cos((t' + s) / (1 + s) pi / 2)^2 / cos(s / (1 + s) pi / 2)^2, 1e-4, 0.9999),

t' = t, 1 - (1 - t)^scaler (scaler > 1) or t^scaler (scaler < 1); a step from t to the next timestep t_prev, with
alpha = alpha_bar(t) / alpha_bar(t_prev) and the model's epsilon e, is

    x_prev = sqrt(1 / alpha) (x - (1 - alpha) e / sqrt(1 - alpha_bar(t))) + std z (t_prev != 0),
    std = sqrt((1 - alpha) (1 - alpha_bar(t_prev)) / (1 - alpha_bar(t))),

z a standard normal draw that diffusers takes at every step, the last included (where t_prev = 0 scales it by 0).
diffusers computes in float32 whatever the inputs' dtype and returns the model output's dtype; alpha_bar(t) is taken
at the timestep the pipeline passes, which Stable Cascade's pipelines cast to the latents' dtype (`t.expand(B).to(
dtype)`), and alpha_bar(t_prev) at its float32 table value. So the plan holds the step's scalars three times, at t
as float32, bfloat16 and float16 give it, and a step reads those of its sample's dtype; each is formed from
one-element tensors as diffusers forms them (bit for bit with diffusers' own for batches under 16 rows, whose cos and
pow take the scalar kernels there). t_prev is the table value after the one nearest t as that dtype rounds it
(diffusers' `previous_timestep`), the next one wherever the rounding does not cross a neighbour.

Implements Ho et al. (2020), "Denoising Diffusion Probabilistic Models" (Algorithm 2), on the schedule of Pernias et
al. (2024), "Wuerstchen: An Efficient Architecture for Large-Scale Text-to-Image Diffusion Models" (after Nichol &
Dhariwal's cosine schedule), with diffusers 0.42.1's arithmetic.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Option, Real
from ..machinery.plan import Plan, as_dtype, gather_rows, per_row, single_plan
from ..machinery.record import record
from ..machinery.schedule import Schedule
from ..machinery.scheduler import Scheduler

# Per timestep dtype, the step's scalars: sqrt(1 / alpha), 1 - alpha, sqrt(1 - alpha_bar), the noise's std,
# sqrt(alpha_bar) (x0 and `add_noise`), and whether the step adds its noise (t_prev != 0).
RECIP_ROOT_ALPHA, ONE_MINUS_ALPHA, ROOT_ONE_MINUS, STD, ROOT_ALPHA_BAR, NOISY = range(6)
GROUP = NOISY + 1
#: The timestep dtypes the plan serves, in column-group order: the sample's dtype picks one (float64 samples, whose
#: plan is float64, read the first).
TIMESTEP_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@record(host=("cursor",))
class DDPMWuerstchenState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class DDPMWuerstchen(Scheduler):
    """Ancestral DDPM on Wuerstchen's continuous cosine schedule (`s`, `scaler`), timesteps as ratios in [0, 1].

    Implements Ho et al. (2020), "Denoising Diffusion Probabilistic Models", on the schedule of Pernias et al. (2024),
    "Wuerstchen: An Efficient Architecture for Large-Scale Text-to-Image Diffusion Models", with diffusers 0.42.1's
    options, schedule and arithmetic.
    """

    scaler: float = Option(1.0, Real(above=0), examples=(0.5, 2.0))
    s: float = Option(0.008, Real(at_least=0), examples=(0.0, 0.02))

    state_type: ClassVar[type] = DDPMWuerstchenState
    diffusers_name: ClassVar[str] = "DDPMWuerstchenScheduler"
    plan_columns: ClassVar[int] = GROUP * len(TIMESTEP_DTYPES)
    #: What the model predicts: the noise.
    prediction_type: ClassVar[str] = "epsilon"
    #: diffusers finds where each step goes by looking its timestep up (`previous_timestep`), every step; the plan
    #: does the same lookups. A repeated timestep is refused: diffusers steps from it to itself twice (the first of
    #: equals is found), skipping the interval after it, and in half precision its rounded timestep makes alpha > 1
    #: and the noise's scale NaN.
    _takes_repeats: ClassVar[bool] = False

    @property
    def stochastic(self) -> bool:
        """Always: diffusers draws noise at every step (the last one scales it by zero)."""
        return True

    def _step_options(self) -> tuple[Any, ...]:
        return ()

    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (1 - sigma**2) ** 0.5, sigma

    # ------------------------------------------------------------------------------------------------ plan
    def _check_schedule(self, schedule: Schedule) -> None:
        if schedule.sigmas is not None:
            raise ValueError(f"{self.name}: custom sigmas are not supported (diffusers' set_timesteps takes none).")
        if (schedule.num_inference_steps is None) == (schedule.timesteps is None):
            raise ValueError(f"{self.name}: give num_inference_steps or custom timesteps (one of them).")
        if schedule.timesteps is not None and len(schedule.timesteps.values) < 2:
            raise ValueError(
                f"{self.name}: timesteps must hold at least two values: the pipelines step from each but the last to "
                "the next."
            )
        super()._check_schedule(schedule)

    def _custom_range(self, name: str) -> tuple[float, float, bool]:
        # Ratios. diffusers takes any value, but past [0, 1] its cosine wraps (alpha_bar no longer falls with t), and
        # a half-precision run's rounded timesteps can then make alpha > 1 and the noise's scale NaN.
        return 0.0, 1.0, False

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        if timesteps is None:
            assert num_inference_steps is not None
            table = torch.linspace(1.0, 0.0, num_inference_steps + 1)
        else:
            table = timesteps.to(torch.float32)  # diffusers' `torch.Tensor(timesteps)`
        return self._plan_of(table, dtype)

    def _alpha_bar(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """diffusers' `_alpha_cumprod` of a one-element timestep (its scaling in the timestep's dtype, the rest in
        `dtype`, float32 as diffusers' `s` is), formed as diffusers forms it."""
        s = torch.tensor([self.s], dtype=dtype)
        init = torch.cos(s / (1 + s) * torch.pi * 0.5) ** 2
        if self.scaler > 1:
            t = 1 - (1 - t) ** self.scaler
        elif self.scaler < 1:
            t = t**self.scaler
        return (torch.cos((t + s) / (1 + s) * torch.pi * 0.5) ** 2 / init).clamp(0.0001, 0.9999)

    def _plan_of(self, table: torch.Tensor, dtype: torch.dtype) -> Plan:
        """The plan of a float32 timestep table of N + 1 values (N steps): each step's scalars per timestep dtype,
        from the timestep as that dtype gives it to the one after its nearest table value (diffusers'
        `previous_timestep`: the first of equals)."""
        wide = dtype == torch.float64
        values = table.to(dtype) if wide else table
        alpha_bars = torch.cat([self._alpha_bar(value[None], dtype) for value in values])
        last = table.shape[0] - 1
        rows = []
        for index in range(last):
            row = []
            for timestep_dtype in TIMESTEP_DTYPES:
                t = values[index : index + 1]
                t = t if wide else t.to(timestep_dtype)
                nearest = int((table - t.to(torch.float32)[0]).abs().argmin())
                after = min(nearest + 1, last)  # past the table diffusers raises IndexError; only a half dtype's
                alpha_bar, alpha_bar_prev = self._alpha_bar(t, dtype), alpha_bars[after : after + 1]
                alpha = alpha_bar / alpha_bar_prev
                row += [
                    (1.0 / alpha).sqrt(),
                    1 - alpha,
                    (1 - alpha_bar).sqrt(),
                    ((1 - alpha) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)).sqrt(),
                    alpha_bar.sqrt(),
                    (table[after : after + 1] != 0).to(dtype),
                ]
            rows.append(torch.cat(row))
        coefficients = torch.stack(rows)[:, None]
        return single_plan(table[:-1], (1 - alpha_bars).sqrt(), coefficients)

    # ------------------------------------------------------------------------------------------------ step
    @staticmethod
    def _group(dtype: torch.dtype) -> int:
        """The first column of the scalars at the timestep as a sample of `dtype` passes it."""
        return GROUP * TIMESTEP_DTYPES.index(dtype) if dtype in TIMESTEP_DTYPES else 0

    def add_noise(self, state: Any, original_samples: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noise `original_samples` to each row's current timestep, as diffusers' `add_noise` (in float32, the
        timestep in the samples' dtype, returned in it)."""
        if checks.checking():
            self._require_state(state, "add_noise")
            checks.check_rows(self.name, "original_samples", original_samples, *self._rows_and_device(state))
            checks.check_like(self.name, "noise", noise, original_samples, "original_samples")
        group = self._group(original_samples.dtype)
        table = state.plan.coefficients[:, :, 0]
        root_alpha_bar = gather_rows(table[..., group + ROOT_ALPHA_BAR], state.step_index)
        root_one_minus = gather_rows(table[..., group + ROOT_ONE_MINUS], state.step_index)
        work = root_alpha_bar.dtype
        noisy = per_row(root_alpha_bar, original_samples.to(work)) * original_samples.to(work)
        noisy = noisy + per_row(root_one_minus, noise.to(work)) * noise.to(work)
        return as_dtype(noisy, original_samples.dtype)

    def step(
        self,
        state: DDPMWuerstchenState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, DDPMWuerstchenState] | tuple[torch.Tensor, DDPMWuerstchenState, torch.Tensor]:
        """One ancestral step of every row from its timestep to the next of its table: `(prev_sample, new_state)`,
        computed in float32 (float64 for float64 samples) and returned in `sample`'s dtype.

        `model_output` is the model's epsilon. `noise` (standard normal, `sample`'s shape) is required: draw it as
        diffusers does, `functional_sched.randn_tensor(sample.shape, generator=g, dtype=model_output.dtype)`, at every
        step (a step to timestep 0 scales it by zero). `denoised=True` also returns the step's x0 estimate,
        (x - sqrt(1 - alpha_bar) e) / sqrt(alpha_bar) (diffusers returns none): `(prev_sample, new_state, x0)`.
        """
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
            checks.check_noise(self.name, "its ancestral step", noise, sample)
        c = self._coefficients(state, sample, cursor)
        group = self._group(sample.dtype)
        work = c[group + NOISY].dtype
        x, e = as_dtype(sample, work), as_dtype(model_output, work)
        # diffusers: sqrt(1 / alpha) * (sample - (1 - alpha) * model_output / sqrt(1 - alpha_bar)), each scalar a
        # float32 tensor per row (types promote to float32).
        mu = c[group + RECIP_ROOT_ALPHA] * (x - c[group + ONE_MINUS_ALPHA] * e / c[group + ROOT_ONE_MINUS])
        # The host knows whether the noise is scaled by zero (the step is skipped); a graph multiplies.
        if cursor is None or bool(c[group + NOISY]):
            assert noise is not None
            prev_sample = mu + c[group + STD] * as_dtype(noise, work) * c[group + NOISY]
        else:
            prev_sample = mu
        new_state = state.replace(**self._advanced(state, cursor))
        prev_sample = as_dtype(prev_sample, sample.dtype)
        if denoised:
            x0 = (x - c[group + ROOT_ONE_MINUS] * e) / c[group + ROOT_ALPHA_BAR]
            return prev_sample, new_state, as_dtype(x0, sample.dtype)
        return prev_sample, new_state
