"""ONNX Runtime sessions, shared by export verification, the engine accuracy gate and the
runtime."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import FCNError
from .external_data import external_data_files

__all__ = [
    "cuda_provider_problem",
    "cuda_providers",
    "ort_run",
    "ort_session",
    "provider_problem",
    "require_providers",
]


def ort_session(
    path: str | os.PathLike[str],
    threads: int | None = None,
    inter_threads: int | None = None,
    providers: Sequence[Any] | None = None,
    disabled_optimizers: Sequence[str] = (),
    model: Any | None = None,
) -> Any:
    """An `onnxruntime.InferenceSession` with explicit thread settings (CPU provider by default).

    ``threads``: intra-op threads (None: ONNX Runtime's default, one per core); ``inter_threads``:
    threads across independent nodes (this graph is a chain, so 1 is usually right);
    ``disabled_optimizers``: ONNX Runtime graph rewrites to leave out, by name. External
    data outside the model's folder is refused first (`external_data_files`; ``model``: the
    file's ModelProto when the caller holds it, which saves parsing the file for it), whatever
    ONNX Runtime release would do with it.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise FCNError(
            "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu)"
        ) from None
    external_data_files(path, model)
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    if inter_threads is not None:
        options.inter_op_num_threads = int(inter_threads)
    options.log_severity_level = 3  # errors only: ORT's warnings are about its own graph rewrites
    try:
        return ort.InferenceSession(
            os.fspath(path),
            options,
            providers=list(providers or ["CPUExecutionProvider"]),
            disabled_optimizers=list(disabled_optimizers) or None,
        )
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise FCNError(f"ONNX Runtime cannot load {path}: {first}") from None


def ort_run(session: Any, x: np.ndarray) -> np.ndarray:
    """Run a one-input, one-output session on ``x``."""
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(x)})[0]


CUDA_PROVIDER = "CUDAExecutionProvider"


def cuda_providers(device_id: int, options: Mapping[str, Any] | None = None) -> list[Any]:
    """ONNX Runtime's CUDA provider on GPU ``device_id`` (plus provider ``options``, such as
    ``use_tf32``), then the CPU for what it lacks."""
    return [
        (CUDA_PROVIDER, {**(options or {}), "device_id": int(device_id)}),
        "CPUExecutionProvider",
    ]


def provider_problem(active: Sequence[str], wanted: str) -> str | None:
    """Why a session whose ``get_providers()`` is ``active`` does not run on ``wanted``, or None.

    ``onnxruntime-gpu`` lists the CUDA provider as available even when its CUDA/cuDNN libraries
    fail to load; the session then quietly falls back to the CPU. Only the session can tell.
    """
    if wanted in active:
        return None
    return (
        f"ONNX Runtime did not activate {wanted} "
        f"(the session runs on {', '.join(active) or 'nothing'}); "
        f"{_cuda_build_note()}"
    )


@functools.cache
def cuda_provider_problem(device_id: int = 0) -> str | None:
    """Why ONNX Runtime cannot run on GPU ``device_id`` here, or None: a real one-node session is
    asked which providers it activated. ``get_available_providers()`` cannot tell: onnxruntime-gpu
    lists CUDA there even when its CUDA/cuDNN libraries fail to load."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return "onnxruntime is not installed (pip install onnxruntime-gpu for its CUDA provider)"
    if CUDA_PROVIDER not in ort.get_available_providers():
        return f"ONNX Runtime has no CUDA provider here ({_cuda_build_note()})"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=cuda_providers(device_id)
        )
    except Exception as e:  # ORT's own error types
        return f"ONNX Runtime cannot open a CUDA session: {str(e).strip()[:200]}"
    return provider_problem(session.get_providers(), CUDA_PROVIDER)


def require_providers(session: Any, providers: Sequence[Any] | None) -> None:
    """Raise `FCNError` when ``session`` lacks the first provider asked for (CUDA fell back)."""
    if not providers:
        return
    first = providers[0]
    wanted = first[0] if isinstance(first, tuple) else str(first)
    problem = provider_problem(session.get_providers(), wanted)
    if problem:
        raise FCNError(problem)


def _cuda_build_note() -> str:
    """Which CUDA this onnxruntime-gpu wheel was built for: torch's CUDA need not be the same."""
    try:
        from onnxruntime.capi import build_and_package_info as build
    except ImportError:
        return "onnxruntime is not installed"
    cuda = getattr(build, "cuda_version", "") or ""
    if not cuda:
        name = f"{build.package_name} {build.__version__}"
        return f"this {name} is a CPU build (install onnxruntime-gpu)"
    cudnn = getattr(build, "cudnn_version", "") or ""
    need = f"CUDA {cuda}" + (f" and cuDNN {cudnn}" if cudnn else " and its cuDNN")
    return (
        f"{build.package_name} {build.__version__} needs the {need} libraries on the loader path "
        "(the NVIDIA pip packages torch brings must be the same CUDA major; ONNX Runtime's error "
        "log above names the library that failed to load)"
    )
