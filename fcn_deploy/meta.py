"""What travels with the weights: classes, palette and preprocessing.

The preprocessing belongs to the weights (Caffe-derived FCN weights expect BGR 0..255 minus a
mean; torchvision's VGG16 expects RGB 0..1 normalized by mean/std), so a `ModelInfo` is stored in
every checkpoint, ONNX file and engine sidecar, and every backend applies the same one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._gate import read_regular
from .errors import FCNError

__all__ = [
    "ENGINE_SUFFIXES",
    "IO_MODES",
    "VARIANTS",
    "VOC_CLASSES",
    "ModelInfo",
    "Preprocessing",
    "SizeBounds",
    "default_class_names",
    "read_classes",
    "voc_palette",
]

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

# Every net this package builds. "vgg16" is the convolutionalized VGG16 classifier (1000 classes,
# a coarse score map at 1/32 of the input instead of a full-size one).
VARIANTS: tuple[str, ...] = ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce", "vgg16")

# What an exported model takes and returns: "tensor" (preprocessed float in, logits out) or
# "image" (uint8 BGR in, labels out: preprocessing and argmax in the graph).
IO_MODES: tuple[str, ...] = ("tensor", "image")

# The file suffixes of TensorRT engines: what build_engine writes and load_runner opens.
ENGINE_SUFFIXES: tuple[str, ...] = (".engine", ".plan", ".trt")


def voc_palette(num_colors: int = 256) -> list[tuple[int, int, int]]:
    """PASCAL VOC's colour rule: label bits 0/1/2 fill R/G/B from the most significant bit down."""
    palette = []
    for label in range(num_colors):
        r = g = b = 0
        k, shift = label, 7
        while k:
            r |= (k & 1) << shift
            g |= ((k >> 1) & 1) << shift
            b |= ((k >> 2) & 1) << shift
            k >>= 3
            shift -= 1
        palette.append((r, g, b))
    return palette


def default_class_names(num_classes: int) -> list[str]:
    """VOC's names for 21 classes, ``class_<k>`` otherwise."""
    if num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return [f"class_{k}" for k in range(num_classes)]


MAX_CLASS_FILE_BYTES = 1 << 20  # 1 MiB: tens of thousands of names with colours


def read_classes(path: str | os.PathLike[str]) -> tuple[list[str], list[tuple[int, int, int]]]:
    """A class file: one class per line in label order, ``name`` or ``name R G B`` (0..255);
    blank lines and ``#`` comments are skipped. → (names, palette); classes without a colour get
    VOC's colour for their label.

    For nets trained on other label sets than VOC's 21 whose weight files carry no names (the
    FCN authors' PASCAL-Context, NYUDv2 and SIFT Flow releases get theirs from the package's
    ``classes/`` folder, which holds such files). Only a regular file of at most
    `MAX_CLASS_FILE_BYTES` is read.
    """
    data = read_regular(path, "class file", MAX_CLASS_FILE_BYTES, " (at most 1 MiB)",
                        param="classes")  # fmt: skip
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise FCNError(f"{path}: cannot read the class names (not UTF-8 text)",
                       param="classes") from None  # fmt: skip
    names: list[str] = []
    colours: list[tuple[int, int, int] | None] = []
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        colour = words[-3:] if len(words) > 3 else []
        if colour and all(len(w) <= 3 and w.isdecimal() and int(w) <= 255 for w in colour):
            words = words[:-3]
        else:
            colour = []
        names.append(" ".join(words))
        colours.append((int(colour[0]), int(colour[1]), int(colour[2])) if colour else None)
        if not names[-1]:
            raise FCNError(f"{path}, line {number}: a colour without a class name", param="classes")
        if len(names) > MAX_CLASSES:
            raise FCNError(f"{path} names more than {MAX_CLASSES:,} classes", param="classes")
    if not names:
        raise FCNError(f"{path} names no classes (one name per line)", param="classes")
    voc = voc_palette(len(names))  # once: per class it made reading 300,000 names quadratic
    return names, [colour or voc[k] for k, colour in enumerate(colours)]


