"""The benchmark suite: diffusers eager vs functional eager, compiled steps and the whole loop in one CUDA graph.

For each scheduler (flow-match Euler, DPM-Solver++ 2M, UniPC bh2), shape and dtype, four ways to run a full loop of
`--steps` steps with a fixed model output (the model excluded, so the figures are the scheduler's own cost):

- diffusers eager: `scheduler.step(v, t, x)` per step, a fresh `deepcopy` of a scheduler after `set_timesteps`;
- ours eager: `sched.step(state, v, x)` per step, from `sched.init` (checks on, as shipped); the two eager loops
  take turns, so drift in the machine's load hits both alike;
- compiled per step: `SamplingLoop(mode="compile")`, one `torch.compile(fullgraph=True)` call a step;
- whole loop in one graph: `SamplingLoop(mode="graph")`, the compiled steps of the whole loop captured in one CUDA
  graph and replayed (on a CPU, where there are no graphs, this column is the compiled loop again).

Figures are microseconds per step: the median over `--repeats` loops (after warm-up) of loop time / steps, between
CUDA events on CUDA. Beside them: the memory floor of a step (the bytes it must move over the device-to-device copy
bandwidth measured in the same run), R = 1, 8, 64 requests at mixed steps stepped in one call, request set-up
(`init` with a cached plan vs `deepcopy` + `set_timesteps`), the first-call (cold compile) time, and checks: ours vs
diffusers, the graph vs the eager loop, and that a graph's output survives the next call (pytorch #152887).

    python benchmarks/suite.py --device cpu --quick --out /tmp/bench     # CI's smoke run (tiny sizes)
    python benchmarks/suite.py --device cuda --out bench-h100             # the H100 figures in RESULTS.md
    python benchmarks/suite.py --device cuda --menu --dtypes fp32         # the SD sampler menu's rows (issue 15)
    python benchmarks/suite.py --device cuda --menu 2 --dtypes fp32       # part 2's classes (issue 16)
    python benchmarks/suite.py --device cuda --menu 3 --dtypes fp32       # sglang's own classes (issue 17)
    python benchmarks/suite.py --device cuda --menu 4 --dtypes fp32       # k-diffusion's loops, Flow-GRPO's step

Writes `results.json`, `results.md` and, where matplotlib is installed, `latency.png` and `scaling.png` to `--out`;
prints the markdown last.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch

import functional_sched as fs
from functional_sched import batching
from functional_sched.adapters import _cases, from_diffusers, sglang
from functional_sched.adapters._compare import (
    LoopRun,
    Run,
    pipeline_model_output,
    pipeline_set_timesteps,
    pipeline_step,
    pipeline_takes_generator,
    pipeline_timesteps,
    prepare,
    step_arguments,
)
from functional_sched.machinery.loop import DEFAULT_COMPILE_OPTIONS, SamplingLoop

SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
SD = {**SD_BETAS, "steps_offset": 1}


def _listed(diffusers_name: str) -> bool:
    return any(cls.diffusers_name == diffusers_name for cls in fs.SCHEDULERS)


# name: (diffusers class, config, passes). `passes` counts the latent-sized tensors a step must read or write at
# least once: Euler reads x and v and writes x (3); DPM++ 2M reads x, the model output and the previous data
# prediction and writes x and the new data prediction (5); UniPC bh2 also reads and writes its last sample for the
# corrector (reads x, model output, last sample, previous data prediction; writes x, data prediction, last sample: 7).
SCHEDULERS: dict[str, tuple[str, dict[str, Any], int]] = {
    "flow-euler": ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, 3),
    "dpm++2m": ("DPMSolverMultistepScheduler", dict(SD), 5),
    "unipc-bh2": ("UniPCMultistepScheduler", dict(SD), 7),
}
# The SD sampler menu (issue 15), SD 1.5's betas; passes as above, per `step` call. Euler and DDIM read x and the
# model output and write x (3); ancestral and DDPM steps read their noise too (4); the two-call solvers (Heun, DPM2,
# DPM++ SDE) also write or read the stored sample and derivative (5, 6 with noise); LMS reads three past derivatives
# and writes the new one (7); PLMS reads three past outputs and writes the new one (7); DEIS 3 and DPM++ 3S read two
# past outputs and write one (6).
MENU: dict[str, tuple[str, dict[str, Any], int]] = {
    "euler": ("EulerDiscreteScheduler", {**SD, "timestep_spacing": "leading"}, 3),
    "euler-a": ("EulerAncestralDiscreteScheduler", dict(SD), 4),
    "heun": ("HeunDiscreteScheduler", dict(SD), 5),
    "dpm2": ("KDPM2DiscreteScheduler", {**SD, "use_karras_sigmas": True}, 5),
    "dpm2-a": ("KDPM2AncestralDiscreteScheduler", {**SD, "use_karras_sigmas": True}, 6),
    "lms": ("LMSDiscreteScheduler", dict(SD), 7),
    "dpm++sde": ("DPMSolverSDEScheduler", {**SD, "use_karras_sigmas": True, "noise_sampler_seed": 0}, 6),
    "ddim": ("DDIMScheduler", {**SD, "set_alpha_to_one": False, "clip_sample": False}, 3),
    "ddpm": ("DDPMScheduler", dict(SD), 4),
    "pndm": ("PNDMScheduler", {**SD, "skip_prk_steps": True, "set_alpha_to_one": False}, 7),
    "deis": ("DEISMultistepScheduler", {**SD, "solver_order": 3}, 6),
    "dpm++3s": ("DPMSolverSinglestepScheduler", {**SD_BETAS, "solver_order": 3}, 6),
}


def _grid(label: str, passes: int) -> tuple[str, dict[str, Any], int]:
    """A pipeline's config from the report's grid (`adapters/_cases.py`), by label."""
    case = next(case for case in _cases.GRID if case.label == label)
    return case.diffusers_name, dict(case.config), passes


# Part 2 (issue 16): distilled, video, flow, EDM, inverse and stochastic-Adams classes, on their pipelines' configs.
# Passes as above: the first-order ones read x and the output and write x (3), plus the noise where they draw it
# (4); DPM++ 2M types (EDM, inversion) 5, with noise 6; Heun-type two-call solvers 5; IPNDM reads three past outputs
# and writes the new one (7); SA-Solver's predictor-corrector reads x, the output, its last sample, last noise, past
# data prediction and the noise and writes x, the data prediction, its last sample and noise (10).
MENU_2: dict[str, tuple[str, dict[str, Any], int]] = {
    "lcm": _grid("SD1.5 LCM-LoRA", 4),
    "tcd": _grid("SDXL TCD-LoRA", 4),
    "flow-heun": _grid("SD3 Heun", 5),
    "flow-lcm": _grid("SD3.5 LCM", 4),
    "edm-euler": _grid("Cosmos 1.0 EDM Euler", 3),
    "edm-dpm++2m": _grid("Playground v2.5 EDM DPM++ 2M", 5),
    "cosine-dpm++sde": _grid("Stable Audio Open Cosine DPM++ 2M SDE", 6),
    "cogvideox-ddim": _grid("CogVideoX-5b DDIM", 3),
    "cogvideox-dpm": _grid("CogVideoX-5b DPM", 6),
    "ddim-inverse": _grid("SD2.1 DiffEdit DDIM inversion", 3),
    "dpm++2m-inverse": _grid("SD2.1 DiffEdit DPM++ 2M inversion", 5),
    "sa-solver": _grid("SD1.5 SA-Solver", 10),
    "ipndm": _grid("Dance Diffusion IPNDM", 7),
    "ltx-rf": _grid("LTX-2 Euler a RF (eta 0.5)", 4),
    "wuerstchen": _grid("Stable Cascade DDPM-Wuerstchen", 4),
}
#: The menu entries that are a grid case of their own (sglang's pipelines: their reference, schedule and pipeline
#: arguments), by name; the others are diffusers' class with a config, its `set_timesteps(steps)`.
CASES: dict[str, _cases.Case] = {}


def _sglang_grid(label: str, passes: int, library: str = "sglang") -> tuple[str, dict[str, Any], int]:
    """A config of sglang's pipelines from the report's `SGLANG_GRID`, by label and reference library."""
    case = next(case for case in _cases.SGLANG_GRID if (case.label, case.library) == (label, library))
    CASES[f"{library} {label}"] = case
    return case.diffusers_name, dict(case.config), passes


# Part 3 (issue 17): sglang 0.5.23's own classes on its pipelines' configs, against sglang's objects (and diffusers'
# pi-Flow and Helios on the same pipelines, against diffusers'). Passes as above: Euler-type steps 3; the UniPC ones
# 7 (Helios' UniPC too); DPM++ 2M 5; Helios' DMD reads its start point too (4); pi-Flow reads n_grid = 10 predictions
# per channel (x, 10 outputs, x written: 12); the pass-through reads and writes x (2).
MENU_3: dict[str, tuple[str, dict[str, Any], int]] = {
    "flow-unipc": _sglang_grid("Wan2.1 T2V 480p", 7),
    "sglang-unipc": _sglang_grid("Wan2.1 (flow), sglang's copy", 7),
    "sglang-flow-euler": _sglang_grid("SD3, sglang's copy", 3),
    "sglang-dpm++2m": _sglang_grid("SANA DPM++ 2M, sglang's wrapper", 5),
    "moss-image": _sglang_grid("MOSS-Image", 3),
    "self-forcing": _sglang_grid("LingBot-World causal DMD", 3),
    "sglang-flow-match": _sglang_grid("MOVA flow match (shift 5)", 3),
    "flow-pair": _sglang_grid("MOVA video", 3),
    "hunyuan3d": _sglang_grid("Hunyuan3D-2 shape", 3),
    "hunyuan3d-consistency": _sglang_grid("Hunyuan3D-2 turbo shape", 3),
    "sglang-piflow": _sglang_grid("Kandinsky 6 distill", 12),
    "sglang-helios": _sglang_grid("Helios base", 7),
    "sglang-helios-dmd": _sglang_grid("Helios-Distilled, amplified chunk", 4),
    "comfyui-passthrough": _sglang_grid("ComfyUI pass-through", 2),
    "piflow": _sglang_grid("Kandinsky 6 distill", 12, "diffusers"),
    "helios": _sglang_grid("Helios base", 7, "diffusers"),
    "helios-dmd": _sglang_grid("Helios-Distilled, amplified chunk", 4, "diffusers"),
}
CASES = {name: CASES[f"{case.library} {case.label}"] for name, case in zip(MENU_3, CASES.values(), strict=True)}


def _beyond_grid(name: str, label: str, passes: int) -> tuple[str, dict[str, Any], int]:
    """A config of the report's `BEYOND_GRID` (k-diffusion's samplers, Flow-GRPO's step), by label, as entry `name`."""
    case = CASES[name] = next(case for case in _cases.BEYOND_GRID if case.label == label)
    return case.diffusers_name, dict(case.config), passes


