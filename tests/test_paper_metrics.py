"""boundary_band / trimap_labels (the boundary-IU metric) and fcn-eval --trimap."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fcn_deploy.errors import FCNError
from fcn_deploy.metrics import (
    IGNORE_LABEL,
    boundary_band,
    confusion_matrix,
    segmentation_scores,
    trimap_labels,
)

BIN = Path(sys.executable).parent


def _square() -> np.ndarray:
    labels = np.zeros((12, 12), np.uint8)
    labels[4:8, 4:8] = 2  # a 4×4 object; its outline runs between rows/cols 3|4 and 7|8
    return labels


def test_band_of_zero_is_the_pixels_on_either_side_of_an_outline() -> None:
    band = boundary_band(_square(), 0)
    expected = np.zeros((12, 12), bool)
    expected[3:9, 3:9] = True  # the object's rim and the background ring around it …
    expected[5:7, 5:7] = False  # … but not the object's 2×2 core
    expected[[3, 3, 8, 8], [3, 8, 3, 8]] = False  # corners only touch diagonally: no 4-neighbour
    assert np.array_equal(band, expected)


def test_band_grows_with_px_by_euclidean_distance() -> None:
    labels = _square()
    one, two = boundary_band(labels, 1), boundary_band(labels, 2)
    assert one[2, 5] and not one[1, 5]  # 1 px above the outer ring
    assert two[1, 5] and not two[0, 5]
    assert one[5, 5]  # the core is within 1 px of the rim
    assert not one[2, 2]  # √5 from the nearest outline pixels (3,4) and (4,3)
    assert np.all(one <= two)


def test_ignore_pixels_are_boundaries_and_a_map_without_edges_has_no_band() -> None:
    flat = np.full((6, 6), 3, np.uint8)
    assert not boundary_band(flat, 5).any()
    flat[0, 0] = IGNORE_LABEL  # the void band marks outlines, as in VOC
    band = boundary_band(flat, 1)
    assert band[0, 0] and band[0, 1] and band[1, 0] and not band[2, 2]


def test_trimap_labels_ignore_everything_outside_the_band() -> None:
    labels = _square()
    kept = trimap_labels(labels, 0)
    band = boundary_band(labels, 0)
    assert np.array_equal(kept[band], labels[band])
    assert np.all(kept[~band] == IGNORE_LABEL)
    # a prediction wrong only in the object's core scores perfectly within the band
    prediction = labels.copy()
    prediction[5:7, 5:7] = 0
    assert segmentation_scores(confusion_matrix(labels, prediction, 3))["pixel_accuracy"] < 1
    band_scores = segmentation_scores(confusion_matrix(kept, prediction, 3))
    assert band_scores["pixel_accuracy"] == 1.0 and band_scores["mean_iu"] == 1.0


def test_band_rejects_bad_arguments() -> None:
    with pytest.raises(FCNError, match="px"):
        boundary_band(_square(), -1)
    with pytest.raises(FCNError, match="H×W"):
        boundary_band(np.zeros((2, 3, 4), np.uint8), 1)


def test_fcn_eval_trimap(tmp_path: Path, make_checkpoint: Callable[..., Path]) -> None:
    model = make_checkpoint(num_classes=7)
    out = tmp_path / "eval.json"
    argv = [str(BIN / "fcn-eval"), "--model", str(model), "--num-images", "3", "--device", "cpu"]
    done = subprocess.run(
        [*argv, "--trimap", "3", "--json", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "within 3 px of object boundaries" in done.stdout
    results = json.loads(out.read_text())
    total = int(np.asarray(results["confusion"]).sum())
    assert results["trimap"]["px"] == 3
    assert 0 < results["trimap"]["pixels"] < total
    assert set(results["trimap"]["scores"]) == set(results["scores"])

    bad = subprocess.run([*argv, "--trimap", "-1"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "error: argument --trimap: expected a whole number ≥ 0, got '-1' (see fcn-eval --help)"
    )
