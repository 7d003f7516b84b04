"""Step one of the paper on the synthetic scenes: a supervised VGG16 classifier to start FCNs from.

No ImageNet VGG16 can be downloaded here, so `pretrain` makes a classification task from the
synthetic scenes and trains a (small-width) VGG16 on it, saving torchvision's layout
(``features.N``, ``classifier.0/3/6``): ``fcn-train --init vgg16:PATH``, `FCN.from_vgg16` and
`convolutionalize` take the file exactly as they take ``vgg16-397923af.pth``.

The task: a 224×224 window centred on a pixel of a training scene, labelled by the class at its
centre (background or one of the six shapes). Outside the scene the window holds the mean colour
(zero after normalization), which is what an FCN's padding shows its fc6 around a small scene.
Centres are drawn at least ``margin`` pixels from any object outline, one per class present in a
scene, so labels are unambiguous and shapes are not swamped by background. This is the question
an FCN's fc layers answer at every output location, asked one window at a time.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fcn_deploy._io import check_output_dir, make_output_dir
from fcn_deploy._progress import Progress
from fcn_deploy.checkpoint import save_atomically
from fcn_deploy.data import SYNTHETIC_CLASSES, SyntheticSegmentation
from fcn_deploy.errors import FCNError
from fcn_deploy.meta import Preprocessing
from fcn_deploy.metrics import IGNORE_LABEL, boundary_band
from fcn_deploy.models import FCVGG16
from fcn_deploy.models.vgg import INPUT_SIZE as WINDOW
from fcn_deploy.runtime import resolve_device

__all__ = ["CentreWindows", "PretrainConfig", "PretrainResult", "pretrain"]

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    out: str = "runs/vgg16-synthetic.pth"
    width: float = 1.0  # the paper's VGG16, as fcn-train's default; 0.125 for a quick CPU run
    iterations: int = 1000
    batch_size: int = 16
    lr: float = 1e-3  # Adam, as fcn-train's synthetic recipe
    seed: int = 0
    margin: int = 4  # window centres at least this many pixels from an outline
    val_images: int = 100  # synthetic val scenes to score on (one window per class present)
    time_limit: float | None = None  # seconds of training, then stop and save
    device: str | None = None

    def validate(self) -> None:
        for name in ("iterations", "batch_size", "val_images"):
            if getattr(self, name) < 1:
                raise FCNError(f"{name} must be ≥ 1, got {getattr(self, name)}", param=name)
        if not 0.0 < self.width <= 1.0:
            raise FCNError(f"width must be in (0, 1], got {self.width}", param="width")
        if not self.lr > 0:
            raise FCNError(f"lr must be > 0, got {self.lr}", param="lr")
        for name in ("margin", "seed"):
            if getattr(self, name) < 0:
                raise FCNError(f"{name} must be ≥ 0, got {getattr(self, name)}", param=name)
        if self.time_limit is not None and not self.time_limit > 0:
            raise FCNError(
                f"time_limit must be > 0 seconds, got {self.time_limit}", param="time_limit"
            )
        out = Path(self.out)
        if out.is_dir():
            raise FCNError(f"out={self.out!r} is a folder; give a file name inside it", param="out")
        check_output_dir(out.parent)  # writable (or creatable) before the training, not after it


@dataclass
class PretrainResult:
    path: str
    width: float
    iterations: int
    seconds: float
    accuracy: float  # top-1 on the val windows
    per_class_accuracy: dict[str, float]
    val_windows: int
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class CentreWindows:
    """224×224 windows of synthetic scenes labelled by their centre pixel's class.

    ``windows.scene(i, rng)`` → (float32 ``K×3×224×224``, int64 ``K``) for scene ``i``: one window
    per class present away from outlines, centred on a random pixel of that class.
    """

    def __init__(self, split: str, num_images: int, margin: int, seed: int = 0) -> None:
        self.scenes = SyntheticSegmentation(split, num_images, seed=seed)
        self.margin = margin
        self.preprocessing = Preprocessing.torchvision()
        self.num_classes = len(SYNTHETIC_CLASSES)

    def __len__(self) -> int:
        return len(self.scenes)

    def scene(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        image, labels = self.scenes[index]
        usable = (labels != IGNORE_LABEL) & ~boundary_band(labels, self.margin)
        x = self.preprocessing.apply(image)  # 3×H×W, mean colour = 0
        h, w = labels.shape
        windows, targets = [], []
        for cls in np.unique(labels[usable]):
            ys, xs = np.nonzero(usable & (labels == cls))
            k = int(rng.integers(len(ys)))
            windows.append(_window(x, int(ys[k]), int(xs[k]), h, w))
            targets.append(int(cls))
        if not windows:
            return np.zeros((0, 3, WINDOW, WINDOW), np.float32), np.zeros(0, np.int64)
        return np.stack(windows), np.asarray(targets, np.int64)


def _window(x: np.ndarray, cy: int, cx: int, h: int, w: int) -> np.ndarray:
    """The 224×224 window of ``x`` (3×H×W) centred on (cy, cx), zero (mean colour) outside."""
    half = WINDOW // 2
    out = np.zeros((3, WINDOW, WINDOW), np.float32)
    y0, x0 = cy - half, cx - half  # window origin in scene coordinates
    sy, sx = max(0, y0), max(0, x0)
    ey, ex = min(h, y0 + WINDOW), min(w, x0 + WINDOW)
    out[:, sy - y0 : ey - y0, sx - x0 : ex - x0] = x[:, sy:ey, sx:ex]
    return out


def _val_set(config: PretrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    windows = CentreWindows("val", config.val_images, config.margin)
    rng = np.random.default_rng([config.seed, 1])
    pairs = [windows.scene(i, rng) for i in range(len(windows))]
    x = np.concatenate([p[0] for p in pairs])
    y = np.concatenate([p[1] for p in pairs])
    return torch.from_numpy(x), torch.from_numpy(y)


@torch.no_grad()
def _accuracy(
    model: FCVGG16, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> tuple[float, dict[str, float]]:
    model.eval()
    predictions = torch.cat([model(c.to(device)).argmax(1).cpu() for c in x.split(64)])
    model.train()
    right = predictions == y
    per_class = {
        name: float(right[y == k].double().mean()) if (y == k).any() else float("nan")
        for k, name in enumerate(SYNTHETIC_CLASSES)
    }
    return float(right.double().mean()), per_class


def pretrain(config: PretrainConfig) -> PretrainResult:
    """Train the classifier, save it (torchvision layout) at ``config.out``, score it."""
    config.validate()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = FCVGG16(num_classes=len(SYNTHETIC_CLASSES), width=config.width).to(device).train()
    # He init, as FCN's reset_parameters (torch's default is too small for a deep net without BN)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            torch.nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    train_windows = CentreWindows("train", 1_000_000, config.margin)
    val_x, val_y = _val_set(config)
    log.info("pretraining: %d val windows", len(val_y))

    start, step, scene = time.perf_counter(), 0, 0
    buffer_x: list[np.ndarray] = []
    buffer_y: list[np.ndarray] = []
    with Progress(config.iterations, "pretraining", unit="it") as progress:
        while step < config.iterations:
            while sum(len(b) for b in buffer_y) < config.batch_size:
                rng = np.random.default_rng([config.seed, 0, scene])
                bx, by = train_windows.scene(scene, rng)
                buffer_x.append(bx)
                buffer_y.append(by)
                scene += 1
            xs, ys = np.concatenate(buffer_x), np.concatenate(buffer_y)
            n = config.batch_size
            buffer_x, buffer_y = [xs[n:]], [ys[n:]]
            x, y = torch.from_numpy(xs[:n]).to(device), torch.from_numpy(ys[:n]).to(device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            progress.update(1, loss=f"{loss.item():.3f}")
            if config.time_limit is not None and time.perf_counter() - start > config.time_limit:
                log.info("pretraining: time limit reached at iteration %d", step)
                break
    seconds = time.perf_counter() - start
    accuracy, per_class = _accuracy(model, val_x, val_y, device)

    make_output_dir(Path(config.out).parent)
    save_atomically({k: v.detach().cpu() for k, v in model.state_dict().items()}, config.out)
    return PretrainResult(
        path=config.out,
        width=config.width,
        iterations=step,
        seconds=seconds,
        accuracy=accuracy,
        per_class_accuracy=per_class,
        val_windows=len(val_y),
        config=dataclasses.asdict(config),
    )