# Part 4 (beyond diffusers): k-diffusion's samplers against its whole loops (their 'diffusers' columns: the loop's
# time over its model calls, its model handing back the fixed output, its noise sampler the same noise as ours), and
# Flow-GRPO's SDE step against its transcription. Passes per model call: 2S ancestral reads x, x0 and the kept
# interval start (or the noise) and writes x and the kept sample (5); 3M SDE reads x, x0, two past x0 and the noise
# and writes x and the new history (7); DPM-fast reads x, the output, the interval's start and first eps and the
# noise and writes x (6); Flow-GRPO's step reads x, v and the noise and writes x (4).
MENU_4: dict[str, tuple[str, dict[str, Any], int]] = {
    "k-dpm++2s-a": _beyond_grid("k-dpm++2s-a", "SD1.5 DPM++ 2S a Karras", 5),
    "k-dpm++3m-sde": _beyond_grid("k-dpm++3m-sde", "SD1.5 DPM++ 3M SDE Karras", 7),
    "k-dpm-fast": _beyond_grid("k-dpm-fast", "SD1.5 DPM fast", 6),
    "flow-grpo-sde": _beyond_grid("flow-grpo-sde", "SD3.5-M Flow-GRPO (noise 0.7)", 4),
}
MENUS = {"1": MENU, "2": MENU_2, "3": MENU_3, "4": MENU_4}
BASE = tuple(SCHEDULERS)  # the default run's
for menu in MENUS.values():
    SCHEDULERS.update(
        {
            name: entry
            for name, entry in menu.items()
            if (name in CASES and CASES[name] in _cases.cases()) or (name not in CASES and _listed(entry[0]))
        }
    )
