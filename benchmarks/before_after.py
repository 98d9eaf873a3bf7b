"""The eager report (`functional-sched-report`) of two installs of functional-sched, interleaved: one round runs
each side's report once, in turn, and the table gives each config's median speedup over diffusers per side.

    python benchmarks/before_after.py --before /tmp/old/bin/python --after python --rounds 7 --repeats 20

Each side is a Python interpreter whose environment has its own functional-sched (a virtual environment with an
editable install of the earlier commit, say); both time the same diffusers. A round alternates the sides, so slow
drift of the machine's load falls on both. Also request set-up: `init` with the plan cached against diffusers'
`deepcopy` + `set_timesteps`, in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SETUP = Path(__file__).with_name("setup_time.py")


def report(python: str, shape: str, steps: int, repeats: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "report.json"
        command = [python, "-m", "functional_sched.adapters.report", "--device", "cpu", "--shape", shape]
        command += ["--steps", str(steps), "--repeats", str(repeats), "--json", str(path)]
        subprocess.run(command, check=True, capture_output=True, cwd=folder)  # not a checkout: its own install
        return json.loads(path.read_text())["rows"]


def setup(python: str, shape: str, steps: int, repeats: int) -> list[dict]:
    done = subprocess.run(
        [python, str(SETUP), "--shape", shape, "--steps", str(steps), "--repeats", str(repeats * 100)],
        check=True,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),  # not a checkout, whose package `python` would import first
    )
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="interpreter of the earlier install")
    parser.add_argument("--after", default=sys.executable, help="interpreter of this install (default: this one)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=20, help="timed loops per side per report")
    parser.add_argument("--shape", default="1x4x64x64")
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args(argv)
    sides = {"before": args.before, "after": args.after}
    speedups: dict[str, dict[tuple[str, str], list[float]]] = {side: {} for side in sides}
    setups: dict[str, dict[str, list[tuple[float, float]]]] = {side: {} for side in sides}
    for round_index in range(args.rounds):
        for side, python in sides.items() if round_index % 2 == 0 else reversed(sides.items()):
            for row in report(python, args.shape, args.steps, args.repeats):
                assert row["passed"], f"{side}: {row['case']} lost parity"
                speedups[side].setdefault((row["scheduler"], row["case"]), []).append(row["speedup"])
            for row in setup(python, args.shape, args.steps, args.repeats):
                setups[side].setdefault(row["scheduler"], []).append((row["ours_us"], row["diffusers_us"]))
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)

    print(f"eager step, {args.shape}, {args.steps} steps: median over {args.rounds} rounds of each report's speedup")
    print("| scheduler | config | before | after | after / before |")
    print("| --- | --- | ---: | ---: | ---: |")
    for key, before in speedups["before"].items():
        b, a = statistics.median(before), statistics.median(speedups["after"][key])
        print(f"| {key[0].removesuffix('Scheduler')} | {key[1]} | {b:.2f}x | {a:.2f}x | {a / b:.3f} |")
    print("\nrequest set-up (us, medians): ours `init` (cached plan) vs diffusers `deepcopy` + `set_timesteps`")
    print("| scheduler | before: init | after: init | diffusers | after: speedup |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, before in setups["before"].items():
        after = setups["after"][name]
        ours_b, ours_a = statistics.median(o for o, _ in before), statistics.median(o for o, _ in after)
        theirs = statistics.median([d for _, d in before] + [d for _, d in after])
        label = name.removesuffix("Scheduler")
        print(f"| {label} | {ours_b:.1f} | {ours_a:.1f} | {theirs:.1f} | {theirs / ours_a:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
