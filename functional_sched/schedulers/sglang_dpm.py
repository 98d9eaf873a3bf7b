"""sglang's `DPMSolverMultistepScheduler`: a wrapper of diffusers' DPM-Solver (SANA, wan_animate_2), our
`DPMSolverMultistep` with the wrapper's defaults, the options it forwards, and its custom-sigmas schedule.

sglang 0.5.23's wrapper (`runtime/models/schedulers/scheduling_dpm_solver_multistep.py`) builds a diffusers scheduler
inside and forwards `step`, `set_timesteps` and `add_noise` to it. What differs from diffusers' class:
- defaults: `beta_schedule="scaled_linear"` (diffusers: "linear"), `flow_shift=None` (diffusers: 1.0; a flow
  schedule from a step count then fails, so it needs a shift);
- `use_dynamic_shifting` and `time_shift_type` are no parameters (its `**kwargs` takes and drops them), and keys a
  pipeline registers (`sigma_min`/`sigma_max`) land on the wrapper's config, which the inner scheduler never reads:
  none of them is an option here (`from_sglang` refuses them by name where they are set);
- `set_timesteps(sigmas=...)`, which diffusers' class lacks (wan_animate_2 passes Wan's shifted flow grid, whose
  first sigma is 1.0): the sigmas as given (no shift) then the final one (0, or for final_sigmas_type="sigma_min"
  the VP training schedule's smallest), in float32; the timesteps `int64(sigma * num_train_timesteps)`, truncated.
  The wrapper takes them for any config (on a VP schedule they are VP sigmas, the timesteps sigma * 1000 all the
  same) and ignores a step count or custom timesteps given with them: so does this class.
- `mu` reaches the inner scheduler, built without dynamic shifting, which asserts: refused.

The step is diffusers' (ours bit for bit, `DPMSolverMultistep`). sglang's `set_begin_index` is kept by the wrapper
and read by nothing (the inner scheduler finds where it stands by timestep): that is the drop-in's business
(`adapters/drop_ins/sglang_dpm.py`); a state here starts where `init(begin_index=...)` says.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch

from ..machinery import options
from ..machinery.options import Option, Optional, Real
from ..machinery.schedule import Schedule
from ..math import schedules
from . import common
from .dpm_solver import DPMSolverMultistep
from .multistep import MultistepScheduler

# sglang's defaults (diffusers': "linear", 1.0).
BETA_SCHEDULE = common.BETA_SCHEDULE.but(default="scaled_linear")
FLOW_SHIFT = Option(None, Optional(Real(above=0)), examples=(3.0, 5.0, 12.0))


@options.config
class SglangDPMSolverMultistep(DPMSolverMultistep):
    """Multistep DPM-Solver(++) as sglang's wrapper of diffusers' class runs it: `DPMSolverMultistep`'s update and
    schedule, sglang's defaults, and custom sigmas as sglang takes them (`init(sigmas=...)`: wan_animate_2's).

    Implements Lu et al. (2022), "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
    with sglang 0.5.23's options and schedule (diffusers 0.42.1's solver inside).
    """

    beta_schedule: str = BETA_SCHEDULE
    flow_shift: float | None = FLOW_SHIFT
    # Not options of sglang's wrapper: fixed at what its inner diffusers scheduler always has (no constructor
    # argument, no declaration: `from_sglang` refuses them by name).
    use_dynamic_shifting: bool = attrs.field(default=False, init=False)
    time_shift_type: str = attrs.field(default="exponential", init=False)
    sigma_min: float | None = attrs.field(default=None, init=False)
    sigma_max: float | None = attrs.field(default=None, init=False)

    reference_library: ClassVar[str] = "sglang"
    diffusers_name: ClassVar[str] = "DPMSolverMultistepScheduler"

    def _check_schedule(self, schedule: Schedule) -> None:
        owner = self.name
        if schedule.mu is not None:
            raise ValueError(
                f"{owner}: mu is not supported: sglang's wrapper never forwards use_dynamic_shifting to the diffusers "
                "scheduler inside, which then asserts it."
            )
        if schedule.sigmas is None:
            if self.use_flow_sigmas and self.flow_shift is None and schedule.num_inference_steps is not None:
                raise ValueError(
                    f"{owner}: use_flow_sigmas=True needs a flow_shift for a schedule of num_inference_steps (sglang's "
                    "default None fails in diffusers' set_timesteps); give flow_shift, or custom sigmas."
                )
            super()._check_schedule(schedule)
            return
        # Custom sigmas: their range, order and count as any custom table's (DPMSolverMultistep refuses them).
        MultistepScheduler._check_schedule(self, schedule)

    def _schedule(
        self, n: int | None, timesteps: torch.Tensor | None, sigmas: torch.Tensor | None, mu: float | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if sigmas is None:
            return super()._schedule(n, timesteps, sigmas, mu)
        return _custom_sigmas(self, sigmas)


def _custom_sigmas(scheduler: SglangDPMSolverMultistep, sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sglang's `_set_sigmas`: timesteps `int64(sigma * num_train_timesteps)` (float64, truncated), the sigmas as given
    then the final one (0, or the VP training schedule's smallest for final_sigmas_type="sigma_min"), float32. Custom
    timesteps given beside them are not used, as in sglang's wrapper."""
    given = sigmas.to(torch.float64)  # np.asarray(sigmas, dtype=np.float64)
    truncated = (given * scheduler.num_train_timesteps).to(torch.int64)
    if scheduler.final_sigmas_type == "sigma_min":
        last = schedules.vp_sigmas(scheduler._training_cumprod())[0].to(torch.float64)
    else:
        last = given.new_zeros(())
    return truncated, torch.cat([given, last.reshape(1)]).to(torch.float32)
