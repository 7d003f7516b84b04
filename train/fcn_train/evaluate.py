"""Scoring a segmenter on a dataset: any callable ``bgr image → labels`` against ground truth.

`evaluate` knows nothing of models or backends, so the trainer's validation (an eager net) and
``fcn-eval`` (a checkpoint, ONNX file or TensorRT engine through `fcn_deploy.api.Segmenter`) are
scored by the same code on the same images.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fcn_deploy._io import atomic_write_text
from fcn_deploy._progress import Progress
from fcn_deploy.errors import FCNError
from fcn_deploy.meta import Preprocessing
from fcn_deploy.metrics import (
    confusion_matrix,
    per_class_iu,
    segmentation_scores,
    trimap_labels,
)

from .distributed import Dist

__all__ = ["evaluate", "scores_table", "torch_predictor", "write_results"]

PredictFn = Callable[[np.ndarray], np.ndarray]


def evaluate(
    predict: PredictFn,
    dataset: Any,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    dist: Dist = Dist(),
    progress: bool = True,
    trimap: int | None = None,
) -> dict[str, Any]:
    """Scores of ``predict`` on every image of ``dataset`` (``dataset[i] → (bgr, labels)``).

    With ``trimap=px`` the results also hold ``"trimap"``: the same scores counted only within
    ``px`` pixels of object boundaries (`fcn_deploy.metrics.boundary_band`), where the skips of
    FCN-16s/8s should matter most.

    Under ``torchrun`` each rank scores every ``world_size``-th image and the confusion matrices
    are summed over ranks, so every rank returns the scores of the whole set.
    """
    indices = range(dist.rank, len(dataset), dist.world_size)
    if trimap is not None and trimap < 0:
        raise FCNError(f"trimap must be ≥ 0 pixels, got {trimap}", param="trimap")
    confusion = np.zeros((num_classes, num_classes), np.int64)
    band = np.zeros_like(confusion)
    bar = Progress(len(indices), "evaluating", unit="img") if progress and dist.is_main else None
    for i in indices:
        image, labels = dataset[i]
        prediction = np.asarray(predict(image))
        if prediction.shape != labels.shape:
            raise FCNError(
                f"the model returned {prediction.shape} labels for a {labels.shape} image (image "
                f"{i})"
            )
        confusion += confusion_matrix(labels, prediction, num_classes)
        if trimap is not None:
            band += confusion_matrix(trimap_labels(labels, trimap), prediction, num_classes)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    confusion = dist.sum(confusion)
    names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
    results: dict[str, Any] = {
        "scores": segmentation_scores(confusion),
        "per_class_iu": per_class_iu(confusion, names),
        "num_images": len(dataset),
        "confusion": confusion.tolist(),
    }
    if trimap is not None:
        band = dist.sum(band)
        results["trimap"] = {
            "px": trimap,
            "scores": segmentation_scores(band),
            "per_class_iu": per_class_iu(band, names),
            "pixels": int(band.sum()),
        }
    return results


def torch_predictor(
    model: nn.Module, preprocessing: Preprocessing, device: torch.device
) -> PredictFn:
    """``bgr → labels`` with an eager net (validation during training), no gradients."""

    @torch.no_grad()
    def predict(image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(preprocessing.apply(image)[None]).to(device)
        return model(x).argmax(1)[0].to(torch.uint8).cpu().numpy()

    return predict


def scores_table(results: dict[str, Any]) -> str:
    """The four scores and per-class IU as an aligned plain-text table (percent)."""

    def pct(v: float) -> str:
        return "   n/a" if v is None or not math.isfinite(v) else f"{100 * v:6.2f}"

    lines = [f"{name.replace('_', ' '):<24}{pct(v)}" for name, v in results["scores"].items()]
    lines += ["", f"{'class':<24}{'IU %':>6}"]
    lines += [f"{name:<24}{pct(v)}" for name, v in results["per_class_iu"].items()]
    if "trimap" in results:
        band = results["trimap"]
        lines += ["", f"within {band['px']} px of object boundaries ({band['pixels']} pixels)"]
        lines += [f"{name.replace('_', ' '):<24}{pct(v)}" for name, v in band["scores"].items()]
    return "\n".join(lines)


def write_results(path: str, results: dict[str, Any]) -> None:
    """JSON with NaN written as null (absent classes), atomically."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    atomic_write_text(path, json.dumps(clean(results), indent=2) + "\n")
