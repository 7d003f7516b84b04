"""The machine a benchmark ran on, and the limit every row is measured against.

The limit is not a datasheet number but the machine's own large-matmul rate, measured in the same
run with the same threads: ``torch.mm`` of two 4096×4096 matrices on a CPU, 8192×8192 on a GPU,
best of a few repetitions. On a CPU NumPy's BLAS is timed too and the faster of the two is the
limit (here OpenBLAS beat torch's by ~9%): a fraction of the slower one would flatter every row.
Convolutions are matmuls underneath, so a well-tuned backend can get close to it (tuned conv
kernels can even beat it); the fraction tells how much headroom is left.
CPUs have no fast FP16 arithmetic (FP16 models run FP32 kernels between casts), so on a CPU
every FP16 row is measured against the FP32 rate. INT8 rows are measured against a large INT8
matmul (int8 × int8 → int32, in GOP/s): ``torch._int_mm`` and, on a CPU, ONNX Runtime's
``MatMulInteger`` (the u8 × s8 VNNI kernels INT8 convolutions use), the faster of the two.

FP32 means IEEE FP32 throughout (`FP32_MATH`): on GPUs cuDNN convolutions and ONNX Runtime's CUDA
provider would use TF32 by default while ``torch.mm`` does not, which would make "FP32" rows and
the FP32 reference TF32 and let their peak fraction exceed 1. The benchmark turns TF32 off
(`ieee_fp32`, ``use_tf32=0`` for ONNX Runtime) and measures the FP32 peak the same way.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

__all__ = [
    "CUDNN_BENCHMARK",
    "FP32_MATH",
    "ORT_CUDA_OPTIONS",
    "compute_precision",
    "cudnn_autotune",
    "ieee_fp32",
    "machine_info",
    "machine_slug",
    "matmul_peak",
]

FP32_MATH = "ieee: TF32 off in cuBLAS, cuDNN and ONNX Runtime CUDA, peak measured likewise"
ORT_CUDA_OPTIONS = {"use_tf32": 0}  # the CUDA provider's TF32 switch (on by default)
# ONNX Runtime's CUDA provider searches cuDNN's convolution algorithms exhaustively and TensorRT
# times its tactics: eager PyTorch rows get the same chance (torch.backends.cudnn.benchmark)
CUDNN_BENCHMARK = "on: eager PyTorch rows use cuDNN's per-shape algorithm search (first calls pay)"

_PACKAGES = (
    "torch",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnx",
    "numpy",
    "opencv-python-headless",
    "fcn-deploy",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    # TensorRT from the module: tensorrt-cu12/-cu13 installs have no `tensorrt` distribution
    from ..engine._trt import import_tensorrt, tensorrt_available

    if tensorrt_available():
        found["tensorrt"] = str(import_tensorrt().__version__)
    return found


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU, GPU, threads and library versions: what a reader needs to compare two results."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu: dict[str, Any] | None = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = {
            "name": props.name,
            "memory_gb": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
        }
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,
        "torch_threads": torch.get_num_threads(),
        "memory_gb": _memory_gb(),
        "gpu": gpu,
        "device": str(device),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": _versions(),
    }


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        return round(kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def machine_slug(info: dict[str, Any]) -> str:
    """A file-name-safe machine name: ``nvidia-h100-80gb-hbm3`` or ``amd-epyc-2c``."""
    name = info["gpu"]["name"] if info.get("gpu") else f"{info['cpu']}-{info['usable_cores']}c"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def compute_precision(device: torch.device, precision: str) -> str:
    """The arithmetic a backend of ``precision`` really runs on ``device``: ``int8`` for INT8
    everywhere; otherwise FP32 on a CPU (no native FP16); on a GPU ``fp16``, or ``fp16`` for a
    ``mixed`` engine too (its bulk is FP16, so the FP16 peak is its limit), else ``fp32`` (IEEE:
    see `ieee_fp32`)."""
    if precision == "int8":
        return "int8"
    if device.type != "cuda":
        return "fp32"
    return "fp16" if precision in ("fp16", "mixed") else "fp32"


@contextmanager
def cudnn_autotune() -> Iterator[None]:
    """``torch.backends.cudnn.benchmark`` on inside the block, as it was after."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


