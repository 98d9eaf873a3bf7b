"""Where an eager step's time goes, ours beside diffusers': torch.profiler's ops (self CPU time, one loop) and
cProfile's Python functions (ten loops), for one scheduler, shape and dtype of the suite.

    python benchmarks/profile_step.py --scheduler flow-euler --dtype bf16 --device cuda
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler", default="flow-euler", choices=list(suite.SCHEDULERS))
    parser.add_argument("--dtype", default="fp32", choices=list(suite.DTYPES))
    parser.add_argument("--shape", default="1x16x128x128")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    shape = tuple(int(size) for size in args.shape.split("x"))
    config = suite.Config(args.scheduler, shape, suite.DTYPES[args.dtype], args.steps, torch.device(args.device))
    for side, make in (("diffusers", config.diffusers_loop), ("ours", config.eager_loop)):
        make()()  # warm-up
        loop = make()
        with torch.profiler.profile() as profile:
            loop()
        python = cProfile.Profile()
        for _ in range(10):
            loop = make()
            python.runcall(loop)
        stats = io.StringIO()
        pstats.Stats(python, stream=stats).sort_stats("tottime").print_stats(10)
        print(f"## {side}: {args.scheduler} {args.shape} {args.dtype}")
        print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
        print(stats.getvalue()[stats.getvalue().find("ncalls") :])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
