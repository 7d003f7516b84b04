"""What ``--model`` and ``--backends`` name, turned into runners (or the reason there is none).

The benchmark only ever holds `Runner`s; this module is the one place that knows how each named
backend is made from the model given: eager PyTorch from the weights (``torch-compile``: the same
net through ``torch.compile``), ONNX Runtime and OpenVINO from the ONNX file of their precision,
given (``--onnx``: verified exports of the same weights, `given_exports`) or exported on the fly
(its export time reported; INT8 calibrated on synthetic images unless told otherwise), TensorRT
from an engine built on the fly from the FP16 one. Files exported or built here are named by what
they were made from, so a second run into the same ``cache_dir`` (gpu-check's batch-8 sweep after
its batch-1 one) reuses them, engine and timing cache included.
A backend that cannot run here is kept, with its reason, so no result silently disappears.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import sha256_file
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
    "Backend",
    "ModelSource",
    "backend_precision",
    "default_backends",
    "given_exports",
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
# A first run measures what is fast on the device (`default_backends`); the rest are asked for
# by name: FP16 graphs gain nothing on a CPU (they run at half the FP32 speed there),
# torch-compile's compile time would dominate.
CPU_BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")
CPU_OPENVINO = ("openvino", "openvino-int8")  # where OpenVINO is installed
GPU_BACKENDS = ("torch", "torch-fp16", "onnxruntime", "tensorrt")
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


def default_backends(device: torch.device) -> list[str]:
    """What a first run measures: what is fast on ``device``. On a CPU, eager PyTorch against
    FP32 and INT8 under ONNX Runtime, and under OpenVINO where it is installed; on a GPU, eager
    FP32 and FP16, ONNX Runtime and TensorRT (each skipped with its reason where it cannot run)."""
    if device.type == "cuda":
        return list(GPU_BACKENDS)
    openvino = importlib.util.find_spec("openvino") is not None
    return [*CPU_BACKENDS, *(CPU_OPENVINO if openvino else ())]


@dataclass
class ModelSource:
    """The model under test: a net in memory or a weights file, or an ONNX file or engine; and the
    exports given for it, by precision (`given_exports`)."""

    label: str  # what the report calls it
    module: nn.Module | None = None  # weights we can run eagerly and export
    path: Path | None = None  # .engine given directly
    info: ModelInfo | None = None
    exports: dict[str, Path] = field(default_factory=dict)  # precision → ONNX file to run
    sha256: str | None = None  # of the weights, as an export records its source's

    @classmethod
    def open(
        cls,
        model: str | None,
        variant: str | None,
        width: float,
        num_classes: int,
        onnx: Sequence[str | os.PathLike[str]] = (),
        allow_unverified: bool = False,
    ) -> ModelSource:
        """The model (None: a random net of ``variant``/``width``, unless ``onnx`` files alone
        are given) and the ``onnx`` files or folders of them given to run instead of exports."""
        if model is None and onnx:
            exports = given_exports(onnx, allow_unverified)
            info = _info_of(next(iter(exports.values())))
            names = ", ".join(str(p) for p in exports.values())
            return cls(names, info=info, exports=exports)
        source = cls._open(model, variant, width, num_classes)
        given = given_exports(onnx, allow_unverified, source) if onnx else {}
        twice = sorted(set(given) & set(source.exports))
        if twice:
            raise FCNError(
                f"onnx: MODEL {source.label} is the {twice[0]} file already; give each "
                "precision once",
                param="onnx",
            )
        source.exports.update(given)
        return source

    @classmethod
    def _open(
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
            return cls(str(path), module=net, info=net.info, sha256=sha256_file(path))
        if path.suffix.lower() == ".onnx":  # a foreign or unsafe file is bad input (exit 2)
            from ..export import read_onnx_metadata

            meta = read_onnx_metadata(path)
            return cls(str(path), info=meta.info, exports={meta.precision: path})
        return cls(str(path), path=path)

    def weights_sha256(self) -> str:
        """sha256 of the weights (the file's, or the state dict's for a net in memory): what an
        export of them records as its ``source_sha256``."""
        if self.sha256 is None:
            from ..export.exporter import model_sha256

            assert self.module is not None
            self.sha256 = model_sha256(self.module)
        return self.sha256


def _info_of(path: Path) -> ModelInfo:
    from ..export import read_onnx_metadata

    return read_onnx_metadata(path).info


def given_exports(
    paths: Sequence[str | os.PathLike[str]],
    allow_unverified: bool = False,
    source: ModelSource | None = None,
) -> dict[str, Path]:
    """Exported ONNX files to run instead of exporting, by precision: each path a ``.onnx`` file or
    a folder of them (its own files, not its subfolders).

    Each file must have passed its export's verification (``allow_unverified`` to run one that
    failed), one file per precision, and, given a ``source`` with weights, be an export of
    those weights (its recorded ``source_sha256``): the accuracy columns compare it with them.
    """
    from ..export import check_verified, read_onnx_metadata

    files: list[Path] = []
    for given in map(Path, paths):
        if given.is_dir():
            found = sorted(
                f for f in given.iterdir() if f.suffix.lower() == ".onnx" and f.is_file()
            )
            if not found:
                raise FCNError(f"onnx: {given} holds no .onnx files", param="onnx")
            files += found
        elif given.is_file() and given.suffix.lower() == ".onnx":
            files.append(given)
        else:
            raise FCNError(f"onnx: {given} is not an .onnx file or a folder of them", param="onnx")
    weights = source.weights_sha256() if source is not None and source.module is not None else None
    label = source.label if source is not None else ""
    exports: dict[str, Path] = {}
    for path in files:
        meta = read_onnx_metadata(path)  # a foreign or damaged file: one line
        check_verified(meta, path, allow_unverified)
        if weights is not None and meta.source_sha256 != weights:
            raise FCNError(
                f"onnx: {path} was exported from other weights than {label}; give exports of "
                "this model (or leave the model out to run the exports alone)",
                param="onnx",
            )
        if meta.precision in exports:
            raise FCNError(
                f"onnx: two {meta.precision} exports given, {exports[meta.precision]} and {path}; "
                "give one file per precision",
                param="onnx",
            )
        exports[meta.precision] = path
    return exports


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

    An exported file is named by what it was made from (`_export_name`: the weights, precision,
    batch bound and, for INT8 only, the calibration images), so every backend of a run that runs
    it (ONNX Runtime and OpenVINO INT8 run the same calibrated file; ONNX Runtime FP16 and
    TensorRT the same FP16 one) and a later run into the same ``cache`` reuse it. Its batch
    bound is at least 8 whatever the run's batch, so runs at batch 1 and 8 export the same file
    and build one TensorRT engine from it.
    """
    given = source.exports.get(precision)
    if given is not None:
        return given, None, ""
    if source.module is None:
        why = f"{source.label} has no {precision} export; give one (--onnx), or the checkpoint"
        return None, None, why + " to export it from"
    from ..export import export_onnx

    batch = max(max_batch, DEFAULT_MAX_BATCH)
    out = cache / _export_name(source, precision, batch, calibration)
    if out.exists():  # written atomically: a file there is whole
        log.info("reusing %s (exported from these weights before)", out)
        return out, _EXPORTED.get(out), ""
    t0 = time.perf_counter()
    # verify=False: the benchmark's own accuracy columns compare every size against eager FP32
    export_onnx(
        source.module,
        out,
        precision=precision,
        max_batch=batch,
        verify=False,
        progress=False,
        calibration=calibration,
        calibration_images=CALIBRATION_IMAGES,
    )
    _EXPORTED[out] = time.perf_counter() - t0
    return out, _EXPORTED[out], ""


def _export_name(
    source: ModelSource, precision: str, max_batch: int, calibration: str | CalibrationSource
) -> str:
    """``model-<precision>-<digest>.onnx``: the digest of everything the file depends on. FP32 and
    FP16 exports do not depend on the calibration, so every backend shares them."""
    from .. import __version__

    h = hashlib.sha256(f"{__version__}:{source.weights_sha256()}:{precision}:{max_batch}".encode())
    if precision == "int8":
        spec = calibration.spec if isinstance(calibration, CalibrationSource) else calibration
        h.update(spec.encode())
        for image in calibration.arrays if isinstance(calibration, CalibrationSource) else ():
            h.update(image.tobytes())
    return f"model-{precision}-{h.hexdigest()[:16]}.onnx"


_EXPORTED: dict[Path, float] = {}  # files exported in this process, with their export time


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
    onnx_path, export_s, why = onnx_for(source, "fp16", batch, cache)  # onnxruntime-fp16's too
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
