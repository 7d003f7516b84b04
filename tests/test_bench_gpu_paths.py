"""The benchmark's GPU decisions, checked where they are plain logic, and run where a GPU is.

Which precision a row ran in (and so which peak it is held to), the FP32 policy (no TF32), the
device every backend gets, and a backend that cannot open in the stream scenario.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fcn_deploy.bench import run_benchmark, validate
from fcn_deploy.bench.backends import Backend, ModelSource, backend_precision, prepare_backends
from fcn_deploy.bench.machine import FP32_MATH, compute_precision, cudnn_autotune, ieee_fp32
from fcn_deploy.bench.scenarios import run_stream
from fcn_deploy.export import export_onnx
from fcn_deploy.export.ort import cuda_provider_problem, cuda_providers
from fcn_deploy.runtime.ort_runner import OnnxRuntimeRunner

CPU, GPU = torch.device("cpu"), torch.device("cuda", 0)


def test_the_precision_a_row_ran_in() -> None:
    names = ["torch", "torch-fp16", "torch-compile", "torch-compile-fp16", "onnxruntime"]
    names.append("tensorrt")
    assert [backend_precision(n) for n in names] == ["fp32", "fp16", "fp32", "fp16", "fp32", "fp16"]
    # a TensorRT engine the inspector calls "mixed" is held to the FP16 peak, as its name implies
    assert compute_precision(GPU, "mixed") == compute_precision(GPU, backend_precision("tensorrt"))
    assert compute_precision(GPU, "fp16") == "fp16" and compute_precision(GPU, "fp32") == "fp32"
    assert {compute_precision(CPU, p) for p in ("fp32", "fp16", "mixed")} == {"fp32"}


def test_a_tensorrt_row_is_held_to_the_precision_asked_for_not_the_inspectors_label() -> None:
    """An FP16 engine whose convolutions hide in Myelin nodes is labelled ``unknown``; read as
    that label, the row would be scored against the FP32 peak (an inflated peak fraction)."""
    from fcn_deploy.bench.scenarios import scored_precision

    assert compute_precision(GPU, "unknown") == "fp32"  # the label alone: the wrong peak
    tensorrt = Backend("tensorrt", precision=backend_precision("tensorrt"))
    assert scored_precision(tensorrt, GPU) == "fp16" and scored_precision(tensorrt, CPU) == "fp32"
    int8 = Backend("onnxruntime-int8", precision=backend_precision("onnxruntime-int8"))
    assert scored_precision(int8, CPU) == "int8"


def test_prepared_backends_carry_their_precision(make_model: Any, tmp_path: Path) -> None:
    source = ModelSource("tiny", module=make_model("fcn32s", width=0.0625))
    prepared = prepare_backends(
        ["torch", "torch-fp16", "tensorrt"], source, CPU, cache_dir=tmp_path
    )
    assert [(b.name, b.precision) for b in prepared] == [
        ("torch", "fp32"),
        ("torch-fp16", "fp16"),
        ("tensorrt", "fp16"),
    ]
    assert prepared[1].skipped and prepared[2].skipped  # no GPU / no TensorRT: with reasons


def test_onnxruntime_on_cuda_is_checked_before_any_export(make_model: Any, tmp_path: Path) -> None:
    problem = cuda_provider_problem(0)
    if problem is None:
        pytest.skip("ONNX Runtime's CUDA provider runs here")
    source = ModelSource("tiny", module=make_model("fcn32s", width=0.0625))
    prepared = prepare_backends(
        ["onnxruntime", "onnxruntime-fp16"], source, GPU, cache_dir=tmp_path
    )
    assert [(b.skipped, b.skip_status) for b in prepared] == [(problem, "unavailable")] * 2
    assert list(tmp_path.iterdir()) == []  # nothing exported first


def test_int8_under_onnxruntime_cuda_is_not_held_to_the_int8_peak(
    make_model: Any, tmp_path: Path
) -> None:
    source = ModelSource("tiny", module=make_model("fcn32s", width=0.0625))
    (int8,) = prepare_backends(["onnxruntime-int8"], source, GPU, cache_dir=tmp_path)
    assert int8.skip_status == "unavailable" and "largely as FP32" in str(int8.skipped)
    assert list(tmp_path.iterdir()) == []  # nothing calibrated first


def test_eager_rows_search_cudnn_algorithms_and_restore_the_setting() -> None:
    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        with cudnn_autotune():
            assert torch.backends.cudnn.benchmark
        assert not torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = saved


def test_ieee_fp32_turns_tf32_off_and_restores_it() -> None:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with ieee_fp32():
            assert not torch.backends.cuda.matmul.allow_tf32
            assert not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_ort_cuda_options_keep_the_device() -> None:
    (name, options), _ = cuda_providers(2, {"use_tf32": 0, "device_id": 7})
    assert name == "CUDAExecutionProvider" and options == {"use_tf32": 0, "device_id": 2}


def test_stream_skips_a_backend_that_cannot_open(make_model: Any, tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx file")
    source = ModelSource("tiny", module=make_model("fcn32s", width=0.0625))
    from fcn_deploy.runtime.torch_runner import TorchRunner

    module = source.module
    assert module is not None
    backends = [
        Backend("torch", open=lambda: TorchRunner(module, device="cpu")),
        Backend("onnxruntime", open=lambda: OnnxRuntimeRunner(bad, device="cpu")),
    ]
    rows, skipped = run_stream(backends, source, CPU, [(64, 64), (64, 64)])
    assert [r.backend for r in rows] == ["torch"]
    (entry,) = skipped
    assert entry.backend == "onnxruntime" and entry.reason.startswith("failed to open")
    assert entry.status == "failed"


def test_stream_goes_on_past_a_backend_that_fails_mid_stream(
    make_model: Any, tmp_path: Path
) -> None:
    model = make_model("fcn32s", width=0.0625)
    small = tmp_path / "small.onnx"  # takes at most 64x64: the second frame is refused
    export_onnx(model, small, max_size=(64, 64), max_batch=1, verify=False, progress=False)
    from fcn_deploy.runtime.torch_runner import TorchRunner

    backends = [
        Backend("onnxruntime", open=lambda: OnnxRuntimeRunner(small, device="cpu")),
        Backend("torch", open=lambda: TorchRunner(model, device="cpu")),
    ]
    rows, skipped = run_stream(
        backends, ModelSource("tiny", module=model), CPU, [(64, 64), (96, 96)]
    )
    assert [r.backend for r in rows] == ["torch"]
    (entry,) = skipped
    assert entry.backend == "onnxruntime" and entry.status == "failed"
    assert entry.reason.startswith("failed during the stream")


def test_the_json_states_the_fp32_policy() -> None:
    doc = run_benchmark(
        "sizes",
        backends="torch",
        width=0.0625,
        device="cpu",
        matmul_size=256,
        config=_tiny_config(),
    )
    assert doc["config"]["fp32_math"] == FP32_MATH and validate(doc) == []
    assert doc["config"]["cudnn_benchmark"] == "off: no CUDA device"


def _tiny_config() -> Any:
    from fcn_deploy.bench import BenchConfig

    return BenchConfig(sizes=[(64, 64)], iters=2, e2e_iters=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_rows_have_their_peaks_and_the_device_asked_for() -> None:
    index = torch.cuda.device_count() - 1  # the last GPU: proves the index is honoured
    doc = run_benchmark(
        "sizes",
        backends="torch,torch-fp16,onnxruntime,tensorrt",
        width=0.125,
        device=f"cuda:{index}",
        matmul_size=2048,
        config=_tiny_config(),
    )
    assert validate(doc) == []
    assert doc["results"], doc["skipped"]
    for row in doc["results"]:
        assert row["peak_fraction"] is not None, row["backend"]
        assert row["peak_gpu_mb"] is not None
    ran = {r["backend"]: r for r in doc["results"]}
    assert ran["torch"]["compute_precision"] == "fp32"
    assert ran["torch-fp16"]["compute_precision"] == "fp16"
    # TF32 stays as the caller had it once the benchmark returns
    assert torch.backends.cudnn.allow_tf32