CUDA_SHAPES = ((1, 4, 64, 64), (1, 16, 128, 128), (1, 16, 21, 60, 104))
MENU_SHAPES = ((1, 4, 128, 128), (1, 16, 21, 60, 104))  # SDXL's latents at 1024px, a video latent
CPU_SHAPES = ((1, 4, 64, 64),)
QUICK_SHAPES = ((1, 4, 16, 16),)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _shape_name(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


class Timer:
    """Medians of loop times: CUDA events on CUDA (the device's time), else the host clock."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def seconds(self, make_loop: Callable[[], Callable[[], Any]], repeats: int, warmup: int = 1) -> float:
        return self.interleaved([make_loop], repeats, warmup)[0]

    def interleaved(
        self, make_loops: Sequence[Callable[[], Callable[[], Any]]], repeats: int, warmup: int = 1
    ) -> list[float]:
        """Median seconds of each loop, the loops taking turns so that drift in the machine's load hits all alike."""
        times: list[list[float]] = [[] for _ in make_loops]
        for index in range(warmup + repeats):
            for make_loop, record in zip(make_loops, times, strict=True):
                elapsed = self._once(make_loop())  # set-up untimed
                if index >= warmup:
                    record.append(elapsed)
        return [statistics.median(record) for record in times]

    def _once(self, loop: Callable[[], Any]) -> float:
        if self.device.type != "cuda":
            began = time.perf_counter()
            loop()
            return time.perf_counter() - began
        torch.cuda.synchronize(self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        loop()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def host_seconds(self, call: Callable[[], Any], repeats: int, batch: int = 50) -> float:
        """Median over `repeats` batches of the host time per call of `batch` calls, the device's work included
        (one synchronisation a batch, so it is not counted per call)."""
        times = []
        for _ in range(repeats + 1):
            began = time.perf_counter()
            for _ in range(batch):
                call()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            times.append((time.perf_counter() - began) / batch)
        return statistics.median(times[1:])


def copy_bandwidth(device: torch.device, timer: Timer, megabytes: int) -> float:
    """Bytes read plus bytes written per second of a large device-to-device copy."""
    numel = megabytes * (1 << 20) // 4
    source, target = torch.randn(numel, device=device), torch.empty(numel, device=device)
    seconds = timer.seconds(lambda: lambda: target.copy_(source), repeats=20, warmup=3)
    return 2 * numel * 4 / seconds


def _relative(ours: torch.Tensor, reference: torch.Tensor) -> float:
    ours, reference = ours.double(), reference.double()
    return float((ours - reference).abs().max() / reference.abs().max().clamp_min(1e-30))


def _fixed_output(model_input: torch.Tensor, timestep: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """The benchmark's denoiser: the fixed model output, so a loop costs the scheduler alone."""
    return output


def prepared(name: str, steps: int, shape: tuple[int, ...], device: torch.device) -> Run | LoopRun:
    """Both schedulers of a menu entry, timesteps set on the reference as its pipeline sets them
    (`adapters._compare.prepare`): diffusers' class with the entry's config, or the entry's grid case (a whole-loop
    reference's, k-diffusion's, a `LoopRun`)."""
    cls_name, options, _ = SCHEDULERS[name]
    return prepare(CASES.get(name) or _cases.Case(name, cls_name, options), steps, shape, device)


def _schedule(run: Run | LoopRun) -> dict[str, Any]:
    """The run's `init` arguments with tables as tuples (the loop driver keys its graphs by them)."""
    return {
        key: tuple(np.asarray(value).tolist()) if key in ("sigmas", "timesteps") else value
        for key, value in run.timestep_args.items()
    }


class Config:
    """One scheduler, shape and dtype: the inputs and the runners of the four modes."""

    def __init__(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, steps: int, device: torch.device) -> None:
        self.passes = SCHEDULERS[name][2]
        run = prepared(name, steps, shape, device)
        self.case, self.reference, self.sched, self.schedule = run.case, run.reference, run.ours, _schedule(run)
        self.run = run
        self.whole_loop = isinstance(run, LoopRun)  # the reference is a whole loop (k-diffusion's sampler)
        self.name, self.shape, self.dtype, self.steps, self.device = (
            name,
            shape,
            dtype,
            min(run.case.steps or steps, steps),
            device,
        )
        generator = torch.Generator().manual_seed(0)
        self.latents = torch.randn(shape, generator=generator).to(device, dtype)
        output = (0.5 * torch.randn(shape, generator=generator)).to(device, dtype)
        self.output = pipeline_model_output(self.reference, output)  # pi-Flow's: n_grid predictions per channel
        self.template = copy.deepcopy(self.reference)  # its timesteps set
        if self.whole_loop:  # one step of ours per model call of the reference's loop
            self.calls = self.sched.steps_left(self.sched.init(sample=self.latents, **self.schedule))
        else:
            self.calls = len(pipeline_timesteps(self.template, self.case.pipeline))  # two per interval for Heun types
        self.draws: list[int] = []  # the calls whose step reads noise
        self.noise = self._noise() if self.sched.stochastic else None
        self.compiled = SamplingLoop(self.sched, _fixed_output, mode="compile")
        self.graphed = SamplingLoop(self.sched, _fixed_output, mode="graph" if device.type == "cuda" else "compile")
        self.graphed._compiled_step = self.compiled._compiled_step  # one compile serves both

    @property
    def floor_bytes(self) -> int:
        return self.passes * math.prod(self.shape) * self.latents.element_size()

    def _noise(self) -> torch.Tensor | None:
        """Every call's noise, [calls, ...]: drawn from the generator diffusers' loop gets (seed 0), where diffusers
        draws (`_draws_noise`), in the model output's dtype; zeros elsewhere. The Brownian trees of DPM++ SDE and
        Cosine DPM are queried as diffusers queries its own (seeded by `noise_sampler_seed`, and by the generator's
        seed). CogVideoX's DPM draws twice where diffusers does (its `noise` helper)."""
        brownian = hasattr(self.sched, "_brownian_queries")
        if not brownian and not self.whole_loop and not pipeline_takes_generator(self.reference):
            return torch.zeros((self.calls, *self.shape), device=self.device, dtype=self.dtype)
        generator = torch.Generator(self.device).manual_seed(0)
        state, x, noise = self.sched.init(sample=self.latents, **self.schedule), self.latents, []
        for call in range(self.calls):
            if self.sched._draws_noise(state):
                self.draws.append(call)
            if brownian:  # a tree's increments depend on the sigmas alone, not on the sample
                seed = None if hasattr(self.sched, "noise_sampler_seed") else generator.initial_seed()
                noise.append(fs.brownian_noise(self.sched, state, x, seed))
            elif isinstance(self.sched, fs.CogVideoXDPM):
                noise.append(self.sched.noise(state, x, generator).to(self.dtype))
            elif self.sched._draws_noise(state):
                noise.append(fs.randn_tensor(self.shape, generator=generator, device=self.device, dtype=self.dtype))
            else:
                noise.append(torch.zeros(self.shape, device=self.device, dtype=self.dtype))
            x, state = self.sched.step(state, self.output, x, noise=noise[-1])
        return torch.stack(noise)

    def _generator(self) -> dict[str, Any]:
        return {"generator": torch.Generator(self.device).manual_seed(0)} if self.sched.stochastic else {}

    def diffusers_loop(self) -> Callable[[], torch.Tensor]:
        if self.whole_loop:
            return self._whole_reference_loop()
        scheduler = copy.deepcopy(self.template)
        output, latents = self.output, self.latents
        extra = self._generator() if pipeline_takes_generator(scheduler) else {}
        extra.update(step_arguments(self.case))  # Flow-GRPO's noise_level
        pipeline = self.case.pipeline

        def loop() -> torch.Tensor:
            x, threaded = latents, {}
            for t in pipeline_timesteps(scheduler, pipeline):
                x = pipeline_step(scheduler, output, t, x, threaded, pipeline, **extra)
            return x

        return loop

    def _whole_reference_loop(self) -> Callable[[], torch.Tensor]:
        """The reference's whole loop (k-diffusion's sampler) from the latents, its model handing back the fixed
        output, its noise sampler the noise of ours at the calls where ours reads it (where it asks)."""
        run, output, latents = self.run, self.output, self.latents
        assert isinstance(run, LoopRun)
        sigmas = run.reference_sigmas().to(latents.device) if run.takes_table else None
        drawn = [] if self.noise is None else [self.noise[call] for call in self.draws]

        def loop() -> torch.Tensor:
            noise = iter(drawn)
            return run._run_reference(lambda x, sigma: output, sigmas, latents, lambda sigma, following: next(noise))

        return loop

    def eager_loop(self) -> Callable[[], torch.Tensor]:
        sched, output, latents, noise = self.sched, self.output, self.latents, self.noise
        state = sched.init(sample=latents, **self.schedule)

        def loop() -> torch.Tensor:
            x, s = latents, state
            for call in range(self.calls):
                x, s = sched.step(s, output, x, noise=None if noise is None else noise[call])
            return x

        return loop

    def compiled_loop(self) -> Callable[[], torch.Tensor]:
        return lambda: self.compiled(self.latents, self.output, noise=self.noise, **self.schedule)

    def graph_loop(self) -> Callable[[], torch.Tensor]:
        return lambda: self.graphed(self.latents, self.output, noise=self.noise, **self.schedule)


def measure_config(config: Config, timer: Timer, repeats: int, bandwidth: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "scheduler": config.name,
        "shape": _shape_name(config.shape),
        "dtype": str(config.dtype).removeprefix("torch."),
        "steps": config.steps,
        "calls": config.calls,
        "graph_mode": config.graphed.resolved_mode(config.latents),
    }
    began = time.perf_counter()
    compiled_result = config.compiled_loop()()
    _sync(config.device)
    row["first_compiled_call_s"] = time.perf_counter() - began
    began = time.perf_counter()
    graph_result = config.graph_loop()()
    _sync(config.device)
    row["first_graph_call_s"] = time.perf_counter() - began  # the capture (compiled already)
    # Checks: ours vs diffusers, compiled and graph vs our eager loop, and a graph's output surviving the next call.
    reference, eager = config.diffusers_loop()(), config.eager_loop()()
    row["eager_vs_diffusers"] = _relative(eager, reference)
    row["compiled_vs_eager"] = _relative(compiled_result, eager)
    row["graph_vs_eager"] = _relative(graph_result, eager)
    if config.dtype != torch.float32:  # rounding differs between every pair; the float64 loop says which is better
        exact = config.sched.init(sample=config.latents.double(), **config.schedule)
        x = config.latents.double()
        for call in range(config.calls):
            noise = None if config.noise is None else config.noise[call].double()
            x, exact = config.sched.step(exact, config.output.double(), x, noise=noise)
        row["diffusers_vs_float64"] = _relative(reference, x)
        row["eager_vs_float64"] = _relative(eager, x)
        row["graph_vs_float64"] = _relative(graph_result, x)
    kept = graph_result.clone()
    other = config.graphed(  # other latents and output (CogVideoX's DPM ends where the output says, whatever x_T)
        torch.randn_like(config.latents), -config.output, noise=config.noise, **config.schedule
    )
    row["graph_output_survives_next_call"] = bool(torch.equal(graph_result, kept)) and not torch.equal(other, kept)
    row["graph_replays_equal"] = bool(torch.equal(config.graph_loop()(), kept))
    # Timings: microseconds per step; the two eager loops take turns (their ratio is the figure that matters).
    diffusers_eager, ours_eager = timer.interleaved([config.diffusers_loop, config.eager_loop], repeats)
    row["diffusers_eager_us"] = diffusers_eager / config.calls * 1e6
    row["ours_eager_us"] = ours_eager / config.calls * 1e6
    row["compiled_step_us"] = timer.seconds(config.compiled_loop, repeats) / config.calls * 1e6
    row["graph_loop_us"] = timer.seconds(config.graph_loop, repeats) / config.calls * 1e6
    # The graph's replay alone: the device time of the whole loop, without the call's copies in and out.
    captured = list(config.graphed._graphs.values())  # (private: the benchmark looks inside the loop driver)
    if captured:
        replay = captured[0].graph.replay
        row["graph_replay_us"] = timer.seconds(lambda: replay, repeats, warmup=3) / config.calls * 1e6
    else:
        row["graph_replay_us"] = row["graph_loop_us"]
    row["floor_us"] = config.floor_bytes / bandwidth * 1e6
    row["graph_over_floor"] = row["graph_replay_us"] / row["floor_us"]
    row["diffusers_over_graph"] = row["diffusers_eager_us"] / row["graph_replay_us"]
    row["eager_ours_over_diffusers"] = row["ours_eager_us"] / row["diffusers_eager_us"]
    return row


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


DRIVER_CHECKS = {
    "flow-euler": ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}),
    "flow-euler stochastic": ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0, "stochastic_sampling": True}),
    "dpm++2m": ("DPMSolverMultistepScheduler", dict(SD)),
    "dpm++2m sde karras": (
        "DPMSolverMultistepScheduler",
        {**SD, "algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
    ),
    "unipc-bh2": ("UniPCMultistepScheduler", dict(SD)),
}


