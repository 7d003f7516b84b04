"""What ``--model`` and ``--backends`` name, turned into runners (or the reason there is none).

The benchmark only ever holds `Runner`s; this module is the one place that knows how each named
backend is made from the model given: eager PyTorch from the weights (``torch-compile``: the same
net through ``torch.compile``), ONNX Runtime and OpenVINO from an ONNX file exported on the fly
(its export time reported; INT8 calibrated on synthetic images unless told otherwise), TensorRT
from an engine built on the fly.
A backend that cannot run here is kept, with its reason, so no result silently disappears.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import load_model
from ..engine._trt import MISSING_MESSAGE, tensorrt_available
from ..engine.profiles import DEFAULT_MAX_BATCH, Shape
from ..errors import FCNError
from ..export.quantize import CalibrationSource
from ..meta import ModelInfo
from ..models import Net, create_model
from ..runtime import Runner, backend_for_path
from .machine import ORT_CUDA_OPTIONS
from .results import Skipped, SkipStatus

log = logging.getLogger(__name__)

__all__ = [
    "BENCH_BACKENDS",
    "DEFAULT_BACKENDS",
    "Backend",
    "ModelSource",
    "backend_precision",
    "onnx_for",
    "parse_backends",
    "prepare_backends",
    "random_model",
    "tensorrt_unavailable",
]

BENCH_BACKENDS = (
    "torch",
    "torch-fp16",
    "torch-compile",
    "torch-compile-fp16",
    "onnxruntime",
    "onnxruntime-fp16",
    "onnxruntime-int8",
    "openvino",
    "openvino-int8",
    "tensorrt",
)
# A first run: eager against ONNX Runtime, and the GPU routes (listed as unavailable without a
# GPU). The rest are asked for by name: INT8 calibrates the full net first (minutes and GBs),
# FP16 graphs gain nothing on a CPU, torch-compile's compile time would dominate.
DEFAULT_BACKENDS = ("torch", "onnxruntime", "torch-fp16", "tensorrt")
# INT8 calibration images: ONNX Runtime's calibrator keeps every activation of every image
# (~1.4 GB per 500×500 image for the full-size net), so a few images bound its memory
CALIBRATION_IMAGES = 4
REFERENCE = "torch"  # eager FP32: what every other backend's accuracy is measured against


def random_model(
    variant: str = "fcn8s", width: float = 1.0, num_classes: int = 21, seed: int = 0
) -> Net:
    """A net with random weights, score layers included.

    An FCN's score layers start at zero by design, so its output would be all zeros and every
    backend would agree on every label trivially; random score layers make the accuracy columns
    mean something.
    """
    torch.manual_seed(seed)
    model = create_model(variant, num_classes=num_classes, width=width)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("score", "fc8")):
                p.normal_(0.0, 0.05)
    return model.eval()


@dataclass
class ModelSource:
    """The model under test: a net in memory or a weights file, or an ONNX file or engine."""

    label: str  # what the report calls it
    module: nn.Module | None = None  # weights we can run eagerly and export
    path: Path | None = None  # .onnx / .engine given directly
    info: ModelInfo | None = None

    @classmethod
    def open(
        cls, model: str | None, variant: str | None, width: float, num_classes: int
    ) -> ModelSource:
        if model is None:
            net = random_model(variant or "fcn8s", width, num_classes)
            return cls(f"random {net.info.variant} width {width:g}", module=net, info=net.info)
        path = Path(model)
        if not path.exists():
            raise FCNError(
                f"model {model}: no such file (give a checkpoint, state dict, .onnx or .engine)",
                param="model",
            )
        if backend_for_path(path) == "torch":
            net = load_model(path, variant=variant)
            return cls(str(path), module=net, info=net.info)
        if path.suffix.lower() == ".onnx":  # a foreign or unsafe file is bad input (exit 2)
            from ..export import read_onnx_metadata

            return cls(str(path), path=path, info=read_onnx_metadata(path).info)
        return cls(str(path), path=path)


@dataclass
class Backend:
    """One requested backend: how to open its runner, or why it is skipped."""

    name: str
    precision: str = "fp32"  # what it is asked to run in: fp32, fp16, int8 (TensorRT: fp16)
    open: Callable[[], Runner] | None = None
    skipped: str | None = None
    prepare_s: float | None = None  # export or engine build time, when done on the fly
    artifact: str | None = None
    skip_status: SkipStatus = "unavailable"  # "failed" when preparing it was tried and failed
    stats: dict[str, Any] = field(default_factory=dict)  # what the runner reports (torch-compile)

    def skip(self) -> Skipped:
        """This backend as a row of the report's skipped list."""
        return Skipped(self.name, self.skipped or "", self.skip_status)


def parse_backends(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCH_BACKENDS]
    if unknown or not names:
        raise FCNError(
            f"unknown backend(s) {', '.join(unknown) or '(none)'}; choose from "
            f"{', '.join(BENCH_BACKENDS)}"
        )
    return list(dict.fromkeys(names))