@contextmanager
def ieee_fp32() -> Iterator[None]:
    """TF32 off for cuBLAS matmuls and cuDNN convolutions inside the block, as it was after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def matmul_peak(
    device: torch.device, precision: str = "fp32", size: int | None = None, reps: int = 3
) -> dict[str, Any]:
    """The measured large-matmul rate in GFLOP/s, with what was measured. ``size`` (default 4096 on
    a CPU, 8192 on a GPU) is smaller only in tests: small matmuls do not reach the peak."""
    precision = compute_precision(device, precision)
    n = size or (8192 if device.type == "cuda" else 4096)
    if precision == "int8":
        return _int8_peak(device, n, reps)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    best = float("inf")
    with torch.inference_mode(), ieee_fp32():
        torch.mm(a, b)  # warm-up: thread pool, cuBLAS handle, clocks
        for _ in range(reps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            torch.mm(a, b)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - t0)
    gflops = 2 * n**3 / best / 1e9
    where = f"{torch.get_num_threads()} threads" if device.type == "cpu" else str(device)
    method = f"torch.mm {n}x{n} {precision.upper()} on {device.type} ({where}), best of {reps}"
    if device.type == "cuda" and precision == "fp32":
        method += ", TF32 off"
    if device.type == "cpu":
        numpy_gflops = _numpy_matmul_gflops(a.numpy(), b.numpy(), reps)
        method += f"; numpy matmul {numpy_gflops:.1f} GFLOP/s"
        if numpy_gflops > gflops:
            gflops, method = numpy_gflops, method + " (the faster, used)"
    return {"precision": precision, "gflops_per_s": gflops, "method": method}


def _numpy_matmul_gflops(a: np.ndarray, b: np.ndarray, reps: int) -> float:
    """NumPy's BLAS (its own thread count) on the same matrices: best of ``reps`` after a
    warm-up."""
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * a.shape[0] ** 3 / best / 1e9


def _best_seconds(call: Any, reps: int, sync: Any = None) -> float:
    call()  # warm-up
    best = float("inf")
    for _ in range(reps):
        if sync:
            sync()
        t0 = time.perf_counter()
        call()
        if sync:
            sync()
        best = min(best, time.perf_counter() - t0)
    return best


def _int8_peak(device: torch.device, n: int, reps: int) -> dict[str, Any]:
    """The INT8 matmul rate (GOP/s, int32 sums): torch._int_mm, and ONNX Runtime on a CPU."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randint(-128, 128, (n, n), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (n, n), generator=g, dtype=torch.int8)
    rates: dict[str, float] = {}
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    try:
        da, db = a.to(device), b.to(device)
        with torch.inference_mode():
            rates["torch._int_mm"] = (
                2 * n**3 / _best_seconds(lambda: torch._int_mm(da, db), reps, sync) / 1e9
            )
    except (RuntimeError, NotImplementedError):  # no int8 matmul kernel for this device/build
        pass
    if device.type == "cpu":
        ort = _ort_int8_rate(a.numpy().view(np.uint8), b.numpy(), reps)
        if ort is not None:
            rates["onnxruntime MatMulInteger u8s8"] = ort
    if not rates:
        return {"precision": "int8", "gflops_per_s": float("nan"), "method": "no INT8 matmul here"}
    best = max(rates, key=lambda k: rates[k])
    where = f"{torch.get_num_threads()} threads" if device.type == "cpu" else str(device)
    measured = "; ".join(f"{k} {v:.1f} GOP/s" for k, v in rates.items())
    return {
        "precision": "int8",
        "gflops_per_s": rates[best],
        "method": f"INT8 matmul {n}x{n} on {device.type} ({where}), best of {reps}: {measured} "
        f"({best} used)",
    }


def _ort_int8_rate(a: np.ndarray, b: np.ndarray, reps: int) -> float | None:
    """ONNX Runtime's MatMulInteger (uint8 activations × int8 constant weights), in GOP/s."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    n = a.shape[0]
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "int8_peak",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])],
        [numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return 2 * n**3 / _best_seconds(lambda: session.run(None, {"A": a}), reps) / 1e9
