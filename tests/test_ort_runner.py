"""OnnxRuntimeRunner: metadata applied, inputs checked, same answers as PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize

from fcn_deploy.errors import FCNError
from fcn_deploy.export import export_onnx, synthetic_images
from fcn_deploy.models import create_model
from fcn_deploy.runtime import load_runner
from fcn_deploy.runtime.ort_runner import OnnxRuntimeRunner
from fcn_deploy.runtime.ort_runner import _cuda_available as _cuda_provider


@pytest.fixture(scope="module")
def fp16_io_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """FCN-32s exported in FP16 with half I/O and tight bounds (no verification: the runner
    checks it)."""
    torch.manual_seed(0)
    model = randomize(create_model("fcn32s", num_classes=4, width=0.125))
    path = tmp_path_factory.mktemp("ort") / "fcn32s-fp16.onnx"
    export_onnx(
        model,
        path,
        precision="fp16",
        fp16_io=True,
        max_size=(128, 160),
        max_batch=2,
        verify=False,
        progress=False,
    )
    return model, path


@pytest.mark.slow
def test_runner_applies_metadata_and_matches_pytorch(fp16_io_export) -> None:
    model, path = fp16_io_export
    runner = load_runner(path, device="cpu", threads=1, inter_threads=1)
    assert isinstance(runner, OnnxRuntimeRunner) and runner.name == "onnxruntime-fp16"
    assert (
        runner.input_dtype == torch.float16
        and runner.bounds.max_hw == (128, 160)
        and runner.bounds.max_batch == 2
    )
    assert runner.info.num_classes == 4 and runner.io == "tensor"
    x = model.info.preprocessing.apply(synthetic_images(2, 97, 131, np.random.default_rng(1)))
    out = runner.infer(x)  # float32 input is cast to the model's float16 by the base class
    with torch.inference_mode():
        ref = model(torch.from_numpy(x))
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.99
    runner.close()
    with pytest.raises(FCNError, match="closed"):
        runner.infer(x)


@pytest.mark.slow
@pytest.mark.parametrize(
    "batch, message",
    [
        (np.zeros((3, 40, 40), np.float32), "N×3×H×W"),  # rank
        (np.zeros((1, 4, 40, 40), np.float32), "N×3×H×W"),  # channels
        (np.zeros((1, 3, 40, 40), np.uint8), "float"),  # dtype
        (np.zeros((1, 3, 129, 40), np.float32), "outside"),  # taller than max
        (np.zeros((3, 3, 40, 40), np.float32), "batch 3"),  # batch over max
        ([[1.0]], "numpy array or torch tensor"),
    ],
)
def test_runner_rejects_bad_input(fp16_io_export, batch, message: str) -> None:
    with (
        OnnxRuntimeRunner(fp16_io_export[1]) as runner,
        pytest.raises(FCNError, match=message) as err,
    ):
        runner.infer(batch)
    assert "\n" not in str(err.value)


def test_runner_refuses_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(FCNError, match="no such file"):
        OnnxRuntimeRunner(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(FCNError):
        OnnxRuntimeRunner(bad)


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or not _cuda_provider(),
    reason="needs a CUDA GPU and onnxruntime-gpu (CUDA provider with IO binding)",
)
def test_runner_cuda_io_binding(fp16_io_export) -> None:
    model, path = fp16_io_export
    runner = OnnxRuntimeRunner(path, device="cuda")
    x = torch.from_numpy(
        model.info.preprocessing.apply(synthetic_images(1, 64, 80, np.random.default_rng(2)))
    ).cuda()
    out = runner.infer(x)
    assert out.is_cuda and out.shape == (1, 4, 64, 80)
    with torch.inference_mode():
        ref = model(x.cpu())
    assert (out.cpu().argmax(1) == ref.argmax(1)).float().mean() >= 0.99
