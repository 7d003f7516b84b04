"""ONNX Runtime: runs an exported file with the metadata it carries.

The file says what it is (`OnnxMetadata`: I/O mode, precision, size bounds, classes and
preprocessing), so nothing beyond the path is needed. On a GPU with ``onnxruntime-gpu`` the CUDA
provider runs with IO binding: input and output stay on the device as torch tensors, bound by
pointer, so nothing round-trips through host memory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import FCNError
from ..export import OnnxMetadata, ort_run, ort_session, read_onnx_metadata
from .base import Runner, resolve_device

__all__ = ["OnnxRuntimeRunner"]

_NUMPY = {torch.float32: np.float32, torch.float16: np.float16, torch.uint8: np.uint8}


def _cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


class OnnxRuntimeRunner(Runner):
    """An fcn-deploy ONNX file under ONNX Runtime (CPU provider, or CUDA with IO binding).

    Args:
        path: an ONNX file written by ``fcn-export``.
        device: ``cpu``, ``cuda`` or ``cuda:N``; None picks CUDA when both a GPU and the CUDA
            provider (``onnxruntime-gpu``) are present, else CPU.
        threads: intra-op threads (None: ONNX Runtime's default, one per core).
        inter_threads: threads across independent nodes (the FCN is a chain: 1 is usually right).
        providers: explicit ONNX Runtime providers (e.g. with TensorRT provider options) instead
            of the ones ``device`` implies.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str | None = None,
        threads: int | None = None,
        inter_threads: int | None = None,
        providers: Sequence[Any] | None = None,
    ) -> None:
        self.metadata: OnnxMetadata = read_onnx_metadata(path)
        if device is None:
            device = "cuda" if torch.cuda.is_available() and _cuda_available() else "cpu"
        dev = resolve_device(device)
        if providers is None:
            if dev.type == "cuda":
                if not _cuda_available():
                    raise FCNError(
                        f"device {device} needs onnxruntime-gpu (the CUDA provider); this "
                        "onnxruntime has only the CPU provider (pip uninstall onnxruntime && pip "
                        "install onnxruntime-gpu, or use device='cpu')"
                    )
                providers = [
                    ("CUDAExecutionProvider", {"device_id": dev.index or 0}),
                    "CPUExecutionProvider",
                ]
            else:
                providers = ["CPUExecutionProvider"]
        m = self.metadata
        super().__init__(
            m.info, m.io, m.precision, m.bounds, dev, torch.float16 if m.fp16_io else torch.float32
        )
        self.session: Any = ort_session(
            path, threads=threads, inter_threads=inter_threads, providers=providers
        )
        self.output_dtype = (
            torch.uint8 if m.io == "image" else (torch.float16 if m.fp16_io else torch.float32)
        )

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        if self.session is None:
            raise FCNError("this runner was closed")
        if self.device.type == "cpu":
            out = torch.from_numpy(ort_run(self.session, x.numpy()))
            return out.float() if self.metadata.fp16_io else out
        return self._infer_cuda(x)

    def _infer_cuda(self, x: torch.Tensor) -> torch.Tensor:
        """IO binding: ONNX Runtime reads ``x`` and writes a preallocated torch tensor in place."""
        m, index = self.metadata, self.device.index or 0
        binding = self.session.io_binding()
        binding.bind_input(
            m.input_name, "cuda", index, _NUMPY[x.dtype], tuple(x.shape), x.data_ptr()
        )
        shape = self._output_shape(x)
        out = torch.empty(shape, dtype=self.output_dtype, device=self.device) if shape else None
        if out is not None:
            binding.bind_output(
                m.output_name, "cuda", index, _NUMPY[out.dtype], shape, out.data_ptr()
            )
        else:  # coarse maps (vgg16): size unknown up front, let ONNX Runtime allocate
            binding.bind_output(m.output_name, "cuda", index)
        torch.cuda.current_stream(self.device).synchronize()  # x was written on torch's stream
        self.session.run_with_iobinding(binding)
        if out is None:
            out = torch.from_numpy(binding.copy_outputs_to_cpu()[0]).to(self.device)
        return out.float() if m.fp16_io else out

    def _output_shape(self, x: torch.Tensor) -> tuple[int, ...] | None:
        """Output shape for a same-size segmentation output; None for the coarse vgg16 map."""
        if self.info.variant == "vgg16":
            return None
        if self.io == "image":
            return tuple(x.shape[:3])
        return (x.shape[0], self.info.num_classes, x.shape[2], x.shape[3])

    def close(self) -> None:
        self.session = None
