"""Which images a run trains and validates on, and in what order.

The batch of step ``s`` on rank ``r`` is a pure function of ``(seed, s, r)``: a seeded permutation
per epoch, cut into global batches that ranks share out (DistributedSampler-style), and crops
drawn from a generator seeded by ``(seed, s, r)``. Nothing about the order lives in process
state, so a resumed run sees exactly the batches an uninterrupted one would, and DataLoader
workers can build batches ahead in any order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fcn_deploy.data import (
    SBDSegmentation,
    SegmentationDataset,
    SyntheticSegmentation,
    VOCSegmentation,
    pad_batch,
    random_crop,
    seg11valid,
)
from fcn_deploy.errors import FCNError

__all__ = [
    "DATASETS",
    "SYNTHETIC_TRAIN_IMAGES",
    "SYNTHETIC_VAL_IMAGES",
    "StepBatches",
    "open_dataset",
    "training_sets",
]

DATASETS = ("synthetic", "voc", "sbd")
SYNTHETIC_TRAIN_IMAGES = 20000  # scenes are drawn on the fly: the size only sets the epoch length
SYNTHETIC_VAL_IMAGES = 200


def open_dataset(
    name: str,
    split: str,
    root: str | None = None,
    sbd_root: str | None = None,
    num_images: int | None = None,
) -> SegmentationDataset:
    """``synthetic`` (no root), ``voc`` (root: VOCdevkit) or ``sbd`` (root: benchmark_RELEASE) at
    ``split``.

    ``split="seg11valid"`` with ``voc`` needs ``sbd_root`` too (FCN's validation split).
    """
    if name == "synthetic":
        default = SYNTHETIC_TRAIN_IMAGES if split == "train" else SYNTHETIC_VAL_IMAGES
        try:
            return SyntheticSegmentation(split, num_images or default)
        except ValueError as e:
            raise FCNError(str(e)) from None
    if name not in DATASETS:
        raise FCNError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if root is None:
        folder = "VOCdevkit" if name == "voc" else "benchmark_RELEASE"
        raise FCNError(f"data={name!r} needs root (the {folder} folder)", param="root")
    if split == "seg11valid":
        if name != "voc" or sbd_root is None:
            raise FCNError(
                "split='seg11valid' needs data='voc', root=VOCdevkit/VOC2011 and "
                "sbd_root=benchmark_RELEASE",
                param="sbd_root",
            )
        return seg11valid(root, sbd_root)
    dataset: SegmentationDataset = (VOCSegmentation if name == "voc" else SBDSegmentation)(
        root, split
    )
    if num_images is not None:
        dataset.ids = dataset.ids[:num_images]
    return dataset


def training_sets(
    name: str, root: str | None, val_root: str | None
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """(train, val): synthetic train/val; VOC train/val; SBD train with seg11valid (given VOC) or
    SBD val."""
    if name == "sbd" and val_root is not None:
        return open_dataset("sbd", "train", root), open_dataset(
            "voc", "seg11valid", val_root, sbd_root=root
        )
    return open_dataset(name, "train", root), open_dataset(name, "val", root)


class StepBatches(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """``batches[s]`` → (uint8 ``B×H×W×3`` BGR, uint8 ``B×H×W`` labels) of step ``s`` for one
    rank."""

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        seed: int,
        crop: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        length: int = 0,
    ) -> None:
        if len(dataset) == 0:
            raise FCNError(f"{dataset!r} has no images to train on")
        self.dataset, self.batch_size, self.seed, self.crop = dataset, batch_size, seed, crop
        self.rank, self.world_size, self.length = rank, world_size, length
        self._epoch, self._order = -1, np.empty(0, np.int64)

    def __len__(self) -> int:
        return self.length

    def indices(self, step: int) -> list[int]:
        """Dataset indices of this rank's share of the global batch of ``step`` (0-based)."""
        n, out = len(self.dataset), []
        start = (step * self.world_size + self.rank) * self.batch_size
        for g in range(start, start + self.batch_size):
            epoch = g // n
            if epoch != self._epoch:
                self._epoch, self._order = (
                    epoch,
                    np.random.default_rng([self.seed, epoch]).permutation(n),
                )
            out.append(int(self._order[g % n]))
        return out

    def __getitem__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        items = [self.dataset[i] for i in self.indices(step)]
        if self.crop:
            rng = np.random.default_rng([self.seed, step, self.rank])
            items = [random_crop(image, labels, self.crop, rng) for image, labels in items]
        return pad_batch(items)
