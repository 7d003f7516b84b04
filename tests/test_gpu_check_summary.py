"""gpu-check's summary tells the truth: every skipped item with its reason, counted in the last
line, and "passed" alone only when nothing was skipped (scripts/gpu_check_summary.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gpu_check_summary", ROOT / "scripts/gpu_check_summary.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check_summary"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


summary = _load_script()

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.test_torch_runner" name="test_fp16_on_the_gpu_agrees" time="3.1"/>
<testcase classname="tests.test_distributed" name="test_two_ranks_on_nccl" time="0.0">
<skipped type="pytest.skip" message="DDP on NCCL needs two GPUs: NCCL refuses two ranks on one GPU">
</skipped></testcase>
<testcase classname="tests.test_trt_engine" name="test_build" time="0.0">
<skipped type="pytest.skip" message="TensorRT is not installed"></skipped></testcase>
{failure}
</testsuite></testsuites>
"""
FAILURE = """<testcase classname="tests.test_ort_runner" name="test_io_binding" time="1.0">
<failure message="AssertionError: labels 91% &lt; 99%">trace</failure></testcase>"""


def _doc(skipped: list[dict[str, str]]) -> dict[str, Any]:
    machine = {"cpu": "x", "logical_cores": 16, "usable_cores": 16, "versions": {}, "peaks": {},
               "gpu": {"name": "NVIDIA H200"}}  # fmt: skip
    return {"schema_version": 1, "scenario": "sizes", "machine": machine, "results": [],
            "skipped": skipped, "model": {"label": "fcn8s"}, "config": {"batch": 1}}  # fmt: skip


def _check(tmp_path: Path, steps: list[tuple[str, int]], failure: str = "") -> Path:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "steps.tsv").write_text("".join(f"{n}\t{c}\t12\n" for n, c in steps))
    (scratch / "gpu-tests.xml").write_text(JUNIT.format(failure=failure))
    unavailable = {"backend": "tensorrt", "reason": "TensorRT is not installed"}
    unavailable["status"] = "unavailable"
    (tmp_path / "b1.json").write_text(json.dumps(_doc([unavailable])))
    return scratch


def test_every_skip_is_listed_with_its_reason_and_counted(tmp_path: Path, capsys: Any) -> None:
    scratch = _check(tmp_path, [("GPU tests", 0), ("fcn-bench batch 1", 0)])
    out = tmp_path / "summary.md"
    code = summary.main(["--summary", str(out), "--scratch", str(scratch), "--title", "H200",
                         "--final", "--seconds", "300", f"fcn-bench batch 1={tmp_path / 'b1.json'}",
                         f"fcn-bench batch 8={tmp_path / 'b8.json'}"])  # fmt: skip
    assert code == 0  # skips are listed, not failures
    text = out.read_text()
    assert "| GPU tests | passed (1 passed, 2 skipped) | 12 |" in text
    for item in (
        "GPU test tests/test_distributed.py::test_two_ranks_on_nccl: DDP on NCCL needs two GPUs",
        "GPU test tests/test_trt_engine.py::test_build: TensorRT is not installed",
        "fcn-bench batch 1, tensorrt: TensorRT is not installed",
        "fcn-bench batch 8: no results",
        "fcn-train amp rate: the run logged none",
    ):
        assert f"- {item}" in text, item
    if importlib.util.find_spec("jsonschema") is None:
        assert "- schema check of the fcn-bench results: jsonschema is not installed here" in text
    count = text.count("\n- GPU test") + text.count("\n- fcn-") + text.count("\n- schema")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"gpu-check: passed, with {count} item(s) skipped")
    assert last.endswith(f"in 300s (summary: {out})")
    assert f"**Result: passed, with {count} item(s) skipped" in text


def test_a_missing_schema_check_is_a_skipped_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        summary.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "jsonschema" else find_spec(name, *a),
    )
    findings = summary.Findings()
    summary.schema_findings([("fcn-bench batch 1", _doc([]))], findings)
    assert findings.skipped == [
        "schema check of the fcn-bench results: jsonschema is not installed here"
    ]


def test_failures_and_budget_cuts_are_never_passed(tmp_path: Path) -> None:
    steps = [("GPU tests", 1), ("fcn-bench batch 1", 0), ("torch.compile batch 8", 124)]
    scratch = _check(tmp_path, steps, FAILURE)
    text, result = summary.summarize("H200", scratch, [], final=True, seconds=540)
    assert result == (
        "FAILED (1 step(s) failed, 1 step(s) cut by the time budget, 1 failure(s) listed; "
        "4 item(s) skipped)"  # 2 GPU tests, 2 training rates never logged
    )
    assert "| torch.compile batch 8 | cut by the time budget (exit 124) | 12 |" in text
    assert "## Failed (1)" in text and "test_io_binding: AssertionError: labels 91% < 99%" in text
    clean = summary.Findings()
    assert summary.result_line([summary.Step("GPU tests", 0, 1)], clean) == "passed"


def test_a_summary_written_between_steps_says_the_check_was_still_running(tmp_path: Path) -> None:
    scratch = _check(tmp_path, [("GPU tests", 0)])
    text, _ = summary.summarize("H200", scratch, [("fcn-bench batch 1", tmp_path / "none.json")],
                                final=False, seconds=None)  # fmt: skip
    assert (
        "**Result so far: passed, with 2 item(s) skipped (each listed with its reason)** after"
        in text
    )
    assert "still running" in text and "no results" not in text  # not missing: not run yet
