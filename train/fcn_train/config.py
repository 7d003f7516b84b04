"""One run's settings: what `fcn-train`'s flags fill in and what ``--resume`` reads back."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from fcn_deploy.errors import FCNError

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

    def __post_init__(self) -> None:
        """Refuse impossible values here, once, before any folder or model is made."""
        for name in ("iterations", "checkpoint_every", "val_every", "log_every"):
            _check(name, getattr(self, name), low=1, integer=True)
        _check("workers", self.workers, low=0, integer=True)
        for name in ("batch_size", "crop", "val_images"):
            if getattr(self, name) is not None:
                _check(name, getattr(self, name), low=1, integer=True)
        _check("width", self.width, low=0.0, inclusive=False)
        for name in ("lr", "time_limit"):
            if getattr(self, name) is not None:
                _check(name, getattr(self, name), low=0.0, inclusive=False)
        if self.momentum is not None and not (
            isinstance(self.momentum, (int, float)) and 0.0 <= self.momentum < 1.0
        ):
            raise FCNError(f"momentum must be in [0, 1), got {self.momentum!r}", param="momentum")

    @property
    def recipe_name(self) -> str:
        return self.recipe or ("synthetic" if self.data == "synthetic" else "reference")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _check(
    name: str, value: Any, low: float, inclusive: bool = True, integer: bool = False
) -> None:
    kind = "a whole number" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    ok = ok and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= low if inclusive else value > low)
    if not ok:
        bound = f"≥ {low:g}" if inclusive else f"> {low:g}"
        raise FCNError(f"{name} must be {kind} {bound}, got {value!r}", param=name)
