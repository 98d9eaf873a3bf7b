"""Every report config's step under `torch.compile(fullgraph=True)` on a device: no graph break, no recompile over
a whole loop, and the compiled loop against the eager one. Prints a markdown table; exits 1 on any failure.

    python benchmarks/compile_check.py --device cuda   # the GPU side of the compile tests in tests/test_contract.py

The compiled step time is the median over loops of one compiled `step` call (no CUDA graphs: that is the loop
driver's job); it is reported, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch._dynamo.testing

from functional_sched.adapters._compare import LoopRun, Run, _timed, prepare, toy_denoiser
from functional_sched.adapters.report import cases, describe_device


def check(run: Run | LoopRun, repeats: int) -> dict[str, Any]:
    sched, generator_seed = run.ours, 0

    def loop(step: Any) -> torch.Tensor:
        state, sample = run.start_ours(), run.sample
        generator = torch.Generator(sample.device).manual_seed(generator_seed) if run.case.stochastic else None
        for index in range(sched.steps_left(state)):  # a fresh state's calls (an adaptive solve's budget)
            model_output = toy_denoiser(sample, sched.timestep(state))
            noise = {"noise": torch.randn(sample.shape, generator=generator, device=sample.device)} if generator else {}
            sample, state = step(state, model_output, sample, **noise)
            if index == 0:
                torch.compiler.set_stance("fail_on_recompile")
        torch.compiler.set_stance("default")
        return sample

    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(sched.step, fullgraph=True, backend=counter)
    row: dict[str, Any] = {"config": run.case.label, "scheduler": run.case.diffusers_name}
    try:
        eager = loop(sched.step)
        result = loop(compiled)
        row["graphs"] = counter.frame_count
        row["error"] = ((result.double() - eager.double()).abs().max() / eager.double().abs().max()).item()
        state, sample = run.start_ours(), run.sample
        model_output = toy_denoiser(sample, sched.timestep(state))
        noise = {"noise": torch.randn_like(sample)} if run.case.stochastic else {}
        times = [_timed(lambda: compiled(state, model_output, sample, **noise), sample.device) for _ in range(repeats)]
        row["compiled_us"] = statistics.median(times[1:]) * 1e6
        # A solve whose steps the data chooses (DPM adaptive) may take others under inductor's rounding: two solves of
        # one tolerance (tests/specs: `decisions_follow_rounding`).
        row["ok"] = row["graphs"] == 1 and row["error"] <= (1e-6 if sched.timestep_table else 1e-2)
    except Exception as error:  # a graph break, a recompile or a failed kernel: report it, fail the run
        torch.compiler.set_stance("default")
        row.update(graphs="-", error=float("nan"), compiled_us=float("nan"), ok=False, reason=repr(error)[:200])
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--shape", default="1x16x128x128")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    device, shape = torch.device(args.device), tuple(int(size) for size in args.shape.split("x"))
    print(f"- device: {describe_device(device)}; torch {torch.__version__}; shape {args.shape}; {args.steps} steps")
    print("\n| scheduler | config | graphs | compiled vs eager (rel. max) | compiled step us | result |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    rows = [check(prepare(case, args.steps, shape, device), args.repeats) for case in cases()]
    for row in rows:
        verdict = "PASS" if row["ok"] else f"FAIL {row.get('reason', '')}"
        print(
            f"| {row['scheduler'].removesuffix('Scheduler')} | {row['config']} | {row['graphs']} "
            f"| {row['error']:.1e} | {row['compiled_us']:.1f} | {verdict} |"
        )
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
