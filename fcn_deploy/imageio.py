"""Images in and label maps out, by one rule shared by the API, the CLIs and the datasets.

Label maps are palette PNGs (PASCAL VOC's format: the pixel value is the class id, the palette
only colours it), so they open as coloured images and read back as exact class ids. OpenCV cannot
write or read palette indices, so Pillow does that.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ._io import atomic_path
from .errors import FCNError

__all__ = ["read_image", "read_label_png", "to_bgr8", "write_label_png"]


def to_bgr8(image: np.ndarray, rgb: bool = False) -> np.ndarray:
    """Any decoded image → contiguous uint8 ``H×W×3`` BGR, by one documented rule.

    - grayscale (``H×W`` or ``H×W×1``): replicated to three channels;
    - 4 channels (BGRA, or RGBA with ``rgb=True``): alpha dropped;
    - 16-bit: scaled to 8 bits (``>> 8``); float in 0..1: ×255, rounded;
    - ``rgb=True``: channels taken as RGB and reordered to BGR.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
        rgb = False  # no channel order to fix
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise FCNError(f"expected an H×W, H×W×3 or H×W×4 image, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise FCNError(f"image has no pixels (shape {a.shape})")
    a = a[:, :, :3]
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype.kind == "f":
        a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise FCNError(
            f"unsupported image dtype {a.dtype}; expected uint8, uint16 or float in 0..1"
        )
    if rgb:
        a = a[:, :, ::-1]
    return np.ascontiguousarray(a)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file to uint8 BGR (the rule of `to_bgr8`); a clear error if it can't be
    read."""
    path = Path(path)
    if not path.is_file():
        raise FCNError(f"{path}: no such image file")
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise FCNError(f"{path}: not a readable image (corrupt, truncated or unsupported format)")
    return to_bgr8(image)


def write_label_png(
    path: str | os.PathLike[str], labels: np.ndarray, palette: Sequence[Sequence[int]]
) -> None:
    """Write an ``H×W`` label map (values < 256) as a palette PNG, atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise FCNError(f"a label map must be H×W, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise FCNError("a palette PNG holds labels 0..255; this map has values outside that range")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = [int(v) for colour in list(palette)[:256] for v in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def read_label_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Class ids of a palette (or grayscale) label PNG as ``H×W`` uint8; colours are not
    interpreted."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise FCNError(
                    f"{path}: label PNGs must be palette or grayscale images of class ids, got "
                    f"mode {image.mode}"
                )
            return np.array(image, dtype=np.uint8)
    except FileNotFoundError:
        raise FCNError(f"{path}: no such label file") from None
    except OSError as e:
        raise FCNError(f"{path}: not a readable label PNG ({e})") from None
