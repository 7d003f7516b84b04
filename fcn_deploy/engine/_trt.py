"""The one place that imports TensorRT, lazily, so the package imports without it."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import FCNError

__all__ = ["import_tensorrt", "MISSING_MESSAGE"]

MISSING_MESSAGE = (
    "TensorRT is not installed: engines are built on a machine with an NVIDIA GPU and "
    "TensorRT 10.12+ (pip install fcn-deploy[gpu])"
)


def import_tensorrt() -> ModuleType:
    """``tensorrt``, or one FCNError line saying where engines can be built."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise FCNError(MISSING_MESSAGE) from None
