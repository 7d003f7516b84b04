"""The per-pixel multinomial logistic loss, ignoring label 255."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fcn_deploy.metrics import IGNORE_LABEL

__all__ = ["segmentation_loss"]


def segmentation_loss(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of ``N×C×H×W`` logits against ``N×H×W`` labels, in float32 even under autocast.

    ``reduction="sum"`` adds over labelled pixels, as the reference release does (its tiny learning
    rates assume it); ``"mean"`` averages over them. A batch with no labelled pixel gives 0, not
    NaN.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    loss = F.cross_entropy(
        logits.float(), labels.long(), ignore_index=IGNORE_LABEL, reduction="sum"
    )
    if reduction == "mean":
        loss = loss / (labels != IGNORE_LABEL).sum().clamp(min=1)
    return loss
