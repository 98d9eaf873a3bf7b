"""`Denoise`: the denoising stage, one step at a time for one request (`step`) or for many at once (`step_many`).

`step_many` stacks the requests' states (`functional_sched.batching`), calls the model once and the scheduler once
for all of them, and splits the result back; each request comes out as it would from `step` alone. Every request is
checked before the model is called (`check`: prepared, a state of its scheduler with one row per latent row), and
an error names the request (its index in `step_many`'s list) and the field. What the other denoising stages reuse
lives here too: classifier-free guidance (`guided_output`, `combine_guidance`, `cat_embeds`), the checks
(`scheduler_of`, `require_prepared`, `check_state`) and a request's per-step noise (`step_noise`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch

from functional_sched import batching, brownian_noise, randn_tensor

from .request import Req
from .stepping import Stepped, is_callable, is_optional_scheduler, step_grouped, stream_seed

#: model(latent_model_input [R, ...], timestep [R], prompt_embeds [R, ...] or None) -> an output like the latents.
Model = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor made for this step, on `device` without waiting for the device: a copy from pageable memory
    waits for the stream to drain, which would stop the host queueing the next work while the model runs; from
    pinned memory (PyTorch's caching host allocator, which keeps the block until the copy is done) it does not."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def per_row_values(values: Sequence[float], counts: Sequence[int]) -> tuple[float, ...]:
    """Each request's value repeated for its `counts[i]` rows, in order."""
    return tuple(value for value, count in zip(values, counts, strict=True) for _ in range(count))


