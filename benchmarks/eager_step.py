"""Eager per-step time of the scheduler step alone (no model): the reference (diffusers 0.42.1's or sglang 0.5.23's
class, k-diffusion 0.1.1.post1's loop, Flow-GRPO's step) vs functional_sched.

For each config of the report's grids (`functional_sched.adapters.report.GRID`, `SGLANG_GRID` and `BEYOND_GRID`:
sglang's and k-diffusion's rows where they are installed) and each shape, both sides run full loops replaying the same
toy model outputs; the figure is the median over loops of the time per `step` call. k-diffusion's samplers are whole
loops: their figure is the loop's time over its model calls (the model handing back recorded outputs), ours one eager
`step` per model call.
Prints a markdown table. `--profile LABEL` instead profiles one config (torch.profiler ops and cProfile's Python
functions, by self time) on the first shape.

    python benchmarks/eager_step.py                        # CPU: 1x4x64x64 and 1x16x128x128, 25 steps
    python benchmarks/eager_step.py --profile "SD3"
    python benchmarks/eager_step.py --no-checks            # our step inside functional_sched.unchecked()
    python benchmarks/eager_step.py --only PNDM            # one class's configs (by diffusers class name)
    python benchmarks/eager_step.py --only FlowUniPC --library sglang   # sglang's class's (or --only OurClassName)
    python benchmarks/eager_step.py --library k-diffusion  # k-diffusion's loops per model call (or flow_grpo)
    python benchmarks/eager_step.py --default-allocator    # glibc's malloc thresholds left to move (steady_allocator)
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import ctypes
import ctypes.util
import datetime
import io
import pstats
import shlex
import sys
from collections.abc import Callable, Sequence

import diffusers
import torch

import functional_sched
from functional_sched.adapters import k_diffusion, sglang
from functional_sched.adapters._cases import (
    OPTIONAL_LIBRARIES,
    library_available,
    reference_name,
    scheduler_class,
    skipped,
)
from functional_sched.adapters._compare import LOOP_LIBRARIES, prepare
from functional_sched.adapters.report import Case, cases, describe_device

SHAPES = ((1, 4, 64, 64), (1, 16, 128, 128))


def steady_allocator() -> bool:
    """Fix glibc malloc's mmap and trim thresholds (256 and 512 MB), as a long-running process settles them: 1 MB
    latents then come from the heap on both sides, not from fresh mappings faulted in page by page, whose count
    swings with the allocator's history (the first config measured at a size paid 1.4-2.9x). True where it could."""
    name = ctypes.util.find_library("c")
    if sys.platform != "linux" or name is None:
        return False
    libc = ctypes.CDLL(name)
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 256 << 20)) and bool(libc.mallopt(m_trim_threshold, 512 << 20))