@dataclass(frozen=True)
class Preprocessing:
    """How a decoded image becomes the network's input: ``(pixels[..., order] * scale - mean) /
    std``.

    ``color`` is the channel order the network expects ("bgr" or "rgb"); images arrive as OpenCV
    decodes them (BGR) and are reordered if needed. ``mean``/``std`` are in that channel order.
    """

    color: str = "bgr"
    scale: float = 1.0
    mean: tuple[float, float, float] = (104.00699, 116.66877, 122.67892)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.color not in ("bgr", "rgb"):
            raise ValueError(f"preprocessing color must be 'bgr' or 'rgb', got {self.color!r}")
        object.__setattr__(self, "mean", _finite_triple(self.mean, "mean"))
        object.__setattr__(self, "std", _finite_triple(self.std, "std"))
        if not (math.isfinite(self.scale) and self.scale > 0 and all(self.std)):
            raise ValueError(
                f"preprocessing scale must be a finite number > 0 and std nonzero, got scale "
                f"{self.scale!r}, std {self.std}"
            )

    @classmethod
    def caffe(cls) -> Preprocessing:
        """Caffe-derived VGG16/FCN weights: BGR, 0..255, mean subtracted, no scaling."""
        return cls()

    @classmethod
    def torchvision(cls) -> Preprocessing:
        """torchvision's VGG16: RGB, 0..1, ImageNet mean/std."""
        return cls("rgb", 1.0 / 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``N×H×W×3`` (or ``H×W×3``) BGR pixels on any device → float32 ``N×3×H×W`` (or
        ``3×H×W``) there. On the CPU this is `apply` (the same operations in the same order, so
        the same bits), faster there than the tensor ops below (benchmarks/e2e_steps.py)."""
        if pixels.device.type == "cpu" and not pixels.requires_grad:
            return torch.from_numpy(self.apply(pixels.numpy()))
        return self._normalize_tensor(pixels)

    def _normalize_tensor(self, pixels: torch.Tensor) -> torch.Tensor:
        """`normalize` in tensor ops, on the pixels' device."""
        x = pixels.float()
        if self.color == "rgb":
            x = x.flip(-1)
        scale, mean, std = (
            torch.tensor(v, dtype=torch.float32, device=x.device)
            for v in (self.scale, self.mean, self.std)
        )
        return ((x * scale - mean) / std).movedim(-1, -3).contiguous()

    def apply(self, bgr: np.ndarray) -> np.ndarray:
        """`normalize` for NumPy: uint8 ``N×H×W×3`` (or ``H×W×3``) → float32 ``N×3×H×W``.

        One channel at a time, written straight into its channels-first plane: each operation is
        one pass over the pixels, with no float copy of the channels-last image and no transpose
        (0.7 ms against 1.9 ms for the tensor ops at 500×500 on a quiet 2-core Xeon,
        benchmarks/e2e_steps.py). Dividing by 1 is exact, so it is skipped.
        """
        bgr = np.asarray(bgr)
        out = np.empty((*bgr.shape[:-3], 3, *bgr.shape[-3:-1]), np.float32)
        for c, k in enumerate((2, 1, 0) if self.color == "rgb" else (0, 1, 2)):
            plane = out[..., c, :, :]
            np.multiply(bgr[..., k], np.float32(self.scale), out=plane, dtype=np.float32)
            np.subtract(plane, np.float32(self.mean[c]), out=plane)
            if self.std[c] != 1.0:
                np.divide(plane, np.float32(self.std[c]), out=plane)
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        d = _mapping(d, "preprocessing")
        return cls(str(d["color"]), float(d["scale"]), tuple(d["mean"]), tuple(d["std"]))  # type: ignore[arg-type]


def _finite_triple(values: Sequence[Any], name: str) -> tuple[float, float, float]:
    """Three finite numbers (a per-channel mean or std); ValueError otherwise."""
    floats = tuple(float(v) for v in values)
    if len(floats) != 3 or not all(math.isfinite(v) for v in floats):
        raise ValueError(f"preprocessing {name} must be 3 finite numbers, got {floats}")
    return floats  # type: ignore[return-value]


def _mapping(value: Any, name: str) -> dict[str, Any]:
    """``value`` if it is a JSON object; ValueError naming ``name`` otherwise (metadata read from
    a file can hold any JSON)."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a JSON object, got {type(value).__name__}")
    return dict(value)


MAX_CLASSES = 100_000  # far above any label set (ImageNet's 1000, PASCAL-Context's 459)


def _colour(value: Any) -> tuple[int, int, int]:
    """A palette entry: three whole numbers 0..255 (ValueError otherwise)."""
    rgb = tuple(int(v) for v in value)
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ValueError(f"a palette colour must be 3 values 0..255, got {value!r}")
    return rgb  # type: ignore[return-value]


@dataclass
class ModelInfo:
    """Everything a deployment needs besides the weights."""

    variant: str
    num_classes: int
    width: float = 1.0
    class_names: list[str] = field(default_factory=list)
    palette: list[tuple[int, int, int]] = field(default_factory=list)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(
                f"unknown variant {self.variant!r}; expected one of {', '.join(VARIANTS)}"
            )
        if not 1 <= self.num_classes <= MAX_CLASSES:  # before lists of that length are made
            raise ValueError(f"num_classes must be 1..{MAX_CLASSES}, got {self.num_classes}")
        if not (math.isfinite(self.width) and self.width > 0):
            raise ValueError(f"width must be a finite number > 0, got {self.width}")
        if not self.class_names:
            self.class_names = default_class_names(self.num_classes)
        if not self.palette:
            self.palette = voc_palette(self.num_classes)
        self.class_names = [str(c) for c in self.class_names]
        self.palette = [_colour(c) for c in self.palette]
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{len(self.class_names)} class names given for {self.num_classes} classes"
            )
        if len(self.palette) < self.num_classes:
            raise ValueError(
                f"palette has {len(self.palette)} colours for {self.num_classes} classes"
            )

    def with_classes(self, path: str | os.PathLike[str]) -> ModelInfo:
        """A copy with the class names and colours of a class file (`read_classes`)."""
        names, palette = read_classes(path)
        if len(names) != self.num_classes:
            raise FCNError(
                f"{path} names {len(names)} classes but the model has {self.num_classes}",
                param="classes",
            )
        return self.replace(class_names=names, palette=palette)

    def replace(self, **changes: Any) -> ModelInfo:
        """A copy with some fields changed (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "num_classes": self.num_classes,
            "width": self.width,
            "class_names": list(self.class_names),
            "palette": [list(c) for c in self.palette],
            "preprocessing": self.preprocessing.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        d = _mapping(d, "info")
        return cls(
            variant=str(d["variant"]),
            num_classes=int(d["num_classes"]),
            width=float(d.get("width", 1.0)),
            class_names=list(d.get("class_names") or []),
            palette=[tuple(c) for c in d.get("palette") or []],  # type: ignore[misc]
            preprocessing=Preprocessing.from_dict(d["preprocessing"])
            if d.get("preprocessing")
            else Preprocessing(),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        return cls.from_dict(json.loads(text))

    @staticmethod
    def palette_array(palette: Sequence[Sequence[int]]) -> np.ndarray:
        """A palette as a ``256×3`` uint8 lookup table (unused entries black)."""
        table = np.zeros((256, 3), np.uint8)
        table[: min(256, len(palette))] = np.asarray(palette[:256], np.uint8)
        return table


@dataclass(frozen=True)
class SizeBounds:
    """The input shapes a model accepts: batch ≤ ``max_batch``, ``min_hw`` ≤ H×W ≤ ``max_hw``.

    ``None`` means unbounded (eager PyTorch). Exported models and engines declare finite bounds,
    and every backend checks them before running so an out-of-range input gets a clear message.
    """

    min_hw: tuple[int, int] = (1, 1)
    max_hw: tuple[int, int] | None = None
    min_batch: int = 1
    max_batch: int | None = None

    def violation(self, batch: int, height: int, width: int) -> str | None:
        """Why ``batch×H×W`` is out of range, or None if it fits."""
        if batch < self.min_batch or (self.max_batch is not None and batch > self.max_batch):
            top = self.max_batch if self.max_batch is not None else "any"
            return f"batch {batch} is outside {self.min_batch}..{top}"
        (h0, w0), (h1, w1) = self.min_hw, self.max_hw or (None, None)
        if (
            height < h0
            or width < w0
            or (h1 is not None and height > h1)
            or (w1 is not None and width > w1)
        ):
            top = f"{h1}x{w1}" if h1 is not None else "any"
            return f"size {height}x{width} is outside {h0}x{w0}..{top} (HxW)"
        return None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SizeBounds:
        """Parse `to_dict` output; ValueError unless the bounds are whole numbers ≥ 1, in order."""
        d = _mapping(d, "bounds")
        max_hw, max_batch = d.get("max_hw"), d.get("max_batch")
        bounds = cls(
            _whole_pair(d.get("min_hw", (1, 1)), "min_hw"),
            _whole_pair(max_hw, "max_hw") if max_hw is not None else None,
            _whole(d.get("min_batch", 1), "min_batch"),
            _whole(max_batch, "max_batch") if max_batch is not None else None,
        )
        top = bounds.max_hw or bounds.min_hw
        if any(a > b for a, b in zip(bounds.min_hw, top, strict=True)) or (
            bounds.max_batch is not None and bounds.max_batch < bounds.min_batch
        ):
            raise ValueError(f"size bounds out of order: {d}")
        return bounds


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number ≥ 1, got {value!r}")
    return value


def _whole_pair(value: Any, name: str) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{name} must be [height, width], got {value!r}")
    return _whole(value[0], name), _whole(value[1], name)
