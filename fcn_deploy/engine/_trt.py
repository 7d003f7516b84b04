"""The one place that imports TensorRT, lazily, so the package imports without it."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import FCNError

__all__ = ["MISSING_MESSAGE", "import_tensorrt", "tensorrt_available"]

MISSING_MESSAGE = (
    "TensorRT is not installed: engines are built on a machine with an NVIDIA GPU and "
    "TensorRT 10.12+ (from a clone: bash scripts/setup.sh gpu, which picks TensorRT's CUDA 13 or "
    "CUDA 12 variant by torch's CUDA)"
)


def import_tensorrt() -> ModuleType:
    """``tensorrt``, or one FCNError line saying where engines can be built.

    With only type stubs installed, ``import tensorrt`` succeeds and yields an empty namespace
    package (a folder of .pyi files): that is not TensorRT either.
    """
    try:
        module = importlib.import_module("tensorrt")
    except ImportError:
        raise FCNError(MISSING_MESSAGE) from None
    if getattr(module, "__file__", None) is None or not hasattr(module, "Builder"):
        raise FCNError(MISSING_MESSAGE)
    return module


def tensorrt_available() -> bool:
    """Whether the real TensorRT imports here (not just its type stubs)."""
    try:
        import_tensorrt()
    except FCNError:
        return False
    return True
