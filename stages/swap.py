"""`ScheduleSwap`: a distilled schedule swapped in for part of a request's regular schedule, then swapped back."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from functional_sched import FlowMatchEulerDiscrete
from functional_sched.machinery.checks import shown

from .denoise import Denoise, check_state, require_prepared, scheduler_of
from .request import Req
from .stepping import Stepped, float_tuple, integer_option, is_flag, labelled, step_grouped, stream_seed

#: extras key: the regular state, parked while the distilled steps run.
PARKED_STATE = "swap_parked_state"
#: The noise stream of the distilled steps (the regular steps draw stream 0).
DISTILLED_STREAM = 1
#: How far (absolute) `sigmas`' ends may lie from the regular sigmas they replace.
SIGMA_TOLERANCE = 1e-6


def _is_denoise(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, Denoise):
        raise TypeError(
            f"ScheduleSwap: {attribute.name} must be a Denoise stage (its model and scheduler), got {shown(value)}."
        )


@attrs.frozen
class ScheduleSwap(Stepped):
    """A request's regular schedule up to step `swap_at`, then `len(sigmas) - 1` distilled steps over `sigmas` (from
    the regular sigma at `swap_at` down to the regular sigma at `resume_at`), then the regular schedule again from
    step `resume_at` to its end: a few distilled steps inside a regular schedule, as audio-video pipelines such as
    LTX-2 run them.

    `regular` and `distilled` are denoising stages, each with its model (the distilled one may be a distilled
    model) and a FlowMatchEulerDiscrete scheduler (the regular one may be the request's own). The regular state is
    only its step index, so it resumes exactly at `resume_at` and nothing is lost across the swap; multistep solvers
    are refused, because their history would hold model outputs from before the distilled steps moved the sample.
    The distilled scheduler must take `sigmas` as given (shift 1, no dynamic shifting or sigma spacing),
    deterministic or `stochastic_sampling` (x0, then renoise, as DMD); its last step lands on `sigmas[-1]`, and it
    draws noise stream 1 (`stream_seed`). The ends of `sigmas` must equal the request's regular sigmas (within
    `SIGMA_TOLERANCE`), checked when it swaps in. The distilled steps run without classifier-free guidance
    (guidance-distilled models take none) unless `distilled_guidance`.

    The record: while the distilled steps run, `req.state` is the distilled state and `extras[PARKED_STATE]` the
    regular one; otherwise `req.state` is the regular state.
    """

    regular: Denoise = attrs.field(validator=_is_denoise)
    distilled: Denoise = attrs.field(validator=_is_denoise)
    sigmas: tuple[float, ...] = attrs.field(converter=float_tuple("ScheduleSwap", "sigmas"))
    swap_at: int = attrs.field(converter=integer_option("ScheduleSwap", "swap_at", 0))
    resume_at: int = attrs.field(converter=integer_option("ScheduleSwap", "resume_at", 0))
    distilled_guidance: bool = attrs.field(default=False, validator=is_flag)

    def __attrs_post_init__(self) -> None:
        if self.regular.scheduler is not None:
            _check_flow("ScheduleSwap", "regular", self.regular.scheduler)
        _check_flow("ScheduleSwap", "distilled", self.distilled.scheduler)
        if not 0 <= self.swap_at < self.resume_at:
            raise ValueError(
                f"ScheduleSwap: need 0 <= swap_at < resume_at, got swap_at={self.swap_at}, resume_at={self.resume_at}."
            )
        if len(self.sigmas) < 2:
            raise ValueError(
                "ScheduleSwap: sigmas runs from the regular sigma at swap_at to the one at resume_at, so it needs at "
                f"least 2 values; got {self.sigmas}."
            )
        planned = labelled("ScheduleSwap", lambda: self.distilled.scheduler.plan(sigmas=self.sigmas)).sigmas[0, :-1]
        if not torch.equal(planned, torch.tensor(self.sigmas, dtype=planned.dtype)):
            raise ValueError(
                f"ScheduleSwap: the distilled scheduler turns sigmas {self.sigmas} into {tuple(planned.tolist())}; "
                "use one that takes them as given (FlowMatchEulerDiscrete with shift=1.0, no dynamic shifting or "
                "karras/exponential/beta sigmas)."
            )

    @property
    def distilled_steps(self) -> int:
        return len(self.sigmas) - 1

    def done(self, req: Req) -> bool:
        return PARKED_STATE not in req.extras and self.regular.done(req)

    def check(self, label: str, req: Req) -> None:
        """Before a model runs: the request as the stage that steps it next checks it (the regular stage, with a
        FlowMatchEulerDiscrete; the distilled one while the regular state is parked, which must be the regular
        scheduler's state, with the request's rows)."""
        require_prepared(req, label)
        sched = _check_flow(label, "regular", scheduler_of(req, self.regular.scheduler, label))
        if PARKED_STATE not in req.extras:
            self.regular.check(label, req)
            return
        check_state(label, f"extras[{PARKED_STATE!r}]", req.extras[PARKED_STATE], sched, req.latents)
        self.distilled.check(label, self._distilled_view(req))

    def _step(self, reqs: list[Req], labels: list[str]) -> list[Req]:
        """One step of each request (swapped in or back first where it is due): those in the distilled window
        batched by the distilled stage, the others by the regular one."""
        swapped = [self._swapped(label, req) for req, label in zip(reqs, labels, strict=True)]
        return step_grouped(swapped, labels, lambda req: PARKED_STATE in req.extras, self._step_phase)

    def _step_phase(self, swapped: bool, reqs: list[Req], labels: list[str]) -> list[Req]:
        if not swapped:
            return self.regular._step(reqs, labels)
        views = self.distilled._step([self._distilled_view(req) for req in reqs], labels)
        return [req.evolve(latents=view.latents, state=view.state) for req, view in zip(reqs, views, strict=True)]

    def _distilled_view(self, req: Req) -> Req:
        """The request as the distilled stage steps it: its scheduler, noise stream 1, no guidance unless asked."""
        view = req.evolve(scheduler=None, seed=stream_seed(req.seed, DISTILLED_STREAM))
        return view if self.distilled_guidance else view.evolve(negative_prompt_embeds=None)

    def _swapped(self, label: str, req: Req) -> Req:
        """The request checked, with the distilled schedule swapped in or the regular one back where it is due."""
        self.check(label, req)
        parked = req.extras.get(PARKED_STATE)
        if parked is not None:
            if self.distilled.scheduler.steps_taken(req.state) < self.distilled_steps:
                return req
            state = parked.replace(step_index=torch.full_like(parked.step_index, self.resume_at))
            extras = {key: value for key, value in req.extras.items() if key != PARKED_STATE}
            return req.evolve(state=state, extras=extras)
        sched = scheduler_of(req, self.regular.scheduler, label)
        taken = sched.steps_taken(req.state)
        if taken >= self.resume_at:
            return req
        if taken > self.swap_at:
            raise ValueError(
                f"{label}: the request is at step {taken}, inside the swapped window ({self.swap_at}, "
                f"{self.resume_at}); start it at or before swap_at, or at or after resume_at."
            )
        total = taken + sched.steps_left(req.state)
        if total <= self.resume_at:
            raise ValueError(
                f"{label}: the request's regular schedule has {total} steps, so it cannot resume at step "
                f"{self.resume_at}; give it more steps or swap earlier."
            )
        if taken < self.swap_at:
            return req
        self._check_ends(label, sched.sigmas(req.state))
        distilled = self.distilled.scheduler.init(sample=req.latents, sigmas=self.sigmas)
        return req.evolve(state=distilled).with_extras(**{PARKED_STATE: req.state})

    def _check_ends(self, label: str, regular: torch.Tensor) -> None:
        """`sigmas` starts at the regular sigma at swap_at and ends at the one at resume_at (every row's)."""
        for index, value, name in ((self.swap_at, self.sigmas[0], "first"), (self.resume_at, self.sigmas[-1], "last")):
            found = regular[..., index].double()
            if not bool(((found - value).abs() <= SIGMA_TOLERANCE).all()):
                raise ValueError(
                    f"{label}: the {name} distilled sigma is {value}, but the request's regular sigma at step "
                    f"{index} is {found.unique().tolist()}; the distilled sigmas must run from the regular sigma at "
                    f"swap_at={self.swap_at} to the one at resume_at={self.resume_at}."
                )


_WHY_FLOW = {
    "regular": "a multistep solver's history would not describe the sample after the distilled steps",
    "distilled": "it steps the distilled sigmas as they are given",
}


def _check_flow(label: str, role: str, sched: object) -> FlowMatchEulerDiscrete:
    if not isinstance(sched, FlowMatchEulerDiscrete):
        raise ValueError(
            f"{label}: the {role} scheduler must be FlowMatchEulerDiscrete, got {type(sched).__name__}; "
            f"{_WHY_FLOW[role]}."
        )
    return sched
