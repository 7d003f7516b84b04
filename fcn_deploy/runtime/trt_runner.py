"""TensorRT: a built engine (``.engine`` + its ``.engine.json`` sidecar) behind the runner
interface.

The sidecar supplies what the opaque engine cannot say (classes, preprocessing, I/O mode, the
precision the inspector measured, profiles); the engine layer's `EngineExecutor` does the
TensorRT calls. Inputs arrive as numpy or torch (any device), are checked against the engine's
profiles (a clear message for a shape no profile holds, never a crash) and come back as torch
tensors on the GPU, as from every other runner. A batch larger than any profile holds at its
H×W (the default profiles take batch > 1 only up to 1024²) runs in chunks of the largest batch
one does, so every batch of a size some profile holds is answered.

Profiles need not nest (landscape and portrait, say): ``size_ranges`` lists each profile's own
sizes, and the Segmenter and fcn-serve decide padding, tiling and refusals against those, never
against ``bounds``, the box around them all (which only the first, coarse check uses).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from .._gate import read_regular, regular_file
from ..engine.profiles import batch_chunk
from ..engine.sidecar import EngineMetadata, read_sidecar
from ..errors import FCNError
from ..meta import SizeBounds
from .base import ArrayLike, Runner, resolve_device

if TYPE_CHECKING:
    from ..engine.executor import EngineExecutor

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
        self._attach(EngineExecutor(read_regular(path), meta, dev), meta, reuse_outputs)

    @classmethod
    def from_executor(
        cls, executor: EngineExecutor, meta: EngineMetadata, reuse_outputs: bool = False
    ) -> TensorRTRunner:
        """A runner around an executor made already: everything the runner decides (profiles,
        chunks, sizes, dtypes) needs no TensorRT, so tests hand it a stand-in executor."""
        runner = cls.__new__(cls)
        runner._attach(executor, meta, reuse_outputs)
        return runner

    def _attach(self, executor: EngineExecutor, meta: EngineMetadata, reuse_outputs: bool) -> None:
        self.executor: EngineExecutor | None = executor
        self.profiles = list(meta.profiles)
        self.reuse_outputs = reuse_outputs
        self.metadata = meta
        bounds = SizeBounds(  # the box around every profile: a first, coarse check only
            min_hw=(min(p.min[2] for p in self.profiles), min(p.min[3] for p in self.profiles)),
            max_hw=(max(p.max[2] for p in self.profiles), max(p.max[3] for p in self.profiles)),
            min_batch=min(p.min[0] for p in self.profiles),
            max_batch=max(p.max[0] for p in self.profiles),
        )
        info, io = meta.onnx.info, meta.onnx.io
        super().__init__(info, io, meta.precision, bounds, executor.device, executor.input_dtype)

    @property
    def size_ranges(self) -> tuple[SizeBounds, ...]:
        return tuple(p.size_bounds() for p in self.profiles)

    def _nchw(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        n, a, b, c = x.shape
        return (n, c, a, b) if self.io == "image" else (n, a, b, c)

    def check_input(self, batch: ArrayLike) -> torch.Tensor:
        """The base checks (rank, dtype, bounds), then: does a profile hold this shape, in
        chunks if not at once?"""
        x = super().check_input(batch)
        batch_chunk(self.profiles, self._nchw(x))
        return x

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        if self.executor is None:
            raise FCNError("this runner was closed")
        chunk = batch_chunk(self.profiles, self._nchw(x))
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
