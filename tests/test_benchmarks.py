"""The benchmark suite's CPU smoke run (tiny sizes): every mode runs, the checks it reports hold, the files appear.

Timings are not asserted (they live in benchmarks/RESULTS.md); the parity figures the suite computes are.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "suite.py"


def _suite():
    spec = importlib.util.spec_from_file_location("benchmark_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dynamo looks traced functions' modules up by name
    spec.loader.exec_module(module)
    return module


def test_cpu_smoke_run(tmp_path: Path) -> None:
    suite = _suite()
    assert suite.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    markdown = (tmp_path / "results.md").read_text()
    assert {(row["scheduler"], row["dtype"]) for row in results["configs"]} == {
        (name, dtype) for name in suite.BASE for dtype in ("float32", "bfloat16")
    }
    for row in results["configs"]:
        assert row["graph_mode"] == "compile"  # no CUDA graphs on a CPU: the compiled loop
        for mode in ("diffusers_eager_us", "ours_eager_us", "compiled_step_us", "graph_loop_us", "floor_us"):
            assert row[mode] > 0
        assert row["graph_output_survives_next_call"] and row["graph_replays_equal"]
        if row["dtype"] == "float32":  # bit-equal on the CPU: to diffusers, and compiled to eager
            assert row["eager_vs_diffusers"] == row["compiled_vs_eager"] == row["graph_vs_eager"] == 0
        else:  # bf16: inductor keeps float32 between ops where eager rounds each one, so it is closer to float64
            assert row["eager_vs_diffusers"] == 0
            assert row["graph_vs_float64"] <= 1.5 * row["eager_vs_float64"]
    assert {(row["scheduler"], row["requests"]) for row in results["requests"]} == {
        (name, count) for name in suite.BASE for count in (1, 4)
    }
    assert all(row["speedup"] > 0 for row in results["setup"])
    assert [row["config"] for row in results["driver_checks"]] == list(suite.DRIVER_CHECKS)
    assert all(row["outputs_kept"] and row["vs_eager"] < 1e-5 for row in results["driver_checks"])
    assert results["meta"]["copy_bandwidth_gbs"] > 0 and results["meta"]["steps"] == 6
    for heading in (
        "| scheduler | shape | dtype | diffusers eager",
        "| scheduler | requests |",
        "| scheduler | ours |",
    ):
        assert heading in markdown


def test_unknown_scheduler_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        _suite().main(["--device", "cpu", "--quick", "--schedulers", "no-such-sampler", "--out", str(tmp_path)])


@pytest.mark.slow
def test_menu_cpu_smoke_run(tmp_path: Path) -> None:
    """The SD sampler menu's rows (`--menu`): every listed class of it, float32 bit-equal to diffusers' loop (noise
    drawn as diffusers draws it; DPM++ SDE's Brownian noise aside) and the compiled loop to the eager one."""
    suite = _suite()
    assert suite.main(["--device", "cpu", "--quick", "--menu", "--dtypes", "fp32", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["configs"]
    assert [row["scheduler"] for row in rows] == [name for name in suite.MENU if name in suite.SCHEDULERS]
    for row in rows:
        assert row["compiled_vs_eager"] == row["graph_vs_eager"] == 0, row["scheduler"]
        if row["scheduler"] != "dpm++sde":
            assert row["eager_vs_diffusers"] == 0, row["scheduler"]


def test_e2e_cpu_smoke_run(tmp_path: Path) -> None:
    """benchmarks/e2e.py at tiny sizes: every strategy serves every request, ours bit-equal to each request alone;
    diffusion forcing bit-equal to diffusers' loop with its samples cloned (the pipeline's own loop is not)."""
    spec = importlib.util.spec_from_file_location("benchmark_e2e", SUITE.with_name("e2e.py"))
    e2e = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = e2e
    spec.loader.exec_module(e2e)
    assert e2e.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [row["variant"] for row in rows if row["section"] == "single"] == ["diffusers eager", "ours eager"]
    served = {row["strategy"]: row for row in rows if "strategy" in row}
    assert list(served) == list(e2e.STRATEGIES)
    assert all(row["requests"] == 6 and row["total_s"] > 0 for row in served.values())
    assert next(row for row in rows if "check" in row)["passed"]
    assert served["ours: step_many"]["gap_to_one_at_a_time"] < 0.05  # bf16 through a batch of other sizes
    assert "| ours: step_many |" in (tmp_path / "results.md").read_text()
    forcing = {row["way"]: row for row in rows if "way" in row}
    assert forcing["ours: frames as rows"]["gap_to_diffusers"] == 0  # bit-equal to the loop with samples cloned
    assert forcing["diffusers: the pipeline's loop"]["gap_to_diffusers"] > 1e-3  # its UniPC reads overwritten latents
