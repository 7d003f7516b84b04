"""Checkpoint → verified dynamic-shape ONNX (stub: the signature others code against)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from torch import nn

from .metadata import OnnxMetadata

__all__ = ["export_onnx", "ExportReport", "VerifyRow"]

Source = Union[str, "os.PathLike[str]", nn.Module]


@dataclass
class VerifyRow:
    """ONNX Runtime against PyTorch at one input shape."""

    shape: tuple[int, ...]
    max_abs_error: float
    rel_error: float  # max abs error / max abs reference (tensor mode)
    label_agreement: float  # share of pixels whose argmax (or output label) matches
    passed: bool
    note: str = ""


@dataclass
class ExportReport:
    """What `export_onnx` wrote and how well it matched PyTorch."""

    path: Path
    metadata: OnnxMetadata
    file_size: int
    export_seconds: float
    rows: list[VerifyRow] = field(default_factory=list)
    passed: bool = True  # all verification rows passed (True when verification was skipped)
    seed: Optional[int] = None
    fp16_agreement: Optional[VerifyRow] = None  # FP16 graph against the FP32 PyTorch model


def export_onnx(
    source: Source,
    output: "str | os.PathLike[str]",
    *,
    variant: Optional[str] = None,
    precision: str = "fp32",
    io: str = "tensor",
    fp16_io: bool = False,
    max_size: tuple[int, int] = (4096, 4096),
    max_batch: int = 32,
    opset: int = 20,
    verify: bool = True,
    verify_sizes: Optional[Sequence[tuple[int, int, int]]] = None,
    seed: Optional[int] = None,
    progress: bool = True,
) -> ExportReport:
    """Export ``source`` (a checkpoint path or a net with ``.info``) to ``output`` and verify it."""
    raise NotImplementedError("export_onnx is being written (issue 3)")
