"""End to end with a real diffusers transformer (random weights, no hub): what a user gains, alone and serving.

    python benchmarks/e2e.py --device cuda --sections single serving --out /tmp/e2e     # the H100 run
    python benchmarks/e2e.py --device cpu --tiny --out /tmp/e2e                           # the CPU smoke run

Sections (each fits a 10-minute device call; compiles included):
- `single`: one request's whole loop with classifier-free guidance through an `SD3Transformer2DModel`, for each
  model size of `--layers` and latent size of `--sizes`: diffusers' way (a deep-copied scheduler, eager transformer),
  diffusers with the transformer compiled (default and `reduce-overhead`), ours eager (`init` + `step`), ours
  `SamplingLoop` (model and scheduler in one CUDA graph; with our inductor options and with inductor's defaults).
  First calls (compiles) one after another, then the variants' timed calls in turn; median latency, first-call
  latency, and each output's largest difference from diffusers' eager output relative to its largest magnitude.
- `serving`: requests of mixed step counts arriving on a seeded trace, served one at a time (diffusers' way),
  in static batches of equal step count, with the model batched and one diffusers scheduler per request (the
  engines' way), and with ours (`Denoise.step_many`: one model call and one scheduler call a round). Throughput,
  mean and p99 latency, and the share of the time outside the model. Before timing, a check that a round of ours
  gives every request, bit for bit, what its own step gives from the same model output.

The SD3 transformer takes pooled projections beside the prompt embeddings; both strategies pass them the same way,
as one more token of the prompt embeddings (`pooled_projection_dim` = `joint_attention_dim`), so `Denoise`'s model
signature (latents, timestep, embeddings) carries them. A table is printed last; `--out` gets results.json.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import diffusers
import torch

import functional_sched as fs
from functional_sched import batching
from functional_sched.adapters import from_diffusers
from functional_sched.stages import Denoise, GraphedDenoise, Req

GUIDANCE = 5.0
SHIFT = 3.0


# ------------------------------------------------------------------------------------------------ the model
def transformer(layers: int, heads: int, head_dim: int, text_dim: int, device: str, dtype: torch.dtype) -> Any:
    """An SD3 transformer of random weights (seeded), in inference mode on `device`."""
    torch.manual_seed(0)
    model = diffusers.SD3Transformer2DModel(
        sample_size=64,
        patch_size=2,
        in_channels=16,
        num_layers=layers,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=text_dim,
        caption_projection_dim=heads * head_dim,
        pooled_projection_dim=text_dim,
        out_channels=16,
        pos_embed_max_size=96,
    )
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def denoiser(model: Any) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """model(latents, timestep, embeddings whose last token is the pooled projection) -> the velocity."""

    def call(latents: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        return model(
            hidden_states=latents,
            timestep=timestep,
            encoder_hidden_states=embeds[:, :-1],
            pooled_projections=embeds[:, -1],
            return_dict=False,
        )[0]

    return call


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_once(run: Callable[[], torch.Tensor], device: str) -> tuple[float, torch.Tensor]:
    """(seconds of one call of `run`, the device synchronised at both ends; a copy of its output)."""
    sync(device)
    start = time.perf_counter()
    output = run()
    sync(device)
    return time.perf_counter() - start, output.clone()


def profiled(run: Callable[[], Any], device: str) -> str:
    """torch.profiler's table of one call of `run` (after a warm-up call), by host time: where an eager loop that
    is launch-bound spends it."""
    run()
    sync(device)
    with torch.profiler.profile() as profile:
        run()
        sync(device)
    return profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)


def relative_gap(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours.float() - reference.float()).abs().max() / reference.float().abs().max())


# ------------------------------------------------------------------------------------------------ one request
def diffusers_loop(
    model: Callable[..., torch.Tensor], base: Any, latents: torch.Tensor, embeds: torch.Tensor, steps: int
) -> torch.Tensor:
    """SD3's pipeline loop: a deep-copied scheduler per request, the model on both halves, guidance, step."""
    scheduler = copy.deepcopy(base)
    scheduler.set_timesteps(steps, device=latents.device)
    for t in scheduler.timesteps:
        both = model(torch.cat([latents, latents]), t.expand(2 * latents.shape[0]), embeds)
        uncond, cond = both.chunk(2)
        latents = scheduler.step(uncond + GUIDANCE * (cond - uncond), t, latents, return_dict=False)[0]
    return latents


