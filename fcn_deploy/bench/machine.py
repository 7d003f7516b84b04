"""The machine a benchmark ran on, and the limit every row is measured against.

The limit is not a datasheet number but the machine's own large-matmul rate, measured in the same
run with the same threads: ``torch.mm`` of two square matrices (up to 4096×4096 on a CPU,
8192×8192 on a GPU), best of a few repetitions. On a CPU NumPy's BLAS is timed too and the
faster of the two is the limit (here OpenBLAS beat torch's by ~9%): a fraction of the slower one
would flatter every row. Convolutions are matmuls underneath, so a well-tuned backend can get
close to it (tuned conv kernels can even beat it); the fraction tells how much headroom is left.
CPUs have no fast FP16 arithmetic (FP16 models run FP32 kernels between casts), so on a CPU
every FP16 row is measured against the FP32 rate. INT8 rows are measured against a large INT8
matmul (int8 × int8 → int32, in GOP/s): ``torch._int_mm`` and, on a CPU, ONNX Runtime's
``MatMulInteger`` (the u8 × s8 kernels INT8 convolutions use), the faster of the two.

Every probe is bounded in time (`timed_probe`): one call at a small size first, then the largest
size whose repetitions fit the probe's budget (`PROBE_BUDGET_S`, ``--peak-seconds``) with a
margin, and never more repetitions than fit. A kernel that is a slow fallback on this machine
is skipped, not measured: an INT8 matmul running under half the FP32 matmul's rate at the same
size has no INT8 hardware path behind it (``torch._int_mm`` on an AMD EPYC without VNNI: 0.3
GOP/s where FP32 ran 4 GFLOP/s at 512×512 on a busy 2-core VM), and its rate would say nothing
of the machine. Each probe logs what it measured and how long it took.

FP32 means IEEE FP32 throughout (`FP32_MATH`): on GPUs cuDNN convolutions and ONNX Runtime's CUDA
provider would use TF32 by default while ``torch.mm`` does not, which would make "FP32" rows and
the FP32 reference TF32 and let their peak fraction exceed 1. The benchmark turns TF32 off
(`ieee_fp32`, ``use_tf32=0`` for ONNX Runtime) and measures the FP32 peak the same way.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "CUDNN_BENCHMARK",
    "FALLBACK_RATIO",
    "FP32_MATH",
    "ORT_CUDA_OPTIONS",
    "PROBE_BUDGET_S",
    "Probe",
    "compute_precision",
    "cudnn_autotune",
    "ieee_fp32",
    "machine_info",
    "machine_slug",
    "matmul_peak",
    "probe_size",
    "timed_probe",
]

log = logging.getLogger(__name__)

PROBE_BUDGET_S = 5.0  # seconds one kernel's probe may take (the first small call included)
FALLBACK_RATIO = 0.5  # an INT8 matmul under this share of the FP32 rate is a fallback kernel
FIRST_SIZE = {"cpu": 512, "cuda": 2048}  # the first, short measurement
# a larger matmul can run at a lower rate than the first (caches; a busy machine): sizes are
# chosen as if it took twice the n³ extrapolation (ONNX Runtime's 4096² probe once took 8.8 s
# where 512² promised it in 5)
MARGIN = 2.0
MAX_SIZE = {"cpu": 4096, "cuda": 8192}  # large enough to reach the peak

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


@dataclass
class Probe:
    """One kernel's measured rate (G(FL)OP/s), or why it was skipped, and what that took."""

    kernel: str
    size: int
    reps: int
    rate: float | None
    seconds: float
    skipped: str | None = None
    unit: str = "GFLOP/s"  # GOP/s for integer kernels

    def line(self) -> str:
        """``torch.mm 2048x2048: 18.1 GFLOP/s (best of 3, 3.2 s)``, for logs and the method."""
        if self.rate is None:
            return f"{self.kernel}: skipped, {self.skipped} ({self.seconds:.1f} s)"
        return (
            f"{self.kernel} {self.size}x{self.size}: {self.rate:.1f} {self.unit} "
            f"(best of {self.reps}, {self.seconds:.1f} s)"
        )


