"""`Segmenter` on real nets and real image files: input forms, batching, tiling, overlay, timing.

ONNX round trips (the same labels from a checkpoint and its export) are in test_api_onnx.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fcn_deploy import FCNError, ModelInfo, Preprocessing, SizeBounds
from fcn_deploy.api import Segmenter, TileGrid, tile_spans
from fcn_deploy.api.segmenter import _labels
from fcn_deploy.runtime import Runner
from fcn_deploy.runtime.torch_runner import TorchRunner


def scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A BGR test picture: shapes in a few colours on a noisy background, so labels vary."""
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 120, (h, w, 3), dtype=np.uint8)
    for _ in range(6):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, centre, int(rng.integers(5, max(6, min(h, w) // 2))), colour, -1)
        corner = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.rectangle(img, corner, (corner[0] + w // 3, corner[1] + h // 4), colour[::-1], -1)
    return img


@pytest.fixture
def segmenter(make_model: Callable[..., torch.nn.Module]) -> Segmenter:
    return Segmenter(TorchRunner(make_model("fcn8s"), device="cpu"))


def reference_labels(seg: Segmenter, bgr: np.ndarray) -> np.ndarray:
    """Labels straight from the eager net, preprocessed by `Preprocessing.apply` (not the API's
    path)."""
    x = torch.from_numpy(seg.info.preprocessing.apply(bgr[None]))
    with torch.inference_mode():
        return seg.runner.model(x).argmax(1)[0].numpy()  # type: ignore[attr-defined]


class PixelRunner(Runner):
    """A real runner whose scores depend on each pixel alone (a 1×1 conv): tiling must then be
    exact."""

    backend = "pixel"

    def __init__(self, io: str, bounds: SizeBounds) -> None:
        super().__init__(ModelInfo("fcn8s", 5), io, bounds=bounds)
        self.weight = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        if self.io == "image":  # preprocessing folded in, labels out
            x = self.info.preprocessing.normalize(x)
        scores = torch.einsum("nchw,kc->nkhw", x, self.weight)
        return scores.argmax(1).to(torch.uint8) if self.io == "image" else scores


def test_predict_matches_the_eager_net_at_odd_sizes(segmenter: Segmenter) -> None:
    for h, w in [(97, 131), (33, 250), (1, 1)]:
        img = scene(h, w, seed=h)
        labels = segmenter.predict(img)
        assert labels.shape == (h, w) and labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, reference_labels(segmenter, img))
    assert len(np.unique(segmenter.predict(scene(97, 131)))) > 1  # a non-trivial comparison


@pytest.mark.parametrize("prep", [Preprocessing.caffe(), Preprocessing.torchvision()])
def test_preprocessing_follows_its_rule(prep: Preprocessing) -> None:
    """``(pixels[..., order] * scale - mean) / std``, channels first, batched or not."""
    img = scene(37, 53)
    order = slice(None, None, -1) if prep.color == "rgb" else slice(None)
    rule = (img[..., order].astype(np.float64) * prep.scale - prep.mean) / prep.std
    expected = rule.transpose(2, 0, 1)
    np.testing.assert_allclose(prep.apply(img), expected, rtol=1e-6, atol=1e-5)
    batched = prep.normalize(torch.from_numpy(np.stack([img, img])))
    assert batched.dtype == torch.float32 and batched.shape == (2, 3, 37, 53)
    np.testing.assert_array_equal(batched[1].numpy(), prep.apply(img))
    # the tensor ops a GPU runs give the same bits as the CPU's channel-by-channel NumPy
    tensor_path = prep._normalize_tensor(torch.from_numpy(np.stack([img, img])))
    np.testing.assert_array_equal(tensor_path.numpy(), batched.numpy())


@pytest.mark.parametrize("classes", [2, 21, 300])
def test_cpu_labels_equal_argmax_ties_included(classes: int) -> None:
    rng = np.random.default_rng(classes)
    scores = torch.from_numpy(rng.integers(0, 4, (2, classes, 9, 13)).astype(np.float32))
    labels = _labels(scores, classes)  # integer scores: many ties, the first maximum wins
    assert labels.dtype == (torch.uint8 if classes <= 256 else torch.int32)
    np.testing.assert_array_equal(labels.numpy(), scores.argmax(1).numpy())


def test_every_input_form_gives_the_same_labels(segmenter: Segmenter, tmp_path: Path) -> None:
    bgr = scene(45, 67)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    expected = segmenter.predict(bgr)
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), bgr)
    same_as_bgr = {
        "path": segmenter.predict(path),
        "str path": segmenter.predict(str(path)),
        "rgb": segmenter.predict(np.ascontiguousarray(bgr[:, :, ::-1]), rgb=True),
        "bgra": segmenter.predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)),
        "16-bit": segmenter.predict(bgr.astype(np.uint16) << 8 | 0x7F),
        "float": segmenter.predict(bgr.astype(np.float32) / 255.0),
        "tensor": segmenter.predict(torch.from_numpy(bgr)),
    }
    for form, labels in same_as_bgr.items():
        np.testing.assert_array_equal(labels, expected, err_msg=form)
    gray3 = segmenter.predict(np.repeat(gray[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(segmenter.predict(gray), gray3)
    np.testing.assert_array_equal(segmenter.predict(gray[:, :, None]), gray3)


def test_bad_inputs_get_one_clear_line(segmenter: Segmenter, tmp_path: Path) -> None:
    with pytest.raises(FCNError, match=r"permute\(1, 2, 0\)"):
        segmenter.predict(torch.zeros(3, 40, 50, dtype=torch.uint8))
    with pytest.raises(FCNError, match="no such image"):
        segmenter.predict(tmp_path / "missing.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(FCNError, match="not a readable image"):
        segmenter.predict(tmp_path / "broken.jpg")
    with pytest.raises(FCNError, match="expected an image"):
        segmenter.predict([1, 2, 3])  # type: ignore[arg-type]


def test_certainly_wrong_pixels_are_refused_and_ambiguous_ones_warned(
    segmenter: Segmenter, caplog: pytest.LogCaptureFixture
) -> None:
    bgr = scene(30, 40)
    with pytest.raises(FCNError, match=r"spans \d+\.\.255 \(it looks like 0\.\.255: divide by 255"):
        segmenter.predict(bgr.astype(np.float32))  # was read as 0..1: clipped to nearly white
    broken = bgr.astype(np.float32) / 255.0
    broken[3, 4, 1] = np.nan
    with pytest.raises(FCNError, match="NaN or infinite"):
        segmenter.predict(broken)
    with pytest.raises(FCNError, match=r"must hold values in 0\.\.1"):
        segmenter.predict(bgr.astype(np.float32) / 255.0 - 0.5)
    labels = segmenter.predict(bgr)
    for alpha in (5.0, -0.1, float("nan")):
        with pytest.raises(FCNError, match=r"alpha must be in 0\.\.1"):
            segmenter.overlay(bgr, labels, alpha=alpha)
    with caplog.at_level("WARNING", logger="fcn_deploy"):
        segmenter.predict(bgr.astype(np.uint16))  # 8-bit values in a 16-bit array
    assert "pass it as uint8" in caplog.text


def test_batch_equals_single_with_mixed_sizes(segmenter: Segmenter) -> None:
    images = [
        scene(48, 64, 1),
        scene(35, 41, 2),
        scene(48, 64, 3),
        scene(48, 64, 4),
        scene(35, 41, 5),
    ]
    segmenter.batch_size = 2
    batched = segmenter.predict_batch(images)
    timing = segmenter.last_timing
    assert (timing.images, timing.calls) == (5, 3)  # 48×64: 2 + 1 calls, 35×41: 1 call
    assert timing.pixels == 3 * 48 * 64 + 2 * 35 * 41
    for image, labels in zip(images, batched, strict=True):
        np.testing.assert_array_equal(labels, segmenter.predict(image))
    assert segmenter.predict_batch([]) == []


def test_logits_and_timing(segmenter: Segmenter) -> None:
    img = scene(40, 56)
    scores = segmenter.logits(img)
    assert scores.shape == (21, 40, 56) and scores.dtype == np.float32
    np.testing.assert_array_equal(scores.argmax(0), segmenter.predict(img))
    t = segmenter.last_timing
    assert t.model > 0 and t.preprocess > 0 and t.postprocess > 0 and (t.images, t.calls) == (1, 1)
    assert t.total == pytest.approx(t.preprocess + t.model + t.postprocess)


def test_overlay_colours_with_the_palette(segmenter: Segmenter) -> None:
    img = scene(30, 44)
    labels = segmenter.predict(img)
    out = segmenter.overlay(img, labels)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(segmenter.overlay(img, labels, alpha=0.0), img)
    bgr_palette = np.asarray(segmenter.palette, np.uint8)[:, ::-1]
    np.testing.assert_array_equal(segmenter.overlay(img, labels, alpha=1.0), bgr_palette[labels])
    with pytest.raises(FCNError, match="do not match"):
        segmenter.overlay(img, labels[1:])


def test_metadata_properties(segmenter: Segmenter) -> None:
    assert segmenter.class_names[0] == "background" and len(segmenter.class_names) == 21
    assert segmenter.palette[1] == (128, 0, 0)  # VOC's aeroplane red
    assert "fcn8s" in repr(segmenter)


def test_load_picks_the_backend_and_checks_the_path(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    path = make_checkpoint("fcn32s")
    with Segmenter.load(path, device="cpu") as seg:
        assert seg.runner.backend == "torch" and seg.info.variant == "fcn32s"
        assert seg.predict(scene(20, 30)).shape == (20, 30)
    with pytest.raises(FCNError, match="no such model file"):
        Segmenter.load(tmp_path / "nothing.onnx")
    with pytest.raises(FCNError, match="device"):
        Segmenter.load(path, device="tpu")


def test_too_large_is_a_clear_error_unless_tiling(segmenter: Segmenter) -> None:
    segmenter.runner.bounds = SizeBounds(max_hw=(96, 96), max_batch=4)
    img = scene(150, 110)
    with pytest.raises(FCNError, match=r"150x110.*96x96.*tile=True"):
        segmenter.predict(img)
    tiled = Segmenter(segmenter.runner, tile=True)
    assert tiled.tile_size == (96, 96) and tiled.overlap == 24
    assert tiled.predict(img).shape == (150, 110) and tiled.last_timing.calls > 1
    with pytest.raises(FCNError, match="tile size"):
        Segmenter(segmenter.runner, tile_size=128)


def test_images_below_the_smallest_input_are_padded_then_cropped() -> None:
    seg = Segmenter(PixelRunner("tensor", SizeBounds(min_hw=(32, 32))))
    img = scene(10, 50)
    labels = seg.predict(img)
    assert labels.shape == (10, 50)
    np.testing.assert_array_equal(
        labels, Segmenter(PixelRunner("tensor", SizeBounds())).predict(img)
    )


def test_tile_spans_cover_align_and_overlap() -> None:
    for length in [1, 31, 96, 97, 200, 515, 1000, 4099]:
        for tile, overlap in [(96, 32), (128, 0), (256, 96)]:
            spans = tile_spans(length, tile, overlap)
            assert spans[0][0] == 0 and spans[-1][1] == length
            for (s0, e0), (s1, e1) in itertools.pairwise(spans):
                assert s1 % 32 == 0 and s0 < s1 and e0 - s1 >= overlap and e1 - s1 <= tile
    assert len(TileGrid(500, 700, (256, 256), 64)) == 3 * 4


@pytest.mark.parametrize("io", ["tensor", "image"])
def test_tiling_is_exact_for_a_pixelwise_model(io: str) -> None:
    """With no spatial context, blending and stitching must reproduce whole-image results
    exactly."""
    bounds = SizeBounds(max_hw=(64, 96), max_batch=3)
    tiled = Segmenter(PixelRunner(io, bounds), tile=True, overlap=24)
    whole = Segmenter(PixelRunner(io, SizeBounds()))
    img = scene(171, 250)
    np.testing.assert_array_equal(tiled.predict(img), whole.predict(img))
    assert tiled.last_timing.calls > 3
    if io == "tensor":
        np.testing.assert_allclose(tiled.logits(img), whole.logits(img), rtol=1e-5, atol=1e-4)
    else:
        with pytest.raises(FCNError, match=r"io=.tensor."):  # the parameter, not a CLI flag
            tiled.logits(img)


@pytest.mark.slow
def test_tiling_agrees_with_whole_image_inference(segmenter: Segmenter) -> None:
    """An FCN sees ~400 pixels around each output, so tiles can only approximate the whole image.

    Measured on this random FCN-8s at 490×714 with 448-pixel tiles: 97.7% of labels agree with 128
    pixels of overlap and 98.4% with 192 (unaligned tiles gave 91.5%); larger tiles agree more.
    """
    img = scene(490, 714, seed=7)
    whole = segmenter.predict(img)
    tiled = segmenter.__class__(segmenter.runner, tile=True, tile_size=448, overlap=192)
    labels = tiled.predict(img)
    assert tiled.last_timing.calls == 4
    assert (labels == whole).mean() >= 0.97