def table(
    shapes: Sequence[tuple[int, ...]],
    steps: int,
    repeats: int,
    device: torch.device,
    checks: bool,
    only: str | None,
    allocator: str,
    library: str | None = None,
) -> str:
    lines = [
        f"- device: {device.type}, {describe_device(device)} (`torch.get_num_threads()` = {torch.get_num_threads()}); "
        f"host allocator: {allocator}",
        f"- torch {torch.__version__}, diffusers {diffusers.__version__}"
        + (f", sglang {sglang.SGLANG_VERSION}" if sglang.available() else "")
        + (f", k-diffusion {k_diffusion.K_DIFFUSION_VERSION}" if library_available("k-diffusion") else "")
        + f", float32, {steps} steps, "
        f"median of {repeats} loops after one warm-up; our eager input checks "
        + ("on (the default)" if checks else "off (`functional_sched.unchecked()`)"),
        f"- date: {datetime.date.today().isoformat()}",
        f"- command: `python {shlex.join(sys.argv)}`",
        "",
        "| scheduler | config | shape | reference us/step | ours us/step | ours / reference |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for name in OPTIONAL_LIBRARIES:
        if skipped(library=name):
            lines.insert(-3, f"- {name} is not installed: its {len(skipped(library=name))} configs skipped")
    if any(case.library in LOOP_LIBRARIES for case in selected(only, library)):
        lines.insert(
            -3,
            "- k-diffusion's rows: its whole loop's time over its model calls (the model handing back recorded "
            "outputs) beside our eager `step` per call",
        )
    for shape in shapes:
        for case in selected(only, library):
            run = prepare(case, steps, shape, device)
            _, reference_outputs, our_outputs = run.parity()
            reference_seconds, our_seconds = run.time_steps(reference_outputs, our_outputs, repeats)
            reference_us, ours_us = reference_seconds * 1e6, our_seconds * 1e6
            lines.append(
                f"| {reference_name(case).removesuffix('Scheduler')} | {case.label} | {'x'.join(map(str, shape))} "
                f"| {reference_us:.1f} | {ours_us:.1f} | {ours_us / reference_us:.2f} |"
            )
    return "\n".join(lines)


def selected(only: str | None, library: str | None) -> list[Case]:
    """The cases of reference classes whose name holds `only` (or of our class named `only`), of `library`."""
    return [
        case
        for case in cases()
        if (only is None or only in case.diffusers_name or only == scheduler_class(case).__name__)
        and (library is None or case.library == library)
    ]


def profile(case: Case, shape: tuple[int, ...], steps: int, repeats: int, device: torch.device) -> str:
    """Top torch ops (one loop) and Python functions (`repeats` loops) by self time, for each side; setup excluded."""
    run = prepare(case, steps, shape, device)
    _, reference_outputs, our_outputs = run.parity()
    sides: dict[str, Callable[[], Callable[[], None]]] = {
        case.library: lambda: run.reference_loop(reference_outputs),
        "functional_sched": lambda: run.our_loop(our_outputs),
    }
    report = []
    for name, make_loop in sides.items():
        make_loop()()  # warm-up
        loop = make_loop()
        with torch.profiler.profile() as torch_profile:
            loop()
        python_profile = cProfile.Profile()
        for _ in range(repeats):
            loop = make_loop()
            python_profile.runcall(loop)
        stats = io.StringIO()
        pstats.Stats(python_profile, stream=stats).sort_stats("tottime").print_stats(12)
        ops = torch_profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
        report.append(f"## {name}: {case.label}, {'x'.join(map(str, shape))}\n{ops}\n{_trim(stats.getvalue())}")
    return "\n".join(report)


def _trim(pstats_text: str) -> str:
    """pstats output from its column header on (drops the preamble of call counts and the sort order)."""
    lines = pstats_text.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(line for line in lines[start:] if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--profile", metavar="LABEL", help="profile the config with this label instead")
    parser.add_argument(
        "--only", metavar="CLASS", help="only the configs of reference classes whose name has this (or our class's)"
    )
    parser.add_argument(
        "--library",
        choices=("diffusers", "sglang", "k-diffusion", "flow_grpo"),
        help="only the configs of this reference library",
    )
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave glibc malloc thresholds alone (steady_allocator)",
    )
    parser.add_argument("--no-checks", action="store_true", help="time our step inside functional_sched.unchecked()")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    steady = not args.default_allocator and steady_allocator()
    allocator = "glibc malloc, thresholds fixed (steady_allocator)" if steady else "as the process found it"
    diffusers.utils.logging.set_verbosity_error()
    with contextlib.nullcontext() if not args.no_checks else functional_sched.unchecked():
        if args.profile:
            matches = [case for case in selected(args.only, args.library) if case.label == args.profile]
            if not matches:
                parser.error(f"no config labelled {args.profile!r}; labels: {', '.join(c.label for c in cases())}")
            print(profile(matches[0], SHAPES[0], args.steps, args.repeats, device))
        else:
            checks = not args.no_checks
            print(table(SHAPES, args.steps, args.repeats, device, checks, args.only, allocator, args.library))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