def our_loop(
    model: Callable[..., torch.Tensor], sched: Any, latents: torch.Tensor, embeds: torch.Tensor, steps: int
) -> torch.Tensor:
    state = sched.init(steps, sample=latents)
    for _ in range(steps):
        timestep = sched.timestep(state)
        both = model(torch.cat([latents, latents]), torch.cat([timestep, timestep]), embeds)
        uncond, cond = both.chunk(2)
        latents, state = sched.step(state, uncond + GUIDANCE * (cond - uncond), latents)
    return latents


def single(args: argparse.Namespace, dtype: torch.dtype) -> list[dict[str, Any]]:
    rows = []
    base = diffusers.FlowMatchEulerDiscreteScheduler(shift=SHIFT)
    sched = from_diffusers(base)
    for layers in args.layers:
        model = transformer(layers, args.heads, args.head_dim, args.text_dim, args.device, dtype)
        parameters = sum(p.numel() for p in model.parameters())
        for size in args.sizes:
            generator = torch.Generator().manual_seed(1)
            latents = torch.randn(1, 16, size, size, generator=generator).to(args.device, dtype)
            embeds = torch.randn(2, args.tokens + 1, args.text_dim, generator=generator).to(args.device, dtype)
            plain = denoiser(model)
            inputs = (latents, embeds, args.steps)
            variants: dict[str, Callable[[], torch.Tensor]] = {
                "diffusers eager": functools.partial(diffusers_loop, plain, base, *inputs),
                "ours eager": functools.partial(our_loop, plain, sched, *inputs),
            }
            if args.compile:
                default = denoiser(torch.compile(model))
                overhead = denoiser(torch.compile(model, mode="reduce-overhead"))
                variants["diffusers + compile"] = functools.partial(diffusers_loop, default, base, *inputs)
                variants["diffusers + reduce-overhead"] = functools.partial(diffusers_loop, overhead, base, *inputs)
                loop = fs.SamplingLoop(sched, plain, guidance_scale=GUIDANCE, mode="auto")
                variants["ours SamplingLoop"] = functools.partial(loop, latents, embeds, num_inference_steps=args.steps)
                plain_options = fs.SamplingLoop(sched, plain, guidance_scale=GUIDANCE, mode="auto", compile_options={})
                variants["ours SamplingLoop, inductor defaults"] = functools.partial(
                    plain_options, latents, embeds, num_inference_steps=args.steps
                )
            if args.profile:
                for name in ("diffusers eager", "ours eager"):
                    print(f"\n## {name}: ops by host time, one loop after a warm-up")
                    print(profiled(variants[name], args.device))
            firsts, times, outputs = {}, {name: [] for name in variants}, {}
            for name, run in variants.items():  # first calls (compiles), one variant after another
                firsts[name], outputs[name] = timed_once(run, args.device)
            for _ in range(args.repeats):  # then the variants in turn, so drift of the machine falls on all alike
                for name, run in variants.items():
                    seconds, outputs[name] = timed_once(run, args.device)
                    times[name].append(seconds)
            reference = outputs["diffusers eager"]
            for name in variants:
                rows.append(
                    {
                        "section": "single",
                        "layers": layers,
                        "parameters_M": round(parameters / 1e6, 1),
                        "latents": f"1x16x{size}x{size}",
                        "variant": name,
                        "first_ms": firsts[name] * 1e3,
                        "median_ms": statistics.median(times[name]) * 1e3,
                        "gap_to_diffusers": relative_gap(outputs[name], reference),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ serving
class Request:
    def __init__(self, index: int, arrival: float, steps: int, latents: torch.Tensor, embeds: torch.Tensor) -> None:
        self.index, self.arrival, self.steps = index, arrival, steps
        self.latents, self.embeds = latents, embeds  # embeds: [2, T + 1, D], negative row first
        self.finished: float | None = None
        self.output: torch.Tensor | None = None


def trace(args: argparse.Namespace, dtype: torch.dtype) -> list[Request]:
    """`--requests` requests cycling through `--mix` step counts, arriving with seeded exponential gaps."""
    generator = torch.Generator().manual_seed(7)
    gaps = torch.empty(args.requests).exponential_(1 / args.gap_ms, generator=generator).tolist()
    arrival, requests = 0.0, []
    for index in range(args.requests):
        latents = torch.randn(1, 16, args.serve_size, args.serve_size, generator=generator).to(args.device, dtype)
        embeds = torch.randn(2, args.tokens + 1, args.text_dim, generator=generator).to(args.device, dtype)
        requests.append(Request(index, arrival / 1e3, args.mix[index % len(args.mix)], latents, embeds))
        arrival += gaps[index]
    return requests


class Stopwatch:
    """Seconds spent inside `with stopwatch:` blocks, the device synchronised at both ends."""

    def __init__(self, device: str) -> None:
        self.device, self.seconds, self.start = device, 0.0, 0.0

    def __enter__(self) -> None:
        sync(self.device)
        self.start = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        sync(self.device)
        self.seconds += time.perf_counter() - self.start


class Clock:
    """Time since the trace started; `instrument`ed, the time in model calls (and in `GraphedDenoise`'s copies out)
    counted apart, the device synchronised around each, which stops the host queueing ahead: the shares come from
    an instrumented run, throughput and latency from a plain one."""

    def __init__(self, device: str, instrument: bool = False) -> None:
        self.device, self.instrument = device, instrument
        self.start = time.perf_counter()
        self.in_model, self.copy_out = Stopwatch(device), Stopwatch(device)

    def now(self) -> float:
        return time.perf_counter() - self.start

    def wait_for(self, arrival: float) -> None:
        while self.now() < arrival:
            time.sleep(min(1e-3, max(arrival - self.now(), 0)))

    def model(self, model: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if not self.instrument:
            return model

        def call(*inputs: torch.Tensor) -> torch.Tensor:
            with self.in_model:
                return model(*inputs)

        return call


def one_at_a_time(requests: list[Request], model: Any, base: Any, sched: Any, clock: Clock, cap: int) -> None:
    model = clock.model(model)
    for request in requests:
        clock.wait_for(request.arrival)
        request.output = diffusers_loop(model, base, request.latents, request.embeds, request.steps)
        sync(clock.device)
        request.finished = clock.now()


def static_batches(requests: list[Request], model: Any, base: Any, sched: Any, clock: Clock, cap: int) -> None:
    """Whenever idle: the arrived requests of the most common step count (up to `cap`) as one batch to its end."""
    model = clock.model(model)
    pending = list(requests)
    while pending:
        clock.wait_for(pending[0].arrival)
        arrived = [request for request in pending if request.arrival <= clock.now()]
        counts: dict[int, list[Request]] = {}
        for request in arrived:
            counts.setdefault(request.steps, []).append(request)
        batch = max(counts.values(), key=len)[:cap]
        latents = torch.cat([request.latents for request in batch])
        embeds = torch.cat([request.embeds[0:1] for request in batch] + [request.embeds[1:2] for request in batch])
        output = diffusers_loop(model, base, latents, embeds, batch[0].steps)
        sync(clock.device)
        for request, row in zip(batch, output.split(1), strict=True):
            request.output, request.finished = row, clock.now()
            pending.remove(request)


def continuous(
    requests: list[Request],
    clock: Clock,
    cap: int,
    admit: Callable[[Request], Any],
    round_: Callable[[list[Any]], list[Any]],
    done: Callable[[Any], bool],
    result: Callable[[Any], torch.Tensor],
) -> None:
    """Continuous batching: every round, admit what has arrived (up to `cap` in flight), step every request in
    flight once, retire the finished. The host knows which finished (each strategy counts its steps on the host), so
    it waits for the device only in a round where one did, to stamp its finish time; other rounds queue on."""
    pending, active = list(requests), []
    while pending or active:
        if not active:
            clock.wait_for(pending[0].arrival)
        while pending and len(active) < cap and pending[0].arrival <= clock.now():
            request = pending.pop(0)
            active.append((request, admit(request)))
        stepped = round_([work for _, work in active])
        finished = [done(work) for work in stepped]
        if any(finished):
            sync(clock.device)
        now, still = clock.now(), []
        for (request, _), work, is_done in zip(active, stepped, finished, strict=True):
            if is_done:
                request.output, request.finished = result(work), now
            else:
                still.append((request, work))
        active = still


def engine_way(requests: list[Request], model: Any, base: Any, sched: Any, clock: Clock, cap: int) -> None:
    """The engines' way: the model batched over the requests in flight, a deep-copied diffusers scheduler each."""
    model = clock.model(model)

    def admit(request: Request) -> list[Any]:
        scheduler = copy.deepcopy(base)
        scheduler.set_timesteps(request.steps, device=request.latents.device)
        return [request, scheduler, request.latents, 0]

    def round_(works: list[list[Any]]) -> list[list[Any]]:
        latents = torch.cat([work[2] for work in works])
        timesteps = torch.stack([work[1].timesteps[work[3]] for work in works])
        negative = [work[0].embeds[0:1] for work in works]
        positive = [work[0].embeds[1:2] for work in works]
        both = model(torch.cat([latents, latents]), torch.cat([timesteps, timesteps]), torch.cat(negative + positive))
        uncond, cond = both.chunk(2)
        guided = uncond + GUIDANCE * (cond - uncond)
        for work, output, row in zip(works, guided.split(1), latents.split(1), strict=True):
            work[2] = work[1].step(output, work[1].timesteps[work[3]], row, return_dict=False)[0]
            work[3] += 1
        return works

    continuous(requests, clock, cap, admit, round_, lambda work: work[3] == work[0].steps, lambda work: work[2])


def ours(requests: list[Request], model: Any, base: Any, sched: Any, clock: Clock, cap: int) -> None:
    """Ours: every request a `Req` with its own state; one `Denoise.step_many` a round."""
    serve(requests, Denoise(model=clock.model(model), scheduler=sched), sched, clock, cap)


@attrs.frozen(eq=False)
class _TimedCopies(GraphedDenoise):
    """`GraphedDenoise` whose copies out of the static buffers are timed on the clock in `clocks` (synchronised
    around them): one stage for the warm-up and the timed run, as a server captures its graphs at start."""

    clocks: list[Clock] = attrs.field(factory=list)

    def _copied_out(self, *arguments: Any) -> list[Req]:
        clock = self.clocks[0]
        if not clock.instrument:
            return GraphedDenoise._copied_out(*arguments)
        with clock.copy_out:
            return GraphedDenoise._copied_out(*arguments)


_GRAPHED: dict[tuple[int, Any], _TimedCopies] = {}  # by (id of the model, scheduler): kept from warm-up to run


def ours_graphed(requests: list[Request], model: Any, base: Any, sched: Any, clock: Clock, cap: int) -> None:
    """Ours with each batch-size bucket's round in a CUDA graph (`GraphedDenoise`; uncaptured off CUDA). The model
    runs inside the graphs, so the clock counts the copies of each round's results out of the static buffers."""
    key = (id(model), sched)
    if key not in _GRAPHED:
        _GRAPHED[key] = _TimedCopies(model=model, scheduler=sched, capture=clock.device.startswith("cuda"))
    stage = _GRAPHED[key]
    stage.clocks[:] = [clock]
    serve(requests, stage, sched, clock, cap)


def serve(requests: list[Request], stage: Denoise, sched: Any, clock: Clock, cap: int) -> None:

    def admit(request: Request) -> Req:
        return Req(
            latents=request.latents,
            state=sched.init(request.steps, sample=request.latents),
            negative_prompt_embeds=request.embeds[0:1],
            prompt_embeds=request.embeds[1:2],
            guidance_scale=GUIDANCE,
            seed=request.index,
        )

    continuous(requests, clock, cap, admit, stage.step_many, stage.done, lambda req: req.latents)


STRATEGIES = {
    "one at a time": one_at_a_time,
    "static batches": static_batches,
    "model batched, scheduler per request": engine_way,
    "ours: step_many": ours,
    "ours: step_many, graphed buckets": ours_graphed,
}


def check_rounds(sched: Any, device: str, dtype: torch.dtype, mix: Sequence[int]) -> bool:
    """A round of `step_many`, eager and graphed, gives each request, bit for bit, what its own step gives from the
    same model output (a model whose output for a row depends on that row only)."""

    def model(x: torch.Tensor, t: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return x * 0.5 + t.view(-1, 1, 1, 1).to(x.dtype) * 1e-3

    alone_stage = Denoise(model=model, scheduler=sched)
    reqs = []
    for index, steps in enumerate(mix):
        latents = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(index)).to(device, dtype)
        embeds = torch.zeros(1, 4, 8, device=device, dtype=dtype)
        reqs.append(Req(latents=latents, state=sched.init(steps, sample=latents), prompt_embeds=embeds, seed=index))
    reqs[0] = alone_stage.step(reqs[0])
    capture = device.startswith("cuda")
    for stage in (alone_stage, GraphedDenoise(model=model, scheduler=sched, buckets=(4, 8), capture=capture)):
        batched, alone = list(reqs), list(reqs)
        for _ in range(min(mix) - 1):
            batched, alone = stage.step_many(batched), [alone_stage.step(req) for req in alone]
            if not all(torch.equal(mine.latents, ref.latents) for mine, ref in zip(batched, alone, strict=True)):
                return False
    return True


def serving(args: argparse.Namespace, dtype: torch.dtype) -> list[dict[str, Any]]:
    base = diffusers.FlowMatchEulerDiscreteScheduler(shift=SHIFT)
    sched = from_diffusers(base)
    model = transformer(args.serve_layers, args.heads, args.head_dim, args.text_dim, args.device, dtype)
    call = denoiser(model)
    rows = [
        {
            "section": "serving",
            "check": "step_many (eager and graphed) == each alone, bit for bit",
            "passed": check_rounds(sched, args.device, dtype, args.mix),
        }
    ]
    print(json.dumps(rows[-1]), flush=True)
    warm = trace(args, dtype)[: len(args.mix)]
    for strategy in STRATEGIES.values():  # warm-up: the kernels of the batch sizes the strategies will use
        strategy(warm, call, base, sched, Clock(args.device), args.cap)
    ours_graphed(trace(args, dtype), call, base, sched, Clock(args.device), args.cap)  # every bucket's graph
    outputs: dict[str, list[torch.Tensor]] = {}
    for name, strategy in STRATEGIES.items():
        requests = trace(args, dtype)
        clock = Clock(args.device)
        strategy(requests, call, base, sched, clock, args.cap)
        total = max(request.finished for request in requests)
        instrumented = Clock(args.device, instrument=True)
        strategy(trace(args, dtype), call, base, sched, instrumented, args.cap)
        instrumented_total = instrumented.now()
        latencies = sorted(request.finished - request.arrival for request in requests)
        outputs[name] = [request.output for request in requests]
        rows.append(
            {
                "section": "serving",
                "strategy": name,
                "requests": len(requests),
                "request_steps": sum(request.steps for request in requests),
                "total_s": total,
                "throughput_rps": len(requests) / total,
                "mean_latency_s": statistics.mean(latencies),
                "p99_latency_s": latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)],
                "outside_model": (
                    1 - instrumented.in_model.seconds / instrumented_total if instrumented.in_model.seconds else None
                ),
                "copy_out_share": instrumented.copy_out.seconds / instrumented_total,
                "gap_to_one_at_a_time": max(
                    relative_gap(ours_out, ref)
                    for ours_out, ref in zip(outputs[name], outputs["one at a time"], strict=True)
                ),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ diffusion forcing
def forcing(args: argparse.Namespace, dtype: torch.dtype) -> list[dict[str, Any]]:
    """SkyReels-V2's diffusion forcing loop (asynchronous: each frame lags the one before by `ar_step` steps), its
    model a small `SkyReelsV2Transformer3DModel` (Wan's architecture, per-frame timesteps): diffusers' loop as its
    pipeline writes it (a deep-copied UniPC scheduler per latent frame, each stepped on its own with a `.item()` of
    the update mask per frame per iteration) against ours (one state per frame; the frames that step stacked into
    one state, stepped in one call per iteration, split back and restacked only when that set changes).
    Scheduler time is what each spends outside the model; the latents are float32, the model bf16, as in the
    pipeline. The pipeline's loop lets UniPC keep a view of the latents it then overwrites (its corrector reads the
    new sample for the old one): the same loop with each sample cloned is the reference the gaps are measured to."""
    from diffusers.pipelines.skyreels_v2.pipeline_skyreels_v2_diffusion_forcing import (
        SkyReelsV2DiffusionForcingPipeline,
    )

    base = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0)
    sched = from_diffusers(base)
    torch.manual_seed(0)
    width = args.heads * args.head_dim
    model = diffusers.SkyReelsV2Transformer3DModel(
        num_attention_heads=args.heads,
        attention_head_dim=args.head_dim,
        text_dim=args.text_dim,
        ffn_dim=4 * width,
        num_layers=args.forcing_layers,
        num_frame_per_block=1,
    )
    model = model.to(args.device, dtype).eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(3)
    frames, size = args.frames, args.forcing_size
    start = torch.randn(1, 16, frames, size, size, generator=generator).to(args.device)
    positive, negative = (
        torch.randn(1, args.tokens, args.text_dim, generator=generator).to(args.device, dtype) for _ in "pn"
    )
    probe = copy.deepcopy(base)
    probe.set_timesteps(args.forcing_steps, device=args.device)
    step_matrix, _, update_mask, intervals = SkyReelsV2DiffusionForcingPipeline.generate_timestep_matrix(
        None, frames, probe.timesteps, frames, args.ar_step, 0, 1
    )
    updated = []  # each iteration's stepped frames, [lo, hi): contiguous (finished before, not started after)
    for mask in update_mask:
        where = mask.nonzero().flatten().tolist()
        assert where == list(range(where[0], where[-1] + 1)), "diffusion forcing steps a contiguous run of frames"
        updated.append((where[0], where[-1] + 1))

    def predict(latents: torch.Tensor, row: torch.Tensor, interval: tuple[int, int]) -> torch.Tensor:
        lo, hi = interval
        model_input = latents[:, :, lo:hi].to(dtype).clone()
        timestep = row.expand(1, -1)[:, lo:hi].clone()
        kwargs = {"enable_diffusion_forcing": True, "return_dict": False}
        cond = model(model_input, timestep, positive, **kwargs)[0]
        uncond = model(model_input, timestep, negative, **kwargs)[0]
        return uncond + GUIDANCE * (cond - uncond)

    def diffusers_way(stopwatch: Stopwatch, clone: bool = False) -> torch.Tensor:
        with stopwatch:
            schedulers = []
            for _ in range(frames):
                scheduler = copy.deepcopy(base)
                scheduler.set_timesteps(args.forcing_steps, device=args.device)
                schedulers.append(scheduler)
        latents = start.clone()
        for i, row in enumerate(step_matrix):
            lo, hi = intervals[i]
            prediction = predict(latents, row, (lo, hi))
            with stopwatch:
                mask = update_mask[i]
                for index in range(lo, hi):
                    if mask[index].item():
                        sample = latents[:, :, index].clone() if clone else latents[:, :, index]
                        latents[:, :, index] = schedulers[index].step(
                            prediction[:, :, index - lo], row[index], sample, return_dict=False
                        )[0]
        return latents

    def ours_way(stopwatch: Stopwatch) -> torch.Tensor:
        latents = start.clone()
        with stopwatch:
            states = [sched.init(args.forcing_steps, sample=latents[:, :, index]) for index in range(frames)]
        active, stacked = (0, 0), None  # the frames stepping now, as one state; restacked when the set changes
        for i, row in enumerate(step_matrix):
            interval = intervals[i]
            prediction = predict(latents, row, interval)
            with stopwatch:
                lo, hi = updated[i]
                if (lo, hi) != active:
                    if stacked is not None:
                        states[active[0] : active[1]] = batching.split(stacked, [1] * (active[1] - active[0]))
                    active, stacked = (lo, hi), batching.stack(states[lo:hi])
                sample = latents[0, :, lo:hi].transpose(0, 1)
                output = prediction[0, :, lo - interval[0] : hi - interval[0]].transpose(0, 1)
                stepped, stacked = sched.step(stacked, output, sample)
                latents[0, :, lo:hi] = stepped.transpose(0, 1)
        return latents

    ways = {
        "diffusers: the pipeline's loop": diffusers_way,
        "diffusers, each sample cloned": functools.partial(diffusers_way, clone=True),
        "ours: frames as rows": ours_way,
    }
    rows, outputs = [], {}
    for name, way in ways.items():
        way(Stopwatch(args.device))  # warm-up
        stopwatch = Stopwatch(args.device)
        sync(args.device)
        begin = time.perf_counter()
        outputs[name] = way(stopwatch)
        sync(args.device)
        total = time.perf_counter() - begin
        reference = outputs.get("diffusers, each sample cloned", outputs[name])
        rows.append(
            {
                "section": "forcing",
                "way": name,
                "frames": frames,
                "iterations": len(step_matrix),
                "frame_steps": int(update_mask.sum()),
                "total_s": total,
                "scheduler_ms": stopwatch.seconds * 1e3,
                "scheduler_us_per_iteration": stopwatch.seconds / len(step_matrix) * 1e6,
                "gap_to_diffusers": relative_gap(outputs[name], reference),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    # The pipeline's loop passes `latents[:, :, index]` (a view) and writes the new sample into it: UniPC keeps the
    # view as `last_sample`, so its next corrector reads the new sample for the old one. The gap is to the loop
    # with each sample cloned, which ours equals.
    rows[0]["gap_to_diffusers"] = relative_gap(outputs["diffusers: the pipeline's loop"], reference)
    again = ways["diffusers, each sample cloned"](Stopwatch(args.device))
    rows.append(
        {"section": "forcing", "check": "the reference loop run twice: max gap", "gap": relative_gap(again, reference)}
    )
    print(json.dumps(rows[-1]), flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ report
def markdown(columns: str, cells: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table after a blank line: `columns` titles separated by " | ", the first one left-aligned, the
    rest numbers (right-aligned) unless their title ends in "<"; a line per row of cells. No rows, no table."""
    if not cells:
        return []
    titles = columns.split(" | ")
    aligns = ["---" if index == 0 or title.endswith("<") else "---:" for index, title in enumerate(titles)]
    titles = [title.removesuffix("<") for title in titles]
    return [
        "",
        f"| {' | '.join(titles)} |",
        f"| {' | '.join(aligns)} |",
        *(f"| {' | '.join(row)} |" for row in cells),
    ]


def table(rows: list[dict[str, Any]]) -> str:
    lines = []
    single_rows = [row for row in rows if row["section"] == "single"]

    def speedup(row: dict[str, Any]) -> str:
        eager = next(
            other["median_ms"]
            for other in single_rows
            if other["variant"] == "diffusers eager"
            and (other["layers"], other["latents"]) == (row["layers"], row["latents"])
        )
        return f"{eager / row['median_ms']:.2f}x"

    lines += markdown(
        "layers (M params) | latents< | variant< | first call (ms) | median (ms) | vs diffusers eager | max gap",
        [
            [
                f"{row['layers']} ({row['parameters_M']})",
                row["latents"],
                row["variant"],
                f"{row['first_ms']:.0f}",
                f"{row['median_ms']:.1f}",
                speedup(row),
                f"{row['gap_to_diffusers']:.1e}",
            ]
            for row in single_rows
        ],
    )
    serving_rows = [row for row in rows if row["section"] == "serving" and "strategy" in row]
    lines += markdown(
        "strategy | requests (steps)< | total (s) | requests/s | mean latency (s) | p99 latency (s) "
        "| outside model | copy-out | max gap",
        [
            [
                row["strategy"],
                f"{row['requests']} ({row['request_steps']})",
                f"{row['total_s']:.2f}",
                f"{row['throughput_rps']:.2f}",
                f"{row['mean_latency_s']:.2f}",
                f"{row['p99_latency_s']:.2f}",
                "n/a" if row["outside_model"] is None else f"{row['outside_model']:.0%}",
                f"{row['copy_out_share']:.1%}",
                f"{row['gap_to_one_at_a_time']:.1e}",
            ]
            for row in serving_rows
        ],
    )
    forcing_rows = [row for row in rows if row["section"] == "forcing" and "way" in row]
    lines += markdown(
        "diffusion forcing | frames | iterations (frame steps) | total (s) | scheduler (ms) "
        "| scheduler us/iteration | max gap",
        [
            [
                row["way"],
                str(row["frames"]),
                f"{row['iterations']} ({row['frame_steps']})",
                f"{row['total_s']:.2f}",
                f"{row['scheduler_ms']:.1f}",
                f"{row['scheduler_us_per_iteration']:.0f}",
                f"{row['gap_to_diffusers']:.1e}",
            ]
            for row in forcing_rows
        ],
    )
    checks = [row for row in rows if "check" in row]
    lines += [
        f"- {row['check']}: " + (f"{row['gap']:.1e}" if "gap" in row else "passed" if row["passed"] else "FAILED")
        for row in checks
    ]
    return "\n".join(lines).lstrip("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--sections", nargs="+", default=["single", "serving", "forcing"], choices=["single", "serving", "forcing"]
    )
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 8], help="transformer layers (single)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="latent height = width (single)")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--text-dim", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--profile", action="store_true", help="profile the eager loops first (single)")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--mix", type=int, nargs="+", default=[16, 24, 28, 40], help="step counts (serving)")
    parser.add_argument("--gap-ms", type=float, default=20.0, help="mean gap between arrivals")
    parser.add_argument("--cap", type=int, default=16, help="requests in flight (serving)")
    parser.add_argument("--serve-layers", type=int, default=8)
    parser.add_argument("--serve-size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=21, help="latent frames (forcing)")
    parser.add_argument("--forcing-size", type=int, default=16, help="latent height = width (forcing)")
    parser.add_argument("--forcing-layers", type=int, default=2)
    parser.add_argument("--forcing-steps", type=int, default=30)
    parser.add_argument("--ar-step", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke sizes")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.tiny:
        args.layers, args.sizes, args.heads, args.head_dim, args.text_dim, args.tokens = [1], [8], 2, 8, 16, 4
        args.steps, args.repeats, args.requests, args.mix, args.gap_ms = 3, 1, 6, [2, 3], 1.0
        args.cap, args.serve_layers, args.serve_size, args.compile = 4, 1, 8, False
        args.frames, args.forcing_size, args.forcing_layers, args.forcing_steps, args.ar_step = 4, 4, 1, 4, 1
    dtype = getattr(torch, args.dtype)
    # Compiled models are static per resolution, as deployments keep them; every variant and size compiles its own.
    torch._dynamo.config.automatic_dynamic_shapes = False
    torch._dynamo.config.recompile_limit = 64
    rows = []
    sections = {"single": single, "serving": serving, "forcing": forcing}
    with torch.inference_mode():
        for section in args.sections:  # in the order given: the first one's rows come back if a call runs out
            rows += sections[section](args, dtype)
    report = table(rows)
    header = f"torch {torch.__version__}, diffusers {diffusers.__version__}, {args.device}"
    if args.device.startswith("cuda"):
        header += f" ({torch.cuda.get_device_name()})"
    print(f"\n{header}, {args.dtype}; command: python {' '.join(sys.argv)}\n{report}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))
        (args.out / "results.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
