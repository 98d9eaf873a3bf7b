"""Before/after from the `results.md` of several `benchmarks/suite.py` runs (`device_before_after.sh` collects them
into one file, each run under a `## <side>, round <n>` heading): per scheduler and shape, the median over rounds of
each side's graph replay, eager step and set-up, and after / before.

    python benchmarks/compare_suites.py suite.md
"""

from __future__ import annotations

import re
import statistics
import sys
from collections import defaultdict


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table of `text`, as rows of {header: cell}."""
    found, lines = [], text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("| ") and index + 1 < len(lines) and lines[index + 1].startswith("| ---"):
            header = [cell.strip() for cell in line.strip("|").split("|")]
            rows = []
            for row in lines[index + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, (cell.strip() for cell in row.strip("|").split("|")), strict=True)))
            found.append(rows)
    return found


def main(path: str) -> int:
    with open(path) as file:
        sections = re.split(r"^## (\w+), round \d+$", file.read(), flags=re.MULTILINE)[1:]
    steps: dict[tuple[str, str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    setup: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for side, text in zip(sections[::2], sections[1::2], strict=True):
        for table in tables(text):
            for row in table:
                if "one graph: replay" in row:
                    key = (row["scheduler"], row["shape"], row["dtype"])
                    steps[key][f"{side} replay"].append(float(row["one graph: replay"]))
                    steps[key][f"{side} eager"].append(float(row["ours eager / diffusers"]))
                elif set(row) == {"scheduler", "ours", "diffusers", "speedup"}:
                    setup[row["scheduler"]][f"{side} ours"].append(float(row["ours"]))
                    setup[row["scheduler"]][f"{side} diffusers"].append(float(row["diffusers"]))
    median = statistics.median
    print(
        "| scheduler | shape | dtype | replay before (us) | replay after (us) | after / before | eager / diffusers "
        "before | after |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for (scheduler, shape, dtype), values in steps.items():
        before, after = median(values["before replay"]), median(values["after replay"])
        print(
            f"| {scheduler} | {shape} | {dtype} | {before:.2f} | {after:.2f} | {after / before:.3f} | "
            f"{median(values['before eager']):.2f} | {median(values['after eager']):.2f} |"
        )
    print("\n| scheduler | init before (us) | init after (us) | diffusers: deepcopy + set_timesteps (us) | speedup |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for scheduler, values in setup.items():
        theirs = median(values["before diffusers"] + values["after diffusers"])
        before, after = median(values["before ours"]), median(values["after ours"])
        print(f"| {scheduler} | {before:.1f} | {after:.1f} | {theirs:.1f} | {theirs / after:.0f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
