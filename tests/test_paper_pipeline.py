"""benchmarks/paper at toy size: every step runs, results land, a rerun skips them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "paper" / "paper.py"
TOY = [
    *("--seeds", "0", "--width", "0.0625", "--iterations", "1", "--trimap", "2"),
    *("--pretrain-iterations", "1", "--pretrain-batch", "2", "--pretrain-val-images", "2"),
    *("--val-images", "2", "--figure-scenes", "1"),
]


def _run(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *TOY],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


@pytest.mark.slow
def test_pipeline_at_toy_size_then_resumes(tmp_path: Path) -> None:
    out = tmp_path / "paper"
    first = _run(out)
    assert first.returncode == 0, first.stderr[-3000:]
    for cli in ("$ fcn-pretrain", "$ fcn-train", "--train last-layer", "$ fcn-eval", "--trimap 2"):
        assert cli in first.stderr

    results = json.loads((out / "results.json").read_text())
    keys = [row["key"] for row in results["rows"]]
    assert keys == [
        "fcn32s-fixed",
        "fcn32s",
        "fcn32s-scratch",
        "fcn32s-2x",
        "fcn16s",
        "fcn8s",
        "fcn8s-atonce",
    ]
    for row in results["rows"]:
        for metric in ("pixel_accuracy", "mean_iu", "frequency_weighted_iu", "boundary_mean_iu"):
            assert 0.0 <= row[metric]["mean"] <= 1.0 and row[metric]["spread"] == 0.0
    assert {c["claim"] for c in results["claims"]} >= {"full fine-tuning > FCN-32s-fixed"}
    one_window, scene = results["convolutionalization"]["rows"]
    assert one_window["windows"] == 1 and one_window["equal"] is True
    assert scene["windows"] > 1 and 0.0 <= scene["top1_agreement"] <= 1.0
    assert 0.0 <= results["pretrain"]["accuracy"] <= 1.0

    table = (out / "table.md").read_text()
    assert "| FCN-8s from FCN-16s | 3 |" in table and "boundary mean IU" in table
    figure = cv2.imread(str(out / "figure4.png"))
    assert figure is not None and figure.shape[1] > figure.shape[0]  # one row of five panels

    # staged: FCN-16s started from FCN-32s's weights (shared layers copied before training)
    assert (out / "runs" / "fcn16s-seed0" / "last.pt").exists()

    again = _run(out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "$ fcn-" not in again.stderr  # nothing trained or scored twice
    assert again.stderr.count("done already, skipped") == 2 + len(keys)

    # an interrupted step (its score missing) continues from its checkpoint, to the same score
    score = out / "evals" / "fcn8s-seed0.json"
    before = json.loads(score.read_text())
    score.unlink()
    third = _run(out)
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"$ fcn-train --resume {out / 'runs' / 'fcn8s-seed0'}" in third.stderr
    assert third.stderr.count("$ fcn-") == 2  # that run's resume and its fcn-eval, nothing else
    after = json.loads(score.read_text())
    assert after["scores"] == before["scores"] and after["trimap"] == before["trimap"]