def tensorrt_unavailable(device: torch.device) -> str | None:
    """Why TensorRT cannot run here, or None."""
    if not tensorrt_available():
        return MISSING_MESSAGE
    if device.type != "cuda":
        return "TensorRT needs a CUDA GPU (device='cuda')"
    return None


def prepare_backends(
    names: list[str],
    source: ModelSource,
    device: torch.device,
    *,
    threads: int | None = None,
    max_batch: int = 1,
    cache_dir: Path | None = None,
    calibration: str | CalibrationSource = "synthetic",
    shapes: Sequence[Shape] = (),
) -> list[Backend]:
    """A `Backend` per name, exporting ONNX files (and building engines) into ``cache_dir``.

    INT8 files are calibrated on ``calibration`` (see `fcn_deploy.export.CalibrationSource`).
    Engines built here get profiles holding every NCHW shape in ``shapes`` (the sweep's).
    """
    cache = cache_dir or Path(tempfile.mkdtemp(prefix="fcn-bench-"))
    prepared = []
    for name in names:
        try:
            backend = _prepare(name, source, device, threads, max_batch, cache, calibration, shapes)
        except (FCNError, ImportError, NotImplementedError, RuntimeError, OSError, ValueError) as e:
            # listed, not dropped: a backend whose export or build fails is a result too
            reason = f"failed to prepare: {type(e).__name__}: {e}"
            backend = Backend(name, skipped=reason, skip_status="failed")
        backend.precision = backend_precision(name)
        prepared.append(backend)
    return prepared


def backend_precision(name: str) -> str:
    """The precision a named backend is asked for: its suffix (fp16, int8), FP16 for TensorRT,
    else FP32 (``torch-compile`` included)."""
    backend, suffix = name.partition("-")[0], name.rpartition("-")[2]
    if suffix in ("fp16", "int8"):
        return suffix
    return "fp16" if backend == "tensorrt" else "fp32"


def _prepare(
    name: str,
    source: ModelSource,
    device: torch.device,
    threads: int | None,
    max_batch: int,
    cache: Path,
    calibration: str | CalibrationSource = "synthetic",
    shapes: Sequence[Shape] = (),
) -> Backend:
    backend, precision = name.partition("-")[0], backend_precision(name)
    dev = str(device)
    if backend == "torch":
        if source.module is None:
            return Backend(
                name,
                skipped=f"eager PyTorch needs weights; --model {source.label} is not a checkpoint",
            )
        if precision == "fp16" and device.type != "cuda":
            return Backend(
                name,
                skipped="FP16 eager PyTorch needs a CUDA GPU (CPU FP16 convolutions are emulated)",
            )
        if name.startswith("torch-compile"):
            return _torch_compile(name, source.module, dev, precision)
        from ..runtime.torch_runner import TorchRunner

        module = source.module
        return Backend(name, open=lambda: TorchRunner(module, device=dev, precision=precision))
    if backend in ("onnxruntime", "openvino"):
        if importlib.util.find_spec("onnxruntime") is None:
            return Backend(
                name,
                skipped="ONNX Runtime is not installed (from a clone: pip install -e '.[cpu]')",
            )
        if backend == "openvino":
            if importlib.util.find_spec("openvino") is None:
                return Backend(
                    name,
                    skipped="OpenVINO is not installed (from a clone: pip install -e "
                    "'.[openvino]')",
                )
            if device.type != "cpu":
                return Backend(name, skipped="OpenVINO runs on the CPU here (use --device cpu)")
        elif device.type == "cuda" and precision == "int8":
            return Backend(
                name,
                skipped="INT8 under ONNX Runtime's CUDA provider is not measured: it runs the "
                "Q/DQ graph's convolutions largely as FP32, so the INT8 peak would misjudge it "
                "(INT8 on the GPU: TensorRT)",
            )
        elif device.type == "cuda":  # before exporting anything: a real session decides
            from ..export.ort import cuda_provider_problem

            problem = cuda_provider_problem(device.index or 0)
            if problem:
                return Backend(name, skipped=problem)
        onnx_path, seconds, why = onnx_for(source, precision, max_batch, cache, calibration)
        if onnx_path is None:
            return Backend(name, skipped=why)
        own = seconds is not None  # exported here unverified: the rows compare it with FP32
        if backend == "openvino":
            from ..runtime.openvino_runner import OpenVINORunner

            opener: Callable[[], Runner] = lambda: OpenVINORunner(  # noqa: E731
                onnx_path, threads=threads, allow_unverified=own
            )
        else:
            from ..runtime.ort_runner import OnnxRuntimeRunner

            opener = lambda: OnnxRuntimeRunner(  # noqa: E731
                onnx_path, device=dev, threads=threads, cuda_options=ORT_CUDA_OPTIONS,
                allow_unverified=own,
            )  # fmt: skip
        return Backend(name, open=opener, prepare_s=seconds, artifact=str(onnx_path))
    reason = tensorrt_unavailable(device)
    if reason:
        return Backend(name, skipped=reason)
    return _tensorrt(name, source, max_batch, cache, device, shapes)