def probe_size(first_s: float, first: int, largest: int, reps: int, budget_s: float) -> int:
    """The largest size, doubling from ``first`` up to ``largest``, whose ``reps`` calls fit
    ``budget_s`` when one call at ``first`` took ``first_s`` (matmul time grows as n³; with a
    `MARGIN`); ``first`` when nothing larger fits."""
    n = first
    while n < largest:
        bigger = min(2 * n, largest)
        if MARGIN * reps * first_s * (bigger / first) ** 3 > budget_s:
            break
        n = bigger
    return n


Kernel = Callable[[int], Callable[[], object]]  # size → a call doing one n×n matmul


def _seconds(call: Callable[[], object], sync: Callable[[], None] | None) -> float:
    if sync:
        sync()
    t0 = time.perf_counter()
    call()
    if sync:
        sync()
    return time.perf_counter() - t0


def timed_probe(
    kernel: str,
    make: Kernel,
    device: torch.device,
    *,
    size: int | None = None,
    reps: int = 3,
    budget_s: float = PROBE_BUDGET_S,
    floor: float | None = None,
    unit: str = "GFLOP/s",
) -> Probe:
    """One kernel's n×n matmul rate, best of up to ``reps`` calls, bounded by ``budget_s``.

    Without ``size``: a warm-up and one timed call at the small first size, then `probe_size`
    picks the largest size whose repetitions fit what is left of the budget. With ``size`` that
    size is used, after a warm-up call. Either way a repetition is made only while it fits the
    budget (at least one is timed). ``floor``: a rate the first measurement must reach, else
    the kernel is a slow fallback here and is skipped, with the reason.
    """
    start = time.perf_counter()
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    first = min(FIRST_SIZE[device.type], size or MAX_SIZE[device.type])
    n, best, done = size or first, float("inf"), 0
    try:
        if size is None:
            call = make(first)
            call()  # warm-up: thread pool, library handles, clocks
            best, done = _seconds(call, sync), 1
            rate = 2 * first**3 / best / 1e9
            if floor is not None and rate < floor:
                why = (
                    f"{rate:.2f} {unit} at {first}x{first}, under {FALLBACK_RATIO:g}x the FP32 "
                    f"matmul's {floor / FALLBACK_RATIO:.1f} GFLOP/s: a slow fallback kernel on "
                    "this machine, not its limit"
                )
                spent = time.perf_counter() - start
                return _logged(Probe(kernel, first, 1, None, spent, why, unit))
            left = budget_s - (time.perf_counter() - start)
            n = probe_size(best, first, MAX_SIZE[device.type], reps, left)
        if size is not None:  # no first measurement: warm up here
            call = make(n)
            call()
            best, done = _seconds(call, sync), 1
        elif n != first:  # warmed up at the first size; a slow first call here is not the best
            call = make(n)
            best, done = _seconds(call, sync), 1
        # more repetitions only while another one fits the budget
        while done < reps and time.perf_counter() - start + best <= budget_s:
            best = min(best, _seconds(call, sync))
            done += 1
    except (RuntimeError, NotImplementedError) as e:  # no such kernel for this device/build
        why = f"cannot run here ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
        return _logged(Probe(kernel, n, 0, None, time.perf_counter() - start, why, unit))
    rate = 2 * n**3 / best / 1e9
    return _logged(Probe(kernel, n, done, rate, time.perf_counter() - start, None, unit))


def _logged(probe: Probe) -> Probe:
    log.info("peak probe: %s", probe.line())
    return probe


