"""Named sigma schedules: the tables practitioners pick by name in ComfyUI and k-diffusion, for any scheduler.

Each schedule is a pure function of a model's noise levels and a step count, `schedule(model, steps)`, returning
`steps + 1` sigmas, float64, decreasing, the last one the terminal 0 (k-diffusion's convention: step i goes from
`sigmas[i]` to `sigmas[i + 1]`; `ddim_uniform` and `beta(space="timestep")` may make more or fewer steps, as in
ComfyUI, and their docstrings say when). The model is either

- `Discrete(training_sigmas)`: a discrete-time (alpha-bar) model, its sigma_t = sqrt((1 - abar_t) / abar_t) for the
  training timesteps t = 0 .. N - 1 in increasing order (ComfyUI's `ModelSamplingDiscrete.sigmas`);
  `Discrete.from_betas(...)` builds them from a diffusers config, as its schedulers do. A plain tensor counts as one.
- `Flow(shift)`: a rectified-flow model, sigma in (0, 1], its training sigmas shift(t / N) for t = 1 .. N (ComfyUI's
  `ModelSamplingDiscreteFlow`; SD3's static shift, Esser et al. 2024, eq. 23).

How a scheduler of the core takes a table (each takes the custom tables diffusers' `set_timesteps` takes):
- custom sigmas, discrete (EulerDiscrete): `sched.init(sigmas=table, sample=x)`.
- custom integer timesteps (DPMSolverMultistep, DPMSolverSinglestep, HeunDiscrete):
  `sched.init(timesteps=nearest_timesteps(model, table), sample=x)`; they run on their own training sigmas at those
  timesteps (the same sigmas for the grid-based schedules: simple, ddim_uniform, Align Your Steps on SD; a multistep
  solver refuses a table whose steps fall on one training timestep).
- custom flow sigmas (FlowMatchEulerDiscrete): `FlowMatchEulerDiscrete(shift=1.0).init(sigmas=table[:-1], sample=x)`
  (it appends the 0 and shifts custom sigmas by its own `shift`: the table already has the model's shift in it).
- the others take no custom table (as in diffusers), and refuse one with an error that says so.

Host-side, run once per schedule; every function checks its arguments and names the one it refuses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import torch

from ..machinery import checks
from ..machinery.schedule import MAX_INFERENCE_STEPS
from . import schedules
from .beta_quantile import beta_quantile

F64 = torch.float64

#: The 10-step schedules of Align Your Steps (Sabour et al. 2024), as the AYS project page publishes them: training
#: timesteps for Stable Diffusion 1.5 and SDXL (discrete models; the 11th, 0, is where the last step ends) ...
AYS_TIMESTEPS: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {
        "sd1.5": (999, 850, 736, 645, 545, 455, 343, 233, 124, 24, 0),
        "sdxl": (999, 845, 730, 587, 443, 310, 193, 116, 53, 13, 0),
    }
)
#: ... and EDM sigmas for Stable Video Diffusion (a continuous-time model).
AYS_SIGMAS: Mapping[str, tuple[float, ...]] = MappingProxyType(
    {"svd": (700.0, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002)}
)
AYS_MODELS = (*AYS_TIMESTEPS, *AYS_SIGMAS)
BETA_SPACES = ("sigma", "timestep")
MAX_TRAIN_TIMESTEPS = 1_000_000
#: ComfyUI's threshold under which a training sigma counts as zero (`normal` and `ddim_uniform` then add no 0).
_ZERO_SIGMA = 1e-5


# ------------------------------------------------------------------------------------------------- models
class Discrete:
    """A discrete-time model's training sigmas, increasing with the training timestep (ComfyUI's
    `ModelSamplingDiscrete`): `timestep(sigma)` is the nearest training timestep in log sigma, `sigma(t)` interpolates
    log sigma linearly between training timesteps."""

    def __init__(self, sigmas: torch.Tensor | Sequence[float]) -> None:
        table = _table("Discrete", "sigmas", sigmas)
        if len(table) < 2:
            raise ValueError(f"Discrete: sigmas needs at least two training sigmas, got {len(table)}.")
        if bool((table <= 0).any()):
            raise ValueError(f"Discrete: sigmas must be positive, got {table[table <= 0][:3].tolist()}.")
        decrease = (table[1:] <= table[:-1]).nonzero()
        if len(decrease):
            index = int(decrease[0])
            raise ValueError(
                f"Discrete: sigmas must increase strictly with the training timestep (sigma_t of t = 0 .. N - 1), got "
                f"{table[index].item():.6g} then {table[index + 1].item():.6g} at index {index}."
            )
        self.sigmas = table
        self.log_sigmas = table.log()

    def __repr__(self) -> str:
        return f"Discrete({len(self.sigmas)} training sigmas, {self.sigma_min:.6g} to {self.sigma_max:.6g})"

    @classmethod
    def from_betas(
        cls,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        num_train_timesteps: int = 1000,
    ) -> Discrete:
        """The training sigmas of a diffusers config, float32 as its schedulers compute them (the defaults: Stable
        Diffusion 1.5's and SDXL's). ComfyUI forms them in float64, then rounds to float32: up to 1.3e-5 apart
        (relative) for SD 1.5's."""
        _train_timesteps("Discrete.from_betas", num_train_timesteps)
        betas = schedules.betas(num_train_timesteps, beta_start, beta_end, beta_schedule)
        return cls(schedules.vp_sigmas(schedules.alphas_cumprod(betas, rescale_betas_zero_snr=False)))

    @property
    def sigma_min(self) -> float:
        return self.sigmas[0].item()

    @property
    def sigma_max(self) -> float:
        return self.sigmas[-1].item()

    def timestep(self, sigma: float) -> float:
        return float((math.log(sigma) - self.log_sigmas).abs().argmin())

    def sigma(self, timesteps: torch.Tensor) -> torch.Tensor:
        t = timesteps.to(F64).clamp(0, len(self.sigmas) - 1)
        low, high = t.floor().long(), t.ceil().long()
        weight = t - t.floor()
        return ((1 - weight) * self.log_sigmas[low] + weight * self.log_sigmas[high]).exp()


