"""What the k-diffusion-style discrete schedulers share (Euler, Euler ancestral, Heun, KDPM2, LMS, DPM-SDE): a VP
training schedule read as variance-exploding sigmas, x = x0 + sigma eps, with the model fed x / sqrt(sigma^2 + 1).

Each class declares its options in diffusers' order (shared declarations from `common` and below) and its own step;
this base makes their schedule (float32 timesteps spaced as these classes space them, sigmas interpolated from the
training table, or Karras, exponential or beta sigmas between its ends), scales the model input, and gives the
initial noise's sigma and the model output's x0, each formed as diffusers forms it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..machinery import checks
from ..machinery.options import Choice, Option
from ..machinery.plan import Plan, coefficient_views, divided, gather_rows, scaled
from ..machinery.schedule import Schedule
from ..machinery.scheduler import Scheduler
from ..math import schedules
from . import common

#: What these classes' `prediction_type` takes ("original_sample" is diffusers' old name of "sample").
PREDICTION_TYPE = Option("epsilon", Choice("epsilon", "v_prediction", "sample", "original_sample"))
SPACINGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


class SigmaDiscreteScheduler(Scheduler):
    """Base of the VE-sigma schedulers over a discrete VP training schedule. A subclass declares the options
    (diffusers' names; `num_train_timesteps`, the betas, `prediction_type`, `timestep_spacing`, `steps_offset` at
    least) and says which of the optional ones it has through the class attributes below."""

    #: Whether `set_timesteps` takes custom `sigmas` (with the final one) and custom `timesteps`.
    _takes_custom: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ options a subclass may lack
    def _option(self, name: str, default: Any) -> Any:
        return getattr(self, name, default)

    @property
    def _zero_snr(self) -> bool:
        return self._option("rescale_betas_zero_snr", False)

    def _check_options(self) -> None:
        if hasattr(self, "sigma_min"):
            common.check_sigma_range(self)
        common.check_training_schedule(self)

    # ------------------------------------------------------------------ the schedule
    def _check_schedule(self, schedule: Schedule) -> None:
        owner = self.name
        timesteps, sigmas, steps = schedule.timesteps, schedule.sigmas, schedule.num_inference_steps
        for name, table in (("timesteps", timesteps), ("sigmas", sigmas)):
            if table is not None and name not in self._takes_custom:
                raise ValueError(f"{owner}: custom {name} are not supported (diffusers' set_timesteps takes none).")
        given = sum(value is not None for value in (steps, timesteps, sigmas))
        if given != 1:
            raise ValueError(f"{owner}: give exactly one of num_inference_steps, custom timesteps or custom sigmas.")
        if schedule.mu is not None:
            raise ValueError(f"{owner}: mu is not used by this scheduler (it has no dynamic shifting).")
        if timesteps is not None:
            for option in SPACINGS:
                if self._option(option, False):
                    raise ValueError(f"{owner}: custom timesteps cannot be used with {option}=True.")
        if sigmas is not None:
            values = sigmas.values
            if len(values) < 2:
                raise ValueError(f"{owner}: custom sigmas need at least two values (a step's start and the final one).")
            if any(value <= 0 for value in values[:-1]) or values[-1] < 0:
                raise ValueError(
                    f"{owner}: custom sigmas must be positive (the last may be 0): a step divides by its sigma, got "
                    f"{[value for value in values if value <= 0][:3]}."
                )
        if self.trained_betas is not None and len(self.trained_betas) != self.num_train_timesteps:
            raise ValueError(
                f"{owner}: trained_betas has {len(self.trained_betas)} values but num_train_timesteps="
                f"{self.num_train_timesteps}; give one beta per training timestep."
            )
        super()._check_schedule(schedule)

    @property
    def _custom_values_matter(self) -> bool:
        return True

    #: Custom sigmas in any order (an Euler-type step is defined whatever the order): their sign is checked above.
    _custom_tables_decrease: ClassVar[bool] = False

    def _custom_range(self, name: str) -> tuple[float, float, bool]:
        # Timesteps index the training table (fractions interpolate it); sigmas are checked in `_check_schedule`.
        return (0.0, float(self.num_train_timesteps - 1), False) if name == "timesteps" else (0.0, float("inf"), False)

    def _training_cumprod(self) -> torch.Tensor:
        betas = common.training_betas(self)
        return schedules.alphas_cumprod(betas, self._zero_snr)

    def _schedule(
        self, n: int | None, timesteps: torch.Tensor | None, sigmas: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(timesteps [N], float32; sigmas [N + 1], float32, with the final sigma), as `set_timesteps` makes them."""
        train_sigmas = schedules.vp_sigmas(self._training_cumprod())
        log_sigmas = schedules.np_log(train_sigmas)
        if sigmas is not None:
            sigmas = sigmas.to(torch.float32)
            return schedules.sigma_to_t(sigmas[:-1], log_sigmas).to(torch.float32), sigmas
        if timesteps is not None:
            timesteps, n = timesteps.to(torch.float32), len(timesteps)
        else:
            timesteps = schedules.fractional_timesteps(
                self.timestep_spacing, n, self.num_train_timesteps, self.steps_offset
            )
        spaced = self._spaced_sigmas(timesteps, train_sigmas, n)
        if any(self._option(option, False) for option in SPACINGS):
            timesteps = schedules.sigma_to_t(spaced, log_sigmas)
        final = train_sigmas[0] if self._option("final_sigmas_type", "zero") == "sigma_min" else torch.zeros(())
        sigmas = torch.cat([spaced.to(torch.float32), final.reshape(1).to(torch.float32)])
        return self._timestep_table(timesteps), sigmas

    def _timestep_table(self, timesteps: torch.Tensor) -> torch.Tensor:
        """The timesteps as diffusers' table holds them (float64 where a sigma spacing made them, KDPM2's)."""
        return timesteps.to(torch.float32)

    def _spaced_sigmas(self, timesteps: torch.Tensor, train_sigmas: torch.Tensor, n: int) -> torch.Tensor:
        """The N sigmas of the timesteps (interpolated in the training table), or Karras, exponential or beta sigmas
        between their ends (a registered `sigma_min`/`sigma_max` in place of them where the class has one)."""
        sigmas = self._interpolated(timesteps, train_sigmas, n)
        registered_min, registered_max = self._option("sigma_min", None), self._option("sigma_max", None)
        smallest = registered_min if registered_min is not None else sigmas[-1].item()
        largest = registered_max if registered_max is not None else sigmas[0].item()
        if self._option("use_karras_sigmas", False):
            return schedules.karras_sigmas(smallest, largest, n)
        if self._option("use_exponential_sigmas", False):
            return schedules.exponential_sigmas(smallest, largest, n)
        if self._option("use_beta_sigmas", False):
            return schedules.beta_sigmas(smallest, largest, n)
        return sigmas

    def _interpolated(self, timesteps: torch.Tensor, train_sigmas: torch.Tensor, n: int) -> torch.Tensor:
        """`np.interp(timesteps, arange(N), sigmas)`: float64."""
        return schedules.np_interp(timesteps, train_sigmas)

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        timesteps, sigmas = self._schedule(num_inference_steps, timesteps, sigmas)
        return self._plan_from_tables(timesteps, sigmas.to(dtype))

    # ------------------------------------------------------------------ the model's side
    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ones_like(sigma), sigma  # x = x0 + sigma eps

    def init_noise_sigma(self, state: Any) -> torch.Tensor:
        """The initial noise's standard deviation per row, [R]: the schedule's largest sigma for linspace and
        trailing spacings, sqrt(max^2 + 1) for leading (diffusers' rule)."""
        self._require_state(state, "init_noise_sigma")
        largest = state.plan.sigmas.amax(dim=1)
        if self.timestep_spacing not in ("linspace", "trailing"):
            largest = (largest**2 + 1) ** 0.5
        rows = state.step_index.shape[0]
        return largest.expand(rows) if largest.shape[0] == 1 else largest

    def _input_scale(self, state: Any, like: torch.Tensor) -> torch.Tensor:
        """What `scale_model_input` divides by, sqrt(sigma^2 + 1) of the model's sigma, per row (a 0-d host scalar
        where the host knows the step). A subclass whose plan holds it gives its column (`_input_column`)."""
        cursor = self._cursor(state)
        if cursor is not None:
            if cursor.step >= cursor.owned.host.steps:
                checks.raise_finished(self.name, state)
            return cursor.owned.host.entry(cursor.step, cursor.level)[self._input_column]
        (scale,) = coefficient_views(
            gather_rows(state.plan.coefficients[:, :, 0, self._input_column], state.step_index)[:, None], like
        )
        return scale

    #: The plan column holding sqrt(sigma^2 + 1) of the sigma the model sees at each call.
    _input_column: ClassVar[int]

    def scale_model_input(self, state: Any, sample: torch.Tensor) -> torch.Tensor:
        """The model's input: `sample / sqrt(sigma^2 + 1)` at each row's current sigma (a VP sample of the same
        noise level), as diffusers divides."""
        if checks.checking():
            self._require_state(state, "scale_model_input")
            checks.check_rows(f"{self.name}.scale_model_input", "sample", sample, *self._rows_and_device(state))
        return divided(sample, self._input_scale(state, sample))

    def _data_prediction(
        self,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        sigma: torch.Tensor,
        v_out: torch.Tensor,
        v_in: torch.Tensor,
    ) -> torch.Tensor:
        """x0 from the model output at sigma (`v_out` = -sigma / sqrt(sigma^2 + 1), `v_in` = sigma^2 + 1: the
        v-prediction's plan columns), each term as diffusers forms it."""
        if self.prediction_type == "epsilon":
            return sample - scaled(sigma, model_output)
        if self.prediction_type == "v_prediction":
            return scaled(v_out, model_output, tensor_first=True) + divided(sample, v_in)
        return model_output
