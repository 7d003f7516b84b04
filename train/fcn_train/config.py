"""One run's settings: what `fcn-train`'s flags fill in and what ``--resume`` reads back."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["RESUMABLE_CHANGES", "TrainConfig"]

# what may differ on --resume (more iterations, more time, other bookkeeping); everything else
# would make the resumed run a different run
RESUMABLE_CHANGES = frozenset(
    {
        "iterations",
        "time_limit",
        "checkpoint_every",
        "val_every",
        "log_every",
        "workers",
        "out",
        "device",
    }
)


@dataclass
class TrainConfig:
    out: str = "runs/fcn"
    data: str = "synthetic"
    root: str | None = None  # VOCdevkit (voc) or benchmark_RELEASE (sbd)
    val_root: str | None = None  # with sbd: a VOCdevkit/VOC2011 to validate on seg11valid
    variant: str = "fcn8s"
    width: float = 1.0
    init: str = "scratch"  # vgg16:PATH | checkpoint:PATH | scratch
    train: str = "all"  # all | last-layer (FCN-32s-fixed)
    recipe: str | None = (
        None  # reference | paper | synthetic (default: synthetic for synthetic data)
    )
    lr: float | None = None
    batch_size: int | None = None
    momentum: float | None = None
    crop: int | None = None
    iterations: int = 1000
    time_limit: float | None = None  # seconds of training, then stop cleanly as if done
    seed: int = 0
    checkpoint_every: int = 1000
    val_every: int = 500
    log_every: int = 20
    val_images: int | None = None  # cap on validation images (default: all; synthetic: 200)
    device: str | None = None
    workers: int = 0  # DataLoader worker processes building batches ahead
    amp: bool = True  # mixed precision on CUDA (autocast + GradScaler); CPU always runs FP32

    @property
    def recipe_name(self) -> str:
        return self.recipe or ("synthetic" if self.data == "synthetic" else "reference")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
