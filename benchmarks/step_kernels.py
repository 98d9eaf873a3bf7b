"""Where a step's time goes inside the whole-loop graph: kernels per step and replay time, per compile setting.

For each scheduler at one shape: the CUDA kernels one compiled step launches (torch.profiler over a compiled loop,
divided by its steps; their names), and the graph replay per step with inductor's defaults and with
`combo_kernels` (independent kernels of a step launched as one).

    python benchmarks/step_kernels.py --shape 1x16x128x128
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite

from functional_sched.machinery.loop import SamplingLoop

VARIANTS = {"inductor defaults": {}, "combo_kernels (the loop default)": {"combo_kernels": True}}


def kernels_per_step(loop: SamplingLoop, config: suite.Config) -> tuple[float, list[str]]:
    loop(config.latents, config.output, num_inference_steps=config.steps)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        loop(config.latents, config.output, num_inference_steps=config.steps)
        torch.cuda.synchronize()
    names = [event.name for event in profile.events() if event.device_type == torch.autograd.DeviceType.CUDA]
    counts = collections.Counter(names)
    return len(names) / config.steps, [f"{count // config.steps}x {name[:70]}" for name, count in counts.items()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1x16x128x128")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    shape = tuple(int(size) for size in args.shape.split("x"))
    device = torch.device("cuda")
    timer = suite.Timer(device)
    lines = ["| scheduler | setting | kernels per step | replay us per step |", "| --- | --- | ---: | ---: |"]
    for name in suite.SCHEDULERS:
        for variant, options in VARIANTS.items():
            config = suite.Config(name, shape, torch.float32, args.steps, device)
            compiled = SamplingLoop(config.sched, suite._fixed_output, mode="compile", compile_options=options)
            graphed = SamplingLoop(config.sched, suite._fixed_output, mode="graph")
            graphed._compiled_step = compiled._compiled_step
            count, names = kernels_per_step(compiled, config)
            graphed(config.latents, config.output, num_inference_steps=args.steps)
            replay = next(iter(graphed._graphs.values())).graph.replay
            per_step = timer.seconds(lambda replay=replay: replay, repeats=20, warmup=3) / args.steps * 1e6
            lines.append(f"| {name} | {variant} | {count:.1f} | {per_step:.2f} |")
            print(f"{name} {variant}: " + "; ".join(names), flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