def _tanh_denoiser(sample: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    t = timestep.to(sample.dtype).view(-1, *([1] * (sample.dim() - 1)))
    return torch.tanh(sample) * (0.5 + t / 1000) + 0.1 * torch.sin(embeds)


def check_driver(name: str, shape: tuple[int, ...], steps: int, device: torch.device) -> dict[str, Any]:
    """The loop driver with a denoiser, guidance and (stochastic schedulers) noise: its CUDA graph (or, on a CPU,
    compiled steps) against its eager loop, twice with other inputs (a graph's output must survive the next call)."""
    cls_name, options = DRIVER_CHECKS[name]
    sched = from_diffusers(getattr(diffusers, cls_name)(**options))
    fast = SamplingLoop(sched, _tanh_denoiser, guidance_scale=5.0, mode="auto" if device.type == "cuda" else "compile")
    eager = SamplingLoop(sched, _tanh_denoiser, guidance_scale=5.0, mode="eager")
    errors, outputs = [], []
    for seed in (0, 1):
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn(shape, generator=generator).to(device)
        embeds = torch.randn((2 * shape[0], *shape[1:]), generator=generator).to(device)
        noise = torch.randn((steps, *shape), generator=generator).to(device) if sched.stochastic else None
        ours = fast(latents, embeds, num_inference_steps=steps, noise=noise)
        outputs.append((ours, ours.clone()))
        errors.append(_relative(ours, eager(latents, embeds, num_inference_steps=steps, noise=noise)))
    kept = all(torch.equal(result, copy_) for result, copy_ in outputs)
    return {"config": name, "mode": fast.resolved_mode(latents), "vs_eager": max(errors), "outputs_kept": kept}


def check_fallback(shape: tuple[int, ...], steps: int, device: torch.device) -> dict[str, Any]:
    """A loop allowed one graph, called with two shapes: the second runs compiled steps without a graph; both equal
    the eager loop (on a CPU, `auto` runs both eagerly)."""
    sched = from_diffusers(diffusers.DPMSolverMultistepScheduler(**SD))
    loop = SamplingLoop(sched, _tanh_denoiser, guidance_scale=5.0, max_graphs=1)
    eager = SamplingLoop(sched, _tanh_denoiser, guidance_scale=5.0, mode="eager")
    errors = []
    for rows in (shape[0], shape[0] + 1):
        generator = torch.Generator().manual_seed(rows)
        latents = torch.randn((rows, *shape[1:]), generator=generator).to(device)
        embeds = torch.randn((2 * rows, *shape[1:]), generator=generator).to(device)
        ours = loop(latents, embeds, num_inference_steps=steps)
        errors.append(_relative(ours, eager(latents, embeds, num_inference_steps=steps)))
    return {"graphs": len(loop._graphs), "vs_eager": max(errors), "mode": loop.resolved_mode(latents)}


def _mixed_steps_state(sched: Any, latents: torch.Tensor, output: torch.Tensor, steps: int) -> Any:
    """One state of `latents.shape[0]` requests, request r at step r mod (steps - 1), stacked from single states."""
    states = []
    with fs.unchecked():
        for row in range(latents.shape[0]):
            x, state = latents[row : row + 1], sched.init(steps, sample=latents[row : row + 1])
            for _ in range(row % (steps - 1)):
                noise = torch.randn_like(x) if sched.stochastic else None
                x, state = sched.step(state, output[row : row + 1], x, noise=noise)
            states.append(state)
    return batching.stack(states)


def measure_requests(
    name: str,
    shape: tuple[int, ...],
    requests: int,
    steps: int,
    device: torch.device,
    timer: Timer,
    repeats: int,
    bandwidth: float,
) -> dict[str, Any]:
    """`requests` requests at mixed steps in one step call: eager, compiled, and the compiled step in a CUDA graph."""
    cls_name, options, passes = SCHEDULERS[name]
    sched = from_diffusers(getattr(diffusers, cls_name)(**options))
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn((requests, *shape[1:]), generator=generator).to(device)
    output = (0.5 * torch.randn((requests, *shape[1:]), generator=generator)).to(device)
    state = _mixed_steps_state(sched, latents, output, steps)
    noise = torch.randn(latents.shape, generator=generator).to(device) if sched.stochastic else None
    step = torch.compile(sched.step, fullgraph=True, options=dict(DEFAULT_COMPILE_OPTIONS))
    row: dict[str, Any] = {"scheduler": name, "requests": requests, "shape_per_request": _shape_name(shape)}
    row["eager_us"] = timer.seconds(lambda: lambda: sched.step(state, output, latents, noise=noise), repeats) * 1e6
    began = time.perf_counter()
    step(state, output, latents, noise=noise)
    _sync(device)
    row["first_compiled_call_s"] = time.perf_counter() - began
    row["compiled_us"] = timer.seconds(lambda: lambda: step(state, output, latents, noise=noise), repeats) * 1e6
    if device.type == "cuda":
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            step(state, output, latents, noise=noise)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured, _ = step(state, output, latents, noise=noise)
        expected, _ = step(state, output, latents, noise=noise)
        graph.replay()
        row["graph_vs_compiled"] = _relative(captured, expected)
        row["graph_us"] = timer.seconds(lambda: graph.replay, repeats, warmup=3) * 1e6
        best = row["graph_us"]
    else:
        best = row["compiled_us"]
    moved = passes * latents.numel() * latents.element_size()
    row["bytes"] = moved
    row["bandwidth_gbs"] = moved / (best / 1e6) / 1e9
    row["share_of_copy_bandwidth"] = moved / (best / 1e6) / bandwidth
    return row


def measure_setup(
    name: str, shape: tuple[int, ...], steps: int, device: torch.device, timer: Timer
) -> dict[str, Any] | None:
    """A new request's scheduler: `init` with the plan cached vs the reference's `deepcopy` + `set_timesteps` (as its
    pipeline calls it). None for a whole-loop reference (k-diffusion's: no scheduler object to set up)."""
    run = prepared(name, steps, shape, device)
    if isinstance(run, LoopRun):
        return None
    reference, sched, schedule, pipeline = run.reference, run.ours, _schedule(run), run.case.pipeline
    latents = torch.zeros(shape, device=device)
    sched.init(sample=latents, **schedule)  # builds and caches the plan
    ours = timer.host_seconds(lambda: sched.init(sample=latents, **schedule), repeats=20)

    def diffusers_setup() -> None:
        pipeline_set_timesteps(copy.deepcopy(reference), device, pipeline, **run.timestep_args)

    theirs = timer.host_seconds(diffusers_setup, repeats=20)
    return {"scheduler": name, "ours_init_us": ours * 1e6, "diffusers_us": theirs * 1e6, "speedup": theirs / ours}


# ---------------------------------------------------------------------------------------------------- reporting
def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


#: What the 'diffusers' columns time for an entry of another reference library.
_REFERENCES = {
    "sglang": f"sglang {sglang.SGLANG_VERSION}'s own object",
    "k-diffusion": "k-diffusion 0.1.1.post1's whole loop over its model calls (the same output and noise as ours)",
    "flow_grpo": "Flow-GRPO's sde_step_with_logprob on diffusers' scheduler",
}


def _reference_line(names: Sequence[str]) -> str:
    """Whose objects the 'diffusers' columns time, where any entry's reference is not diffusers'."""
    parts = []
    for library, what in _REFERENCES.items():
        listed = [name for name in names if name in CASES and CASES[name].library == library]
        if listed:
            parts.append(f"{what} for {', '.join(listed)}")
    if not parts:
        return ""
    return f"the 'diffusers' columns time each entry's reference: {'; '.join(parts)}; diffusers' for the others"


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"- device: {meta['device']} ({meta['device_name']}); torch {meta['torch']}, diffusers {meta['diffusers']}, "
        f"Python {meta['python']}; {meta['date']}",
        *([f"- {meta['reference']}"] if meta.get("reference") else []),
        f"- {meta['steps']} steps; medians of {meta['repeats']} loops after warm-up; copy bandwidth "
        f"{meta['copy_bandwidth_gbs']:.0f} GB/s (read + write); inductor options {meta['compile_options']}; "
        f"command: `{meta['command']}`",
        "",
        "Microseconds per step call (two per interval for Heun-type solvers), model excluded. One graph: the whole"
        " loop captured once; replay is the graph alone,"
        " call adds the copies in and out and the host's work (on a CPU, both are the compiled loop). Floor: the"
        " bytes a step must move over the copy bandwidth.",
        "",
        "| scheduler | shape | dtype | diffusers eager | ours eager | compiled step | one graph: replay | "
        "one graph: call | diffusers / replay | floor | replay / floor | ours eager / diffusers |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["configs"]:
        lines.append(
            f"| {row['scheduler']} | {row['shape']} | {row['dtype']} | {row['diffusers_eager_us']:.1f} | "
            f"{row['ours_eager_us']:.1f} | {row['compiled_step_us']:.1f} | {row['graph_replay_us']:.2f} | "
            f"{row['graph_loop_us']:.2f} | {row['diffusers_over_graph']:.1f}x | {row['floor_us']:.2f} | "
            f"{row['graph_over_floor']:.2f} | {row['eager_ours_over_diffusers']:.2f} |"
        )
    lines += [
        "",
        "Requests at mixed steps in one call (microseconds per call; bandwidth from the fastest mode):",
        "",
        "| scheduler | requests | per request | eager | compiled | compiled, in a CUDA graph | GB/s "
        "| of copy bandwidth |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["requests"]:
        graph = f"{row['graph_us']:.1f}" if "graph_us" in row else "n/a"
        lines.append(
            f"| {row['scheduler']} | {row['requests']} | {row['shape_per_request']} | {row['eager_us']:.1f} | "
            f"{row['compiled_us']:.1f} | {graph} | {row['bandwidth_gbs']:.0f} | "
            f"{100 * row['share_of_copy_bandwidth']:.0f}% |"
        )
    lines += [
        "",
        "Request set-up (microseconds): `init` with the plan cached vs diffusers' `deepcopy` + `set_timesteps`:",
        "",
        "| scheduler | ours | diffusers | speedup |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in results["setup"]:
        lines.append(
            f"| {row['scheduler']} | {row['ours_init_us']:.1f} | {row['diffusers_us']:.1f} | {row['speedup']:.0f}x |"
        )
    lines += [
        "",
        "Checks and first calls (relative max error; seconds):",
        "",
        "| scheduler | shape | dtype | ours vs diffusers | compiled vs eager | graph vs eager | vs a float64 loop: "
        "diffusers, ours eager, graph | graph output kept | first compiled call | graph capture |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for row in results["configs"]:
        kept = "yes" if row["graph_output_survives_next_call"] and row["graph_replays_equal"] else "NO"
        exact = (
            f"{row['diffusers_vs_float64']:.1e}, {row['eager_vs_float64']:.1e}, {row['graph_vs_float64']:.1e}"
            if "graph_vs_float64" in row
            else ""
        )
        lines.append(
            f"| {row['scheduler']} | {row['shape']} | {row['dtype']} | {row['eager_vs_diffusers']:.1e} | "
            f"{row['compiled_vs_eager']:.1e} | {row['graph_vs_eager']:.1e} | {exact} | {kept} | "
            f"{row['first_compiled_call_s']:.1f} | {row['first_graph_call_s']:.2f} |"
        )
    lines += [
        "",
        "The loop driver (`SamplingLoop`, guidance 5, a tanh denoiser, noise for the stochastic configs) against its "
        "eager loop, two calls with other inputs:",
        "",
        "| config | mode | relative max error | first output kept after the second call |",
        "| --- | --- | ---: | --- |",
    ]
    for row in results["driver_checks"]:
        kept = "yes" if row["outputs_kept"] else "NO"
        lines.append(f"| {row['config']} | {row['mode']} | {row['vs_eager']:.1e} | {kept} |")
    fallback = results.get("fallback", {"mode": None})
    if fallback["mode"] == "graph":
        lines += [
            "",
            f"A loop allowed one graph (`max_graphs=1`) called with two shapes kept {fallback['graphs']} graph and "
            f"ran the other shape as compiled steps; both within {fallback['vs_eager']:.1e} of the eager loop.",
        ]
    return "\n".join(lines)


def plots(results: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    modes = (
        ("diffusers_eager_us", "diffusers eager"),
        ("ours_eager_us", "ours eager"),
        ("compiled_step_us", "compiled step"),
        ("graph_replay_us", "whole loop, one graph (replay)"),
    )
    dtypes = sorted({row["dtype"] for row in results["configs"]})
    figure, axes = plt.subplots(1, len(dtypes), figsize=(7 * len(dtypes), 4.5), squeeze=False)
    for axis, dtype in zip(axes[0], dtypes, strict=True):
        rows = [row for row in results["configs"] if row["dtype"] == dtype]
        width = 0.8 / len(modes)
        for index, (key, label) in enumerate(modes):
            axis.bar([i + index * width for i in range(len(rows))], [row[key] for row in rows], width, label=label)
        axis.scatter(
            [i + 1.5 * width for i in range(len(rows))],
            [row["floor_us"] for row in rows],
            marker="_",
            s=300,
            color="black",
            label="memory floor",
            zorder=3,
        )
        axis.set_xticks([i + 1.5 * width for i in range(len(rows))])
        axis.set_xticklabels([f"{row['scheduler']}\n{row['shape']}" for row in rows], fontsize=7, rotation=30)
        axis.set_yscale("log")
        axis.set_ylabel("us per step (log)")
        axis.set_title(f"{dtype}, {results['meta']['device_name']}")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "latency.png", dpi=120)
    plt.close(figure)
    if not results["requests"]:  # the menus measure no requests
        return ["latency.png"]
    figure, axis = plt.subplots(figsize=(6, 4))
    for name in SCHEDULERS:
        rows = [row for row in results["requests"] if row["scheduler"] == name]
        axis.plot([row["requests"] for row in rows], [row["bandwidth_gbs"] for row in rows], marker="o", label=name)
    axis.axhline(results["meta"]["copy_bandwidth_gbs"], color="black", linestyle="--", label="copy bandwidth")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("requests at mixed steps in one call")
    axis.set_ylabel("GB/s moved")
    axis.set_title(f"Scaling with requests, {results['meta']['device_name']}")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "scaling.png", dpi=120)
    plt.close(figure)
    return ["latency.png", "scaling.png"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats: the CPU smoke run")
    parser.add_argument("--steps", type=int, default=None, help="default 50 (quick: 6)")
    parser.add_argument("--repeats", type=int, default=None, help="default 20 (quick: 2)")
    parser.add_argument("--schedulers", default=",".join(BASE), help=f"any of {', '.join(SCHEDULERS)}")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--shapes", default=None, help="e.g. 1x4x64x64,1x16x128x128 (default: by device)")
    parser.add_argument("--requests", default=None, help="default 1,8,64 (quick: 1,4)")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument(
        "--menu",
        nargs="?",
        const="1",
        choices=sorted(MENUS),
        help="1: the SD sampler menu (issue 15); 2: part 2 (issue 16); 3: sglang's own classes (issue 17, needs "
        "sglang's wheel); 4: k-diffusion's samplers (needs its wheel) and Flow-GRPO's step. Its listed classes at "
        "1x4x128x128 and "
        "1x16x21x60x104 (or --shapes), no request or driver checks",
    )
    args = parser.parse_args(argv)
    if args.menu:
        args.schedulers = ",".join(name for name in MENUS[args.menu] if name in SCHEDULERS)
        for library, install in _cases.OPTIONAL_LIBRARIES.items():
            missing = [name for name in MENUS[args.menu] if name in CASES and CASES[name] in _cases.skipped()]
            missing = [name for name in missing if CASES[name].library == library]
            if missing:
                print(
                    f"{library} is not installed: menu {args.menu}'s {', '.join(missing)} skipped ({install})",
                    file=sys.stderr,
                )
        args.shapes = args.shapes or ",".join(
            _shape_name(shape) for shape in (QUICK_SHAPES if args.quick else MENU_SHAPES)
        )
    device = torch.device(args.device)
    diffusers.utils.logging.set_verbosity_error()
    steps = args.steps or (6 if args.quick else 50)
    repeats = args.repeats or (2 if args.quick else 20)
    if args.shapes:
        shapes = tuple(tuple(int(size) for size in text.split("x")) for text in args.shapes.split(","))
    else:
        shapes = QUICK_SHAPES if args.quick else CUDA_SHAPES if device.type == "cuda" else CPU_SHAPES
    request_counts = [int(text) for text in (args.requests or ("1,4" if args.quick else "1,8,64")).split(",")]
    names = args.schedulers.split(",")
    unknown = [name for name in names if name not in SCHEDULERS]
    if unknown:
        parser.error(f"unknown schedulers {unknown}; choose from {', '.join(SCHEDULERS)}")
    timer = Timer(device)
    bandwidth = copy_bandwidth(device, timer, megabytes=16 if args.quick else 512)
    results: dict[str, Any] = {
        "meta": {
            "device": device.type,
            "device_name": describe(device),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "functional_sched": fs.__version__,
            "python": platform.python_version(),
            "date": datetime.date.today().isoformat(),
            "steps": steps,
            "repeats": repeats,
            "copy_bandwidth_gbs": bandwidth / 1e9,
            "compile_options": DEFAULT_COMPILE_OPTIONS,
            "command": "python benchmarks/suite.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "reference": _reference_line(names),
        },
        "configs": [],
        "requests": [],
        "setup": [],
        "driver_checks": [],
    }
    for dtype_name in args.dtypes.split(","):
        for shape in shapes:
            for name in names:
                config = Config(name, shape, DTYPES[dtype_name], steps, device)
                results["configs"].append(measure_config(config, timer, repeats, bandwidth))
                print(f"measured {name} {_shape_name(shape)} {dtype_name}", file=sys.stderr, flush=True)
    per_request = shapes[1] if len(shapes) > 1 else shapes[0]
    for name in names:
        if not args.menu:
            for count in request_counts:
                row = measure_requests(name, per_request, count, steps, device, timer, repeats, bandwidth)
                results["requests"].append(row)
        setup = measure_setup(name, per_request, steps, device, timer)
        if setup is not None:
            results["setup"].append(setup)
    if not args.menu:
        for name in DRIVER_CHECKS:
            results["driver_checks"].append(check_driver(name, shapes[0], min(steps, 20), device))
        results["fallback"] = check_fallback(shapes[0], min(steps, 20), device)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    text = markdown(results)
    (args.out / "results.md").write_text(text + "\n")
    written = plots(results, args.out)
    print(text)
    print(f"\nwrote {', '.join(['results.json', 'results.md', *written])} to {args.out}")
    failed = [
        row
        for row in results["configs"]
        if not (row["graph_output_survives_next_call"] and row["graph_replays_equal"])
        or (row["dtype"] == "float32" and row["graph_vs_eager"] > 1e-5)
        or (  # half precision: the graph no further from the float64 loop than the eager loops are
            row["dtype"] != "float32"
            and row["graph_vs_float64"] > 1.5 * max(row["eager_vs_float64"], row["diffusers_vs_float64"])
        )
    ]
    failed += [row for row in results["driver_checks"] if not row["outputs_kept"] or row["vs_eager"] > 1e-5]
    failed += [results["fallback"]] if "fallback" in results and results["fallback"]["vs_eager"] > 1e-5 else []
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
