"""Datasets for training and scoring: PASCAL VOC, SBD, FCN's ``seg11valid`` and a synthetic set.

Every dataset yields ``(bgr uint8 H×W×3, labels uint8 H×W)`` at native size with 255 = ignore,
and carries ``class_names`` and ``palette`` for the checkpoints trained on it.
"""

from .synthetic import SYNTHETIC_CLASSES, SyntheticSegmentation
from .transforms import pad_batch, random_crop
from .voc import (
    SBD_SPLITS,
    VOC_SPLITS,
    SBDSegmentation,
    SegmentationDataset,
    VOCSegmentation,
    seg11valid,
)

__all__ = [
    "SBD_SPLITS",
    "SYNTHETIC_CLASSES",
    "VOC_SPLITS",
    "SBDSegmentation",
    "SegmentationDataset",
    "SyntheticSegmentation",
    "VOCSegmentation",
    "pad_batch",
    "random_crop",
    "seg11valid",
]
