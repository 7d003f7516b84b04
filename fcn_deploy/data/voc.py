"""PASCAL VOC and SBD readers, and the FCN validation split ``seg11valid``.

Items are ``(image, labels)``: uint8 ``H×W×3`` BGR (as OpenCV decodes it, the one image rule of
`fcn_deploy.imageio`) and uint8 ``H×W`` class ids at native size, 255 = ignore. Paths are checked
when the dataset is made, so a wrong root fails at once with the missing file named, not
halfway through an epoch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._gate import read_regular, regular_file
from ..errors import FCNError
from ..imageio import DEFAULT_MAX_MEGAPIXELS, read_image, read_label_png
from ..meta import VOC_CLASSES, voc_palette

__all__ = [
    "SBD_SPLITS",
    "VOC_SPLITS",
    "SBDSegmentation",
    "SegmentationDataset",
    "VOCSegmentation",
    "seg11valid",
]

VOC_SPLITS = ("train", "val", "trainval")
SBD_SPLITS = ("train", "val")


class SegmentationDataset:
    """A list of image ids and how to read each one; ``dataset[i] → (bgr, labels)``."""

    class_names: tuple[str, ...] = VOC_CLASSES
    palette: list[tuple[int, int, int]] = voc_palette(len(VOC_CLASSES))
    #: images (and label maps) larger than this are refused from their header, before decoding
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS

    def __init__(self, ids: Sequence[str], name: str) -> None:
        self.ids = list(ids)
        self.name = name

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self)} images)"


def _need(path: Path, what: str, hint: str) -> Path:
    if not path.exists():
        raise FCNError(f"{path}: no such {what}; {hint}")
    return path


def _read_ids(path: Path, hint: str) -> list[str]:
    _need(path, "image list", hint)
    text = read_regular(path, "image list").decode("utf-8", "replace")
    return [line.split()[0] for line in text.splitlines() if line.strip()]


class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC segmentation: ``root`` is ``VOCdevkit`` or ``VOCdevkit/VOC2012`` (or VOC2011).

    Images from ``JPEGImages/<id>.jpg``, labels from the palette PNGs ``SegmentationClass/<id>.png``
    (the palette index is the class id), ids from ``ImageSets/Segmentation/<split>.txt``.
    """

    HINT = (
        "expected a PASCAL VOC tree: VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, "
        "ImageSets/Segmentation}"
    )

    def __init__(self, root: str | os.PathLike[str], split: str = "val") -> None:
        root = _need(Path(root), "folder", self.HINT)
        if not (root / "JPEGImages").exists():
            years = sorted(root.glob("VOC20*"), reverse=True)
            root = years[0] if years else root
        self.root = root
        for sub in ("JPEGImages", "SegmentationClass"):
            _need(root / sub, "folder", self.HINT)
        ids = _read_ids(
            root / "ImageSets" / "Segmentation" / f"{split}.txt",
            f"splits are {', '.join(VOC_SPLITS)} ({self.HINT})",
        )
        super().__init__(ids, f"{root.name} {split}")

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        name = self.ids[index]
        image = read_image(
            self.root / "JPEGImages" / f"{name}.jpg", self.max_megapixels, exif_orientation=False
        )
        labels = read_label_png(
            self.root / "SegmentationClass" / f"{name}.png", self.max_megapixels
        )
        return image, _check_sizes(image, labels, name)


class SBDSegmentation(SegmentationDataset):
    """The Semantic Boundaries Dataset (Hariharan et al.), FCN's training set.

    ``root`` is ``benchmark_RELEASE``, its ``dataset`` folder, or the folder holding
    ``benchmark_RELEASE``; labels come from ``cls/<id>.mat`` (``GTcls.Segmentation``).
    """

    HINT = "expected the SBD tree: benchmark_RELEASE/dataset/{img, cls, train.txt, val.txt}"

    def __init__(self, root: str | os.PathLike[str], split: str = "train") -> None:
        root = _need(Path(root), "folder", self.HINT)
        for candidate in (root / "benchmark_RELEASE" / "dataset", root / "dataset"):
            if candidate.is_dir():
                root = candidate
        self.root = root
        for sub in ("img", "cls"):
            _need(root / sub, "folder", self.HINT)
        ids = _read_ids(root / f"{split}.txt", f"splits are {', '.join(SBD_SPLITS)} ({self.HINT})")
        super().__init__(ids, f"SBD {split}")

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        from scipy.io import loadmat  # scipy is slow to import and only SBD needs it

        name = self.ids[index]
        image = read_image(
            self.root / "img" / f"{name}.jpg", self.max_megapixels, exif_orientation=False
        )
        path = regular_file(self.root / "cls" / f"{name}.mat", "label file", self.HINT)
        try:
            labels = loadmat(path)["GTcls"][0]["Segmentation"][0]
        except (KeyError, IndexError, ValueError, OSError) as e:
            raise FCNError(
                f"{path}: not an SBD label file (GTcls.Segmentation unreadable: {e})"
            ) from None
        return image, _check_sizes(image, np.asarray(labels, dtype=np.uint8), name)


def _check_sizes(image: np.ndarray, labels: np.ndarray, name: str) -> np.ndarray:
    if labels.shape != image.shape[:2]:
        raise FCNError(
            f"{name}: labels are {labels.shape[0]}x{labels.shape[1]} but the image is "
            f"{image.shape[0]}x{image.shape[1]}; the dataset tree is inconsistent"
        )
    return labels


def seg11valid(
    voc_root: str | os.PathLike[str], sbd_root: str | os.PathLike[str]
) -> VOCSegmentation:
    """FCN's validation split: the 736 VOC2011 ``val`` images not in SBD ``train``.

    SBD's training set overlaps VOC val, so scoring on all of VOC val would count training
    images; the reference release validates on this subset instead. ``voc_root`` should hold
    VOC2011 (VOC2012's val list is a superset and gives a larger split).
    """
    voc = VOCSegmentation(voc_root, "val")
    train = set(SBDSegmentation(sbd_root, "train").ids)
    voc.ids = [i for i in voc.ids if i not in train]
    voc.name = "seg11valid"
    return voc
