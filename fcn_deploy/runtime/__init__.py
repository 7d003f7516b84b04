"""Runners: one small class per backend behind one interface (`Runner`).

``load_runner`` picks the backend from the file: ``.engine``/``.plan`` → TensorRT, ``.onnx`` →
ONNX Runtime (or OpenVINO when asked for), anything else → eager PyTorch (checkpoints and
whatever ``load_model`` reads).
Heavy optional libraries are imported only when their backend is asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import FCNError
from ..meta import ENGINE_SUFFIXES
from .base import IO_MODES, ArrayLike, Runner, resolve_device, same_device

__all__ = [
    "BACKENDS",
    "IO_MODES",
    "ArrayLike",
    "Runner",
    "backend_for_path",
    "load_runner",
    "resolve_device",
    "same_device",
]

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")


def backend_for_path(path: str | os.PathLike[str]) -> str:
    """The backend a file's suffix implies."""
    suffix = Path(path).suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    if suffix == ".onnx":
        return "onnxruntime"
    return "torch"


def load_runner(
    path: str | os.PathLike[str],
    device: str | None = None,
    backend: str | None = None,
    allow_unverified: bool = False,
    **options: Any,
) -> Runner:
    """Open ``path`` with ``backend`` (default: from the suffix) on ``device`` (cpu, cuda,
    cuda:N). An ONNX file whose export failed verification, or an engine built from one, is
    refused unless ``allow_unverified``."""
    backend = backend or backend_for_path(path)
    if backend == "tensorrt":  # an engine's sidecar keeps the mark of the ONNX file it came from
        from ..engine.sidecar import read_sidecar, sidecar_path
        from ..export import check_verified

        if Path(path).is_file() and sidecar_path(path).is_file():
            check_verified(read_sidecar(path).onnx, path, allow_unverified)
    if backend == "torch":
        from .torch_runner import TorchRunner

        return TorchRunner(path, device=device, **options)
    if backend == "onnxruntime":
        from .ort_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, device=device, allow_unverified=allow_unverified, **options)
    if backend == "openvino":
        from .openvino_runner import OpenVINORunner

        return OpenVINORunner(path, device=device, allow_unverified=allow_unverified, **options)
    if backend == "tensorrt":
        from .trt_runner import TensorRTRunner

        return TensorRTRunner(path, device=device, **options)
    raise FCNError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