def onnx_for(
    source: ModelSource,
    precision: str,
    max_batch: int,
    cache: Path,
    calibration: str | CalibrationSource = "synthetic",
) -> tuple[Path | None, float | None, str]:
    """The ONNX file for ``precision``: the one given, or one exported now (with its export time).

    An exported file is reused by every backend that runs it (ONNX Runtime and OpenVINO INT8
    run the same calibrated file). Its batch bound is at least 8 whatever the run's batch, so
    runs at batch 1 and 8 export the same file and build one TensorRT engine from it.
    """
    if source.path is not None:
        if source.path.suffix.lower() != ".onnx":
            return None, None, f"--model {source.label} is not an ONNX file or checkpoint"
        from ..export import read_onnx_metadata

        given = read_onnx_metadata(source.path).precision
        if given != precision:
            why = f"--model {source.label} is {given}; pass a checkpoint to export {precision}"
            return None, None, why + " on the fly"
        return source.path, None, ""
    from ..export import export_onnx

    assert source.module is not None  # a source is weights or a file
    out = cache / f"model-{precision}.onnx"
    spec = calibration.spec if isinstance(calibration, CalibrationSource) else calibration
    key = (out, id(source.module), spec)
    if key in _EXPORTED and out.exists():
        return out, _EXPORTED[key], ""
    t0 = time.perf_counter()
    # verify=False: the benchmark's own accuracy columns compare every size against eager FP32
    export_onnx(
        source.module,
        out,
        precision=precision,
        max_batch=max(max_batch, DEFAULT_MAX_BATCH),
        verify=False,
        progress=False,
        calibration=calibration,
        calibration_images=CALIBRATION_IMAGES,
    )
    _EXPORTED[key] = time.perf_counter() - t0
    return out, _EXPORTED[key], ""


_EXPORTED: dict[
    tuple[Path, int, str], float
] = {}  # files exported in this process, with their export time


def _torch_compile(name: str, module: nn.Module, dev: str, precision: str) -> Backend:
    """The eager net in ``precision`` through torch.compile (inductor, dynamic shapes)."""
    from .compiled import CompiledTorchRunner

    backend = Backend(name)
    backend.open = lambda: CompiledTorchRunner(
        module, device=dev, stats=backend.stats, precision=precision
    )
    return backend


def _tensorrt(
    name: str,
    source: ModelSource,
    max_batch: int,
    cache: Path,
    device: torch.device,
    shapes: Sequence[Shape] = (),
) -> Backend:
    """An FP16 engine on ``device``: the one given, or built there now from an FP16 ONNX export
    with the default profiles plus one for any of ``shapes`` they do not hold.

    The export and profiles hold batches up to max(``max_batch``, 8) whatever the run's batch, so
    runs at batch 1 and 8 into one ``cache`` (scripts/gpu-check.sh) build one engine, reused by
    the second run along with the per-GPU timing cache.
    """
    from ..runtime.trt_runner import TensorRTRunner

    dev = str(device)
    if source.path is not None and backend_for_path(source.path) == "tensorrt":
        path = source.path
        return Backend(
            name,
            open=lambda: TensorRTRunner(path, device=dev, reuse_outputs=True),
            artifact=str(path),
        )
    batch = max(max_batch, DEFAULT_MAX_BATCH)
    onnx_path, export_s, why = onnx_for(source, "fp16", batch, cache)
    if onnx_path is None:
        return Backend(name, skipped=why)
    from ..engine import build_engine
    from ..engine.builder import reusable_engine, timing_cache_path
    from ..engine.profiles import covering_profiles, default_profiles
    from ..export import read_onnx_metadata

    engine = cache / f"{onnx_path.stem}.engine"  # never beside a --model file
    bounds = read_onnx_metadata(onnx_path).bounds
    batch = min(batch, bounds.max_batch or batch)  # a given ONNX file has its own bound
    wanted = [(batch, *s[1:]) for s in shapes]  # every batch up to it at the sweep's sizes
    profiles = covering_profiles(default_profiles(bounds), wanted)
    t0 = time.perf_counter()
    if reusable_engine(engine, onnx_path, profiles, dev):  # same ONNX, profiles, GPU, release
        log.info("reusing %s (built from this ONNX file on this GPU and TensorRT)", engine)
    else:  # no gate: the rows measure accuracy at every size
        build_engine(
            onnx_path,
            engine,
            profiles=profiles,
            device=dev,
            gate=False,
            progress=False,
            timing_cache=timing_cache_path(cache, dev),
            allow_unverified=export_s is not None,  # exported here unverified (rows compare)
        )
    seconds = time.perf_counter() - t0 + (export_s or 0.0)
    # the engine's own output buffer: no copy inside the timed call (the rows copy what they keep)
    return Backend(
        name,
        open=lambda: TensorRTRunner(engine, device=dev, reuse_outputs=True),
        prepare_s=seconds,
        artifact=str(engine),
    )
