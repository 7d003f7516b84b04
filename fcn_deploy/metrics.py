"""Segmentation scores from a confusion matrix, exactly as the FCN paper defines them.

Everything goes through one ``C×C`` confusion matrix ``n[i, j]`` (pixels of class i predicted as
j): it is a sum over images, so matrices from batches, workers or GPUs simply add (all-reduce it
and score once). Scores follow the reference scorer: classes absent from both ground truth and
prediction are NaN and left out of the means (``nanmean``).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .errors import FCNError

__all__ = [
    "IGNORE_LABEL",
    "agreement_passes",
    "boundary_band",
    "confusion_matrix",
    "per_class_iu",
    "segmentation_scores",
    "trimap_labels",
]

IGNORE_LABEL = 255  # VOC's "void" border and unlabelled pixels: never counted


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """``C×C`` int64 counts of (true class, predicted class) pairs; labels outside 0…C−1 skipped.

    That skips 255 (ignore) and anything else out of range, as the reference scorer does. A
    *prediction* outside 0…C−1 (a model with more classes than the data) has no column to go to:
    it raises `FCNError` instead of being counted in a neighbouring row's column, which would
    score it as right (the reference scorer's ``n * a + b`` index does exactly that).
    """
    labels = np.asarray(labels).ravel().astype(np.int64)
    predictions = np.asarray(predictions).ravel().astype(np.int64)
    if labels.shape != predictions.shape:
        raise FCNError(
            f"labels ({labels.size} pixels) and predictions ({predictions.size}) differ in size"
        )
    keep = (labels >= 0) & (labels < num_classes)
    kept = predictions[keep]
    if kept.size and (kept.min() < 0 or kept.max() >= num_classes):
        bad = int(kept.max() if kept.max() >= num_classes else kept.min())
        raise FCNError(
            f"predictions hold class id {bad}, outside 0..{num_classes - 1} for "
            f"num_classes={num_classes}; the model predicts more classes than the labels have"
        )
    counts = np.bincount(num_classes * labels[keep] + kept, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def _iu(confusion: np.ndarray) -> np.ndarray:
    n = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return tp / (n.sum(axis=1) + n.sum(axis=0) - tp)  # n_ii / (t_i + Σ_j n_ji − n_ii)


def per_class_iu(
    confusion: np.ndarray, class_names: Sequence[str] | None = None
) -> dict[str, float]:
    """IU of each class (NaN where the class is in neither ground truth nor prediction)."""
    iu = _iu(confusion)
    names = list(class_names) if class_names is not None else [str(k) for k in range(len(iu))]
    return {name: float(v) for name, v in zip(names, iu, strict=False)}


def segmentation_scores(confusion: np.ndarray) -> dict[str, float]:
    """``pixel_accuracy``, ``mean_accuracy``, ``mean_iu`` and ``frequency_weighted_iu`` of a
    confusion matrix.

    With n_ij the pixels of class i predicted as j and t_i = Σ_j n_ij (Long et al., section 5):
    pixel accuracy Σ n_ii / Σ t_i; mean accuracy mean_i n_ii / t_i; mean IU mean_i of
    n_ii / (t_i + Σ_j n_ji − n_ii); frequency weighted IU (Σ t_k)⁻¹ Σ_i t_i · IU_i. Means skip
    NaN classes (nanmean), as the reference scorer does; an all-empty matrix gives NaN scores.
    """
    n = np.asarray(confusion, dtype=np.float64)
    tp, t = np.diag(n), n.sum(axis=1)
    iu = _iu(n)
    total = t.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = tp / t
        pixel_accuracy = tp.sum() / total if total else np.nan
        fw_iu = (t[t > 0] * iu[t > 0]).sum() / total if total else np.nan
    return {
        "pixel_accuracy": float(pixel_accuracy),
        "mean_accuracy": _nanmean(accuracy),
        "mean_iu": _nanmean(iu),
        "frequency_weighted_iu": float(fw_iu),
    }


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def boundary_band(labels: np.ndarray, px: int) -> np.ndarray:
    """Pixels within ``px`` pixels (Euclidean) of an object boundary in an ``H×W`` label map.

    Boundary pixels are those labelled ``IGNORE_LABEL`` (VOC's void border and the synthetic
    scenes' outline band both run along object outlines) and those with a 4-neighbour of another
    class. The band is the "trimap" of the FCN/DeepLab boundary evaluations: scores inside it say
    how sharp the output is along edges, where coarse (stride-32) predictions lose most.
    """
    if px < 0:
        raise FCNError(f"px must be ≥ 0 pixels, got {px}", param="px")
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise FCNError(f"labels must be an H×W map, got shape {labels.shape}", param="labels")
    edge = labels == IGNORE_LABEL
    vertical = labels[1:, :] != labels[:-1, :]
    horizontal = labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    if not edge.any():
        return edge
    # distance of every pixel to the nearest boundary pixel (the zeros of the input)
    distance = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.asarray(distance <= px)


def trimap_labels(labels: np.ndarray, px: int) -> np.ndarray:
    """``labels`` with every pixel farther than ``px`` from a boundary set to ``IGNORE_LABEL``.

    ``confusion_matrix(trimap_labels(labels, px), predictions, C)`` then counts only the band, so
    the paper's four scores (and mean IU in particular) can be computed within it.
    """
    labels = np.asarray(labels)
    out = labels.copy()
    out[~boundary_band(labels, px)] = IGNORE_LABEL
    return out


def agreement_passes(agreement: float, pixels: int, threshold: float) -> bool:
    """Whether a row's label agreement passes, allowing at least one differing pixel.

    A near-tie that flips one pixel of a 1×3 probe (agreement 67%) says nothing about the
    export, while the same share on a large probe would; so a row may always differ in one pixel.
    """
    return agreement >= threshold or round((1.0 - agreement) * pixels) <= 1
