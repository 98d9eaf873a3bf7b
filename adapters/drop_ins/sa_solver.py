"""The drop-in of `functional_sched.schedulers.sa_solver`: SA-Solver, with diffusers' read-outs of its solver state
(`model_outputs`, `timestep_list`, `lower_order_nums`, `last_sample`, `last_noise`) read from the
functional state. Edits to them are not taken (no pipeline makes any).

diffusers draws the step's noise at every step, in the model output's dtype, even where tau is 0 everywhere (its
generator advances alike): so does the drop-in. Its `step` returns the sample's dtype, as diffusers' does;
`add_noise` is diffusers' own (DDPM's, by timestep), on the drop-in's copy of its training tables.
"""

from __future__ import annotations

import diffusers
import torch

import functional_sched as fs
from functional_sched.schedulers.sa_solver import SASolver

from ..drop_in import _DropIn


class SASolverScheduler(_DropIn, diffusers.SASolverScheduler):
    """diffusers' `SASolverScheduler` on `functional_sched.SASolver`."""

    _functional_class = SASolver
    init_noise_sigma = 1.0

    def _output_dtype(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
        return sample.dtype

    def _noise(self, model_output, sample, generator, variance_noise, state):  # type: ignore[no-untyped-def]
        return fs.randn_tensor(
            model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
        )

    # ------------------------------------------------------------------------------------------------ read-outs
    def _filled(self) -> tuple[int, int]:
        """(steps taken, history entries filled) of the state."""
        functional = self._functional
        cursor = functional._cursor(self._state)
        level = cursor.level if cursor is not None else int(self._state.lower_order_nums[0])
        return functional.steps_taken(self._state), level

    @property
    def model_outputs(self) -> list[torch.Tensor | None]:
        order, state = self._functional.solver_order, self._state
        if state is None:
            return [None] * order
        filled = self._filled()[1]
        return [None if index < order - filled else entry for index, entry in enumerate(state.history)]

    @property
    def timestep_list(self) -> list[torch.Tensor | None]:
        order, state = self._functional.solver_order, self._state
        if state is None:
            return [None] * order
        step, filled = self._filled()
        return [None if index < order - filled else self.timesteps[step - order + index] for index in range(order)]

    @property
    def lower_order_nums(self) -> int:
        return 0 if self._state is None else self._filled()[1]

    @property
    def last_sample(self) -> torch.Tensor | None:
        return None if self._state is None else self._state.last_sample

    @property
    def last_noise(self) -> torch.Tensor:
        if self._state is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'last_noise' (no step taken yet)")
        return self._state.last_noise

    def _last_orders(self) -> tuple[int, int]:
        """The orders diffusers' last `step` set: its predictor's, and its plan for the next step's corrector."""
        if self._state is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'this_predictor_order'")
        functional, steps = self._functional, len(self.timesteps)
        step, filled = self._filled()
        index, level = step - 1, filled - 1  # the last step, and the warm-up it ran at (capped levels order alike)
        predictor, corrector = functional.predictor_order, functional.corrector_order
        if functional.lower_order_final:
            predictor, corrector = min(predictor, steps - index), min(corrector, steps - index + 1)
        return min(predictor, level + 1), min(corrector, level + 2)

    @property
    def this_predictor_order(self) -> int:
        return self._last_orders()[0]

    @property
    def this_corrector_order(self) -> int:
        return self._last_orders()[1]
