"""Memory and time of backpropagating through a whole sampling loop (reward fine-tuning through the sampler, DRaFT
and AlignProp style), plain and with `denoise(..., checkpoint=K)`: runs of K steps recomputed during backward.

    python benchmarks/checkpoint_memory.py [--device cuda] [--steps 25] [--shape 4x4x64x64]

The denoiser is a small convolutional network with a timestep embedding (its activations are what a real
network's are to the sampler: per-step memory that backward needs). Two figures: the bytes of the distinct storages
autograd keeps from forward for backward (saved-tensor hooks; a checkpointed loop keeps only its runs' inputs), and
the peak over forward and backward, recomputation included, above what was held before: on CUDA
`torch.cuda.max_memory_allocated`, on Linux CPUs the process's resident high-water mark (reset, after handing freed
memory back to the system, before each run). Times are medians of forward plus backward.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import functional_sched as fs

SCHEDULERS: dict[str, Callable[[], fs.Scheduler]] = {
    "flow-euler": lambda: fs.FlowMatchEulerDiscrete(shift=3.0),
    "dpm++2m": lambda: fs.DPMSolverMultistep(),
    "unipc-bh2": lambda: fs.UniPCMultistep(),
}


class Denoiser(nn.Module):
    def __init__(self, channels: int, width: int = 64) -> None:
        super().__init__()
        self.embed = nn.Linear(1, width)
        self.into = nn.Conv2d(channels, width, 3, padding=1)
        self.middle = nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = nn.functional.silu(self.into(x) + self.embed(t[:, None].to(x.dtype) / 1000)[:, :, None, None])
        return self.out(nn.functional.silu(self.middle(h)))


def measure(
    name: str, shape: tuple[int, ...], steps: int, checkpoint: int | None, device: torch.device, repeats: int
) -> dict[str, float]:
    torch.manual_seed(0)
    model = Denoiser(shape[1]).to(device)
    sched = SCHEDULERS[name]()
    noise = torch.randn(shape, device=device)

    def loss() -> torch.Tensor:
        sample = fs.denoise(sched, model, noise, num_inference_steps=steps, checkpoint=checkpoint)
        return sample.square().mean()  # a stand-in reward

    kept: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        loss().backward()
    saved = sum(kept.values())
    model.zero_grad()
    peak = float("nan")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        loss().backward()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    elif STATUS.exists():
        base = _reset_resident_peak()
        loss().backward()
        peak = _resident("VmHWM") - base
    times = []
    for _ in range(repeats):
        model.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return {"saved_mb": saved / 2**20, "peak_mb": peak / 2**20, "ms": statistics.median(times) * 1e3}


STATUS = Path("/proc/self/status")


def _resident(key: str) -> int:
    return int(re.search(rf"^{key}:\s+(\d+) kB", STATUS.read_text(), flags=re.MULTILINE).group(1)) * 1024


def _reset_resident_peak() -> int:
    """Hand freed memory back (glibc's malloc_trim), reset the high-water mark; the resident bytes now."""
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc is not None and hasattr(ctypes.CDLL(libc), "malloc_trim"):
        ctypes.CDLL(libc).malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return _resident("VmRSS")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--shape", default="4x4x64x64")
    parser.add_argument("--every", default="0,1,5", help="checkpoint run lengths to measure (0: no checkpointing)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    shape = tuple(int(size) for size in args.shape.split("x"))
    runs = [int(every) or None for every in args.every.split(",")]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"backward through a {args.steps}-step loop, {args.shape} float32, {where}, torch {torch.__version__}")
    print("| scheduler | checkpoint | kept for backward (MB) | peak over forward + backward (MB) | time (ms) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name in SCHEDULERS:
        for every in runs:
            row = measure(name, shape, args.steps, every, device, args.repeats)
            label = "none" if every is None else f"every {every}"
            print(f"| {name} | {label} | {row['saved_mb']:.1f} | {row['peak_mb']:.1f} | {row['ms']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
