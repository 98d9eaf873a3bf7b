"""The benchmark suite's CPU smoke run (tiny sizes): every mode runs, the checks it reports hold, the files appear.

Timings are not asserted (they live in benchmarks/RESULTS.md); the parity figures the suite computes are.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import functional_sched as fs
from functional_sched.adapters import _cases, k_diffusion, report, sglang

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


# ---------------------------------------------------------------------------------------- sglang's rows (issue 17)
needs_sglang = pytest.mark.skipif(
    not sglang.available(), reason="sglang's wheel is not installed: pip install --no-deps sglang==0.5.23"
)


#: sglang 0.5.23's classes (issue 17) and diffusers' classes added with them for sglang's pipelines.
ISSUE_17 = {
    "FlowUniPCMultistep",
    "SglangUniPCMultistep",
    "SglangFlowMatchEulerDiscrete",
    "SglangDPMSolverMultistep",
    "MOSSImage",
    "SelfForcingFlowMatch",
    "SglangFlowMatch",
    "FlowMatchPair",
    "Hunyuan3DFlowMatchEulerDiscrete",
    "Hunyuan3DConsistencyFlowMatchEulerDiscrete",
    "SglangPiflow",
    "SglangHelios",
    "ComfyUIPassThrough",
    "Piflow",
    "Helios",
    "HeliosDMD",
}


@needs_sglang
def test_report_rows_hold_sglang_classes_to_sglang(capsys: pytest.CaptureFixture[str]) -> None:
    """Every sglang-pipeline row of the report runs against its own library's object (sglang's for sglang's classes)
    at parity, one row per grid case; the table names the library."""
    rows = [report.measure(case, 4, (1, 4, 8, 8), torch.device("cpu"), 1) for case in _cases.SGLANG_GRID]
    assert all(row["passed"] and row["worst_error"] == 0 for row in rows), [r for r in rows if not r["passed"]]
    assert {_cases.scheduler_class(case).__name__ for case in _cases.SGLANG_GRID} >= ISSUE_17
    table = report._table(rows)
    assert "\nsglang FlowMatchPair " in table and "\nPiflow " in table  # diffusers' pi-Flow, its own reference


def test_report_says_sglang_rows_are_skipped_without_sglang(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without sglang's wheel its rows leave the run, and the summary says so and how to install it."""
    monkeypatch.setattr(sglang, "available", lambda: False)
    assert not any(case.library == "sglang" for case in _cases.cases())
    assert len(_cases.skipped(library="sglang")) == sum(case.library == "sglang" for case in _cases.SGLANG_GRID)
    summary = report._summary([])
    assert "sglang is not installed: skipped" in summary and "pip install --no-deps sglang==0.5.23" in summary


@needs_sglang
def test_eager_benchmark_selects_sglang_classes() -> None:
    spec = importlib.util.spec_from_file_location("benchmark_eager", SUITE.with_name("eager_step.py"))
    eager = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eager)
    assert [case.label for case in eager.selected("FlowMatchPair", None)] == ["MOVA video", "MOVA audio"]
    assert {case.library for case in eager.selected("SglangPiflow", None)} == {"sglang"}
    text = eager.table(((1, 4, 8, 8),), 3, 1, torch.device("cpu"), True, "SglangFlowMatch", "as found", "sglang")
    assert "| sglang FlowMatch | MOVA flow match (shift 5) | 1x4x8x8 |" in text


@needs_sglang
def test_menu_3_loops_equal_their_references() -> None:
    """Menu 3 (sglang's classes): every entry's eager loop as the suite times it equals its reference's loop, driven
    as its pipeline drives it (MOVA's step_from_to, Helios' stages and DMD start points, pi-Flow's grid output)."""
    suite = _suite()
    assert list(suite.MENU_3) == [name for name in suite.MENU_3 if name in suite.SCHEDULERS]
    for name in suite.MENU_3:
        config = suite.Config(name, (1, 4, 8, 8), torch.float32, 4, torch.device("cpu"))
        assert suite._relative(config.eager_loop()(), config.diffusers_loop()()) == 0, name


