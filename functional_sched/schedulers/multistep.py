"""What the multistep solvers (DPM-Solver, UniPC, DEIS; and singlestep DPM-Solver, whose warm-up caps its order list)
share: the options their diffusers classes all begin with (the training schedule, the order, the model's output),
the rules between options, the plan's shape, the warm-up and history their states carry, and the checks of a step.
Each solver declares the rest of its options after these, in diffusers' order (shared declarations from `common`),
and its own schedule and coefficients."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.options import Choice
from ..machinery.plan import Plan, as_dtype, divided, scaled, single_plan
from ..machinery.schedule import Schedule
from ..machinery.scheduler import Scheduler
from ..math import predictions, schedules
from . import common

# The first columns of both solvers' tables: x_t = alpha x0 + sigma eps at the step's start, the schedule's sigma.
ALPHA, SIGMA, RAW_SIGMA = range(3)


@options.config
class MultistepScheduler(Scheduler):
    """Base of the multistep solvers: the options both diffusers classes begin with; a subclass declares the rest
    (`options.config`)."""

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    beta_start: float = common.BETA_START
    beta_end: float = common.BETA_END
    beta_schedule: str = common.BETA_SCHEDULE
    trained_betas: tuple[float, ...] | None = common.TRAINED_BETAS
    solver_order: int = common.SOLVER_ORDER
    prediction_type: str = common.PREDICTION_TYPE
    thresholding: bool = common.THRESHOLDING
    dynamic_thresholding_ratio: float = common.DYNAMIC_THRESHOLDING_RATIO
    sample_max_value: float = common.SAMPLE_MAX_VALUE

    # ------------------------------------------------------------------ hooks for the subclasses
    def _schedule(
        self, n: int | None, timesteps: torch.Tensor | None, sigmas: torch.Tensor | None, mu: float | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps (int64) and sigmas (float32, with the final one), as diffusers' `set_timesteps` makes them."""
        raise NotImplementedError

    def _orders(self, n: int) -> torch.Tensor:
        """The highest order each of n steps may use (the warm-up is applied at step time)."""
        raise NotImplementedError

    def _table(self, sigmas: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        """The [N, order + 1, C] coefficients by (step, warm-up level)."""
        raise NotImplementedError

    def _solver_step_options(self) -> tuple[Any, ...]:
        """The solver's own options that `step` branches on."""
        raise NotImplementedError

    #: Fields a solver's state has beyond the common ones, each a zero tensor like the sample at first.
    _zero_fields: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ shared
    def _step_options(self) -> tuple[Any, ...]:
        conversion = (self.prediction_type, self.thresholding, self.dynamic_thresholding_ratio, self.sample_max_value)
        return (self.solver_order, *conversion, *self._solver_step_options())

    #: Sigma spacings that this solver computes from the VP training schedule even with `use_flow_sigmas`.
    _vp_spacings: ClassVar[tuple[str, ...]]

    def _check_options(self) -> None:
        for spacing in self._vp_spacings:
            if self.use_flow_sigmas and getattr(self, spacing):
                raise ValueError(
                    f"{self.name}: use_flow_sigmas=True with {spacing}=True: diffusers spaces the sigmas of the VP "
                    "training schedule (up to about 157) and reads them as flow sigmas, whose alpha = 1 - sigma is "
                    "negative, and returns NaN; use one or the other."
                )
        common.check_training_schedule(self)

    def _check_schedule(self, schedule: Schedule) -> None:
        # Checked here, not at construction: diffusers constructs with any number of trained betas (its own tests
        # do), and a schedule is where the table must cover the training timesteps.
        if self.trained_betas is not None and len(self.trained_betas) != self.num_train_timesteps:
            raise ValueError(
                f"{self.name}: trained_betas has {len(self.trained_betas)} values but num_train_timesteps="
                f"{self.num_train_timesteps}; give one beta per training timestep."
            )
        super()._check_schedule(schedule)

    @property
    def max_inference_steps(self) -> int:
        return min(super().max_inference_steps, self.num_train_timesteps)

    def _steps_limit_reason(self) -> str:
        return (
            ", num_train_timesteps: more steps would repeat its integer timesteps, and a higher-order step divides by "
            "a step's length"
        )

    @property
    def _takes_repeats(self) -> bool:  # type: ignore[override]
        return self.solver_order == 1  # higher orders divide by the previous step's length

    def _custom_range(self, name: str) -> tuple[float, float, bool]:
        # Custom timesteps index the training schedule (custom sigmas are flow sigmas, where a solver takes them).
        return (0, self.num_train_timesteps - 1, True) if name == "timesteps" else (0.0, 1.0, False)

    def _check_prediction(self, data_prediction: bool, condition: str) -> None:
        """Noise-prediction solvers cannot take a flow model's velocity (diffusers fails in `step`; we here)."""
        allowed = predictions.DATA_PREDICTIONS if data_prediction else predictions.NOISE_PREDICTIONS
        Choice(*allowed).check(f"{self.name} with {condition}", "prediction_type", self.prediction_type)

    def _training_cumprod(self) -> torch.Tensor:
        """alpha_bar of the training schedule, float32."""
        betas = common.training_betas(self)
        return schedules.alphas_cumprod(betas, self.rescale_betas_zero_snr)

    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return schedules.flow_alpha_sigma(sigma) if self.use_flow_sigmas else schedules.vp_alpha_sigma(sigma)

    def _data_prediction(
        self, model_output: torch.Tensor, sample: torch.Tensor, conversion: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        """x0 from the model output (thresholded if configured); `conversion` is (alpha, sigma, raw sigma)."""
        x0 = predictions.to_data(self.prediction_type, model_output, sample, *conversion)
        if self.thresholding:
            x0 = predictions.threshold(x0, self.dynamic_thresholding_ratio, self.sample_max_value)
        return x0

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        timesteps, sigmas = self._schedule(num_inference_steps, timesteps, sigmas, mu)
        return self._plan_from_tables(timesteps, sigmas.to(dtype))

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        return single_plan(timesteps, sigmas, self._table(sigmas, self._orders(len(timesteps))))

    def _start(
        self,
        plan: Plan,
        sample: torch.Tensor,
        step_index: torch.Tensor,
        level: torch.Tensor,
        fingerprint: torch.Tensor,
        cursor: host.Cursor | None,
    ) -> Any:
        # The history and the zero fields: the request's own, each a slice of one zeroed buffer (one fill kernel).
        zeros = torch.zeros(
            (self.solver_order + len(self._zero_fields), *sample.shape), dtype=sample.dtype, device=sample.device
        ).unbind(0)
        return self.state_type(
            plan=plan,
            step_index=step_index,
            lower_order_nums=level,
            history=zeros[: self.solver_order],
            fingerprint=fingerprint,
            cursor=cursor,
            **dict(zip(self._zero_fields, zeros[self.solver_order :], strict=True)),
        )

    def _warmup(self, state: Any) -> torch.Tensor | None:
        return state.lower_order_nums

    def _kept(self, converted: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """A converted model output as the history keeps it: in the sample's dtype, and never the caller's tensor
        (where the conversion is the identity, a serving engine or a CUDA graph may overwrite the model's output
        buffer before the next step reads the history)."""
        if converted.dtype != sample.dtype:
            return converted.to(sample.dtype)
        return converted.clone() if self._converts_by_identity() else converted

    def _converts_by_identity(self) -> bool:
        """Whether the converted model output is the model's output itself (or a view of it)."""
        raise NotImplementedError

    def _integrates_data(self) -> bool:
        """Whether the converted model output is x0 (else it is epsilon)."""
        raise NotImplementedError

    def _denoised(
        self, converted: torch.Tensor, kept: torch.Tensor, sample: torch.Tensor, c: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        """The step's x0 estimate in the sample's dtype (diffusers' `x0_pred`, thresholded where configured), from
        the converted output of the `sample` the model saw; never the history's own tensor (`kept`), which the
        caller could then write into."""
        if self._integrates_data():
            x0 = as_dtype(converted, sample.dtype)
            return x0.clone() if x0 is kept else x0
        return as_dtype(divided(sample - scaled(c[SIGMA], converted), c[ALPHA]), sample.dtype)

    def _check(
        self,
        state: Any,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        noise: torch.Tensor | None,
        denoised: bool,
        cursor: host.Cursor | None,
    ) -> None:
        self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
        checks.check_sample_matches_state(self.name, sample, state.history[0].shape, state.history[0].dtype)
        self._check_inputs(model_output, sample, noise)

    def _check_inputs(self, model_output: torch.Tensor, sample: torch.Tensor, noise: torch.Tensor | None) -> None:
        """The solver's own checks of its step inputs beyond the common ones (`_check_step_rows`)."""
