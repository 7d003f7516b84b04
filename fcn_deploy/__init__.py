"""fcn-deploy: VGG16 FCN-32s/16s/8s from training to fast deployment.

The layers, each importing only those before it:
model (``models``, then ``checkpoint``, which turns files into what the models take) → export
(ONNX) → engine (TensorRT) → runtime (runners) → api (``Segmenter``) → bench. ``data`` and
``metrics`` serve the trainer and evaluator. Everything above the models is imported on first
use, so ``import fcn_deploy`` stays light and ``fcn_deploy.models`` imports nothing above it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import FCNError
from .meta import ModelInfo, Preprocessing, SizeBounds
from .models import FCN8s, FCN8sAtOnce, FCN16s, FCN32s, convolutionalize

if TYPE_CHECKING:
    from .api import Segmenter
    from .checkpoint import load_model, read_state_dict, save_checkpoint
    from .engine import build_engine
    from .export import export_onnx

__version__ = "0.1.0"

__all__ = [
    "FCN8s",
    "FCN8sAtOnce",
    "FCN16s",
    "FCN32s",
    "FCNError",
    "ModelInfo",
    "Preprocessing",
    "Segmenter",
    "SizeBounds",
    "build_engine",
    "convolutionalize",
    "export_onnx",
    "load_model",
    "read_state_dict",
    "save_checkpoint",
]

_LAZY = {
    "load_model": "fcn_deploy.checkpoint",
    "read_state_dict": "fcn_deploy.checkpoint",
    "save_checkpoint": "fcn_deploy.checkpoint",
    "export_onnx": "fcn_deploy.export",
    "build_engine": "fcn_deploy.engine",
    "Segmenter": "fcn_deploy.api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fcn_deploy' has no attribute {name!r}")
