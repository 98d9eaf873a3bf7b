"""`DDPMWuerstchen`'s conformance table: Stable Cascade's prior and decoder (diffusers' defaults, as
`scripts/convert_stable_cascade.py` builds them; 20 and 10 steps in their pipelines), Wuerstchen's prior with its
custom stage C timesteps, then the schedule's options (`scaler` on either side of 1, `s`).

The reference is diffusers' class called as Stable Cascade's and Wuerstchen's pipelines call it: a loop over
`timesteps[:-1]`, each step given `t.expand(batch).to(latents.dtype)` (diffusers' `step` reads `timestep.size(0)`
and computes alpha_bar at the timestep as passed). Its drop-in is driven that way too, in `tests/test_wuerstchen.py`:
the suite's drop-in columns call `step` with one 0-d timestep per call over the whole table."""

from __future__ import annotations

from typing import Any

import diffusers
import numpy as np
import torch

import functional_sched as fs
from functional_sched.testing import Config, Schedule, Spec


def _stage_c(steps: int) -> dict[str, Any]:
    """Wuerstchen's prior pipeline's table (`pipelines/deprecated/wuerstchen/pipeline_wuerstchen_prior.py`'s
    DEFAULT_STAGE_C_TIMESTEPS, 29 steps: two thirds of its values from 1 to 2/3, the rest on to 0), for any count."""
    first = round((steps + 1) * 2 / 3)
    table = [*np.linspace(1.0, 2 / 3, first), *np.linspace(2 / 3, 0.0, steps + 2 - first)[1:]]
    return {"timesteps": [float(t) for t in table]}


def _descending(steps: int) -> dict[str, Any]:
    """steps + 1 ratios from 1 down to 0, denser near 0 (a custom table of `steps` steps)."""
    return {"timesteps": [float((1 - index / steps) ** 2) for index in range(steps + 1)]}


class DDPMWuerstchenScheduler(diffusers.DDPMWuerstchenScheduler):
    """diffusers' `DDPMWuerstchenScheduler` as the Stable Cascade and Wuerstchen pipelines drive it: `timesteps` are
    the ones the loop steps from (`table` holds diffusers' own), each step given the pipelines' ratio tensor. (It
    carries diffusers' name: `from_diffusers` maps it as diffusers' class.)"""

    @property
    def timesteps(self) -> torch.Tensor:
        return self.table[:-1]

    @timesteps.setter
    def timesteps(self, value: torch.Tensor) -> None:
        if value.numel() < 2:  # the loop would take no step (ours refuses such a table)
            raise ValueError("a pipeline's loop over timesteps[:-1] takes no step")
        if not bool(((value >= 0) & (value <= 1)).all()):  # ours refuses them (`DDPMWuerstchen._custom_range`)
            raise ValueError("the pipelines' timesteps are ratios in [0, 1]; past them diffusers' cosine wraps")
        self.table = value

    def step(
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> Any:
        ratio = timestep.expand(sample.shape[0]).to(sample.dtype)  # `t.expand(latents.size(0)).to(dtype)`
        return super().step(model_output, ratio, sample, generator=generator, return_dict=return_dict)

    def previous_timestep(self, timestep: torch.Tensor) -> torch.Tensor:
        # diffusers' own lookup, in its whole table.
        index = (self.table - timestep[0]).abs().argmin().item()
        return self.table[index + 1][None].expand(timestep.shape[0])


WUERSTCHEN = Spec(
    fs.DDPMWuerstchen,
    configs=(
        Config("stable-cascade-prior", {}, Schedule(steps=20)),
        Config("stable-cascade-decoder", {}, Schedule(steps=10)),
        Config("wuerstchen-prior-stage-c", {}, Schedule(steps=29, custom=_stage_c)),
        Config("scaler-2-custom", {"scaler": 2.0}, Schedule(custom=_descending)),
        Config("scaler-0.5-s-0.02", {"scaler": 0.5, "s": 0.02}),
    ),
    reference=lambda options: DDPMWuerstchenScheduler(**options),
    noise_dtype=None,  # diffusers draws in the model output's dtype
    drop_in_columns=False,
)
