"""`functional-sched-report`: parity with the reference and eager step time, for real-pipeline configs of every
scheduler.

For each case of the grids (`GRID`: diffusers' pipelines, SD3/Flux/Qwen-Image flow Euler, SD 1.5 and Sana
DPM-Solver++, ...; `SGLANG_GRID`: sglang's pipelines, Wan's flow UniPC, LTX-2, MOVA, Hunyuan3D, Helios, ..., against
sglang 0.5.23's own objects; `BEYOND_GRID`: k-diffusion 0.1.1.post1's DPM++ 2S a, 3M SDE and DPM fast against its
whole loops, Flow-GRPO's SDE step against its transcription, `adapters/flow_grpo.py`; rows of a library not
installed are skipped with a line saying so; classes not yet in `functional_sched.SCHEDULERS` are skipped) it runs
the reference and functional_sched through the same full loop with a toy denoiser, in float32, and prints one row:
timestep table equal, worst step error relative to the trajectory's max-abs norm, bit-identical steps, median eager
time per `step` call of each (the model excluded), and the speedup. A whole-loop reference (k-diffusion's) is held to
at every model call: the sigma it calls the model at (the table column) and the sample it feeds it (the error and
identical columns, one per call, the last the final sample); its time is its whole loop's, a model that hands back
recorded outputs in it, divided by its model calls, beside our eager `step` per call. Classes whose reference cannot
run here (ComfyUI's samplers: `reference_library` "comfyui") are listed below the table: the conformance suite holds
them to their order on the analytic model. A case passes when the tables are equal and the error is at most 1e-5.
Exit status 1 if any case fails.
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Sequence
from typing import Any

import diffusers
import torch

import functional_sched as fs

from . import k_diffusion, sglang
from ._cases import (
    BEYOND_GRID,
    GRID,
    OPTIONAL_LIBRARIES,
    SGLANG_GRID,
    Case,
    cases,
    library_available,
    no_runnable_reference,
    pending,
    reference_name,
    skipped,
)
from ._compare import LOOP_LIBRARIES, prepare

__all__ = ["BEYOND_GRID", "GRID", "SGLANG_GRID", "TOLERANCE", "Case", "cases", "describe_device", "main", "measure"]

#: A step passes when max|ours - diffusers| <= TOLERANCE * max|sample| over diffusers' trajectory (float32).
TOLERANCE = 1e-5


def measure(case: Case, steps: int, shape: tuple[int, ...], device: torch.device, repeats: int) -> dict[str, Any]:
    """One row of the report: parity of a full loop, then median eager microseconds per step of each side.

    A config that functional_sched refuses (`from_diffusers` or `init` raising) is a failed row with the reason.
    """
    row: dict[str, Any] = {"scheduler": case.diffusers_name, "library": case.library, "case": case.label}
    try:
        run = prepare(case, steps, shape, device)
        parity, reference_outputs, our_outputs = run.parity()
    except (ValueError, NotImplementedError) as error:
        return {**row, "steps": steps, "refused": str(error), "passed": False}
    reference_seconds, our_seconds = run.time_steps(reference_outputs, our_outputs, repeats)
    reference_us, ours_us = reference_seconds * 1e6, our_seconds * 1e6
    return {
        **row,
        "steps": parity.steps,
        "table_equal": parity.table_equal,
        "worst_error": parity.worst_error,
        "identical_steps": parity.identical_steps,
        "diffusers_us": reference_us,
        "ours_us": ours_us,
        "speedup": reference_us / ours_us,
        "passed": parity.table_equal and parity.worst_error <= TOLERANCE,
    }


def describe_device(device: torch.device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo (platform's guess elsewhere) with torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    device = torch.device(args.device)
    shape = args.shape or ((1, 16, 128, 128) if device.type == "cuda" else (1, 4, 64, 64))
    diffusers.utils.logging.set_verbosity_error()

    meta = {
        "functional_sched": fs.__version__,
        "diffusers": diffusers.__version__,
        "sglang": sglang.SGLANG_VERSION if sglang.available() else None,
        "k_diffusion": k_diffusion.K_DIFFUSION_VERSION if library_available("k-diffusion") else None,
        "torch": torch.__version__,
        "device": describe_device(device),
        "shape": list(shape),
        "dtype": "float32",
        "steps": args.steps,
        "repeats": args.repeats,
    }
    rows = [measure(case, args.steps, shape, device, args.repeats) for case in cases()]
    against = ", ".join(
        [f"diffusers {meta['diffusers']}"]
        + ([f"sglang {meta['sglang']}"] if meta["sglang"] else [])
        + ([f"k-diffusion {meta['k_diffusion']}"] if meta["k_diffusion"] else [])
        + ["Flow-GRPO's step"]
    )
    print(
        f"functional_sched {meta['functional_sched']} vs {against} | torch {meta['torch']} | "
        f"{device.type}: {meta['device']}\nfloat32 {'x'.join(map(str, shape))}, {args.steps} steps, toy denoiser; "
        f"time = median over {args.repeats} loop(s) of one eager step() call, model excluded"
    )
    if any(row.get("library") in LOOP_LIBRARIES for row in rows):
        print(_LOOP_LEGEND)
    print()
    print(_table(rows))
    print(_summary(rows))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"meta": meta, "rows": rows}, out, indent=2)
    return 0 if rows and all(row["passed"] for row in rows) else 1


#: How the rows of a whole-loop reference (k-diffusion's) read.
_LOOP_LEGEND = (
    "k-diffusion rows: its whole loop vs ours on the same denoiser and noise; timesteps = the sigma of every model "
    "call,\nerror and identical = every model call's input (then the final sample), per call; reference time = its "
    "loop's\n(the model handing back recorded outputs) over its model calls, ours = one eager step() per call"
)


def _table(rows: list[dict[str, Any]]) -> str:
    header = ("scheduler", "case", "timesteps", "error/|x|", "identical", "reference", "ours", "speedup", "parity")
    body = [_cells(row) for row in rows]
    widths = [max(len(line[column]) for line in (header, *body)) for column in range(len(header))]
    numeric = {3, 4, 5, 6, 7}

    def render(line: Sequence[str]) -> str:
        cells = (
            cell.rjust(width) if column in numeric else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(header), rule, *map(render, body)])


def _cells(row: dict[str, Any]) -> tuple[str, ...]:
    library = "" if row.get("library", "diffusers") == "diffusers" else f"{row['library']} "
    name = (library + row["scheduler"].removesuffix("Scheduler"), row["case"])
    if "refused" in row:
        return (*name, "-", "-", "-", "-", "-", "-", "REFUSED")
    return (
        *name,
        "equal" if row["table_equal"] else "DIFFER",
        f"{row['worst_error']:.1e}",
        f"{row['identical_steps']}/{row['steps']}",
        f"{row['diffusers_us']:.1f} us",
        f"{row['ours_us']:.1f} us",
        f"{row['speedup']:.2f}x",
        "PASS" if row["passed"] else "FAIL",
    )


def _summary(rows: list[dict[str, Any]]) -> str:
    passed = sum(row["passed"] for row in rows)
    timed = [row for row in rows if "refused" not in row]
    faster = sum(row["ours_us"] <= row["diffusers_us"] for row in timed)
    verdict = "PASS" if rows and passed == len(rows) else "FAIL"
    line = (
        f"\n{verdict}: {passed}/{len(rows)} configs at parity (equal timesteps, error <= {TOLERANCE:g} of the "
        f"trajectory norm); ours no slower in {faster}/{len(timed)}"
    )
    if timed:
        speedups = sorted(row["speedup"] for row in timed)
        line += f", speedup {speedups[0]:.2f}x to {speedups[-1]:.2f}x"
    for row in rows:
        if "refused" in row:
            line += f".\nREFUSED {row['case']}: {row['refused'].rstrip('.')}"
    if pending():
        line += f".\nNot in functional_sched yet, skipped: {', '.join(pending())}"
    for library, install in OPTIONAL_LIBRARIES.items():
        missing = skipped(library=library)
        if missing:
            names = ", ".join(dict.fromkeys(reference_name(case) for case in missing))
            line += (
                f".\n{library} is not installed: skipped its {len(missing)} configs ({names}); install its "
                f"wheel alone to run them: {install}"
            )
    for library, classes in no_runnable_reference().items():
        names = ", ".join(f"{cls.__name__} ({cls.diffusers_name})" for cls in classes)
        line += (
            f".\nNo runnable {library} reference, no row: {names}; parity: order on the analytic model (no runnable "
            "reference), in the conformance suite"
        )
    return line + "."


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(size) for size in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like 1x4x64x64, got {text!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"shape needs a rows dim and positive sizes, got {text!r}")
    return shape


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="functional-sched-report",
        description="Parity with diffusers (sglang, k-diffusion, Flow-GRPO) and eager step time of functional_sched, "
        "on real-pipeline configs.",
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda if available"
    )
    parser.add_argument(
        "--shape", type=_shape, help="latent shape, rows first (default 1x4x64x64; 1x16x128x128 on cuda)"
    )
    parser.add_argument("--steps", type=_positive, default=25, help="inference steps (default 25)")
    parser.add_argument("--repeats", type=_positive, default=20, help="timed loops per side (default 20)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and the setup to PATH as JSON")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
