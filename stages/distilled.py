"""`DistilledDenoise`: few-step sampling of a distilled flow model, x0 then renoise, over a fixed timestep list."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import attrs

from functional_sched import FlowMatchEulerDiscrete

from .denoise import Denoise, scheduler_of
from .request import Req
from .stepping import float_tuple, labelled, request

#: Self-forcing's four-step list (its `denoising_step_list`).
DMD_TIMESTEPS = (1000.0, 750.0, 500.0, 250.0)


def _check_timesteps(owner: str, timesteps: Sequence[float], num_train_timesteps: int) -> None:
    """A distilled timestep list: not empty, strictly decreasing, within (0, num_train_timesteps]."""
    if not timesteps:
        raise ValueError(f"{owner}: the timestep list is empty; give e.g. {DMD_TIMESTEPS}.")
    if any(not 0 < t <= num_train_timesteps for t in timesteps) or any(
        later >= earlier for earlier, later in itertools.pairwise(timesteps)
    ):
        raise ValueError(
            f"{owner}: timesteps must decrease strictly within (0, {num_train_timesteps}], got {tuple(timesteps)}."
        )


@attrs.frozen
class DistilledDenoise(Denoise):
    """Few-step sampling of a distilled flow model: at timestep t (sigma) the model's flow prediction v gives
    x0 = x - sigma v, and the sample is renoised to the next sigma with fresh noise z,
    x = (1 - sigma_next) x0 + sigma_next z; the last step returns x0 (sigma_next = 0).

    That is `FlowMatchEulerDiscrete(stochastic_sampling=True)` over custom sigmas, the scheduler this stage requires
    (the stage's, or the request's own): timestep t gets sigma = shift(t / num_train_timesteps) with the scheduler's
    shift (1: the list as it is, as FastVideo's DMD stage; 5: self-forcing's `warp_denoising_step`), and the model
    is conditioned on num_train_timesteps * sigma. A request's own `timesteps` replace the stage's; a request
    without a state starts at the first timestep (`prepare`). The noise z is `step_noise`'s, seeded by (seed, step).

    Implements the multi-step sampling of DMD2 (Yin et al., 2024, "Improved Distribution Matching Distillation for
    Fast Image Synthesis"), after DMD (Yin et al., 2024, "One-step Diffusion with Distribution Matching
    Distillation").
    """

    timesteps: tuple[float, ...] = attrs.field(
        default=DMD_TIMESTEPS, converter=float_tuple("DistilledDenoise", "timesteps")
    )

    def __attrs_post_init__(self) -> None:
        if self.scheduler is not None:
            train = _check_scheduler("DistilledDenoise", self.scheduler).num_train_timesteps
            _check_timesteps("DistilledDenoise", self.timesteps, train)

    def prepare(self, req: Req) -> Req:
        """The request with a state at the first of its timesteps (its own `timesteps`, else the stage's)."""
        return self._prepared("DistilledDenoise.prepare", request("DistilledDenoise.prepare", req))

    def _prepared(self, label: str, req: Req) -> Req:
        if req.latents is None:
            raise ValueError(f"{label}: the request has no latents yet; run PrepareLatents first.")
        sched = self._scheduler(label, req)
        timesteps = req.timesteps if req.timesteps is not None else self.timesteps
        train = sched.num_train_timesteps
        _check_timesteps(label, timesteps, train)
        sigmas = [t / train for t in timesteps]
        return req.evolve(state=labelled(label, lambda: sched.init(sample=req.latents, sigmas=sigmas, mu=req.mu)))

    def done(self, req: Req) -> bool:
        return req.state is not None and super().done(req)

    def check(self, label: str, req: Req) -> None:
        """A request with a state as `Denoise.check` checks it; one without, its latents (its state starts here).
        Either way its scheduler (the request's own, or the stage's) renoises."""
        self._scheduler(label, req)
        if req.state is None:
            if req.latents is None:
                raise ValueError(f"{label}: the request has no latents yet; run PrepareLatents first.")
        else:
            super().check(label, req)

    def _step(self, reqs: list[Req], labels: list[str]) -> list[Req]:
        """One step of each request (those without a state start first), batched as `Denoise.step_many` batches."""
        for req, label in zip(reqs, labels, strict=True):
            self.check(label, req)
        prepared = [
            req if req.state is not None else self._prepared(label, req)
            for req, label in zip(reqs, labels, strict=True)
        ]
        return super()._step(prepared, labels)

    def _scheduler(self, label: str, req: Req) -> FlowMatchEulerDiscrete:
        return _check_scheduler(label, scheduler_of(req, self.scheduler, label))


def _check_scheduler(label: str, sched: object) -> FlowMatchEulerDiscrete:
    if not isinstance(sched, FlowMatchEulerDiscrete) or not sched.stochastic_sampling:
        raise ValueError(
            f"{label}: the scheduler must be FlowMatchEulerDiscrete(stochastic_sampling=True) (x0, then renoise to "
            f"the next sigma); got {sched!r}."
        )
    return sched
