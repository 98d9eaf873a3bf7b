"""The disaggregated-serving script's CPU smoke run: two gloo processes, every class handed over mid-loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

import functional_sched as fs

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "disaggregated.py"


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_every_class_finishes_bit_identically_on_the_other_rank(tmp_path: Path) -> None:
    """Rank 1 finishes each class's request that rank 0 sent mid-loop, bit for bit as the undisturbed run; the
    pipelined part reports its figures (timings are not asserted)."""
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--requests", "3", "--out", str(tmp_path)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["backend"] == "gloo"
    assert [row["class"] for row in results["handoff"]] == [cls.__name__ for cls in fs.SCHEDULERS]
    for row in results["handoff"]:
        assert row["bit_identical"] and row["max_abs_difference"] == 0, row
        assert 0 <= row["handed_over_after"] < row["steps"], row
    pipelined = results["pipelined"]
    assert pipelined["requests"] == 3 and pipelined["payload_bytes"] > 0 and pipelined["handoff_us_median"] > 0
