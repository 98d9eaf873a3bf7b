"""The drop-in's own eager step against diffusers': a 25-step loop of `scheduler.step(out, t, y, return_dict=False)`
over `scheduler.timesteps`, one thread, the median of 60 loops per class, for diffusers' scheduler and the drop-in.

    python benchmarks/drop_in_step.py [--shape 1x4x64x64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import diffusers
import torch

from functional_sched.adapters.drop_in import DROP_INS, as_diffusers


def per_step(scheduler: object, sample: torch.Tensor, output: torch.Tensor) -> float:
    """Microseconds per `step` call of one 25-step loop (Heun-type classes make two calls per step)."""
    scheduler.set_timesteps(25)
    latents, timesteps = sample, scheduler.timesteps
    start = time.perf_counter()
    for t in timesteps:
        latents = scheduler.step(output, t, latents, return_dict=False)[0]
    return (time.perf_counter() - start) / len(timesteps) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="1x4x64x64")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    shape = tuple(int(size) for size in args.shape.split("x"))
    sample, output = torch.randn(shape), torch.randn(shape)
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, {args.shape}, 1 thread, us/step")
    for name in DROP_INS:
        reference, ours = getattr(diffusers, name)(), as_diffusers(getattr(diffusers, name)())
        for scheduler in (reference, ours):
            per_step(scheduler, sample, output)  # warm-up
        theirs = statistics.median(per_step(reference, sample, output) for _ in range(60))
        mine = statistics.median(per_step(ours, sample, output) for _ in range(60))
        print(f"{name}: diffusers {theirs:.1f}, drop-in {mine:.1f}, drop-in / diffusers {mine / theirs:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
