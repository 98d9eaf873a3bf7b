"""The pass-through: sglang's `ComfyUIPassThroughScheduler`, a scheduler that computes nothing.

In sglang's ComfyUI mode (`runtime/pipelines_core/comfyui_mode.py`) ComfyUI owns the schedule and the sampler and
calls sglang once per model evaluation; sglang runs the DiT (with guidance) and hands ComfyUI the model's output
(`batch.noise_pred`, kept by its denoising stage before the scheduler step), whose `step` returns the latents it was
given unchanged. A stage can run such model-only requests on this class: its step returns a copy of the sample (and,
with `denoised=True`, a copy of the model's output: what ComfyUI's sampler receives), its state counts the calls.

sglang 0.5.23's schedule (`set_timesteps`): the caller's timesteps (a list truncated to int64; a tensor kept as it
is), or one timestep 0 where none are given: `num_inference_steps` and custom sigmas are not used. Here a tensor of
float32 (or a half type, or integers) keeps its dtype and values; a list, an array or a float64 tensor (which the
schedule cannot tell apart) is truncated to int64. There is no noise level: the sigma table is zeros, `add_noise`
returns a copy of the clean samples (sglang's returns them), `scale_model_input` the sample.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..machinery import checks, host, options
from ..machinery.plan import Plan, as_dtype, single_plan
from ..machinery.record import record
from ..machinery.scheduler import Scheduler
from . import common


@record(host=("cursor",))
class PassThroughState:
    plan: Plan
    step_index: torch.Tensor  # [R], int64: the calls made
    fingerprint: torch.Tensor  # scalar, int64: the step options this state was built for
    cursor: host.Cursor | None  # no leaf: where the host knows this state stands (the eager fast path)


@options.config
class ComfyUIPassThrough(Scheduler):
    """The identity step, for model-only requests whose sampler runs elsewhere (sglang's ComfyUI mode): `step`
    returns the sample unchanged (a copy) and counts the call; the model's output is the caller's result.

    No algorithm to cite: the sampler is the external one's (ComfyUI's).
    """

    num_train_timesteps: int = common.NUM_TRAIN_TIMESTEPS

    state_type: ClassVar[type] = PassThroughState
    reference_library: ClassVar[str] = "sglang"
    diffusers_name: ClassVar[str] = "ComfyUIPassThroughScheduler"
    # One column of zeros: nothing to plan, but a state's layout (and its serialised form) has a coefficient table.
    plan_columns: ClassVar[int] = 1

    # The caller's timesteps label its model calls, in any order, repeated or not (sglang takes them as they come and
    # never looks one up); they are checked to lie in the training range. Custom sigmas are checked as any schedule's
    # and not used (sglang's `set_timesteps` drops them).
    _custom_tables_decrease: ClassVar[bool] = False
    _looks_up_first_timestep: ClassVar[bool] = False

    def _custom_range(self, name: str) -> tuple[float, float, bool]:
        return (0, self.num_train_timesteps, False) if name == "timesteps" else (0.0, 1.0, False)

    def _step_options(self) -> tuple[Any, ...]:
        return ()

    def _alpha_sigma(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ones_like(sigma), torch.zeros_like(sigma)  # no noise level: x = x0

    def _build_plan(
        self,
        num_inference_steps: int | None,
        timesteps: torch.Tensor | None,
        sigmas: torch.Tensor | None,
        mu: float | None,
        dtype: torch.dtype,
    ) -> Plan:
        if timesteps is None:
            table = torch.zeros(1, dtype=torch.int64)
        elif timesteps.dtype == torch.float64:  # a list or an array: torch.tensor(timesteps, dtype=torch.long)
            table = timesteps.to(torch.int64)
        else:
            table = timesteps.clone()
        return self._plan_from_tables(table, torch.zeros(len(table) + 1, dtype=dtype))

    def _plan_from_tables(self, timesteps: torch.Tensor, sigmas: torch.Tensor) -> Plan:
        return single_plan(timesteps, sigmas, sigmas.new_zeros(len(timesteps), 1, self.plan_columns))

    def add_noise(self, state: Any, original_samples: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """A copy of `original_samples`: the pass-through adds no noise (sglang's returns the samples)."""
        if checks.checking():
            self._require_state(state, "add_noise")
            checks.check_rows(self.name, "original_samples", original_samples, *self._rows_and_device(state))
            checks.check_like(self.name, "noise", noise, original_samples, "original_samples")
        return original_samples.clone()

    def step(
        self,
        state: PassThroughState,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        denoised: bool = False,
    ) -> tuple[torch.Tensor, PassThroughState] | tuple[torch.Tensor, PassThroughState, torch.Tensor]:
        """`(sample, new_state)`: a copy of the sample, one call counted; with `denoised=True` also a copy of the
        model's output in the sample's dtype (what the external sampler takes; no x0 is formed here)."""
        cursor = self._cursor(state)
        if checks.checking(eager=cursor is not None):
            self._check_step_rows(state, model_output, sample, cursor, noise, denoised)
        self._coefficients(state, sample, cursor)  # none to read: what a finished state raises, as every class
        new_state = state.replace(**self._advanced(state, cursor))
        if denoised:
            output = as_dtype(model_output, sample.dtype)
            return sample.clone(), new_state, output.clone() if output is model_output else output
        return sample.clone(), new_state