def _per_row(values: Sequence[float], counts: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """One value per row, [R, 1, ..., 1] in `like`'s dtype."""
    column = to_device(torch.tensor(per_row_values(values, counts), dtype=like.dtype), like.device)
    return column.view(-1, *([1] * (like.dim() - 1)))


def guided_output(
    model: Model, reqs: Sequence[Req], model_input: torch.Tensor, timestep: torch.Tensor, scales: Sequence[float]
) -> torch.Tensor:
    """The model's output for the rows of `reqs` (concatenated in order), with classifier-free guidance.

    Guided requests call the model once on the unconditional and conditional halves together (negative embeddings
    first), and `combine_guidance` combines the halves with each request's `scales[i]`.
    """
    guided = {req.guided for req in reqs}
    if len(guided) > 1:
        raise ValueError("guided_output: requests with and without guidance cannot share a model call.")
    embeds = cat_embeds([req.prompt_embeds for req in reqs], "prompt_embeds")
    if not guided.pop():
        return model(model_input, timestep, embeds)
    negative = cat_embeds([req.negative_prompt_embeds for req in reqs], "negative_prompt_embeds")
    both = model(torch.cat([model_input, model_input]), torch.cat([timestep, timestep]), torch.cat([negative, embeds]))
    return combine_guidance(both, reqs, scales)


def combine_guidance(both: torch.Tensor, reqs: Sequence[Req], scales: Sequence[float]) -> torch.Tensor:
    """Classifier-free guidance of a model output `both` [2R, ...] on the requests' rows, unconditional half first:
    `uncond + scale * (cond - uncond)` with each request's `scales[i]`, as diffusers combines them, then
    `rescale_noise_cfg` per row where a request asks for `guidance_rescale` (`_rescale`)."""
    counts = [req.rows for req in reqs]
    uncond, cond = both.chunk(2)
    output = uncond + _per_row(scales, counts, cond) * (cond - uncond)
    if any(req.guidance_rescale > 0 for req in reqs):
        output = _rescale(output, cond, _per_row([req.guidance_rescale for req in reqs], counts, cond))
    return output


def _rescale(output: torch.Tensor, cond: torch.Tensor, rescale: torch.Tensor) -> torch.Tensor:
    """diffusers' `rescale_noise_cfg`, per row (Lin et al. 2023, section 3.4)."""
    dims = list(range(1, cond.dim()))
    rescaled = output * (cond.std(dim=dims, keepdim=True) / output.std(dim=dims, keepdim=True))
    return rescale * rescaled + (1 - rescale) * output


def cat_embeds(embeds: Sequence[torch.Tensor | None], name: str) -> torch.Tensor | None:
    """The requests' embeddings `name` concatenated along rows for one model call, or None where none has any."""
    present = [value is not None for value in embeds]
    if not any(present):
        return None
    if not all(present):
        raise ValueError(f"guided_output: some requests have {name} and some none; they cannot share a model call.")
    return torch.cat(list(embeds))  # type: ignore[arg-type]


def require_prepared(req: Req, label: str, what: str = "scheduler state or no latents", how: str = "") -> None:
    """A clear error for a request that has not been through PrepareTimesteps and PrepareLatents yet."""
    if req.state is None or req.latents is None:
        raise ValueError(f"{label}: the request has no {what} yet; run PrepareTimesteps and PrepareLatents{how} first.")


def scheduler_of(req: Req, default: Any, label: str) -> Any:
    """The request's own scheduler (a per-request sampler choice), else the stage's."""
    scheduler = req.scheduler if req.scheduler is not None else default
    if scheduler is None:
        raise ValueError(f"{label}: no scheduler; give the stage one, or the request (Req(scheduler=...)).")
    return scheduler


def check_state(label: str, name: str, state: Any, scheduler: Any, latents: torch.Tensor, of: str = "latents") -> None:
    """`state` (the request's field `name`) is a state of `scheduler`'s class, with one row per row of `latents` (the
    request's `of`), on their device. (Its step options are checked by the scheduler, before the model is called.)"""
    if not isinstance(state, scheduler.state_type):
        raise TypeError(
            f"{label}: {name} is a {type(state).__name__}, but the scheduler that steps it is a {scheduler.name}, "
            f"whose state is a {scheduler.state_type.__name__}; build the state with that scheduler "
            "(PrepareTimesteps), or give the request the scheduler that built it (Req(scheduler=...))."
        )
    index = state.step_index
    if index.shape[0] != latents.shape[0]:
        raise ValueError(
            f"{label}: {name} has {index.shape[0]} rows but {of} {latents.shape[0]}; build the state for these "
            "latents (PrepareTimesteps after PrepareLatents, or the scheduler's init(sample=latents))."
        )
    if index.device != latents.device:
        raise ValueError(
            f"{label}: {name} is on {index.device} but {of} on {latents.device}; build the state on the latents' "
            "device, or move the latents."
        )


def steps_left(label: str, scheduler: Any, state: Any) -> int:
    """`scheduler.steps_left(state)` of a state of `scheduler`'s class (else a TypeError that `label` begins)."""
    if not isinstance(state, scheduler.state_type):
        raise TypeError(
            f"{label}: the request's state is a {type(state).__name__}, not a {scheduler.state_type.__name__} of its "
            f"scheduler {scheduler.name}."
        )
    return scheduler.steps_left(state)


def batch_signature(value: torch.Tensor | None) -> tuple[Any, ...] | None:
    """What the tensors of requests sharing a batch must agree on: the shape but for the rows, dtype and device."""
    return None if value is None else (tuple(value.shape[1:]), value.dtype, value.device)


@attrs.frozen
class Denoise(Stepped):
    """Holds a model and a default scheduler, nothing per request (a request may bring its own scheduler)."""

    model: Model = attrs.field(validator=is_callable)
    scheduler: Any = attrs.field(default=None, validator=is_optional_scheduler)

    def done(self, req: Req) -> bool:
        """Whether every row of the request has taken all its steps (a request without a state has not)."""
        if req.state is None:
            return False
        label = f"{type(self).__name__}.done"
        return steps_left(label, scheduler_of(req, self.scheduler, label), req.state) == 0

    def check(self, label: str, req: Req) -> None:
        """Before the model runs: the request has latents and a state of its scheduler's, one row per latent row
        (its embeddings' rows and guidance settings `Req` checks)."""
        sched = scheduler_of(req, self.scheduler, label)
        require_prepared(req, label)
        check_state(label, "state", req.state, sched, req.latents)

    def _step(self, reqs: list[Req], labels: list[str]) -> list[Req]:
        """One step of each request, in order. Requests that can share a batch (one scheduler config, guided or not,
        latents and embeddings alike but for their rows) take one model call and one scheduler call together,
        whatever their steps and step counts; each comes out as it would alone."""
        for req, label in zip(reqs, labels, strict=True):
            self.check(label, req)
        return step_grouped(reqs, labels, self._batch_key, self._step_batch)

    def _batch_key(self, req: Req) -> tuple[Any, ...]:
        """Requests with equal keys can share a batch: the scheduler, then their tensors alike but for their rows,
        and their plans' layout but for the step count and entries per step (`batching.stack` pads both: schedules of
        different lengths, pi-Flow's substeps)."""
        plan = req.state.plan
        return (
            scheduler_of(req, self.scheduler, type(self).__name__),
            batch_signature(req.latents),
            batch_signature(req.prompt_embeds),
            batch_signature(req.negative_prompt_embeds),
            plan.timesteps.dtype,
            plan.coefficients.dtype,
            tuple(plan.coefficients.shape[3:]),
        )

    def _step_batch(self, key: tuple[Any, ...], reqs: list[Req], labels: list[str]) -> list[Req]:
        sched = key[0]
        counts = [req.rows for req in reqs]
        state = batching.stack([req.state for req in reqs])
        latents = torch.cat([req.latents for req in reqs])
        model_input = sched.scale_model_input(state, latents)
        output = self.predict(reqs, model_input, sched.timestep(state), labels)
        noise = torch.cat([step_noise(sched, req) for req in reqs]) if sched.stochastic else None
        latents, state = sched.step(state, output, latents, noise=noise)
        pieces = batching.split(state, counts)
        rows = latents.split(counts)
        return [req.evolve(latents=row, state=piece) for req, row, piece in zip(reqs, rows, pieces, strict=True)]

    def predict(
        self, reqs: Sequence[Req], model_input: torch.Tensor, timestep: torch.Tensor, labels: Sequence[str]
    ) -> torch.Tensor:
        """The (guided) model output for the requests' rows; stages with other model choices override this."""
        return guided_output(self.model, reqs, model_input, timestep, [req.guidance_scale for req in reqs])


def step_noise(scheduler: Any, req: Req, stream: int = 0) -> torch.Tensor:
    """The request's noise for its current step, like `req.latents`, from a generator seeded by (seed, stream, step)
    (`stream_seed`): the same whether the request is stepped alone or batched, in this process or after a handoff.
    Stream 0 is the main latents'; for a further latent stream, pass its latents and state in `req`
    (`req.evolve(...)`). A scheduler with Brownian noise (DPM-SDE) takes its increments from a tree per row, the first
    row's seeded by (seed, stream) (diffusers' run of a one-row request alone with that `noise_sampler_seed`), the
    others' by a hash of it and the row: any place in any batch, any step after a handoff, gives the same noise."""
    seed = stream_seed(req.seed, stream)
    if hasattr(scheduler, "_brownian_queries"):
        seeds = [seed % (1 << 64)] + [stream_seed(seed, -row) for row in range(1, req.latents.shape[0])]
        return brownian_noise(scheduler, req.state, req.latents, seeds)
    step = scheduler.steps_taken(req.state)
    generator = torch.Generator().manual_seed((seed * 1_000_003 + step) % (1 << 63))
    noise = randn_tensor(tuple(req.latents.shape), generator=generator, dtype=torch.float32)
    return to_device(noise, req.latents.device)
