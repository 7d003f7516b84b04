"""fcn_deploy.metrics against confusion matrices worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fcn_deploy.errors import FCNError
from fcn_deploy.metrics import (
    agreement_passes,
    confusion_matrix,
    per_class_iu,
    segmentation_scores,
)


def test_confusion_counts_pairs_and_skips_ignore_and_out_of_range() -> None:
    labels = np.array([[0, 0, 1, 1], [2, 255, 7, 1]], np.uint8)
    preds = np.array([[0, 1, 1, 1], [0, 2, 2, 0]], np.uint8)
    expected = np.array(
        [
            [1, 1, 0],  # class 0: one right, one called 1
            [1, 2, 0],  # class 1: two right, one called 0
            [1, 0, 0],
        ]
    )  # class 2: called 0; the 255 and the 7 are not counted
    assert np.array_equal(confusion_matrix(labels, preds, 3), expected)


def test_scores_of_a_hand_computed_matrix() -> None:
    n = np.array([[50, 10, 0], [5, 20, 5], [0, 0, 10]])
    s = segmentation_scores(n)
    # t = (60, 30, 10), column sums (55, 30, 15), diag (50, 20, 10), total 100
    iu = [50 / (60 + 55 - 50), 20 / (30 + 30 - 20), 10 / (10 + 15 - 10)]
    assert s["pixel_accuracy"] == pytest.approx(80 / 100)
    assert s["mean_accuracy"] == pytest.approx((50 / 60 + 20 / 30 + 10 / 10) / 3)
    assert s["mean_iu"] == pytest.approx(sum(iu) / 3)
    assert s["frequency_weighted_iu"] == pytest.approx((60 * iu[0] + 30 * iu[1] + 10 * iu[2]) / 100)
    assert list(per_class_iu(n, ["bg", "a", "b"]).values()) == pytest.approx(iu)


def test_absent_classes_are_left_out_of_the_means() -> None:
    # class 2 is neither in the ground truth nor predicted: NaN, skipped (the reference's nanmean)
    # class 3 is predicted but absent from the ground truth: IU 0 counts, accuracy 0/0 is skipped
    n = np.array([[8, 2, 0, 0], [0, 6, 0, 4], [0, 0, 0, 0], [0, 0, 0, 0]])
    s = segmentation_scores(n)
    iu = per_class_iu(n)
    assert math.isnan(iu["2"]) and iu["3"] == 0.0
    assert s["mean_iu"] == pytest.approx((8 / 10 + 6 / 12 + 0.0) / 3)
    assert s["mean_accuracy"] == pytest.approx((8 / 10 + 6 / 10) / 2)
    assert s["pixel_accuracy"] == pytest.approx(14 / 20)
    assert s["frequency_weighted_iu"] == pytest.approx((10 * 0.8 + 10 * 0.5) / 20)


def test_matrices_merge_by_addition() -> None:
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 5, (2, 40, 30)), rng.integers(0, 5, (2, 40, 30))
    whole = confusion_matrix(labels, preds, 5)
    parts = confusion_matrix(labels[0], preds[0], 5) + confusion_matrix(labels[1], preds[1], 5)
    assert np.array_equal(whole, parts)
    assert whole.sum() == labels.size


def test_perfect_and_empty() -> None:
    labels = np.array([0, 1, 1, 2, 255])
    s = segmentation_scores(confusion_matrix(labels, np.where(labels == 255, 0, labels), 3))
    assert all(v == 1.0 for v in s.values())
    assert all(math.isnan(v) for v in segmentation_scores(np.zeros((3, 3), np.int64)).values())


def test_out_of_range_predictions_never_score_as_right() -> None:
    # the reference scorer's index n*label + prediction sends a prediction of 8 for class 0 (C=7)
    # to row 1, column 1: a "hit" for class 1. That must never give a score.
    labels = np.zeros((2, 2), np.uint8)
    preds = np.full((2, 2), 8, np.uint8)
    with pytest.raises(FCNError, match=r"class id 8, outside 0\.\.6 for num_classes=7"):
        confusion_matrix(labels, preds, 7)
    with pytest.raises(FCNError, match="class id -1"):
        confusion_matrix(labels, np.full((2, 2), -1), 7)


def test_out_of_range_predictions_on_ignored_pixels_are_not_counted() -> None:
    # only pixels with a label in range are scored, so what the model says on 255 is irrelevant
    labels = np.array([[0, 255], [1, 255]], np.uint8)
    preds = np.array([[0, 30], [1, 30]], np.uint8)
    assert np.array_equal(confusion_matrix(labels, preds, 2), np.eye(2, dtype=np.int64))


def test_a_row_may_differ_in_one_pixel() -> None:
    """One flipped pixel of a tiny probe passes; the same share of a large one does not."""
    assert agreement_passes(2 / 3, 3, 0.98) and agreement_passes(0.99, 10_000, 0.98)
    assert not agreement_passes(1 / 3, 3, 0.98) and not agreement_passes(2 / 3, 30_000, 0.98)
    assert agreement_passes(1.0, 1, 0.999) and not agreement_passes(0.0, 2, 0.5)
