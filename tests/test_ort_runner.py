"""OnnxRuntimeRunner: metadata applied, inputs checked, same answers as PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize

from fcn_deploy.errors import FCNError
from fcn_deploy.export import export_onnx, synthetic_images
from fcn_deploy.export.ort import (
    CUDA_PROVIDER,
    cuda_provider_problem,
    cuda_providers,
    ort_session,
    provider_problem,
    require_providers,
)
from fcn_deploy.models import create_model
from fcn_deploy.runtime import load_runner
from fcn_deploy.runtime.base import cuda_index, non_blocking_copy
from fcn_deploy.runtime.ort_runner import OnnxRuntimeRunner, output_shape


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
    with pytest.raises(FCNError, match="no such ONNX model"):
        OnnxRuntimeRunner(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(FCNError):
        OnnxRuntimeRunner(bad)


def _ort_cuda_problem() -> str | None:
    """Why ONNX Runtime's CUDA provider cannot be tested here (None: it can)."""
    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    return cuda_provider_problem()


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_provider_fallback_is_caught(fp16_io_export) -> None:
    """A session asked for CUDA that came up on the CPU (what onnxruntime-gpu does when its CUDA
    libraries fail to load, and what any build does for a provider it lacks) is refused."""
    if cuda_provider_problem() is None:
        pytest.skip("the CUDA provider runs here, so no fallback happens")
    with pytest.raises(FCNError, match="did not activate CUDAExecutionProvider"):
        OnnxRuntimeRunner(fp16_io_export[1], providers=cuda_providers(0))
    session = ort_session(fp16_io_export[1])
    require_providers(session, ["CPUExecutionProvider"])  # what it asked for: no error
    assert provider_problem(session.get_providers(), "CPUExecutionProvider") is None
    assert "runs on CPUExecutionProvider" in str(
        provider_problem(session.get_providers(), CUDA_PROVIDER)
    )


def test_cuda_providers_carry_the_device_index() -> None:
    assert cuda_providers(3) == [(CUDA_PROVIDER, {"device_id": 3}), "CPUExecutionProvider"]


@pytest.mark.parametrize("variant", ["vgg16", "fcn8s"])
@pytest.mark.parametrize("io", ["tensor", "image"])
def test_output_shape_matches_the_model(variant: str, io: str) -> None:
    """The shape IO binding preallocates, the coarse VGG16 map included, against the real net."""
    model = create_model(variant, num_classes=5, width=0.0625).eval()
    for h, w in [(224, 224), (250, 301), (320, 480)]:
        with torch.inference_mode():
            ref = model(torch.zeros(2, 3, h, w))
        shape = (2, h, w, 3) if io == "image" else (2, 3, h, w)
        expected = (2, *ref.shape[2:]) if io == "image" else tuple(ref.shape)
        assert output_shape(model.info, io, shape) == expected


@pytest.mark.gpu
@pytest.mark.skipif(_ort_cuda_problem() is not None, reason=str(_ort_cuda_problem()))
def test_runner_cuda_io_binding(fp16_io_export) -> None:
    model, path = fp16_io_export
    runner = OnnxRuntimeRunner(path, device="cuda")
    assert runner.session.get_providers()[0] == CUDA_PROVIDER
    assert runner.device.index is not None  # bare "cuda" resolved to the GPU ORT binds
    x = torch.from_numpy(
        model.info.preprocessing.apply(synthetic_images(1, 64, 80, np.random.default_rng(2)))
    ).cuda()
    out = runner.infer(x)
    assert out.is_cuda and out.shape == (1, 4, 64, 80)
    with torch.inference_mode():
        ref = model(x.cpu())
    assert (out.cpu().argmax(1) == ref.argmax(1)).float().mean() >= 0.99
    # a CPU tensor in, a CUDA tensor out; and back to the CPU runner path through host memory
    assert runner.infer(x.cpu()).is_cuda


def test_cuda_tensor_to_cpu_runner_is_not_a_race(fp16_io_export) -> None:
    """Copies to the host are blocking (``non_blocking`` only towards a GPU), and so are copies
    from pinned host memory: the caller may refill its buffer as soon as ``infer`` returns."""
    assert not non_blocking_copy(torch.device("cpu"))
    assert non_blocking_copy(torch.device("cuda", 0))
    assert not non_blocking_copy(torch.device("cuda", 0), pinned_source=True)
    if torch.cuda.is_available():
        model, path = fp16_io_export
        runner = OnnxRuntimeRunner(path, device="cpu")
        x = torch.from_numpy(
            model.info.preprocessing.apply(synthetic_images(2, 64, 80, np.random.default_rng(4)))
        )
        expected = runner.infer(x)
        for _ in range(20):  # a large GPU tensor, copied to the host and used at once
            assert torch.equal(runner.infer(x.cuda()), expected)


def test_cuda_index() -> None:
    """ONNX Runtime and TensorRT need a GPU number; torch's bare "cuda" means the current GPU."""
    assert cuda_index(torch.device("cuda", 2)) == 2
    if torch.cuda.is_available():
        assert cuda_index(torch.device("cuda")) == torch.cuda.current_device()