class Flow:
    """A rectified-flow model's noise levels (ComfyUI's `ModelSamplingDiscreteFlow`): training sigmas shift(t / N) for
    t = 1 .. N, `sigma(t) = shift(t)` and `timestep(sigma) = sigma` for t in (0, 1]. As in ComfyUI, `timestep` is not
    the inverse of `sigma` when shift != 1 (it reads the sigma as the time), which `normal`'s last sigma shows."""

    def __init__(self, shift: float = 1.0, num_train_timesteps: int = 1000) -> None:
        if not isinstance(shift, (int, float)) or isinstance(shift, bool) or not math.isfinite(shift) or shift <= 0:
            raise ValueError(f"Flow: shift must be a finite number > 0, got {shift!r}.")
        _train_timesteps("Flow", num_train_timesteps)
        self.shift = float(shift)
        self.sigmas = self.sigma(torch.arange(1, num_train_timesteps + 1, dtype=F64) / num_train_timesteps)

    def __repr__(self) -> str:
        return f"Flow(shift={self.shift:g}, num_train_timesteps={len(self.sigmas)})"

    @property
    def sigma_min(self) -> float:
        return self.sigmas[0].item()

    @property
    def sigma_max(self) -> float:
        return self.sigmas[-1].item()

    def timestep(self, sigma: float) -> float:
        return sigma

    def sigma(self, timesteps: torch.Tensor) -> torch.Tensor:
        return schedules.shift_sigmas(timesteps.to(F64), self.shift)


Model = Discrete | Flow | torch.Tensor


# ------------------------------------------------------------------------------------------------- checks
def _table(owner: str, name: str, values: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """`values` as a finite 1-D float64 CPU tensor, or an error naming `name`."""
    if isinstance(values, torch.Tensor):
        if values.is_complex() or values.dtype == torch.bool:
            raise TypeError(f"{owner}: {name} must be real numbers, got a {values.dtype} tensor.")
        table = values.detach().to("cpu", F64).clone()  # the model's own copy, whatever the caller does with theirs
    else:
        try:
            table = torch.tensor([float(value) for value in values], dtype=F64)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{owner}: {name} must be a 1-D tensor or a sequence of numbers ({error}).") from None
    if table.dim() != 1:
        raise ValueError(f"{owner}: {name} must be 1-D, got shape {tuple(table.shape)}.")
    if not bool(torch.isfinite(table).all()):
        raise ValueError(f"{owner}: {name} must be finite, got {table[~torch.isfinite(table)][:3].tolist()}.")
    return table


def _model(owner: str, model: Model) -> Discrete | Flow:
    if isinstance(model, (Discrete, Flow)):
        return model
    if isinstance(model, (torch.Tensor, list, tuple)):
        return Discrete(model)
    raise TypeError(
        f"{owner}: model must be a Discrete (training sigmas), a Flow (shift) or a tensor of training sigmas, got "
        f"{type(model).__name__}."
    )


def _train_timesteps(owner: str, count: int) -> None:
    value = checks.as_integer(count)
    if value is None or not 2 <= value <= MAX_TRAIN_TIMESTEPS:
        raise ValueError(
            f"{owner}: num_train_timesteps must be an integer from 2 to {MAX_TRAIN_TIMESTEPS}, got {count!r}."
        )


def _steps(owner: str, steps: int) -> int:
    value = checks.as_integer(steps)
    if value is None or not 1 <= value <= MAX_INFERENCE_STEPS:
        raise ValueError(f"{owner}: steps must be an integer from 1 to {MAX_INFERENCE_STEPS}, got {steps!r}.")
    return value


def _with_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas.to(F64), sigmas.new_zeros(1, dtype=F64)])


