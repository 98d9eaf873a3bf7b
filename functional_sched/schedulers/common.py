"""Config options that several scheduler families share, declared once (diffusers' names, defaults and domains).

A family that differs from the shared default takes its own with `.but(...)`, e.g.
`TIMESTEP_SPACING.but(default="leading")`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..machinery.options import Choice, Flag, Integer, Numbers, Option, Optional, Real
from ..math import predictions, schedules

# ----------------------------------------------------------------------------------- the training noise schedule
# At most a million: every training table is this long (diffusers' models use 1000).
NUM_TRAIN_TIMESTEPS = Option(1000, Integer(minimum=2, maximum=1_000_000))
# A beta is a variance: in (0, 1). (`_check_options` of the multistep solvers wants beta_start <= beta_end.)
BETA_START = Option(0.0001, Real(above=0, below=1), examples=(0.00085,))
BETA_END = Option(0.02, Real(above=0, below=1), examples=(0.012,))
BETA_SCHEDULE = Option("linear", Choice(*schedules.BETA_SCHEDULES))
TRAINED_BETAS = Option(None, Optional(Numbers(above=0, below=1)))
RESCALE_BETAS_ZERO_SNR = Option(False, Flag())


def training_betas(scheduler: Any) -> torch.Tensor:
    """The training betas of a scheduler's declared options (`trained_betas`, or its schedule), float32."""
    return schedules.betas(
        scheduler.num_train_timesteps,
        scheduler.beta_start,
        scheduler.beta_end,
        scheduler.beta_schedule,
        scheduler.trained_betas,
    )


def check_training_schedule(scheduler: Any) -> None:
    """Betas that grow (a ramp from beta_start to beta_end) and a `steps_offset` inside the training schedule."""
    ramp = scheduler.trained_betas is None and scheduler.beta_schedule in ("linear", "scaled_linear")
    if ramp and scheduler.beta_end < scheduler.beta_start:
        raise ValueError(
            f"{scheduler.name}: beta_end={scheduler.beta_end:g} is below beta_start={scheduler.beta_start:g}; the "
            "noise a training schedule adds grows from beta_start to beta_end (swap them)."
        )
    if scheduler.steps_offset >= scheduler.num_train_timesteps:
        raise ValueError(
            f"{scheduler.name}: steps_offset={scheduler.steps_offset} must be less than num_train_timesteps="
            f"{scheduler.num_train_timesteps}: the offset timesteps index the training schedule."
        )


# ----------------------------------------------------------------------------------------- the inference schedule
TIMESTEP_SPACING = Option("linspace", Choice(*schedules.SPACINGS))
STEPS_OFFSET = Option(0, Integer(minimum=0), examples=(1,))
FINAL_SIGMAS_TYPE = Option("zero", Choice("zero", "sigma_min"))
# Sigma spacings: at most one (diffusers raises for more).
USE_KARRAS_SIGMAS = Option(False, Flag(), exclusive="sigma spacing")
USE_EXPONENTIAL_SIGMAS = Option(False, Flag(), exclusive="sigma spacing")
USE_BETA_SIGMAS = Option(False, Flag(), exclusive="sigma spacing")

# ------------------------------------------------------------------------------------- flow-matching schedules
USE_FLOW_SIGMAS = Option(False, Flag())
FLOW_SHIFT = Option(1.0, Real(above=0), examples=(3.0, 5.0, 12.0))
USE_DYNAMIC_SHIFTING = Option(False, Flag())
TIME_SHIFT_TYPE = Option("exponential", Choice("exponential", "linear"))
# LTX-Video's stretch of the shifted schedule to end at this sigma (0, like None, stretches nothing, as in diffusers).
#: The range diffusers' Karras, exponential and beta sigmas take from the config where a pipeline registered it (Cosmos
#: 2 registers 0.002 and 80), instead of the schedule's own ends.
REGISTERED_SIGMA_MIN = Option(None, Optional(Real(above=0)), examples=(0.002,), registered=True)
REGISTERED_SIGMA_MAX = Option(None, Optional(Real(above=0)), examples=(80.0,), registered=True)


def check_sigma_range(scheduler: Any) -> None:
    """A `sigma_min` below `sigma_max` where both are given (the spaced sigmas run from sigma_max down to it)."""
    sigma_min, sigma_max = scheduler.sigma_min, scheduler.sigma_max
    if sigma_min is not None and sigma_max is not None and sigma_min >= sigma_max:
        raise ValueError(
            f"{scheduler.name}: sigma_min={sigma_min:g} must be below sigma_max={sigma_max:g} (the spaced sigmas run "
            "from sigma_max down to sigma_min)."
        )


SHIFT_TERMINAL = Option(None, Optional(Real(at_least=0, below=1)), examples=(0.02, 0.1))

# ------------------------------------------------------------------------------------------ the model's output
PREDICTION_TYPE = Option("epsilon", Choice(*predictions.DATA_PREDICTIONS))
THRESHOLDING = Option(False, Flag())
# The quantile of |x0| that thresholding clips to: a fraction (diffusers' own tests use 0).
DYNAMIC_THRESHOLDING_RATIO = Option(0.995, Real(at_least=0, at_most=1), examples=(0.9,))
SAMPLE_MAX_VALUE = Option(1.0, Real(above=0), examples=(1.5,))

# ------------------------------------------------------------------------------------------- multistep solvers
SOLVER_ORDER = Option(2, Integer(minimum=1, maximum=3), examples=(1, 3))
LOWER_ORDER_FINAL = Option(True, Flag())

# ------------------------------------------------------------------------------------------ Karras' churn
# diffusers' `step()` arguments of the Euler-type classes (EulerDiscrete, EDMEuler), options here.
S_CHURN = Option(0.0, Real(at_least=0), examples=(0.4, 80.0), step_argument=True)
S_TMIN = Option(0.0, Real(at_least=0), examples=(0.05,), step_argument=True)
S_TMAX = Option(math.inf, Real(at_least=0, allow_inf=True), examples=(50.0,), step_argument=True)
S_NOISE = Option(1.0, Real(at_least=0), examples=(1.003,), step_argument=True)


def churned(scheduler: Any, sigmas: torch.Tensor, intervals: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Karras et al. (2022), Algorithm 2's churn, as diffusers plans it: each step's sigma_hat = sigma (1 + gamma)
    where s_tmin <= sigma <= s_tmax, gamma = min(s_churn / N, sqrt(2) - 1) in Python floats (N: `intervals`, the count
    of diffusers' sigma table's intervals), and the noise's scale sqrt(sigma_hat^2 - sigma^2); `sigmas`: the steps'."""
    gamma = min(scheduler.s_churn / intervals, 2**0.5 - 1)
    churns = (scheduler.s_tmin <= sigmas) & (sigmas <= scheduler.s_tmax) & (gamma > 0)
    sigma_hat = torch.where(churns, sigmas * (gamma + 1), sigmas)
    return sigma_hat, torch.where(churns, (sigma_hat**2 - sigmas**2) ** 0.5, torch.zeros_like(sigmas))