def matmul_peak(
    device: torch.device,
    precision: str = "fp32",
    size: int | None = None,
    reps: int = 3,
    budget_s: float = PROBE_BUDGET_S,
) -> dict[str, Any]:
    """The measured large-matmul rate in GFLOP/s (INT8: GOP/s), with what was measured.

    Each kernel's probe is bounded by ``budget_s`` (`timed_probe`); ``size`` fixes the matrix
    side instead of choosing it from a first short measurement (small matmuls do not reach the
    peak: tests only)."""
    precision = compute_precision(device, precision)
    if precision == "int8":
        return _int8_peak(device, size, reps, budget_s)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    where = f"{torch.get_num_threads()} threads" if device.type == "cpu" else str(device)

    def torch_mm(n: int) -> Callable[[], object]:
        a, b = _operands(n, device, dtype)
        return lambda: torch.mm(a, b)

    with torch.inference_mode(), ieee_fp32():
        probes = [
            timed_probe(f"torch.mm {precision.upper()}", torch_mm, device, size=size, reps=reps,
                        budget_s=budget_s)
        ]  # fmt: skip
        if device.type == "cpu":  # NumPy's BLAS (its own threads) on the same kind of matrices
            probes.append(
                timed_probe("numpy matmul FP32", _numpy_mm, device, size=size, reps=reps,
                            budget_s=budget_s)
            )  # fmt: skip
    suffix = ", TF32 off" if device.type == "cuda" and precision == "fp32" else ""
    return _peak(precision, probes, f"on {device.type} ({where}){suffix}")


def _operands(n: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device="cpu").manual_seed(0)
    return tuple(torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))


def _numpy_mm(n: int) -> Callable[[], object]:
    a, b = (t.numpy() for t in _operands(n, torch.device("cpu"), torch.float32))
    return lambda: a @ b


def _peak(precision: str, probes: list[Probe], where: str) -> dict[str, Any]:
    """The fastest probe's rate as the peak, every probe in the method and the record."""
    measured = [p for p in probes if p.rate is not None]
    lines = "; ".join(p.line() for p in probes)
    if not measured:
        return {
            "precision": precision,
            "gflops_per_s": None,
            "method": f"no usable {precision.upper()} matmul {where}: {lines}",
            "probes": [asdict(p) for p in probes],
        }
    best = max(measured, key=lambda p: p.rate or 0.0)
    used = f" ({best.kernel} used)" if len(probes) > 1 else ""
    return {
        "precision": precision,
        "gflops_per_s": best.rate,
        "method": f"{precision.upper()} matmul {where}, each probe within its time budget: "
        f"{lines}{used}",
        "probes": [asdict(p) for p in probes],
    }


def _int8_peak(
    device: torch.device, size: int | None, reps: int, budget_s: float
) -> dict[str, Any]:
    """The INT8 matmul rate (GOP/s, int32 sums): torch._int_mm, and ONNX Runtime on a CPU; a
    kernel under `FALLBACK_RATIO` of the FP32 matmul's rate at the first size is skipped."""
    where = f"{torch.get_num_threads()} threads" if device.type == "cpu" else str(device)
    floor = None
    if size is None:  # the FP32 rate at the first size: what a real INT8 kernel must beat
        first = FIRST_SIZE[device.type]
        a, b = _operands(first, device, torch.float32)
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
        with torch.inference_mode(), ieee_fp32():
            torch.mm(a, b)
            floor = FALLBACK_RATIO * 2 * first**3 / _seconds(lambda: torch.mm(a, b), sync) / 1e9

    def int_mm(n: int) -> Callable[[], object]:
        a, b = _int8_operands(n)
        da, db = a.to(device), b.to(device)
        return lambda: torch._int_mm(da, db)

    with torch.inference_mode():
        probes = [
            timed_probe("torch._int_mm", int_mm, device, size=size, reps=reps, budget_s=budget_s,
                        floor=floor, unit="GOP/s")
        ]  # fmt: skip
    if device.type == "cpu" and _ort_available():
        probes.append(
            timed_probe("onnxruntime MatMulInteger u8s8", _ort_int8_mm, device, size=size,
                        reps=reps, budget_s=budget_s, floor=floor, unit="GOP/s")
        )  # fmt: skip
    return _peak("int8", probes, f"on {device.type} ({where})")


def _int8_operands(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randint(-128, 128, (n, n), generator=g, dtype=torch.int8)
    return a, torch.randint(-128, 128, (n, n), generator=g, dtype=torch.int8)


def _ort_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _ort_int8_mm(n: int) -> Callable[[], object]:
    """ONNX Runtime's MatMulInteger (uint8 activations × int8 constant weights), one n×n call."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    a, b = _int8_operands(n)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "int8_peak",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])],
        [numpy_helper.from_array(b.numpy(), "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feed = {"A": a.numpy().view(np.uint8)}
    return lambda: session.run(None, feed)