# ---------------------------------------------------------------------------------------------- schedules
def simple(model: Model, steps: int) -> torch.Tensor:
    """Every (N / steps)-th training sigma from the largest down (ComfyUI's `simple`), then 0."""
    owner, steps = "simple", _steps("simple", steps)
    table = _model(owner, model).sigmas
    stride = len(table) / steps
    return _with_zero(table[[-(1 + int(i * stride)) for i in range(steps)]])


def ddim_uniform(model: Model, steps: int) -> torch.Tensor:
    """The training sigmas of DDIM's "uniform" timesteps, 1 + k * (N // steps) (Song et al. 2021, "Denoising Diffusion
    Implicit Models"; CompVis' `make_ddim_timesteps`, ComfyUI's `ddim_uniform`), largest first, then 0.

    As there, the stride is N // steps, so the table has ceil((N - 1) / stride) steps: more than `steps` where
    `steps` does not divide N (31 for 30 of 1000). A model whose second training sigma is 0 (within 1e-5) takes one
    more step and no appended 0, as ComfyUI does."""
    owner, steps = "ddim_uniform", _steps("ddim_uniform", steps)
    table = _model(owner, model).sigmas
    zero_first = math.isclose(table[1].item(), 0.0, abs_tol=_ZERO_SIGMA)
    stride = max(len(table) // (steps + 1 if zero_first else steps), 1)
    chosen = table[1::stride].flip(0)
    return chosen if zero_first else _with_zero(chosen)


def normal(model: Model, steps: int) -> torch.Tensor:
    """Timesteps evenly spaced from the largest sigma's to the smallest's, their sigmas, then 0 (k-diffusion's
    `DiscreteSchedule.get_sigmas`, Karras et al. 2022's "uniform" discretisation of the training time; ComfyUI's
    `normal`). Where the smallest sigma is 0 (within 1e-5) it ends the table instead of an appended 0."""
    owner, steps = "normal", _steps("normal", steps)
    sampling = _model(owner, model)
    start, end = sampling.timestep(sampling.sigma_max), sampling.timestep(sampling.sigma_min)
    end_sigma = sampling.sigma(torch.tensor([end], dtype=F64)).item()
    if math.isclose(end_sigma, 0.0, abs_tol=_ZERO_SIGMA):
        return sampling.sigma(schedules.np_linspace(start, end, steps + 1))
    return _with_zero(sampling.sigma(schedules.np_linspace(start, end, steps)))


def sgm_uniform(model: Model, steps: int) -> torch.Tensor:
    """`steps` timesteps evenly spaced from the largest sigma's towards the smallest's, the endpoint left out, their
    sigmas, then 0 (Stability AI's generative-models "sgm" discretisation; ComfyUI's `sgm_uniform`): the last step
    ends at 0 from one spacing above the smallest sigma."""
    owner, steps = "sgm_uniform", _steps("sgm_uniform", steps)
    sampling = _model(owner, model)
    start, end = sampling.timestep(sampling.sigma_max), sampling.timestep(sampling.sigma_min)
    return _with_zero(sampling.sigma(schedules.np_linspace(start, end, steps + 1)[:-1]))


def karras(model: Model, steps: int) -> torch.Tensor:
    """Karras et al. (2022), eq. 5 (rho = 7) between the model's smallest and largest sigma, then 0 (k-diffusion's
    `get_sigmas_karras`; the same spacing as `use_karras_sigmas`)."""
    owner, steps = "karras", _steps("karras", steps)
    sampling = _model(owner, model)
    return _with_zero(schedules.karras_sigmas(sampling.sigma_min, sampling.sigma_max, steps))


def exponential(model: Model, steps: int) -> torch.Tensor:
    """Sigmas evenly spaced in log sigma between the model's smallest and largest, then 0 (k-diffusion's
    `get_sigmas_exponential`; the same spacing as `use_exponential_sigmas`)."""
    owner, steps = "exponential", _steps("exponential", steps)
    sampling = _model(owner, model)
    return _with_zero(schedules.exponential_sigmas(sampling.sigma_min, sampling.sigma_max, steps))


def beta(model: Model, steps: int, space: str = "sigma") -> torch.Tensor:
    """Beta(0.6, 0.6) quantiles, "Beta Sampling is All You Need" (Lee et al. 2024), then 0.

    `space="sigma"`: sigma_min + q (sigma_max - sigma_min) at the quantiles of 1 - linspace(0, 1, steps), diffusers'
    `use_beta_sigmas` (the same function, `schedules.beta_sigmas`). `space="timestep"`: the training timesteps
    round(q (N - 1)) at the quantiles of 1 - k / steps, repeated timesteps dropped (so it may have fewer steps),
    their training sigmas: ComfyUI's `beta`."""
    owner, steps = "beta", _steps("beta", steps)
    sampling = _model(owner, model)
    if space == "sigma":
        return _with_zero(schedules.beta_sigmas(sampling.sigma_min, sampling.sigma_max, steps))
    if space != "timestep":
        raise ValueError(f"beta: space must be one of {BETA_SPACES}, got {space!r}.")
    a, b = schedules.BETA_SIGMAS_SHAPE
    last = len(sampling.sigmas) - 1
    timesteps = [round(_beta_ppf(1 - k * (1 / steps), a, b) * last) for k in range(steps)]  # numpy's linspace
    kept = [t for i, t in enumerate(timesteps) if i == 0 or t != timesteps[i - 1]]
    return _with_zero(sampling.sigmas[kept])


def _beta_ppf(q: float, a: float, b: float) -> float:
    """scipy's quantile where installed (as ComfyUI's), else the core's own (within 1e-12 of it)."""
    try:
        from scipy.stats import beta as distribution
    except ImportError:
        return beta_quantile(q, a, b)
    return float(distribution.ppf(q, a, b))


def kl_optimal(model: Model, steps: int) -> torch.Tensor:
    """sigma_i = tan((1 - i / (steps - 1)) atan(sigma_max) + i / (steps - 1) atan(sigma_min)), then 0: the schedule that
    minimises the KL divergence of the sampled distribution for Gaussian data (Sabour et al. 2024, "Align Your Steps",
    Theorem 3.1; AUTOMATIC1111 stable-diffusion-webui PR 15608, ComfyUI's `kl_optimal`). One step: sigma_max."""
    owner, steps = "kl_optimal", _steps("kl_optimal", steps)
    sampling = _model(owner, model)
    fraction = torch.arange(steps, dtype=F64) / max(steps - 1, 1)
    angles = fraction * math.atan(sampling.sigma_min) + (1 - fraction) * math.atan(sampling.sigma_max)
    return _with_zero(angles.tan())


def linear_quadratic(
    model: Model, steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> torch.Tensor:
    """Mochi's schedule (Genmo, github.com/genmoai/mochi, `infer.py`; diffusers' Mochi pipeline): in noise level
    1 - sigma, `linear_steps` (default steps // 2) steps linear from 0 to `threshold_noise`, then a quadratic to 1,
    continuous in value and slope; scaled by the model's largest sigma (ComfyUI's `linear_quadratic`), then 0.
    One step: [sigma_max, 0]."""
    owner, steps = "linear_quadratic", _steps("linear_quadratic", steps)
    sampling = _model(owner, model)
    if not isinstance(threshold_noise, (int, float)) or not 0 <= threshold_noise < 1:
        raise ValueError(f"{owner}: threshold_noise must be a number in [0, 1), got {threshold_noise!r}.")
    if steps == 1:
        return torch.tensor([sampling.sigma_max, 0.0], dtype=F64)
    linear = steps // 2 if linear_steps is None else checks.as_integer(linear_steps)
    if linear is None or not 1 <= linear < steps:
        raise ValueError(
            f"{owner}: linear_steps must be an integer from 1 to steps - 1 = {steps - 1}, got {linear_steps!r}."
        )
    quadratic = steps - linear
    excess = linear - threshold_noise * steps  # the quadratic part's noise above the linear part's slope, per step
    quadratic_coef = excess / (linear * quadratic**2)
    linear_coef = threshold_noise / linear - 2 * excess / quadratic**2
    constant = quadratic_coef * linear**2
    noise = [i * threshold_noise / linear for i in range(linear)]
    noise += [quadratic_coef * i**2 + linear_coef * i + constant for i in range(linear, steps)]
    return torch.tensor([1.0 - level for level in noise] + [0.0], dtype=F64) * sampling.sigma_max


def align_your_steps(model_type: str, steps: int, model: Model | None = None) -> torch.Tensor:
    """Align Your Steps (Sabour et al. 2024, "Align Your Steps: Optimizing Sampling Schedules in Diffusion Models"):
    the published 10-step schedule of `model_type` ("sd1.5", "sdxl" or "svd"), log-linearly interpolated to `steps`
    (the AYS project's `loglinear_interp`, as ComfyUI's `AlignYourStepsScheduler`), its last sigma replaced by 0.

    For SD 1.5 and SDXL the published schedule is training timesteps: their sigmas are read from `model` (default:
    `Discrete.from_betas()`, the scaled-linear 0.00085-0.012 schedule both models share); for SVD, its EDM sigmas
    (`model` must be None). At 10 steps the table is the published one exactly (no interpolation)."""
    owner, steps = "align_your_steps", _steps("align_your_steps", steps)
    if model_type in AYS_SIGMAS:
        if model is not None:
            raise ValueError(f"{owner}: model_type={model_type!r} publishes sigmas; leave model out (got a model).")
        levels = torch.tensor(AYS_SIGMAS[model_type], dtype=F64)
    elif model_type in AYS_TIMESTEPS:
        sampling = Discrete.from_betas() if model is None else _model(owner, model)
        if not isinstance(sampling, Discrete) or len(sampling.sigmas) <= AYS_TIMESTEPS[model_type][0]:
            raise ValueError(
                f"{owner}: model_type={model_type!r} publishes training timesteps up to "
                f"{AYS_TIMESTEPS[model_type][0]}; model must be a Discrete one with at least 1000 training sigmas."
            )
        levels = sampling.sigmas[list(AYS_TIMESTEPS[model_type])]
    else:
        raise ValueError(f"{owner}: model_type must be one of {AYS_MODELS}, got {model_type!r}.")
    if steps + 1 != len(levels):
        levels = _loglinear_interp(levels, steps + 1)
    levels = levels.clone()
    levels[-1] = 0.0
    return levels


def _loglinear_interp(levels: torch.Tensor, num: int) -> torch.Tensor:
    """Decreasing `levels` resampled to `num` points, linear in log sigma over their index scaled to [0, 1]: the AYS
    project's `loglinear_interp`, `exp(numpy.interp(linspace(0, 1, num), linspace(0, 1, L), log(levels)))` reversed,
    computed as numpy computes it."""
    log_levels = schedules.np_log(levels.flip(0))
    xp, x = schedules.np_linspace(0, 1, len(levels)), schedules.np_linspace(0, 1, num)
    low = (torch.searchsorted(xp, x, right=True) - 1).clamp(0, len(levels) - 2)
    slope = (log_levels[low + 1] - log_levels[low]) / (xp[low + 1] - xp[low])
    interpolated = torch.where(x >= xp[-1], log_levels[-1], slope * (x - xp[low]) + log_levels[low])
    return schedules.np_exp(interpolated).flip(0)


# ------------------------------------------------------------------------------------- for the schedulers
def nearest_timesteps(model: Model, sigmas: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """The training timesteps (int64) nearest in log sigma to each step's sigma, `sigmas[:-1]` (ComfyUI's
    `ModelSamplingDiscrete.timestep`): custom `timesteps` for the schedulers that take no custom sigmas."""
    owner = "nearest_timesteps"
    sampling = _model(owner, model)
    if not isinstance(sampling, Discrete):
        raise TypeError(f"{owner}: model must be a Discrete one (flow schedulers take the sigmas themselves).")
    table = _table(owner, "sigmas", sigmas)
    if len(table) < 2 or bool((table[:-1] <= 0).any()):
        raise ValueError(f"{owner}: sigmas must hold at least a step's start and end, the starts positive.")
    distances = (table[:-1, None].log() - sampling.log_sigmas[None, :]).abs()
    return distances.argmin(dim=1)


#: The schedules of (model, steps) by ComfyUI's scheduler name (read-only: constants, shared by every caller).
SCHEDULES: Mapping[str, Callable[[Model, int], torch.Tensor]] = MappingProxyType(
    {
        "simple": simple,
        "sgm_uniform": sgm_uniform,
        "karras": karras,
        "exponential": exponential,
        "ddim_uniform": ddim_uniform,
        "beta": beta,
        "normal": normal,
        "linear_quadratic": linear_quadratic,
        "kl_optimal": kl_optimal,
    }
)

__all__ = [
    "AYS_SIGMAS",
    "AYS_TIMESTEPS",
    "SCHEDULES",
    "Discrete",
    "Flow",
    "align_your_steps",
    "beta",
    "ddim_uniform",
    "exponential",
    "karras",
    "kl_optimal",
    "linear_quadratic",
    "nearest_timesteps",
    "normal",
    "sgm_uniform",
    "simple",
]
