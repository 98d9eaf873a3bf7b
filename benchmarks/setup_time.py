"""A new request's set-up: our `init` (the schedule's host plan cached) against diffusers' `deepcopy` of a
configured scheduler + `set_timesteps`, the medians of many calls, as JSON rows.

    python benchmarks/setup_time.py [--device cuda] [--shape 1x16x128x128] [--steps 50] [--repeats 2000]

Host time per call (what a server spends per request before its first step); on CUDA our copy to the device is
issued without a sync, and diffusers' `set_timesteps(device=...)` moves its tables as it does.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable

import diffusers
import torch

from functional_sched.adapters import from_diffusers

CONFIGS = {
    "FlowMatchEulerDiscreteScheduler": {"shift": 3.0},
    "DPMSolverMultistepScheduler": {},
    "UniPCMultistepScheduler": {},
}


def median_us(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", default="1x4x64x64")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    latents = torch.zeros(tuple(int(size) for size in args.shape.split("x")), device=device)
    rows = []
    for name, options in CONFIGS.items():
        reference = getattr(diffusers, name)(**options)
        sched = from_diffusers(reference)
        ours = median_us(lambda sched=sched: sched.init(args.steps, sample=latents), args.repeats)

        def theirs(reference=reference) -> None:
            copy.deepcopy(reference).set_timesteps(args.steps, device=device)

        rows.append({"scheduler": name, "ours_us": ours, "diffusers_us": median_us(theirs, args.repeats)})
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
