"""`TwoExperts`: Wan 2.2's mixture of two denoisers, switched at a boundary timestep, sharing one solver history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch

from functional_sched.machinery import checks

from .denoise import Denoise, Model, guided_output, scheduler_of
from .request import Req
from .stepping import is_callable

#: extras key: the guidance scale of the low-noise expert (default: the request's `guidance_scale`).
GUIDANCE_SCALE_2 = "guidance_scale_2"


def _ratio(value: Any) -> float:
    ratio = checks.real("TwoExperts", "boundary_ratio", value)
    if not 0 < ratio <= 1:
        raise ValueError(f"TwoExperts: boundary_ratio must be in (0, 1], got {ratio!r}.")
    return ratio


@attrs.frozen
class TwoExperts(Denoise):
    """Denoising with a high-noise expert (`model`) and a low-noise expert (`low_noise_model`), as diffusers'
    `WanPipeline` with `boundary_ratio` (Wan 2.2): a row whose timestep is `>= boundary_ratio *
    num_train_timesteps` goes to `model` with the request's `guidance_scale`, any other row to `low_noise_model`
    with `req.extras["guidance_scale_2"]` (None or absent: `guidance_scale`). The scheduler state, and with it a
    multistep solver's history, runs on across the switch, as the one scheduler does in diffusers.

    In `step_many`, requests on either side of the boundary share the scheduler call: each expert sees only its
    requests, in one model call.

    sglang (0.5.23) serves Wan 2.2 A14B (its `WanPipeline`, `WanImageToVideoPipeline`) with this loop in its
    `DenoisingStage` on `FlowUniPCMultistepScheduler(shift=flow_shift)`: ours `FlowUniPCMultistep(shift=flow_shift)`
    (`from_sglang` maps it), whose truncated integer timesteps put the switch where sglang's do (at some step
    counts, one step away from diffusers' UniPC grid). sglang compares `int(t)` with the boundary, which is `t` for
    those integer timesteps. T2V A14B (shift 12, boundary_ratio 0.875, guidance 4.0 / guidance_scale_2 3.0) and
    I2V A14B (shift 5, 0.9, 3.5 / 3.5) are bit-identical to sglang's loop at every step
    (`tests/test_sglang_stages.py`).
    """

    low_noise_model: Model = attrs.field(kw_only=True, validator=is_callable)
    boundary_ratio: float = attrs.field(kw_only=True, converter=_ratio)

    def boundary_timestep(self, req: Req) -> float:
        return self.boundary_ratio * scheduler_of(req, self.scheduler, "TwoExperts").num_train_timesteps

    def check(self, label: str, req: Req) -> None:
        """`Denoise.check`, and the low-noise expert's guidance scale (`extras["guidance_scale_2"]`) a finite number."""
        super().check(label, req)
        if req.extras.get(GUIDANCE_SCALE_2) is not None:
            checks.real(label, f"extras[{GUIDANCE_SCALE_2!r}]", req.extras[GUIDANCE_SCALE_2])

    def predict(
        self, reqs: Sequence[Req], model_input: torch.Tensor, timestep: torch.Tensor, labels: Sequence[str]
    ) -> torch.Tensor:
        counts = [req.rows for req in reqs]
        high_rows = (timestep >= self.boundary_timestep(reqs[0])).tolist()  # diffusers' `t >= boundary`, per row
        inputs, steps = model_input.split(counts), timestep.split(counts)
        sides: dict[bool, list[int]] = {True: [], False: []}
        start = 0
        for index, count in enumerate(counts):
            side = high_rows[start : start + count]
            if side.count(side[0]) != count:
                raise ValueError(
                    f"{labels[index]}: the request's rows are on both sides of the boundary; give each request's rows "
                    "one schedule and one step (split the request)."
                )
            sides[side[0]].append(index)
            start += count
        outputs: list[torch.Tensor | None] = [None] * len(reqs)
        for high, members in sides.items():
            if not members:
                continue
            group = [reqs[index] for index in members]
            scales = [
                req.guidance_scale if high or req.extras.get(GUIDANCE_SCALE_2) is None else req.extras[GUIDANCE_SCALE_2]
                for req in group
            ]
            output = guided_output(
                self.model if high else self.low_noise_model,
                group,
                torch.cat([inputs[index] for index in members]),
                torch.cat([steps[index] for index in members]),
                scales,
            )
            for index, piece in zip(members, output.split([counts[index] for index in members]), strict=True):
                outputs[index] = piece
        return torch.cat(outputs)  # type: ignore[arg-type]
