"""TensorRT: a built engine (``.engine`` + its ``.engine.json`` sidecar) behind the runner
interface.

The sidecar supplies what the opaque engine cannot say (classes, preprocessing, I/O mode, the
precision the inspector measured, profiles); the engine layer's `EngineExecutor` does the
TensorRT calls. Inputs arrive as numpy or torch (any device), are checked against the engine's
profiles (a clear message for a shape no profile holds, never a crash) and come back as torch
tensors on the GPU, as from every other runner.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..engine.profiles import select_profile
from ..engine.sidecar import read_sidecar
from ..errors import FCNError
from ..meta import SizeBounds
from .base import ArrayLike, Runner, resolve_device

__all__ = ["TensorRTRunner"]


class TensorRTRunner(Runner):
    """A TensorRT engine on one GPU.

    ``reuse_outputs=True`` returns the engine's own output buffer (overwritten by the next call of
    the same shape): no copy, for benchmarks; the default returns a tensor the caller owns.
    """

    backend = "tensorrt"

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str | None = None,
        reuse_outputs: bool = False,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise FCNError(
                f"{path}: no such engine file (build one with build_engine or fcn-export --engine)"
            )
        from ..engine.executor import (
            EngineExecutor,
        )  # imports TensorRT: FCNError where it is missing

        meta = read_sidecar(path)
        dev = resolve_device(device)
        if dev.type != "cuda":
            raise FCNError(
                "TensorRT engines run on an NVIDIA GPU; use device cuda (or the onnxruntime "
                "backend on CPU)"
            )
        self.executor: EngineExecutor | None = EngineExecutor(path.read_bytes(), meta, dev)
        self.profiles = list(meta.profiles)
        self.reuse_outputs = reuse_outputs
        self.metadata = meta
        bounds = SizeBounds(
            min_hw=(min(p.min[2] for p in self.profiles), min(p.min[3] for p in self.profiles)),
            max_hw=(max(p.max[2] for p in self.profiles), max(p.max[3] for p in self.profiles)),
            min_batch=min(p.min[0] for p in self.profiles),
            max_batch=max(p.max[0] for p in self.profiles),
        )
        super().__init__(
            meta.onnx.info, meta.onnx.io, meta.precision, bounds, dev, self.executor.input_dtype
        )

    def check_input(self, batch: ArrayLike) -> torch.Tensor:
        """The base checks (rank, dtype, bounds), then: does a profile hold this shape?"""
        x = super().check_input(batch)
        shape = tuple(x.shape)
        select_profile(
            self.profiles, (shape[0], shape[3], shape[1], shape[2]) if self.io == "image" else shape
        )
        return x

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        if self.executor is None:
            raise FCNError("this runner was closed")
        out = self.executor.run(x)  # on the runner's device and the executor's own stream
        if self.io == "tensor" and out.dtype != torch.float32:
            return out.float()  # FP16 I/O engines: logits as float32, like the other runners
        return out if self.reuse_outputs else out.clone()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.close()
            self.executor = None
