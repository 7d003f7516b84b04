"""VOC/SBD readers on small trees written here, seg11valid, clear errors, and the synthetic set."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from fcn_deploy.data import (
    SBDSegmentation,
    SyntheticSegmentation,
    VOCSegmentation,
    pad_batch,
    random_crop,
    seg11valid,
)
from fcn_deploy.errors import FCNError
from fcn_deploy.imageio import write_label_png
from fcn_deploy.meta import VOC_CLASSES, voc_palette


def _scene(name: str, h: int = 20, w: int = 30) -> tuple[np.ndarray, np.ndarray]:
    seed = sum(map(ord, name))
    image = np.full((h, w, 3), seed % 200, np.uint8)
    labels = np.zeros((h, w), np.uint8)
    labels[4:12, 5:20] = seed % 20 + 1
    labels[3, :] = 255
    return image, labels


def write_voc(root: Path, splits: dict[str, list[str]], year: str = "VOC2012") -> Path:
    base = root / "VOCdevkit" / year
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        (base / "ImageSets/Segmentation" / f"{split}.txt").write_text(
            "".join(f"{i}\n" for i in ids)
        )
        for i in ids:
            image, labels = _scene(i)
            cv2.imwrite(str(base / "JPEGImages" / f"{i}.jpg"), image)
            write_label_png(base / "SegmentationClass" / f"{i}.png", labels, voc_palette())
    return root / "VOCdevkit"


def write_sbd(root: Path, splits: dict[str, list[str]]) -> Path:
    base = root / "benchmark_RELEASE" / "dataset"
    (base / "img").mkdir(parents=True)
    (base / "cls").mkdir()
    for split, ids in splits.items():
        (base / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for i in ids:
            image, labels = _scene(i, 24, 18)
            cv2.imwrite(str(base / "img" / f"{i}.jpg"), image)
            # SBD's layout: a 1×1 struct GTcls with Segmentation (uint8 H×W), Boundaries,
            # CategoriesPresent
            gt = {
                "Segmentation": labels,
                "Boundaries": np.zeros(labels.shape, np.uint8),
                "CategoriesPresent": np.unique(labels[labels < 255]).astype(np.uint8),
            }
            savemat(base / "cls" / f"{i}.mat", {"GTcls": gt})
    return root / "benchmark_RELEASE"


def test_voc_reads_images_and_palette_labels_from_devkit_or_year_folder(tmp_path: Path) -> None:
    devkit = write_voc(tmp_path, {"train": ["2007_000001", "2007_000002"], "val": ["2008_000003"]})
    for root in (devkit, devkit / "VOC2012"):
        ds = VOCSegmentation(root, "train")
        assert len(ds) == 2 and ds.num_classes == 21 and ds.class_names == VOC_CLASSES
        image, labels = ds[1]
        expected_image, expected_labels = _scene("2007_000002")
        assert image.shape == (20, 30, 3) and image.dtype == np.uint8
        assert np.abs(image.astype(int) - expected_image).max() <= 2  # JPEG
        assert np.array_equal(labels, expected_labels)  # class ids exactly, 255 kept
    assert VOCSegmentation(devkit, "val").ids == ["2008_000003"]


def test_sbd_reads_mat_labels(tmp_path: Path) -> None:
    release = write_sbd(tmp_path, {"train": ["2008_000001"], "val": ["2008_000009"]})
    for root in (tmp_path, release, release / "dataset"):
        image, labels = SBDSegmentation(root, "train")[0]
        assert image.shape == (24, 18, 3)
        assert np.array_equal(labels, _scene("2008_000001", 24, 18)[1])


def test_seg11valid_is_voc_val_minus_sbd_train(tmp_path: Path) -> None:
    voc = write_voc(tmp_path / "voc", {"val": ["a", "b", "c", "d"]}, year="VOC2011")
    sbd = write_sbd(tmp_path / "sbd", {"train": ["b", "d", "x"], "val": ["a"]})
    ds = seg11valid(voc / "VOC2011", sbd)
    assert ds.ids == ["a", "c"] and ds.name == "seg11valid"
    assert np.array_equal(ds[1][1], _scene("c")[1])


def test_non_voc_paths_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FCNError, match="no such folder"):
        VOCSegmentation(tmp_path / "nowhere")
    (tmp_path / "VOC2012" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(FCNError, match="SegmentationClass: no such folder"):
        VOCSegmentation(tmp_path / "VOC2012")
    devkit = write_voc(tmp_path / "v", {"train": ["a"]})
    with pytest.raises(FCNError, match=r"Segmentation/test\.txt: no such image list"):
        VOCSegmentation(devkit, "test")
    with pytest.raises(FCNError, match="img: no such folder"):
        SBDSegmentation(devkit)
    (devkit / "VOC2012" / "SegmentationClass" / "a.png").unlink()
    with pytest.raises(FCNError, match=r"a.png: no such label file"):
        VOCSegmentation(devkit, "train")[0]


def test_synthetic_is_deterministic_per_seed_and_splits_differ() -> None:
    a, b = SyntheticSegmentation("train", 5, seed=3), SyntheticSegmentation("train", 50, seed=3)
    for i in range(5):
        assert all(
            np.array_equal(x, y) for x, y in zip(a[i], b[i], strict=True)
        )  # image i does not depend on the set size
    other_seed, val = (
        SyntheticSegmentation("train", 5, seed=4),
        SyntheticSegmentation("val", 5, seed=3),
    )
    assert not np.array_equal(a[0][1], other_seed[0][1]) and not np.array_equal(a[0][1], val[0][1])


def test_synthetic_scenes_look_like_voc() -> None:
    ds = SyntheticSegmentation("val", 40, seed=0)
    assert ds.num_classes == len(ds.class_names) == 7 and len(ds.palette) >= 7
    seen, shapes = set(), set()
    for image, labels in (ds[i] for i in range(len(ds))):
        assert image.dtype == labels.dtype == np.uint8 and image.shape[:2] == labels.shape
        assert 64 <= labels.shape[0] <= 128 and 64 <= labels.shape[1] <= 128
        seen.update(np.unique(labels).tolist())
        shapes.add(labels.shape)
        ignore = labels == 255
        assert 0 < ignore.mean() < 0.3  # outlines only
    assert seen == set(range(7)) | {255}
    assert len(shapes) > 20  # varied sizes and aspect ratios


def test_crop_and_pad_fill_with_ignore() -> None:
    image, labels = np.ones((10, 6, 3), np.uint8), np.ones((10, 6), np.uint8)
    crop_image, crop_labels = random_crop(image, labels, 8, np.random.default_rng(0))
    assert crop_image.shape == (8, 8, 3) and (crop_labels[:, 6:] == 255).all()
    images, batch_labels = pad_batch(
        [(image, labels), (np.ones((4, 9, 3), np.uint8), np.zeros((4, 9), np.uint8))]
    )
    assert images.shape == (2, 10, 9, 3) and batch_labels.shape == (2, 10, 9)
    assert (
        (batch_labels[0, :, 6:] == 255).all()
        and (batch_labels[1, 4:] == 255).all()
        and (images[1, 4:] == 0).all()
    )


def test_dataset_images_over_the_size_limit_are_refused_from_the_header(tmp_path: Path) -> None:
    devkit = write_voc(tmp_path, {"train": ["2008_000001"]})
    ds = VOCSegmentation(devkit, "train")
    assert ds[0][0].shape == (20, 30, 3)  # the default limit (100 MP) lets a normal image through
    ds.max_megapixels = 0.0005  # 500 pixels; the image has 600
    with pytest.raises(FCNError, match=r"2008_000001\.jpg: an image of 30x20 \(WxH\)"):
        ds[0]


def test_dataset_images_keep_their_stored_orientation_like_their_labels(tmp_path: Path) -> None:
    """Label maps are drawn on the stored pixels: an EXIF Orientation tag must not turn the
    image away from its labels (fcn-predict applies it; a dataset must not)."""
    from PIL import Image

    devkit = write_voc(tmp_path, {"train": ["2007_000001"]})
    jpeg = devkit / "VOC2012" / "JPEGImages" / "2007_000001.jpg"
    exif = Image.Exif()
    exif[274] = 6  # shown turned by 90°
    Image.open(jpeg).save(jpeg, exif=exif, quality=95)
    image, labels = VOCSegmentation(devkit, "train")[0]
    assert image.shape[:2] == labels.shape == (20, 30)
