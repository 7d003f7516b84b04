"""TensorRT: a built engine (``.engine`` + its ``.engine.json`` sidecar) behind the runner
interface.

The sidecar supplies what the opaque engine cannot say (classes, preprocessing, I/O mode, the
precision the inspector measured, profiles); the engine layer's `EngineExecutor` does the
TensorRT calls. Inputs arrive as numpy or torch (any device), are checked against the engine's
profiles (a clear message for a shape no profile holds, never a crash) and come back as torch
tensors on the GPU, as from every other runner. A batch larger than any profile holds at its
H×W (the default profiles take batch > 1 only up to 1024²) runs in chunks of the largest batch
one does, so every batch within the runner's bounds is answered.
"""

from __future__ import annotations

import os

import torch

from .._gate import read_regular, regular_file
from ..engine.profiles import largest_batch, select_profile
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
        path = regular_file(
            path, "engine file", "build one with build_engine or fcn-export --engine"
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
        self.executor: EngineExecutor | None = EngineExecutor(read_regular(path), meta, dev)
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

    def _nchw(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        n, a, b, c = x.shape
        return (n, c, a, b) if self.io == "image" else (n, a, b, c)

    def check_input(self, batch: ArrayLike) -> torch.Tensor:
        """The base checks (rank, dtype, bounds), then: does a profile hold this shape, in
        chunks if not at once?"""
        x = super().check_input(batch)
        n, c, h, w = self._nchw(x)
        select_profile(self.profiles, (min(n, largest_batch(self.profiles, (n, c, h, w))), c, h, w))
        return x

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        if self.executor is None:
            raise FCNError("this runner was closed")
        chunk = largest_batch(self.profiles, self._nchw(x))
        if x.shape[0] > chunk:  # each chunk's output must outlive the next chunk's call
            return torch.cat([self._run(part, keep=True) for part in x.split(chunk)])
        return self._run(x, keep=not self.reuse_outputs)

    def _run(self, x: torch.Tensor, keep: bool) -> torch.Tensor:
        """One engine call; ``keep``: a tensor of the caller's own, not the engine's buffer."""
        assert self.executor is not None
        out = self.executor.run(x)  # on the runner's device and the executor's own stream
        if self.io == "tensor" and out.dtype != torch.float32:
            return out.float()  # FP16 I/O engines: logits as float32, like the other runners
        return out.clone() if keep else out

    def close(self) -> None:
        if self.executor is not None:
            self.executor.close()
            self.executor = None
