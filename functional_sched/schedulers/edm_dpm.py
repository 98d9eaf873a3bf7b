"""DPM-Solver++ on EDM's preconditioned parametrisation: diffusers' `EDMDPMSolverMultistepScheduler` (EDM-trained
models) and `CosineDPMSolverMultistepScheduler` (Stable Audio Open: the SDE variant, with Brownian-tree noise and
the cosine noise condition 2 atan(sigma) / pi).

Both are DPM-Solver++ multistep on x = x0 + sigma eps (alpha = 1, lambda = -log sigma), whose x0 is EDM's
c_skip x + c_out F (`edm.EDMScheduler`). The update is `DPMSolverMultistep`'s, the same plan columns and the same
step, with three more columns (c_in, c_skip, c_out); the multistep machinery (history buffers, warm-up, checks) is
`MultistepScheduler`'s. Those classes declare the VP training schedule's options (betas), which these classes do not
have, so the classes here take their methods, not their options. As diffusers, neither upcasts the sample: the
arithmetic is the sample's and the model output's dtype against 0-d float32 coefficients.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.brownian import TOLERANCE, Query
from ..machinery.options import Choice, Integer, Option
from ..machinery.plan import Plan
from ..machinery.record import record
from ..math import predictions
from . import common
from .dpm_solver import NOISE, SOLVER_TYPES, DPMSolverMultistep
from .edm import PREDICTION_TYPE, RHO, SIGMA_DATA, SIGMA_MAX, SIGMA_MIN, SIGMA_SCHEDULE, EDMScheduler
from .multistep import MultistepScheduler

# The preconditioning's columns, after DPM-Solver's: c_in, c_skip and c_out at the step's sigma.
C_IN, C_SKIP, C_OUT = range(NOISE + 1, NOISE + 4)


@record(host=("cursor",))
class EDMDPMSolverState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64
    lower_order_nums: torch.Tensor  # [R], int64: steps taken, capped at solver_order (the warm-up level)
    history: tuple[torch.Tensor, ...]  # solver_order x [R, ...]: converted model outputs (x0), newest last
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


class _EDMDPMSolver(EDMScheduler):
    """What the two classes share: DPM-Solver++'s plan and step on EDM's schedule and preconditioning."""

    data_prediction: ClassVar[bool] = True
    plan_columns: ClassVar[int] = C_OUT + 1
    _input_column: ClassVar[int] = C_IN
    #: diffusers' EDM DPM-Solvers step the sample in its own dtype.
    _upcasts_sample: ClassVar[bool] = False
    _zero_fields: ClassVar[tuple[str, ...]] = ()

    # The multistep machinery and DPM-Solver++'s update, as `DPMSolverMultistep` has them.
    _start = MultistepScheduler._start
    _warmup = MultistepScheduler._warmup
    _kept = MultistepScheduler._kept
    _denoised = MultistepScheduler._denoised
    _check = MultistepScheduler._check
    _plan_from_tables = MultistepScheduler._plan_from_tables
    _orders = DPMSolverMultistep._orders
    step = DPMSolverMultistep.step

    def _table(self, sigmas: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        table = DPMSolverMultistep._table(self, sigmas, orders)  # type: ignore[arg-type]
        edm = torch.stack(self._preconditioning(sigmas[:-1]), dim=-1)
        return torch.cat([table, edm[:, None].expand(-1, table.shape[1], -1)], dim=-1)

    def _integrates_data(self) -> bool:
        return True

    def _converts_by_identity(self) -> bool:
        return False  # c_skip x + c_out F is always a new tensor

    def _convert(self, model_output: torch.Tensor, sample: torch.Tensor, c: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """diffusers' `convert_model_output`: EDM's x0 (thresholded if configured)."""
        x0 = self._preconditioned(model_output, sample, c[C_SKIP], c[C_OUT])
        if getattr(self, "thresholding", False):
            x0 = predictions.threshold(x0, self.dynamic_thresholding_ratio, self.sample_max_value)
        return x0

    def _check_inputs(self, model_output: torch.Tensor, sample: torch.Tensor, noise: torch.Tensor | None) -> None:
        if self.stochastic:
            checks.check_noise(self.name, f"{self.name} is stochastic and", noise, sample)


@options.config
class EDMDPMSolverMultistep(_EDMDPMSolver):
    """Multistep DPM-Solver++ of orders 1-3 (ODE) or 1-2 (SDE) on EDM's Karras or exponential sigmas, with EDM's
    preconditioned data prediction. The SDE variant needs `noise=` (standard normal like the sample, in the converted
    output's dtype: the sample's and model output's promoted, as diffusers draws it).

    Implements Lu et al. (2022), "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
    on the parametrisation of Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based Generative
    Models", with diffusers 0.42.1's options and schedule.
    """

    sigma_min: float = SIGMA_MIN
    sigma_max: float = SIGMA_MAX
    sigma_data: float = SIGMA_DATA
    sigma_schedule: str = SIGMA_SCHEDULE
    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    prediction_type: str = PREDICTION_TYPE
    rho: float = RHO
    solver_order: int = common.SOLVER_ORDER
    thresholding: bool = common.THRESHOLDING
    dynamic_thresholding_ratio: float = common.DYNAMIC_THRESHOLDING_RATIO
    sample_max_value: float = common.SAMPLE_MAX_VALUE
    algorithm_type: str = Option("dpmsolver++", Choice("dpmsolver++", "sde-dpmsolver++"))
    solver_type: str = Option("midpoint", Choice(*SOLVER_TYPES))
    lower_order_final: bool = common.LOWER_ORDER_FINAL
    euler_at_final: bool = Option(False, options.Flag())
    final_sigmas_type: str = common.FINAL_SIGMAS_TYPE

    state_type: ClassVar[type] = EDMDPMSolverState
    diffusers_name: ClassVar[str] = "EDMDPMSolverMultistepScheduler"

    @property
    def stochastic(self) -> bool:
        """Whether `step` takes fresh noise: the SDE variant."""
        return self.algorithm_type == "sde-dpmsolver++"

    def _check_options(self) -> None:
        super()._check_options()
        if self.stochastic and self.solver_order == 3:
            raise ValueError(
                f"{self.name}: algorithm_type='sde-dpmsolver++' has no third-order update (diffusers' fails with "
                "UnboundLocalError at its first third-order step); use solver_order <= 2 or "
                "algorithm_type='dpmsolver++'."
            )

    def _step_options(self) -> tuple[Any, ...]:
        conversion = (self.prediction_type, self.thresholding, self.dynamic_thresholding_ratio, self.sample_max_value)
        return (self.solver_order, *conversion, self.algorithm_type)


@options.config
class CosineDPMSolverMultistep(_EDMDPMSolver):
    """Multistep SDE-DPM-Solver++ of orders 1-2 on EDM's preconditioning with the cosine noise condition
    c_noise = 2 atan(sigma) / pi (Stable Audio Open). Stochastic at every step, the last included: `noise=` is the
    Brownian increment over the step's sigma interval over its root length, from a tree over [sigma_min, sigma_max]
    (`functional_sched.brownian_noise(sched, state, like, seed)`, with diffusers' seed `generator.initial_seed()`).

    Implements the SDE variant of DPM-Solver++ (2M) from Lu et al. (2022), "DPM-Solver++: Fast Solver for Guided
    Sampling of Diffusion Probabilistic Models", on the parametrisation of Karras et al. (2022), "Elucidating the
    Design Space of Diffusion-Based Generative Models", with diffusers 0.42.1's options and schedule.
    """

    sigma_min: float = SIGMA_MIN.but(default=0.3, examples=(0.002,))
    sigma_max: float = SIGMA_MAX.but(default=500.0, examples=(80.0,))
    sigma_data: float = SIGMA_DATA.but(default=1.0, examples=(0.5,))
    sigma_schedule: str = SIGMA_SCHEDULE.but(default="exponential")
    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS
    # diffusers has no third-order update here (its step leaves the sample unset: UnboundLocalError).
    solver_order: int = common.SOLVER_ORDER.but(domain=Integer(minimum=1, maximum=2), examples=(1,))
    prediction_type: str = PREDICTION_TYPE.but(default="v_prediction")
    rho: float = RHO
    solver_type: str = Option("midpoint", Choice(*SOLVER_TYPES))
    lower_order_final: bool = common.LOWER_ORDER_FINAL
    euler_at_final: bool = Option(False, options.Flag())
    final_sigmas_type: str = common.FINAL_SIGMAS_TYPE

    state_type: ClassVar[type] = EDMDPMSolverState
    diffusers_name: ClassVar[str] = "CosineDPMSolverMultistepScheduler"

    @property
    def stochastic(self) -> bool:
        """Always: every step adds Brownian noise."""
        return True

    def _step_options(self) -> tuple[Any, ...]:
        return (self.solver_order, self.prediction_type)

    def _noise_condition(self, sigmas: torch.Tensor) -> torch.Tensor:
        """c_noise = 2 atan(sigma) / pi, as diffusers' `precondition_noise` forms it."""
        return sigmas.atan() / math.pi * 2

    def _tree_range(self) -> tuple[float, float]:
        """The range of diffusers' tree: sigma_min and sigma_max as 0-d float32 tensors make them."""
        low, high = (float(torch.tensor(value, dtype=torch.float32)) for value in (self.sigma_min, self.sigma_max))
        return low, high

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        # torchsde resolves its tree to TOLERANCE, on a grid rounded to as many decimals: an interval (clamped to the
        # tree's range, as torchsde clamps it) shorter than that, but not empty, splits without end (diffusers'
        # loop dies with RecursionError there, e.g. into sigma 0 from a last sigma a rounding above sigma_min).
        decimals = round(-math.log10(TOLERANCE))
        low, high = (round(value, decimals) for value in self._tree_range())
        table = sigmas.tolist()
        for index, ends in enumerate(itertools.pairwise(table)):
            start, end = (min(max(value, low), high) for value in sorted(ends))
            if 0 < end - start < TOLERANCE:
                raise ValueError(
                    f"{self.name}: step {index} of {len(table) - 1} (sigma {ends[0]:.6g} -> {ends[1]:.6g}) queries the "
                    f"Brownian tree over [{start:.8g}, {end:.8g}] within its range [{low:g}, {high:g}], shorter than "
                    f"its tolerance {TOLERANCE:g}: torchsde cannot resolve it (diffusers 0.42.1 fails with "
                    "RecursionError). Change sigma_min, rho, the sigma schedule or the step count."
                )
        return super()._plan_from_tables(timesteps, sigmas)

    def _brownian_queries(self, state: Any) -> list[Query]:
        """Per row, where diffusers queries its tree at this step: the tree's range (sigma_min, sigma_max as 0-d
        float32 tensors make them) and the step's interval (sigma_i, sigma_{i+1}). Host reads."""
        self._require_state(state, "brownian_noise")
        low, high = self._tree_range()
        cursor = self._cursor(state)
        if cursor is not None:
            if cursor.step >= cursor.owned.host.steps:
                checks.raise_finished(self.name, state)
            table = cursor.owned.host.plan.sigmas[0]
            return [Query(low, high, table[cursor.step], table[cursor.step + 1])] * cursor.owned.rows
        with host.plain():
            sigmas = state.plan.sigmas.detach().cpu()
            steps = state.step_index.detach().cpu().tolist()
        queries = []
        for row, step in enumerate(steps):
            table = sigmas[row if sigmas.shape[0] > 1 else 0]
            if not 0 <= step < table.shape[0] - 1:
                checks.raise_finished(self.name, state)
            queries.append(Query(low, high, table[step], table[step + 1]))
        return queries
