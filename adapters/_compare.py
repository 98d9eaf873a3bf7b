"""Run one grid case with diffusers and with functional_sched side by side: parity over a full loop, and step times.

Both sides run the loop a diffusers pipeline runs (`set_timesteps`, `set_begin_index(0)` as Flux and Wan do, then
`scale_model_input`, model, `step` per timestep) with a deterministic toy denoiser in place of the model.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import diffusers
import numpy as np
import torch

import functional_sched as fs
from functional_sched.machinery.scheduler import Scheduler

from ._cases import Case
from .diffusers import from_diffusers

SEED = 0


def toy_denoiser(sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """A smooth, deterministic stand-in for a model: equal inputs give bit-equal outputs on either side.

    `timestep` is diffusers' 0-d tensor or our per-row [R] one; both broadcast over the rows the same way.
    """
    t = timestep.to(device=sample.device, dtype=sample.dtype).reshape(-1, *([1] * (sample.dim() - 1))) / 1000
    return 0.8 * torch.tanh(sample) + 0.2 * torch.cos(3 * t) * sample


@dataclass(frozen=True)
class Parity:
    table_equal: bool  # timesteps equal diffusers' in values and dtype
    worst_error: float  # max over steps of max|ours - diffusers|, over max|sample| along diffusers' trajectory
    identical_steps: int  # steps whose output is bit-identical to diffusers'
    steps: int


def pipeline_timesteps(reference: Any) -> torch.Tensor:
    """The timesteps a pipeline loops over (Stable Cascade's, all but DDPMWuerstchenScheduler's last)."""
    if isinstance(reference, diffusers.DDPMWuerstchenScheduler):
        return reference.timesteps[:-1]
    return reference.timesteps


def pipeline_step(
    reference: Any, model_output: torch.Tensor, t: torch.Tensor, sample: torch.Tensor, threaded: dict, **extra: Any
) -> torch.Tensor:
    """One `step` of diffusers' scheduler as its pipelines call it; `threaded` holds what a pipeline carries from
    step to step (CogVideoX's last x0 and timestep: an empty dict at a loop's start)."""
    if isinstance(reference, diffusers.CogVideoXDPMScheduler):  # as pipeline_cogvideox.py calls it
        x0, back = threaded.get("x0"), threaded.get("t")
        sample, threaded["x0"] = reference.step(model_output, x0, t, back, sample, **extra)
        threaded["t"] = t
        return sample
    if isinstance(reference, diffusers.DDPMWuerstchenScheduler):  # as Stable Cascade calls it: a timestep per row
        t = t.expand(sample.shape[0]).to(sample.dtype)
    return reference.step(model_output, t, sample, return_dict=False, **extra)[0]


@dataclass(frozen=True)
class Run:
    """One case prepared on one device: both schedulers, the timestep arguments and the initial noise."""

    case: Case
    reference: Any  # the diffusers scheduler
    ours: Scheduler
    timestep_args: dict[str, Any]
    sample: torch.Tensor
    #: What the CogVideoX pipeline threads through CogVideoXDPMScheduler.step: the last x0 and timestep.
    threaded: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def prepare(cls, case: Case, steps: int, shape: tuple[int, ...], device: torch.device) -> Run:
        reference = getattr(diffusers, case.diffusers_name)(**case.config)
        args: dict[str, Any] = {"mu": case.mu} if case.mu is not None else {}
        if case.pipeline_sigmas:
            args["sigmas"] = np.linspace(1.0, 1 / steps, steps).tolist()
        else:
            args["num_inference_steps"] = steps
        generator = torch.Generator("cpu").manual_seed(SEED)
        sample = torch.randn(shape, generator=generator).to(device)
        return cls(case, reference, from_diffusers(reference), args, sample)

    def start_reference(self) -> torch.Tensor:
        """Reset diffusers' scheduler for a new loop; returns its timesteps."""
        self.reference.set_timesteps(device=self.sample.device, **self.timestep_args)
        self.threaded.clear()
        if hasattr(self.reference, "set_begin_index"):  # PNDM, DDIM and DDPM have none: pipelines never call it
            self.reference.set_begin_index(0)
        return pipeline_timesteps(self.reference)

    def start_ours(self) -> Any:
        return self.ours.init(sample=self.sample, **self.timestep_args)

    def noise_source(self) -> torch.Generator | None:
        return torch.Generator(self.sample.device).manual_seed(SEED) if self.case.stochastic else None

    def step_reference(
        self, model_output: torch.Tensor, t: torch.Tensor, sample: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        extra = {"generator": generator} if generator is not None and not self.seeded_tree else {}
        return pipeline_step(self.reference, model_output, t, sample, self.threaded, **extra)

    @property
    def brownian(self) -> bool:
        """DPM++ SDE, Cosine DPM: the noise comes from a Brownian tree, on both sides."""
        return hasattr(self.ours, "_brownian_queries")

    @property
    def seeded_tree(self) -> bool:
        """DPM++ SDE: its tree is seeded by `noise_sampler_seed` (Cosine DPM's by `generator.initial_seed()`)."""
        return self.brownian and hasattr(self.ours, "noise_sampler_seed")

    def step_ours(
        self, state: Any, model_output: torch.Tensor, sample: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, Any]:
        if generator is None:
            return self.ours.step(state, model_output, sample)
        if self.brownian:
            seed = None if self.seeded_tree else generator.initial_seed()
            return self.ours.step(state, model_output, sample, noise=fs.brownian_noise(self.ours, state, sample, seed))
        if isinstance(self.ours, fs.CogVideoXDPM):  # draws twice at a second-order step, as diffusers does
            return self.ours.step(state, model_output, sample, noise=self.ours.noise(state, sample, generator))
        if self.ours._draws_noise(state):  # drawn where diffusers draws, so both generators keep one stream
            noise = fs.randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=model_output.dtype)
        else:
            noise = torch.zeros_like(sample)
        return self.ours.step(state, model_output, sample, noise=noise)

    # ------------------------------------------------------------------------------------------------ parity
    def parity(self) -> tuple[Parity, list[torch.Tensor], list[torch.Tensor]]:
        """Both full loops, each fed by its own trajectory; also returns each side's model outputs for replay."""
        timesteps = self.start_reference()
        state = self.start_ours()
        table_equal = timesteps.dtype == self.ours.timesteps(state).dtype and torch.equal(
            timesteps.cpu(), self.ours.timesteps(state).cpu()
        )
        reference_sample = our_sample = self.sample
        scale = reference_sample.abs().max().item()
        worst, identical = 0.0, 0
        reference_outputs, our_outputs = [], []
        reference_noise, our_noise = self.noise_source(), self.noise_source()
        scaled_input = getattr(self.reference, "scale_model_input", lambda sample, _t: sample)
        for t in timesteps:
            reference_outputs.append(toy_denoiser(scaled_input(reference_sample, t), t))
            reference_sample = self.step_reference(reference_outputs[-1], t, reference_sample, reference_noise)

            our_outputs.append(toy_denoiser(self.ours.scale_model_input(state, our_sample), self.ours.timestep(state)))
            our_sample, state = self.step_ours(state, our_outputs[-1], our_sample, our_noise)

            scale = max(scale, reference_sample.abs().max().item())
            error = (our_sample.double() - reference_sample.double()).abs().max().item()
            worst = max(worst, error if math.isfinite(error) else math.inf)  # NaN on either side fails
            identical += int(our_sample.dtype == reference_sample.dtype and torch.equal(our_sample, reference_sample))
        return Parity(table_equal, worst / scale, identical, len(timesteps)), reference_outputs, our_outputs

    # ------------------------------------------------------------------------------------------------ timing
    def reference_loop(self, model_outputs: list[torch.Tensor]) -> Callable[[], None]:
        """diffusers' loop, set up (untimed) and ready to run: one `step` per recorded model output."""
        timesteps = list(self.start_reference())
        generator = self.noise_source()

        def run() -> None:
            sample = self.sample
            for t, model_output in zip(timesteps, model_outputs, strict=True):
                sample = self.step_reference(model_output, t, sample, generator)

        return run

    def our_loop(self, model_outputs: list[torch.Tensor]) -> Callable[[], None]:
        """Our loop, set up (untimed) and ready to run: one `step` per recorded model output."""
        state = self.start_ours()
        generator = self.noise_source()

        def run() -> None:
            sample, loop_state = self.sample, state
            for model_output in model_outputs:
                sample, loop_state = self.step_ours(loop_state, model_output, sample, generator)

        return run

    def time_steps(
        self, reference_outputs: list[torch.Tensor], our_outputs: list[torch.Tensor], repeats: int
    ) -> tuple[float, float]:
        """Median seconds per `step` call of diffusers and of ours, over `repeats` loops each after a warm-up one.

        The two sides' loops alternate, so both see the same machine load.
        """
        sides = ((self.reference_loop, reference_outputs), (self.our_loop, our_outputs))
        times: tuple[list[float], list[float]] = ([], [])
        for repeat in range(repeats + 1):
            for (make_loop, model_outputs), side_times in zip(sides, times, strict=True):
                elapsed = _timed(make_loop(model_outputs), self.sample.device)
                if repeat:
                    side_times.append(elapsed / len(model_outputs))
        return statistics.median(times[0]), statistics.median(times[1])


def _timed(run: Callable[[], None], device: torch.device) -> float:
    """Wall seconds of `run()`; on CUDA, between events recorded around it, after the queue is drained."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    begin = time.perf_counter()
    run()
    return time.perf_counter() - begin
