"""Disaggregated serving: requests handed from one worker to another mid-loop over `torch.distributed`.

    torchrun --nproc-per-node 2 benchmarks/disaggregated.py --device cuda --out /tmp/disagg   # two GPUs, NCCL
    python benchmarks/disaggregated.py --device cuda --out /tmp/disagg    # one GPU: two processes on it, gloo
    python benchmarks/disaggregated.py --device cpu --tiny                # the CPU, gloo: CI's smoke run

Without torchrun the script starts its two processes itself. NCCL carries the payloads where each rank has a GPU
of its own; otherwise gloo carries them from host memory (`handoff.send/recv`'s `device`), and each rank still
computes on `--device`. NVLink multicast stays off (`NCCL_NVLS_ENABLE=0`): point-to-point sends never use it.

Part 1, handoff: for every class of `functional_sched.SCHEDULERS` (its default config, a guided toy denoiser, a
request of `--rows` rows), rank 0 prepares the request, takes half of its steps and sends it; rank 1 receives it,
takes the rest and compares the latents with the undisturbed run it makes itself from the same request: every
class must be bit-identical (the state carries the solver's history and counters, noise comes from (seed, step)).
Part 2, pipelined: rank 0 denoises `--requests` requests one after another (a real denoising loop of a small conv
net), sending each to rank 1 as it finishes; rank 1 decodes each (a small conv decoder) while rank 0 already
denoises the next. Measured per request: the payload's bytes, the handoff's latency (rank 0 starts `send` to rank 1
holding the request while it waits in `recv`, timed on the host's monotonic clock, which both processes share), and
the throughput against the same work done on one worker. Two processes on one GPU time-slice it, so there the
pipelined throughput says nothing of two GPUs'. Rank 1 prints the table last; `--out` gets results.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import functional_sched as fs
from functional_sched.stages import Decode, Denoise, Pipeline, PrepareLatents, PrepareTimesteps, Req, handoff

EMBED = (8, 32)  # tokens x width of the toy prompt embeddings


# ------------------------------------------------------------------------------------------------ models
class ToyDenoiser(torch.nn.Module):
    """A small conv net conditioned on the timestep and the prompt: enough work per call for a pipeline to overlap."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.inp = torch.nn.Conv2d(channels, width, 3, padding=1)
        self.mid = torch.nn.Conv2d(width, width, 3, padding=1)
        self.out = torch.nn.Conv2d(width, channels, 3, padding=1)
        self.prompt = torch.nn.Linear(EMBED[1], width)

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        condition = self.prompt(embeds.mean(dim=1))[..., None, None]
        scale = (timestep.float() / 1000.0).view(-1, 1, 1, 1)
        hidden = torch.nn.functional.silu(self.inp(latents) * (1 + scale))
        hidden = torch.nn.functional.silu(self.mid(hidden + condition))
        return self.out(hidden)


def toy_decoder(channels: int) -> torch.nn.Module:
    """latents [R, C, H, W] -> images [R, 3, 8H, 8W], as a VAE decoder's shape."""
    return torch.nn.Sequential(
        torch.nn.ConvTranspose2d(channels, 64, 4, stride=4),
        torch.nn.SiLU(),
        torch.nn.ConvTranspose2d(64, 3, 2, stride=2),
    )


def built(module: torch.nn.Module, device: str) -> torch.nn.Module:
    return module.to(device).eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------------ requests
def request(index: int, shape: tuple[int, ...], device: str, steps: int) -> Req:
    """A guided request whose embeddings and seed follow from `index` (both ranks build the same one)."""
    generator = torch.Generator().manual_seed(1000 + index)
    rows = shape[0]
    return Req(
        prompt_embeds=torch.randn(rows, *EMBED, generator=generator).to(device),
        negative_prompt_embeds=torch.randn(rows, *EMBED, generator=generator).to(device),
        guidance_scale=4.5,
        seed=index,
        num_inference_steps=steps,
        latent_shape=shape,
        device=device,
    )


def prepared(sched: fs.Scheduler, req: Req) -> Req:
    return Pipeline((PrepareTimesteps(sched), PrepareLatents(sched))).forward(req)


# ------------------------------------------------------------------------------------------------ the two parts
def handoff_part(args: argparse.Namespace, rank: int, device: str, wire: str) -> list[dict[str, Any]]:
    """Part 1: every class's request sent mid-loop; rank 1 returns a row per class."""
    torch.manual_seed(0)
    model = built(ToyDenoiser(args.channels, args.width), device)
    rows = []
    for index, cls in enumerate(fs.SCHEDULERS):
        sched = cls()
        stage = Denoise(model, sched)
        req = prepared(sched, request(index, (args.rows, args.channels, args.size, args.size), device, args.steps))
        total = sched.steps_left(req.state)
        before = total // 2
        if rank == 0:
            for _ in range(before):
                req = stage.step(req)
            handoff.send(req, sched, dst=1, device=wire)
            continue
        received = handoff.recv(sched, src=0, device=wire, to=device)
        finished = stage.forward(received).latents
        alone = stage.forward(req).latents
        rows.append(
            {
                "class": cls.__name__,
                "steps": total,
                "handed_over_after": before,
                "bit_identical": bool(torch.equal(finished, alone)),
                "max_abs_difference": float((finished - alone).abs().max()),
            }
        )
    return rows


