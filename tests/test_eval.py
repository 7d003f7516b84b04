"""evaluate() on any callable, fcn-eval on checkpoints and ONNX files, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fcn_deploy.data import SyntheticSegmentation
from fcn_deploy.metrics import confusion_matrix, segmentation_scores
from fcn_train.evaluate import evaluate, scores_table

BIN = Path(sys.executable).parent


def test_evaluate_scores_any_callable() -> None:
    ds = SyntheticSegmentation("val", 6)
    names = ds.class_names
    perfect = evaluate(lambda im: ds[_find(ds, im)][1], ds, 7, names, progress=False)
    assert all(v == 1.0 for v in perfect["scores"].values())
    background = evaluate(lambda im: np.zeros(im.shape[:2], np.uint8), ds, 7, names, progress=False)
    confusion = sum(confusion_matrix(ds[i][1], np.zeros_like(ds[i][1]), 7) for i in range(len(ds)))
    assert background["scores"] == segmentation_scores(confusion)
    assert background["num_images"] == 6 and background["per_class_iu"]["disc"] == 0.0
    table = scores_table(background)
    assert "mean iu" in table and "background" in table


def _find(ds: SyntheticSegmentation, image: np.ndarray) -> int:
    return next(i for i in range(len(ds)) if np.array_equal(ds[i][0], image))


def _eval(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "fcn-eval"), *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_fcn_eval_scores_checkpoint_and_onnx_alike(
    tmp_path: Path, make_checkpoint: Callable[..., Path]
) -> None:
    from fcn_deploy import export_onnx

    pt = make_checkpoint("fcn8s", width=0.0625, num_classes=7)
    onnx = tmp_path / "model.onnx"
    export_onnx(pt, onnx, max_size=(256, 256), max_batch=4, verify=False, progress=False)
    results = []
    for model in (pt, onnx):
        out = tmp_path / f"{model.suffix[1:]}.json"
        run = _eval(
            "--model",
            str(model),
            "--data",
            "synthetic",
            "--num-images",
            "4",
            "--json",
            str(out),
            "--device",
            "cpu",
        )
        assert run.returncode == 0, run.stderr
        assert "frequency weighted iu" in run.stdout
        results.append(json.loads(out.read_text()))
    assert results[0]["backend"] == "torch" and results[1]["backend"] == "onnxruntime"
    for key, value in results[0]["scores"].items():
        assert results[1]["scores"][key] == pytest.approx(value, abs=0.01)


def test_fcn_eval_errors_are_one_line(tmp_path: Path, make_checkpoint: Callable[..., Path]) -> None:
    run = _eval("--model", str(tmp_path / "missing.pt"))
    assert (
        run.returncode == 2
        and run.stderr.startswith("error: ")
        and "no such model file" in run.stderr
    )
    run = _eval(
        "--model",
        str(make_checkpoint("fcn8s", width=0.0625)),
        "--data",
        "voc",
        "--root",
        str(tmp_path),
        "--json",
        str(tmp_path / "out.json"),
    )
    assert run.returncode == 2 and "JPEGImages" not in run.stdout and run.stderr.count("\n") == 1
    assert (
        "SegmentationClass: no such folder" in run.stderr
        or "JPEGImages: no such folder" in run.stderr
    )
    assert not (tmp_path / "out.json").exists()
