"""OpenVINORunner: real OpenVINO sessions give ONNX Runtime's labels on the same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize

from fcn_deploy.api import Segmenter
from fcn_deploy.errors import FCNError
from fcn_deploy.export import export_onnx, synthetic_images
from fcn_deploy.models import create_model
from fcn_deploy.runtime import load_runner

pytest.importorskip(
    "openvino", reason="openvino is not installed (pip install 'fcn-deploy[openvino]')"
)
from fcn_deploy.runtime.openvino_runner import OpenVINORunner


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, Path]:
    """FCN-8s (width 0.125, random weights) exported in FP32 tensor mode and image mode."""
    torch.manual_seed(0)
    model = randomize(create_model("fcn8s", num_classes=5, width=0.125))
    folder = tmp_path_factory.mktemp("ov")
    tensor, image = folder / "fcn8s.onnx", folder / "fcn8s-image.onnx"
    for path, io in ((tensor, "tensor"), (image, "image")):
        export_onnx(
            model, path, io=io, max_size=(160, 200), max_batch=3, verify=False, progress=False
        )
    return model, tensor, image


@pytest.mark.slow
def test_openvino_matches_onnxruntime_at_several_sizes(exports) -> None:
    model, tensor, _ = exports
    ov = load_runner(tensor, backend="openvino", threads=1)
    ort = load_runner(tensor, device="cpu", threads=1)
    assert isinstance(ov, OpenVINORunner) and ov.name == "openvino" and ov.io == "tensor"
    rng = np.random.default_rng(3)
    for n, h, w in ((1, 1, 5), (1, 97, 131), (3, 64, 48), (1, 160, 200)):  # dynamic shapes
        x = model.info.preprocessing.apply(synthetic_images(n, h, w, rng))
        a, b = ov.infer(x), ort.infer(x)
        assert a.shape == b.shape == (n, 5, h, w) and a.dtype == torch.float32
        assert torch.equal(a.argmax(1), b.argmax(1))
        assert float((a - b).abs().max()) <= 1e-3 * float(b.abs().max())
    ov.close()
    with pytest.raises(FCNError, match="closed"):
        ov.infer(x)


@pytest.mark.slow
def test_openvino_image_mode_and_segmenter(exports) -> None:
    _, tensor, image = exports
    images = synthetic_images(2, 90, 120, np.random.default_rng(4))
    with load_runner(image, backend="openvino") as ov:
        labels = ov.infer(images)
        assert labels.dtype == torch.uint8 and labels.shape == (2, 90, 120)
        with load_runner(image, device="cpu") as ort:
            assert torch.equal(labels, ort.infer(images))
        with pytest.raises(FCNError, match="161"):  # the exported bounds hold here too
            ov.infer(synthetic_images(1, 161, 100))
        with pytest.raises(FCNError, match="uint8"):
            ov.infer(images.astype(np.float32))
    with Segmenter.load(tensor, backend="openvino") as seg:
        assert seg.runner.backend == "openvino"
        with Segmenter.load(tensor, backend="onnxruntime", device="cpu") as ref:
            assert np.array_equal(seg.predict(images[0]), ref.predict(images[0]))


def test_openvino_refuses_cuda_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(FCNError, match="no such ONNX model"):
        OpenVINORunner(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(FCNError, match="is a text file, not an ONNX model"):
        load_runner(bad, backend="openvino")


def test_openvino_load_errors_keep_their_cause(exports, tmp_path: Path) -> None:
    """OpenVINO's first line is a C++ source location; the cause that follows is kept."""
    from conftest import with_external_data

    model = with_external_data(exports[1], tmp_path / "short.onnx", "w.bin")
    (tmp_path / "w.bin").write_bytes((tmp_path / "w.bin").read_bytes()[:10])  # truncated weights
    with pytest.raises(FCNError, match=r"external data file does not match the byte size") as e:
        OpenVINORunner(model)
    assert "core.cpp" not in str(e.value)