def pipelined_part(args: argparse.Namespace, rank: int, device: str, wire: str) -> dict[str, Any] | None:
    """Part 2: the handoff alone (an idle receiver), then denoise on rank 0 and decode on rank 1 with requests in
    flight; rank 1 returns the figures."""
    torch.manual_seed(0)
    model = built(ToyDenoiser(args.channels, args.width), device)
    decoder = built(toy_decoder(args.channels), device)
    sched = fs.FlowMatchEulerDiscrete(shift=3.0)
    denoise, decode = Denoise(model, sched), Decode(decoder)
    shape = (args.rows, args.channels, args.size, args.size)
    reqs = [request(index, shape, device, args.steps) for index in range(args.requests)]

    def synchronize() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def one_worker() -> float:
        """The same work on one worker (after one untimed request): its seconds."""
        decode.forward(denoise.forward(prepared(sched, reqs[0])))
        synchronize()
        start = time.monotonic()
        for req in reqs:
            decode.forward(denoise.forward(prepared(sched, req)))
        synchronize()
        return time.monotonic() - start

    alone_s = one_worker() if rank == 0 else 0.0  # rank 1 idle meanwhile: the device is rank 0's alone
    # The handoff alone: a finished request sent while rank 1 waits in `recv`, from `send`'s call to the request on
    # rank 1's device.
    finished = denoise.forward(prepared(sched, reqs[0])) if rank == 0 else None
    stamps, arrivals, sizes = [], [], []
    for _ in range(args.requests):
        dist.barrier()
        if rank == 0:
            synchronize()
            stamps.append(time.monotonic())
            sizes.append(handoff.send(finished, sched, dst=1, device=wire))
        else:
            handoff.recv(sched, src=0, device=wire, to=device)
            synchronize()
            arrivals.append(time.monotonic())
    dist.barrier()
    # Pipelined: rank 0 denoises request after request, rank 1 decodes each as it comes.
    if rank == 0:
        for req in reqs:
            handoff.send(denoise.forward(prepared(sched, req)), sched, dst=1, device=wire)
        dist.send_object_list([(alone_s, stamps, sizes)], dst=1)
        return None
    start = time.monotonic()
    for _ in reqs:
        decode.forward(handoff.recv(sched, src=0, device=wire, to=device))
    synchronize()
    pipelined_s = time.monotonic() - start
    sent: list[Any] = [None]
    dist.recv_object_list(sent, src=0)
    alone_s, stamps, sizes = sent[0]
    handoff_us = [(arrived - stamp) * 1e6 for arrived, stamp in zip(arrivals, stamps, strict=True)]
    return {
        "scheduler": sched.name,
        "requests": args.requests,
        "steps": args.steps,
        "latents": list(shape),
        "payload_bytes": statistics.median(sizes),
        "handoff_us_median": statistics.median(handoff_us),
        "handoff_us_max": max(handoff_us),
        "one_worker_requests_per_s": args.requests / alone_s,
        "pipelined_requests_per_s": args.requests / pipelined_s,
    }


# ------------------------------------------------------------------------------------------------ processes
def worker(rank: int, args: argparse.Namespace, port: int | None) -> None:
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    backend = "nccl" if gpus >= 2 else "gloo"
    device = f"cuda:{rank}" if backend == "nccl" else ("cuda:0" if args.device == "cuda" else "cpu")
    wire = device if backend == "nccl" else "cpu"
    if args.device == "cuda":
        torch.cuda.set_device(device)
    init = {} if port is None else {"init_method": f"tcp://127.0.0.1:{port}", "rank": rank, "world_size": 2}
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=args.timeout), **init)
    try:
        with torch.inference_mode():
            rows = handoff_part(args, rank, device, wire)
            dist.barrier()
            figures = pipelined_part(args, rank, device, wire)
        if rank == 1:
            report(args, backend, device, rows, figures)
    finally:
        dist.destroy_process_group()


def report(args: argparse.Namespace, backend: str, device: str, rows: list[dict[str, Any]], figures: Any) -> None:
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    results = {"backend": backend, "device": name, "torch": torch.__version__, "handoff": rows, "pipelined": figures}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2))
    failed = [row["class"] for row in rows if not row["bit_identical"]]
    print(f"\n{backend} between two processes, {name}, torch {torch.__version__}")
    print(f"handoff mid-loop: {len(rows) - len(failed)}/{len(rows)} classes bit-identical to the undisturbed run")
    for row in rows:
        if not row["bit_identical"]:
            print(f"  {row['class']}: differs by {row['max_abs_difference']:.3g}")
    print("| requests x steps | latents | payload | handoff latency (median / max) | one worker | pipelined |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    print(
        f"| {figures['requests']} x {figures['steps']} | {'x'.join(map(str, figures['latents']))} | "
        f"{figures['payload_bytes'] / 1024:.1f} KiB | {figures['handoff_us_median']:.0f} / "
        f"{figures['handoff_us_max']:.0f} us | {figures['one_worker_requests_per_s']:.1f} req/s | "
        f"{figures['pipelined_requests_per_s']:.1f} req/s |"
    )
    if failed:
        raise SystemExit(f"not bit-identical after the handoff: {', '.join(failed)}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--tiny", action="store_true", help="small latents and few requests: the CI smoke run")
    parser.add_argument("--steps", type=int, default=None, help="inference steps (default 20; tiny 6)")
    parser.add_argument("--requests", type=int, default=None, help="pipelined requests (default 32; tiny 4)")
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=300, help="seconds a collective may wait")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    args.steps = args.steps or (6 if args.tiny else 20)
    args.requests = args.requests or (4 if args.tiny else 32)
    args.channels, args.size, args.width = (4, 8, 16) if args.tiny else (16, 64, 128)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    if "RANK" in os.environ:  # started by torchrun
        worker(int(os.environ["RANK"]), args, None)
        return
    mp.start_processes(worker, args=(args, free_port()), nprocs=2, start_method="spawn")


if __name__ == "__main__":
    main()
