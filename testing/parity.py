"""The parity driver: a scheduler and its reference side by side over a full loop, each feeding its own sample to
the same deterministic toy model, compared after every step. Also the toy model, the initial latents, and noise
drawn as the reference draws it. Nothing here asserts; the suite's columns do."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from typing import Any

import torch

import functional_sched as fs

from .spec import Case


def toy_model(sample: torch.Tensor, timestep: torch.Tensor | float) -> torch.Tensor:
    """A deterministic stand-in denoiser: smooth, nonlinear in `sample`, varying with the timestep.

    `timestep` is the reference's 0-d timestep or our per-row [R] one; either way it is broadcast to one value per
    row, so equal inputs give bit-equal outputs on both sides. Elementwise, so each row's output depends on that row
    alone. Computed in float32, returned in `sample`'s dtype.
    """
    rows = sample.shape[0]
    t = torch.as_tensor(timestep, device=sample.device).to(torch.float32).reshape(-1).expand(rows) / 1000.0
    t = t.reshape(rows, *([1] * (sample.dim() - 1)))
    x = sample.to(torch.float32)
    out = torch.tanh(x) * (0.5 + t) - x * (0.3 * torch.cos(3.0 * t)) + 0.1 * torch.sin(2.0 * x + t)
    return out.to(sample.dtype)


def conditioned_model(sample: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    """`toy_model` conditioned on embeddings (a prompt's), called as stages and loop drivers call a denoiser:
    `(model_input, timestep, *conditioning)`. Elementwise per row."""
    out = toy_model(sample, timestep).to(torch.float32) + 0.2 * torch.sin(embeds.to(torch.float32))
    return out.to(sample.dtype)


def latents(shape: Sequence[int], dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """Standard normal initial latents from a seeded CPU generator, cast to `dtype`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(dtype)


def calls(sched: Any, state: Any) -> int:
    """The model calls of a request's schedule: its timestep table's length, or the budget of a sampler that chooses
    its steps from the data (`timestep_table` False)."""
    if sched.timestep_table:
        return len(sched.timesteps(state))
    return int(state.plan.num_steps.max())


def step_noise(
    case: Case, shape: Sequence[int], generator: torch.Generator, model_dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The noise of one stochastic step, drawn exactly as the reference draws it from `generator` (in the spec's
    `noise_dtype`, or the model output's dtype where the reference draws in that)."""
    return fs.randn_tensor(tuple(shape), generator=generator, dtype=case.spec.noise_dtype or model_dtype)


def reference_noise(
    case: Case,
    sched: Any,
    state: Any,
    like: torch.Tensor,
    generator: torch.Generator,
    model_dtype: torch.dtype,
    reference: Any = None,
) -> torch.Tensor | None:
    """The `noise=` of our next step beside the reference's (called after the reference's step): None for a
    deterministic scheduler; drawn where the reference draws (`_draws_noise`), so both generators keep one stream;
    zeros where it draws none. A reference that draws from its own source gives it through `Spec.reference_noise`."""
    if not sched.stochastic:
        return None
    if not sched._draws_noise(state):
        return torch.zeros(like.shape, dtype=case.spec.noise_dtype or model_dtype)
    if case.spec.reference_noise is not None:
        return case.spec.reference_noise(case, reference, sched, state, like)
    return step_noise(case, like.shape, generator, model_dtype)


def generator_kwargs(scheduler: Any, generator: torch.Generator, stochastic: bool) -> dict[str, Any]:
    """`{"generator": generator}` for a stochastic config's `step()` where it takes one (DPM-SDE's draws from its own
    Brownian tree and takes none)."""
    takes = stochastic and "generator" in inspect.signature(scheduler.step).parameters
    return {"generator": generator} if takes else {}


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max|ours - ref| / max|ref| in float64 (over finite entries; 1 in the denominator if `ref` is all zeros)."""
    return (ours.double() - ref.double()).abs().max().item() / (ref.double().abs().max().item() or 1.0)


def ulp(values: torch.Tensor) -> torch.Tensor:
    """The spacing of `values`' dtype at each value (one unit in the last place), as float64."""
    finfo = torch.finfo(values.dtype)
    exponent = torch.floor(torch.log2(values.double().abs().clamp(min=finfo.tiny)))
    return torch.exp2(exponent) * finfo.eps


@dataclasses.dataclass(frozen=True)
class ParityResult:
    """One side-by-side loop. `errors[i]` is `relative_error` of step i."""

    errors: list[float]
    identical: list[bool]
    timestep_agrees: list[bool]  # our `timestep(state)` equals the reference's t on every row, before each step
    ours_samples: list[torch.Tensor]
    ref_samples: list[torch.Tensor]
    ours_timesteps: torch.Tensor
    ref_timesteps: torch.Tensor
    ours_sigmas: torch.Tensor
    ref_sigmas: torch.Tensor | None  # None where the reference keeps no sigma table

    @property
    def steps(self) -> int:
        return len(self.errors)

    @property
    def max_error(self) -> float:
        return max(self.errors, default=0.0)

    def first_difference(self) -> str:
        """A line naming the first step that is not bit-identical (for assertion messages)."""
        for index, (same, error) in enumerate(zip(self.identical, self.errors, strict=True)):
            if not same:
                return f"step {index}/{self.steps}: relative error {error:.3e}"
        return "all steps bit-identical"


def begin_at(scheduler: Any, index: int) -> None:
    """`set_begin_index(index)` where the scheduler has it (DDIM, DDPM and PNDM find their place from the timestep
    each step is called at, and have none)."""
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(index)


def sigma_table(scheduler: Any) -> torch.Tensor | None:
    """A copy of the scheduler's `sigmas`, or None where it keeps none (DDIM, DDPM, PNDM); its `sigmas_` where it
    keeps the schedule's there, apart from a training grid in `sigmas` (sglang's Hunyuan3D consistency class)."""
    sigmas = getattr(scheduler, "sigmas_", None)
    sigmas = getattr(scheduler, "sigmas", None) if sigmas is None else sigmas
    return None if sigmas is None else sigmas.clone()


def has_repeated_timesteps(reference: Any) -> bool:
    values = reference.timesteps.tolist()
    return len(set(values)) < len(values)


def loop_timesteps(reference: Any) -> torch.Tensor:
    """The timesteps a pipeline's loop steps at: the reference's table, but for a final timestep that no step starts
    from, where the table holds as many timesteps as sigmas (LTXEulerAncestralRF's custom sigmas: its pipelines loop
    over `timesteps[:-1]`)."""
    timesteps, sigmas = reference.timesteps, getattr(reference, "sigmas", None)
    return timesteps[:-1] if sigmas is not None and len(sigmas) == len(timesteps) else timesteps


def parity_run(
    case: Case,
    *,
    steps: int | None = None,
    shape: Sequence[int] = (2, 4, 8, 8),
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    begin_index: int | None = None,
) -> ParityResult:
    """Run the reference's loop and ours from the same latents, each side feeding its own sample to `toy_model`.

    Reference: `set_timesteps(**reference_kwargs)`, `set_begin_index(begin_index)` when one is given (img2img) or
    when its timesteps repeat (pipelines call `set_begin_index(0)`; without it diffusers starts at the second match
    of timesteps[0]), then `step(model_output, t, sample, generator=g, return_dict=False)[0]` for each remaining t.
    Ours: `init(sample=..., begin_index=..., **init_kwargs)`. Stochastic steps draw their noise from a second
    generator seeded like the reference's.
    """
    reference = case.reference()
    reference.set_timesteps(**case.reference_kwargs(steps))
    if begin_index is None and has_repeated_timesteps(reference):
        begin_index = 0
    if begin_index is not None:
        begin_at(reference, begin_index)
    start = begin_index or 0
    ref_timesteps = loop_timesteps(reference)
    ref_sigmas = sigma_table(reference)  # the reference keeps them on the scheduler; copy before stepping

    sched = case.scheduler()
    ref = latents(shape, dtype, seed) * getattr(reference, "init_noise_sigma", 1.0)
    ours = ref.clone()
    state = sched.init(sample=ours, begin_index=start, **case.init_kwargs(steps))
    ours_timesteps, ours_sigmas = sched.timesteps(state), sched.sigmas(state)

    g_ref, g_ours = torch.Generator().manual_seed(seed + 1), torch.Generator().manual_seed(seed + 1)
    takes_generator = "generator" in inspect.signature(reference.step).parameters
    ref_step_kwargs = {"generator": g_ref} if sched.stochastic and takes_generator else {}
    ref_step_kwargs.update(case.reference_step_kwargs)
    scale_input = getattr(reference, "scale_model_input", lambda sample, t: sample)

    errors, identical, timestep_agrees, ours_samples, ref_samples = [], [], [], [], []
    for t in ref_timesteps[start:]:
        our_timestep = sched.timestep(state)
        timestep_agrees.append(our_timestep.dtype == t.dtype and torch.equal(our_timestep, t.expand(shape[0])))
        ref = reference.step(toy_model(scale_input(ref, t), t), t, ref, return_dict=False, **ref_step_kwargs)[0]

        noise = reference_noise(case, sched, state, ours, g_ours, ours.dtype, reference)
        ours, state = sched.step(
            state, toy_model(sched.scale_model_input(state, ours), our_timestep), ours, noise=noise
        )

        if ours.dtype != ref.dtype:
            raise TypeError(f"parity_run compares equal dtypes; ours {ours.dtype}, the reference's {ref.dtype}")
        errors.append(relative_error(ours, ref))
        identical.append(torch.equal(ours, ref))
        ours_samples.append(ours)
        ref_samples.append(ref)
    return ParityResult(
        errors=errors,
        identical=identical,
        timestep_agrees=timestep_agrees,
        ours_samples=ours_samples,
        ref_samples=ref_samples,
        ours_timesteps=ours_timesteps,
        ref_timesteps=ref_timesteps,
        ours_sigmas=ours_sigmas,
        ref_sigmas=ref_sigmas,
    )


def loop_parity_run(
    case: Case,
    *,
    steps: int | None = None,
    shape: Sequence[int] = (2, 4, 8, 8),
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> ParityResult:
    """Parity with a whole-loop reference (`Spec.reference_loop`): run it once with `toy_model` as its model, recording
    each model call's input and sigma; then our loop from the same latents (times `init_noise_sigma`), each call's
    model input and timestep against the recorded ones, and our final sample against the reference's.

    The result's samples are our sample before each call but the first, then the final one, beside the reference's
    (the first call's input, the scaled latents, must be bit-identical: it checks `init_noise_sigma`); its timesteps are
    the sigmas the reference called its model at. The noise: drawn from a generator seeded `seed + 1` on each side, in
    the spec's `noise_dtype`, where the reference asks its `noise_sampler` and where ours draws (`_draws_noise`); or
    `Spec.reference_noise` where the reference draws its own.
    """
    noise = latents(shape, dtype, seed)
    inputs, sigmas, final = run_reference_loop(case, noise, steps=steps, seed=seed)
    g_ours = torch.Generator().manual_seed(seed + 1)

    sched = case.scheduler()
    state = sched.init(sample=noise, **case.init_kwargs(steps))
    table = sched.timestep_table
    ours_timesteps, ours_sigmas = (sched.timesteps(state), sched.sigmas(state)) if table else (None, None)
    ours = noise * sched.init_noise_sigma(state).to(dtype).view(-1, *([1] * (noise.dim() - 1)))
    if inputs and not torch.equal(ours, inputs[0]):
        raise AssertionError("our initial sample (noise times init_noise_sigma) is not the reference's first input")
    timestep_agrees, ours_samples, called = [], [], []
    for index in range(len(inputs)):
        if not sched.steps_left(state):
            break
        our_timestep = sched.timestep(state)
        called.append(our_timestep[0])
        reference_sigma = sigmas[index].reshape(-1).expand(shape[0])
        agrees = our_timestep.dtype == reference_sigma.dtype and torch.equal(our_timestep, reference_sigma)
        timestep_agrees.append(agrees)
        model_input = sched.scale_model_input(state, ours)
        if index:
            ours_samples.append(model_input)
        drawn = reference_noise(case, sched, state, ours, g_ours, ours.dtype)
        ours, state = sched.step(state, toy_model(model_input, our_timestep), ours, noise=drawn)
    ours_samples.append(ours)
    ref_samples = [*inputs[1:], final]
    if len(ours_samples) != len(ref_samples) or sched.steps_left(state):
        raise AssertionError(f"ours calls the model {len(timestep_agrees)} times, the reference {len(inputs)}")
    errors = [relative_error(a, b) for a, b in zip(ours_samples, ref_samples, strict=True)]
    if not table:  # the sigmas row 0's calls saw, as the reference's table is read
        ours_timesteps = torch.stack(called) if called else torch.zeros(0)
        ours_sigmas = ours_timesteps
    return ParityResult(
        errors=errors,
        identical=[torch.equal(a, b) for a, b in zip(ours_samples, ref_samples, strict=True)],
        timestep_agrees=timestep_agrees,
        ours_samples=ours_samples,
        ref_samples=ref_samples,
        ours_timesteps=ours_timesteps,
        ref_timesteps=torch.stack([sigma.reshape(-1)[0] for sigma in sigmas]) if sigmas else ours_timesteps[:0],
        ours_sigmas=ours_sigmas,
        ref_sigmas=None,
    )


def run_reference_loop(
    case: Case, noise: torch.Tensor, *, steps: int | None = None, seed: int = 0
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """The spec's whole-loop reference from standard normal `noise` with `toy_model` as its model: (each model call's
    input, each call's sigma, the final sample). Its noise sampler draws from a generator seeded `seed + 1`."""
    assert case.spec.reference_loop is not None, f"{case.spec.name} has no reference loop"
    inputs: list[torch.Tensor] = []
    sigmas: list[torch.Tensor] = []

    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        inputs.append(x.clone())
        sigmas.append(torch.as_tensor(sigma).clone())
        return toy_model(x, sigma)

    generator = torch.Generator().manual_seed(seed + 1)
    shape, dtype = tuple(noise.shape), noise.dtype
    final = case.spec.reference_loop(
        case, steps, model, noise.clone(), lambda sigma, sigma_next: step_noise(case, shape, generator, dtype)
    )
    return inputs, sigmas, final
