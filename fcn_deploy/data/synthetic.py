"""A built-in segmentation set: seeded scenes of coloured, textured shapes on textured backgrounds.

It needs no download, so demos, tests and the CPU benchmark train on it. Each class is a shape
with its own colour family and texture; objects vary in size, aspect ratio, rotation and
occlusion; a 2-pixel ignore band (255) runs along every object outline, as VOC's void border
does. Image ``i`` of a split is drawn from its own generator seeded by ``(seed, split, i)``, so
any image is reproducible on its own, any number of images can be asked for, and ``train`` and
``val`` never share a scene.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..meta import voc_palette
from ..metrics import IGNORE_LABEL
from .voc import SegmentationDataset

__all__ = ["SYNTHETIC_CLASSES", "SyntheticSegmentation"]

SYNTHETIC_CLASSES = ("background", "disc", "box", "triangle", "ring", "cross", "star")
# per object class: BGR base colour (jittered per object) and texture
_STYLE = {
    1: ((40, 40, 220), "plain"),  # disc: red
    2: ((220, 120, 30), "stripes"),  # box: blue, striped
    3: ((40, 200, 60), "checker"),  # triangle: green, checkered
    4: ((30, 210, 230), "plain"),  # ring: yellow
    5: ((200, 50, 200), "dots"),  # cross: magenta, dotted
    6: ((230, 230, 230), "stripes"),  # star: white, striped
}
_SPLITS = {"train": 0, "val": 1, "test": 2}
_BORDER = 2  # ignore band width in pixels along visible outlines (VOC's is ~5 at ~500 px)


class SyntheticSegmentation(SegmentationDataset):
    """``SyntheticSegmentation("train", num_images=2000, seed=0)``; items are (bgr, labels) like
    VOC's.

    Images are ``min_size``…``max_size`` pixels per side (independently, so aspect ratios vary)
    and hold 1…``max_objects`` shapes.
    """

    class_names = SYNTHETIC_CLASSES
    palette = voc_palette(len(SYNTHETIC_CLASSES))

    def __init__(
        self,
        split: str = "train",
        num_images: int = 1000,
        seed: int = 0,
        min_size: int = 64,
        max_size: int = 128,
        max_objects: int = 4,
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(
                f"unknown synthetic split {split!r}; expected one of {', '.join(_SPLITS)}"
            )
        if not 1 <= min_size <= max_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
        super().__init__([f"{split}_{i:06d}" for i in range(num_images)], f"synthetic {split}")
        self.split, self.seed = split, seed
        self.min_size, self.max_size, self.max_objects = min_size, max_size, max_objects

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, _SPLITS[self.split], index])
        h, w = (int(v) for v in rng.integers(self.min_size, self.max_size + 1, size=2))
        image = _background(rng, h, w)
        labels = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(1, self.max_objects + 1))):
            cls = int(rng.integers(1, len(SYNTHETIC_CLASSES)))
            mask = _shape_mask(rng, cls, h, w)
            if not mask.any():
                continue
            colour, texture = _STYLE[cls]
            paint = _texture(rng, texture, colour, h, w)
            image[mask] = paint[mask]
            labels[mask] = cls
        noise = rng.normal(0.0, 6.0, image.shape)
        image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        kernel = np.ones((_BORDER + 1, _BORDER + 1), np.uint8)
        labels[cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, kernel) > 0] = (
            IGNORE_LABEL  # visible outlines
        )
        return image, labels


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth, low-saturation colour field with faint stripes: texture without a class colour."""
    coarse = rng.uniform(60, 170, size=(3, 3, 1)) + rng.uniform(-25, 25, size=(3, 3, 3))
    field = cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
    stripes = 12.0 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    return np.clip(field + stripes[..., None], 0, 255).astype(np.uint8)


def _texture(
    rng: np.random.Generator, kind: str, colour: tuple[int, int, int], h: int, w: int
) -> np.ndarray:
    base = np.asarray(colour, np.float32) + rng.uniform(-30, 30, size=3)
    image = np.broadcast_to(base, (h, w, 3)).copy()
    yy, xx = np.mgrid[0:h, 0:w]
    period = int(rng.integers(4, 9))
    if kind == "stripes":
        on = ((xx + yy) // period) % 2 == 0 if rng.random() < 0.5 else (yy // period) % 2 == 0
    elif kind == "checker":
        on = ((xx // period) + (yy // period)) % 2 == 0
    elif kind == "dots":
        on = ((xx % period) < period // 2) & ((yy % period) < period // 2)
    else:
        on = np.zeros((h, w), bool)
    image[on] *= 0.55
    return np.clip(image, 0, 255).astype(np.uint8)


def _shape_mask(rng: np.random.Generator, cls: int, h: int, w: int) -> np.ndarray:
    """A filled shape of class ``cls``: size 20–55% of the shorter side, aspect 0.6–1.6, rotated."""
    side = min(h, w)
    size = rng.uniform(0.2, 0.55) * side
    aspect = rng.uniform(0.6, 1.6)
    rx, ry = size * np.sqrt(aspect) / 2, size / np.sqrt(aspect) / 2
    cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
    theta = rng.uniform(0, 2 * np.pi)
    mask = np.zeros((h, w), np.uint8)
    if cls in (1, 4):  # disc, ring: ellipses
        center, axes = (int(cx), int(cy)), (max(1, int(rx)), max(1, int(ry)))
        cv2.ellipse(mask, center, axes, float(np.degrees(theta)), 0, 360, (1,), -1)
        if cls == 4:
            inner = (max(1, int(rx * 0.5)), max(1, int(ry * 0.5)))
            cv2.ellipse(mask, center, inner, float(np.degrees(theta)), 0, 360, (0,), -1)
        return mask.astype(bool)
    unit: list[tuple[float, float]]
    if cls == 2:  # box
        unit = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    elif cls == 3:  # triangle
        unit = [(0, -1), (0.95, 0.8), (-0.95, 0.8)]
    elif cls == 5:  # cross
        a = 0.33
        unit = [
            (-a, -1),
            (a, -1),
            (a, -a),
            (1, -a),
            (1, a),
            (a, a),
            (a, 1),
            (-a, 1),
            (-a, a),
            (-1, a),
            (-1, -a),
            (-a, -a),
        ]
    else:  # star: five points
        angles = np.arange(10) * np.pi / 5 - np.pi / 2
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        unit = list(zip(radii * np.cos(angles), radii * np.sin(angles), strict=True))
    pts = np.asarray(unit, np.float64) * (rx, ry)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = pts @ rot.T + (cx, cy)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], (1,))
    return mask.astype(bool)
