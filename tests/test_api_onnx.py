"""The same labels from a checkpoint and its ONNX export, through ``Segmenter.load(...).predict``.

Both export modes: tensor I/O (the Segmenter preprocesses) and image I/O (preprocessing and argmax
folded into the graph, uint8 pixels in). Images include grayscale, BGRA, 16-bit and odd sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_api import scene

from fcn_deploy import FCNError
from fcn_deploy.api import Segmenter

pytest.importorskip("onnxruntime")  # the cpu/dev extra; the runner itself must import

MAX_SIZE = (256, 320)


def images() -> dict[str, np.ndarray]:
    bgr = scene(97, 131, 11)
    return {
        "odd 97x131": bgr,
        "odd 1x7": scene(1, 7, 12),
        "tall 250x33": scene(250, 33, 13),
        "grayscale": cv2.cvtColor(scene(64, 90, 14), cv2.COLOR_BGR2GRAY),
        "bgra": cv2.cvtColor(scene(71, 59, 15), cv2.COLOR_BGR2BGRA),
        "16-bit": scene(45, 77, 16).astype(np.uint16) * 257,
        "largest": scene(*MAX_SIZE, 17),
    }


@pytest.mark.slow
@pytest.mark.parametrize("io", ["tensor", "image"])
def test_checkpoint_and_onnx_give_the_same_labels(
    io: str, make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    from fcn_deploy.export import export_onnx

    checkpoint = make_checkpoint("fcn8s", width=0.125)
    onnx_path = tmp_path / f"fcn8s-{io}.onnx"
    export_onnx(
        checkpoint, onnx_path, io=io, max_size=MAX_SIZE, max_batch=2, verify=False, progress=False
    )
    eager, exported = (
        Segmenter.load(checkpoint, device="cpu"),
        Segmenter.load(onnx_path, device="cpu"),
    )
    assert exported.runner.io == io and exported.runner.backend == "onnxruntime"
    assert exported.class_names == eager.class_names and exported.palette == eager.palette

    pictures = images()
    for name, image in pictures.items():
        want, got = eager.predict(image), exported.predict(image)
        assert got.shape == want.shape == image.shape[:2] and got.dtype == np.uint8, name
        assert (got == want).mean() >= 0.999, f"{name}: {(got == want).mean():.5f} of pixels agree"
    assert exported.last_timing.model > 0

    # equal sizes batched (max batch 2 → several calls), mixed sizes kept in order
    batch = [
        pictures["odd 97x131"],
        pictures["bgra"],
        pictures["odd 97x131"][::-1].copy(),
        pictures["odd 97x131"],
    ]
    for labels, image in zip(exported.predict_batch(batch), batch, strict=True):
        np.testing.assert_array_equal(labels, exported.predict(image))

    too_big = scene(MAX_SIZE[0] + 40, MAX_SIZE[1], 18)
    with pytest.raises(FCNError, match="tile=True"):
        exported.predict(too_big)
    agree = (exported.predict(too_big, tile=True) == eager.predict(too_big)).mean()
    # one seam across a 296-pixel image, where each tile sees less context: measured 96.8% (tensor)
    # and 97.1% (image I/O) of labels agree with the untiled checkpoint
    assert agree >= 0.95, f"tiled {agree:.4f}"

    if io == "tensor":
        np.testing.assert_allclose(
            exported.logits(pictures["odd 97x131"]),
            eager.logits(pictures["odd 97x131"]),
            rtol=1e-3,
            atol=1e-3,
        )
    else:
        with pytest.raises(FCNError, match=r"io=.tensor."):
            exported.logits(pictures["odd 97x131"])


@pytest.mark.slow
def test_files_of_the_previous_metadata_format_load_as_they_did(
    make_checkpoint: Callable[..., Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Files written before verification records (metadata format 1): one without a mark loads
    with one warning (a verified file whose record was deleted reads the same), one marked
    ``fcn_deploy.unverified`` is refused unless allowed, as before."""
    import subprocess
    import sys

    from test_export import rewrite, set_props

    from fcn_deploy.export import export_onnx

    checkpoint = make_checkpoint("fcn8s", width=0.125)
    current = tmp_path / "current.onnx"
    export_onnx(checkpoint, current, max_size=MAX_SIZE, max_batch=2, verify=False, progress=False)
    format_1 = set_props(verification=None, format_version="1")
    old = rewrite(current, tmp_path / "old.onnx", format_1)
    marked = set_props(unverified="failed: 1 of 4 probe sizes")
    failed = rewrite(old, tmp_path / "failed.onnx", marked)
    image = scene(64, 90, 3)
    caplog.clear()
    with caplog.at_level("WARNING", logger="fcn_deploy"), Segmenter.load(old, device="cpu") as seg:
        labels = seg.predict(image)
    said = [r for r in caplog.records if r.name.startswith("fcn_deploy") and r.levelno >= 30]
    assert [r.getMessage() for r in said] == [
        f"{old} holds no verification record (written before fcn-deploy kept one, or edited): "
        "nothing in it says it passed verification (export it again with verification to check it)"
    ]
    with pytest.raises(FCNError, match=r"failed verification when it was exported \(failed: 1 of"):
        Segmenter.load(failed, device="cpu")
    with Segmenter.load(failed, device="cpu", allow_unverified=True) as seg:
        np.testing.assert_array_equal(seg.predict(image), labels)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    predict = str(Path(sys.executable).parent / "fcn-predict")
    run = subprocess.run([predict, str(old), str(tmp_path / "a.png"), "-o", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0 and run.stderr.count("holds no verification record") == 1, run.stderr
