"""The inverse schedulers: diffusers' `DDIMInverseScheduler` and `DPMSolverMultistepInverseScheduler`, which step a
clean sample towards noise (DDIM inversion, as DiffEdit and null-text inversion use it, then edit and sample back).

Each is its forward solver's update on a schedule that ascends: the DDIM step (`ddim.py`) from alpha_bar at
`t - N // n` up to alpha_bar at `t`, and the multistep DPM-Solver step (`dpm_solver.py`) over sigmas that grow. Only
the schedules are new here; the updates, plans and states are the forward classes' own.

DDIM inversion calls the model at the timestep it steps to, with the sample still at the level it steps from (the
approximation Mokady et al. (2023) and DiffEdit make); the table sigma of a step (`sigmas`, `_model_sigma`) is the
level its sample is at, the one its x0 is formed at.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..machinery import host, options
from ..machinery.options import Choice, Flag, Option, Real
from ..machinery.plan import Plan
from ..machinery.record import record
from ..machinery.schedule import Schedule
from ..math import schedules
from . import common, ddim
from .ddim import CLIP_SAMPLE, CLIP_SAMPLE_RANGE, DDIM, PREDICTION_TYPE, AlphaBarScheduler
from .dpm_solver import DPMSolverBase, DPMSolverMultistep

# The beta schedules the inverse classes build (diffusers raises NotImplementedError for the others).
BETA_SCHEDULE = common.BETA_SCHEDULE.but(domain=Choice("linear", "scaled_linear", "squaredcos_cap_v2"))


# ---------------------------------------------------------------------------------------------------------- DDIM
def ascending_timesteps(
    spacing: str, num_inference_steps: int, num_train_timesteps: int, steps_offset: int
) -> torch.Tensor:
    """DDIMInverse's integer timesteps, ascending: 'leading' steps by N // n from 0 (plus `steps_offset`), 'trailing'
    by N / n down from N, reversed, minus 1."""
    n, train = num_inference_steps, num_train_timesteps
    if spacing == "leading":
        return torch.arange(n, dtype=torch.int64) * (train // n) + steps_offset
    return schedules.np_arange(train, 0, -(train / n)).round().flip(0).to(torch.int64) - 1


@record(host=("cursor",))
class DDIMInverseState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class DDIMInverse(AlphaBarScheduler):
    """DDIM inversion: the deterministic DDIM step run towards noise, x_next = sqrt(a_next) x0 + sqrt(1 - a_next) eps,
    with x0 and eps formed at a = alpha_bar[t - N // n] (`set_alpha_to_one`: 1 or alpha_bar[0] before the table) from
    the model's output at t, and a_next = alpha_bar[t]. Options, schedule and arithmetic as diffusers 0.42.1
    (`set_alpha_to_zero`, deprecated there, arrives as `set_alpha_to_one`).

    Implements the inversion of Song et al. (2021), "Denoising Diffusion Implicit Models", sec. 4.3 (the ODE of
    eq. 14 run forward in time), as Couairon et al. (2023), "DiffEdit", and Mokady et al. (2023), "Null-text Inversion
    for Editing Real Images", use it.
    """

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    beta_start: float = common.BETA_START
    beta_end: float = common.BETA_END
    beta_schedule: str = BETA_SCHEDULE
    trained_betas: tuple[float, ...] | None = common.TRAINED_BETAS
    clip_sample: bool = CLIP_SAMPLE
    set_alpha_to_one: bool = Option(True, Flag())
    steps_offset: int = common.STEPS_OFFSET
    prediction_type: str = PREDICTION_TYPE
    clip_sample_range: float = CLIP_SAMPLE_RANGE
    timestep_spacing: str = ddim.TIMESTEP_SPACING.but(domain=Choice("leading", "trailing"))
    rescale_betas_zero_snr: bool = common.RESCALE_BETAS_ZERO_SNR

    # What DDIM's step reads of options this class lacks: no thresholding, no fresh noise, epsilon as predicted.
    thresholding = False
    dynamic_thresholding_ratio = common.DYNAMIC_THRESHOLDING_RATIO.default
    sample_max_value = common.SAMPLE_MAX_VALUE.default
    use_clipped_model_output = False

    state_type: ClassVar[type] = DDIMInverseState
    diffusers_name: ClassVar[str] = "DDIMInverseScheduler"
    plan_columns: ClassVar[int] = ddim.STD + 1

    @property
    def stochastic(self) -> bool:
        """Never: the inversion is the deterministic DDIM step."""
        return False

    def _step_options(self) -> tuple[Any, ...]:
        return self._conversion_options()

    def _check_schedule(self, schedule: Schedule) -> None:
        if schedule.timesteps is not None:
            raise ValueError(f"{self.name}: custom timesteps are not supported (diffusers' set_timesteps takes none).")
        if schedule.num_inference_steps is None:
            raise ValueError(f"{self.name}: give num_inference_steps.")
        super()._check_schedule(schedule)

    def _timesteps(self, n: int | None, timesteps: torch.Tensor | None) -> torch.Tensor:
        if timesteps is not None:
            return timesteps.to(torch.float64).to(torch.int64)
        assert n is not None
        return ascending_timesteps(self.timestep_spacing, n, self.num_train_timesteps, self.steps_offset)

    def _coefficient_table(self, timesteps: torch.Tensor, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # diffusers' step at t: from alpha_bar[min(t - N // n, N - 1)] (the initial alpha before the table) to
        # alpha_bar[t]; each scalar as it forms it. The DDIM columns: "prev" is where the step goes, here up.
        source = (timesteps - self.num_train_timesteps // len(timesteps)).clamp(max=self.num_train_timesteps - 1)
        initial = alpha_bar.new_tensor(1.0) if self.set_alpha_to_one else alpha_bar[0]
        alpha = torch.where(source >= 0, alpha_bar[source.clamp(min=0)], initial)
        alpha_next = alpha_bar[timesteps]
        if self.prediction_type == "sample" and bool((alpha == 1).any()):
            raise ValueError(
                f"{self.name}: prediction_type='sample' with set_alpha_to_one=True: the first step starts at alpha_bar "
                "= 1, where epsilon = (x - x0) / sqrt(1 - alpha_bar) divides by 0 (diffusers returns NaN); use "
                "set_alpha_to_one=False, as Stable Diffusion's configs do."
            )
        beta = 1 - alpha
        direction = (1 - alpha_next) ** (0.5)
        table = torch.stack(
            [alpha, alpha ** (0.5), beta ** (0.5), alpha_next ** (0.5), direction, torch.zeros_like(alpha)], dim=-1
        )
        return table, alpha_next[-1]

    # DDIM's step with eta = 0: the same update, the same arithmetic, in the same order.
    step = DDIM.step


# ---------------------------------------------------------------------------------------------------- DPM-Solver
_FORWARD = options.declared(DPMSolverMultistep)  # the forward class's declarations that the inverse shares


@record(host=("cursor",))
class DPMSolverMultistepInverseState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    lower_order_nums: torch.Tensor  # [R], int64: steps taken, capped at solver_order (the warm-up level)
    history: tuple[torch.Tensor, ...]  # solver_order x [R, ...]: converted model outputs, newest last
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class DPMSolverMultistepInverse(DPMSolverBase):
    """Multistep DPM-Solver(++) of orders 1-3 run towards noise: DPMSolverMultistep's update over sigmas that ascend,
    from the training schedule's first timestep to its noisiest (lambda >= `lambda_min_clipped`), as diffusers 0.42.1's
    `DPMSolverMultistepInverseScheduler` spaces them.

    Implements Lu et al. (2022), "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in Around
    10 Steps", and Lu et al. (2022), "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
    Models", integrated from data to noise (the exponential integrator holds for either sign of the step in lambda).
    """

    algorithm_type: str = _FORWARD["algorithm_type"]
    solver_type: str = _FORWARD["solver_type"]
    lower_order_final: bool = common.LOWER_ORDER_FINAL
    euler_at_final: bool = Option(False, Flag())
    use_karras_sigmas: bool = common.USE_KARRAS_SIGMAS
    use_exponential_sigmas: bool = common.USE_EXPONENTIAL_SIGMAS
    use_beta_sigmas: bool = common.USE_BETA_SIGMAS
    # `use_flow_sigmas` is not declared (refused by name): diffusers 0.42.1's inverse flow schedule is the forward
    # one, sigmas from about 1 down, so it denoises instead of inverting. The shift only shapes that schedule.
    flow_shift: float = common.FLOW_SHIFT
    # Timesteps whose lambda = log(alpha / sigma) lies below this are never reached (DeepFloyd IF uses -5.1).
    lambda_min_clipped: float = Option(-math.inf, Real(below=math.inf, allow_inf=True), examples=(-5.1,))
    variance_type: str | None = _FORWARD["variance_type"]
    timestep_spacing: str = common.TIMESTEP_SPACING
    steps_offset: int = common.STEPS_OFFSET

    # What the shared DPM-Solver code reads of options this class lacks: a VP training schedule as diffusers builds
    # it, no registered sigma range, no dynamic shift, and no final sigma of zero (the last step ends at the noisiest
    # timestep's sigma, or at the last spaced sigma again).
    use_flow_sigmas = False
    rescale_betas_zero_snr = False
    sigma_min = None
    sigma_max = None
    use_dynamic_shifting = False
    final_sigmas_type = "noisiest"

    state_type: ClassVar[type] = DPMSolverMultistepInverseState
    diffusers_name: ClassVar[str] = "DPMSolverMultistepInverseScheduler"
    plan_columns: ClassVar[int] = DPMSolverMultistep.plan_columns
    _vp_spacings = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")

    _upcasts_sample = False  # diffusers' inverse step runs in the sample's and the model output's dtypes

    def _check_options(self) -> None:
        super()._check_options()
        if self.stochastic:
            raise ValueError(
                f"{self.name}: algorithm_type={self.algorithm_type!r} cannot step towards noise: its noise weight, "
                "sigma_t sqrt(1 - exp(-2h)) (sqrt(exp(2h) - 1) for 'sde-dpmsolver'), is the root of a negative number "
                "where lambda falls (h < 0), and diffusers' inverse returns NaN from the first step; use "
                "'dpmsolver++' or 'dpmsolver'."
            )

    def _check_schedule(self, schedule: Schedule) -> None:
        if schedule.timesteps is not None or schedule.sigmas is not None:
            raise ValueError(
                f"{self.name}: custom timesteps or sigmas are not supported (diffusers' set_timesteps takes none)."
            )
        if schedule.num_inference_steps is None:
            raise ValueError(f"{self.name}: give num_inference_steps.")
        super()._check_schedule(schedule)

    def _schedule(
        self, n: int | None, timesteps: torch.Tensor | None, sigmas: torch.Tensor | None, mu: float | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert n is not None
        return inverse_schedule(self, n)

    _orders = DPMSolverMultistep._orders
    _table = DPMSolverMultistep._table
    step = DPMSolverMultistep.step


def noisiest_timestep(scheduler: DPMSolverMultistepInverse) -> int:
    """The last training timestep whose lambda = log(alpha / sigma) is at least `lambda_min_clipped`."""
    cumulative = scheduler._training_cumprod()
    lambdas = torch.log(torch.sqrt(cumulative)) - torch.log(torch.sqrt(1 - cumulative))
    clipped = int(torch.searchsorted(torch.flip(lambdas, [0]), scheduler.lambda_min_clipped))
    return scheduler.num_train_timesteps - 1 - clipped


def inverse_schedule(scheduler: DPMSolverMultistepInverse, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps (int64, ascending) and sigmas (float32, with the final one) of diffusers' inverse `set_timesteps`:
    from timestep 0 up to the noisiest timestep whose lambda is at least `lambda_min_clipped`, then that timestep's
    sigma (or, for Karras, exponential and beta sigmas, spaced between the training schedule's ends upwards, the last
    sigma repeated)."""
    train = scheduler.num_train_timesteps
    cumulative = scheduler._training_cumprod()
    noisiest = noisiest_timestep(scheduler)
    spacing = scheduler.timestep_spacing
    if spacing == "linspace":
        timesteps = schedules.np_linspace(0, noisiest, n + 1).round()[:-1]
    elif spacing == "leading":
        stride = (noisiest + 1) // (n + 1)
        timesteps = (torch.arange(n + 1, dtype=torch.float64) * stride)[:-1] + scheduler.steps_offset
    else:
        timesteps = schedules.np_arange(noisiest + 1, 0, -(train / n)).round().flip(0) - 1
    train_sigmas = schedules.vp_sigmas(cumulative)
    log_sigmas = schedules.np_log(train_sigmas)
    # diffusers' spacings take the training table's first sigma as their "sigma_max" and its last as "sigma_min",
    # so they run upwards.
    smallest, largest = train_sigmas[0].item(), train_sigmas[-1].item()
    if scheduler.use_karras_sigmas:
        sigmas = schedules.karras_sigmas(largest, smallest, n)
        timesteps = schedules.sigma_to_t(sigmas, log_sigmas).round()
    elif scheduler.use_exponential_sigmas:
        sigmas = schedules.exponential_sigmas(largest, smallest, n)
        timesteps = schedules.sigma_to_t(sigmas, log_sigmas)
    elif scheduler.use_beta_sigmas:
        sigmas = schedules.beta_sigmas(largest, smallest, n)
        timesteps = schedules.sigma_to_t(sigmas, log_sigmas)
    else:
        sigmas = train_sigmas[timesteps.to(torch.int64)].to(torch.float64)  # np.interp at integers
    spaced = scheduler.use_karras_sigmas or scheduler.use_exponential_sigmas or scheduler.use_beta_sigmas
    last = sigmas[-1] if spaced else train_sigmas[noisiest]
    if len(torch.unique(timesteps)) < len(timesteps):
        raise ValueError(
            f"{scheduler.name}: {n} steps with this spacing repeat a timestep ({timesteps.tolist()[:8]}, ...): "
            "diffusers 0.42.1 drops the repeats but keeps every sigma, so its steps then read the sigmas of other "
            "timesteps. Use fewer steps or another spacing."
        )
    sigmas = torch.cat([sigmas.to(torch.float32), last.reshape(1).to(torch.float32)])
    return timesteps.to(torch.int64), sigmas