@needs_sglang
@pytest.mark.slow
def test_menu_3_cpu_smoke_run(tmp_path: Path) -> None:
    suite = _suite()
    assert suite.main(["--device", "cpu", "--quick", "--menu", "3", "--dtypes", "fp32", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["configs"]
    assert [row["scheduler"] for row in rows] == list(suite.MENU_3)
    for row in rows:
        assert row["eager_vs_diffusers"] == row["compiled_vs_eager"] == row["graph_vs_eager"] == 0, row["scheduler"]


# ------------------------------------------------------------------ beyond diffusers: k-diffusion, Flow-GRPO, ComfyUI
needs_k_diffusion = pytest.mark.skipif(
    not _cases.library_available("k-diffusion"),
    reason="k-diffusion's wheel is not installed: pip install --no-deps k-diffusion==0.1.1.post1",
)


def test_every_class_has_a_row_or_is_listed() -> None:
    """Each class of a reference the report can run has a row in the grids (sglang's LTX-2 among them); the others
    (ComfyUI's samplers) are listed by library instead."""
    in_grids = {
        _cases.scheduler_class(case)
        for case in _cases.ALL
        if (case.library, case.diffusers_name) in {(cls.reference_library, cls.diffusers_name) for cls in fs.SCHEDULERS}
    }
    listed = {cls for classes in _cases.no_runnable_reference().values() for cls in classes}
    assert in_grids | listed == set(fs.SCHEDULERS) and not in_grids & listed
    assert fs.SglangLTX2FlowMatch in in_grids and fs.FlowMatchSDE in in_grids


def test_report_lists_classes_without_a_runnable_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """A class whose reference library the report cannot run gets no row but a line, whatever its name."""
    recorded_only = type("RecordedOnly", (fs.DPMSolverFast,), {"reference_library": "comfyui"})
    monkeypatch.setattr(fs, "SCHEDULERS", (*fs.SCHEDULERS, recorded_only))
    assert recorded_only in _cases.no_runnable_reference()["comfyui"]
    assert not any(_cases.scheduler_class(case) is recorded_only for case in _cases.cases())
    summary = report._summary([])
    assert "No runnable comfyui reference, no row: " in summary and "RecordedOnly (sample_dpm_fast)" in summary
    assert "parity: order on the analytic model (no runnable reference)" in summary


def test_flow_grpo_rows_hold_flow_match_sde_to_flow_grpo() -> None:
    """Flow-GRPO's rows: FlowMatchSDE against the transcribed step (noise_level a step() argument), bit for bit."""
    rows = [
        report.measure(case, 4, (1, 4, 8, 8), torch.device("cpu"), 1)
        for case in _cases.BEYOND_GRID
        if case.library == "flow_grpo"
    ]
    assert len(rows) == 2 and all(row["passed"] and row["identical_steps"] == row["steps"] == 4 for row in rows)


@needs_k_diffusion
def test_k_diffusion_rows_hold_each_model_call_to_its_loop() -> None:
    """k-diffusion's rows: every model call's sigma and input, and the final sample, bit-identical to its whole loop
    (2S a: two calls an interval but the last; DPM adaptive: a budget of 4 attempts of 3 calls, the last forced to
    sigma_min, its loop held to that budget); the report prints the per-call legend."""
    rows = [
        report.measure(case, 4, (1, 4, 8, 8), torch.device("cpu"), 1)
        for case in _cases.BEYOND_GRID
        if case.library == "k-diffusion"
    ]
    assert [row["steps"] for row in rows] == [7, 4, 4, 12]
    assert all(row["passed"] and row["identical_steps"] == row["steps"] for row in rows), rows
    assert all(row["diffusers_us"] > 0 and row["ours_us"] > 0 for row in rows)
    assert "k-diffusion sample_dpmpp_3m_sde" in report._table(rows)


def test_report_says_k_diffusion_rows_are_skipped_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(k_diffusion, "available", lambda: False)
    assert not any(case.library == "k-diffusion" for case in _cases.cases())
    assert len(_cases.skipped(library="k-diffusion")) == 4
    summary = report._summary([])
    assert "k-diffusion is not installed: skipped its 4 configs" in summary
    assert "pip install --no-deps k-diffusion==0.1.1.post1" in summary


@needs_k_diffusion
def test_eager_benchmark_selects_k_diffusion_loops() -> None:
    spec = importlib.util.spec_from_file_location("benchmark_eager", SUITE.with_name("eager_step.py"))
    eager = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eager)
    assert [case.diffusers_name for case in eager.selected(None, "k-diffusion")] == [
        "sample_dpmpp_2s_ancestral",
        "sample_dpmpp_3m_sde",
        "sample_dpm_fast",
        "sample_dpm_adaptive",
    ]
    text = eager.table(((1, 4, 8, 8),), 3, 1, torch.device("cpu"), True, "DPMSolverFast", "as found", None)
    assert "| k-diffusion sample_dpm_fast | SD1.5 DPM fast | 1x4x8x8 |" in text and "over its model calls" in text


@needs_k_diffusion
def test_menu_4_loops_equal_their_references() -> None:
    """Menu 4: every entry's eager loop as the suite times it equals its reference's (k-diffusion's whole loop, its
    noise sampler handed ours where it asks; Flow-GRPO's step with its noise_level)."""
    suite = _suite()
    assert list(suite.MENU_4) == [name for name in suite.MENU_4 if name in suite.SCHEDULERS]
    for name in suite.MENU_4:
        config = suite.Config(name, (1, 4, 8, 8), torch.float32, 4, torch.device("cpu"))
        assert config.draws, name  # each entry reads noise somewhere
        assert suite._relative(config.eager_loop()(), config.diffusers_loop()()) == 0, name


@needs_k_diffusion
@pytest.mark.slow
def test_menu_4_cpu_smoke_run(tmp_path: Path) -> None:
    suite = _suite()
    assert suite.main(["--device", "cpu", "--quick", "--menu", "4", "--dtypes", "fp32", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [row["scheduler"] for row in results["configs"]] == list(suite.MENU_4)
    for row in results["configs"]:
        assert row["eager_vs_diffusers"] == row["compiled_vs_eager"] == row["graph_vs_eager"] == 0, row["scheduler"]
    assert [row["scheduler"] for row in results["setup"]] == ["flow-grpo-sde"]  # k-diffusion has no set-up to time
    assert "k-diffusion 0.1.1.post1's whole loop" in results["meta"]["reference"]
