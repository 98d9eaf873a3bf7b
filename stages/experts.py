"""`TwoExperts`: Wan 2.2's mixture of two denoisers, switched at a boundary timestep, sharing one solver history."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch

from .denoise import Denoise, Model, guided_output, scheduler_of
from .request import Req


def _positive_ratio(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"TwoExperts: boundary_ratio must be in (0, 1], got {value!r}.")


@attrs.frozen
class TwoExperts(Denoise):
    """Denoising with a high-noise expert (`model`) and a low-noise expert (`low_noise_model`), as diffusers'
    `WanPipeline` with `boundary_ratio` (Wan 2.2): a row whose timestep is `>= boundary_ratio *
    num_train_timesteps` goes to `model` with the request's `guidance_scale`, any other row to `low_noise_model`
    with `req.extras["guidance_scale_2"]` (default: `guidance_scale`). The scheduler state, and with it a multistep
    solver's history, runs on across the switch, as the one scheduler does in diffusers.

    In `step_many`, requests on either side of the boundary share the scheduler call: each expert sees only its
    requests, in one model call.
    """

    low_noise_model: Model = attrs.field(kw_only=True)
    boundary_ratio: float = attrs.field(kw_only=True, validator=_positive_ratio)

    def boundary_timestep(self, req: Req) -> float:
        return self.boundary_ratio * scheduler_of(req, self.scheduler, "TwoExperts").num_train_timesteps

    def predict(self, reqs: Sequence[Req], model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        counts = [req.rows for req in reqs]
        high_rows = (timestep >= self.boundary_timestep(reqs[0])).tolist()  # diffusers' `t >= boundary`, per row
        inputs, steps = model_input.split(counts), timestep.split(counts)
        sides: dict[bool, list[int]] = {True: [], False: []}
        start = 0
        for index, count in enumerate(counts):
            side = high_rows[start : start + count]
            if side.count(side[0]) != count:
                raise ValueError(
                    "TwoExperts: the rows of one request are on both sides of the boundary; give each request's rows "
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
                req.guidance_scale if high else req.extras.get("guidance_scale_2", req.guidance_scale) for req in group
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
