"""ONNX Runtime sessions, shared by export verification, the engine accuracy gate and the
runtime."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import FCNError

__all__ = ["ort_run", "ort_session"]


def ort_session(
    path: str | os.PathLike[str],
    threads: int | None = None,
    inter_threads: int | None = None,
    providers: Sequence[Any] | None = None,
) -> Any:
    """An `onnxruntime.InferenceSession` with explicit thread settings (CPU provider by default).

    ``threads``: intra-op threads (None: ONNX Runtime's default, one per core); ``inter_threads``:
    threads across independent nodes (this graph is a chain, so 1 is usually right).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise FCNError(
            "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu)"
        ) from None
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    if inter_threads is not None:
        options.inter_op_num_threads = int(inter_threads)
    options.log_severity_level = 3  # errors only: ORT's warnings are about its own graph rewrites
    try:
        return ort.InferenceSession(
            os.fspath(path), options, providers=list(providers or ["CPUExecutionProvider"])
        )
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise FCNError(f"ONNX Runtime cannot load {path}: {first}") from None


def ort_run(session: Any, x: np.ndarray) -> np.ndarray:
    """Run a one-input, one-output session on ``x``."""
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(x)})[0]
