"""ONNX Runtime: runs an exported file with the metadata it carries.

The file says what it is (`OnnxMetadata`: I/O mode, precision, size bounds, classes and
preprocessing), so nothing beyond the path is needed. On a GPU with ``onnxruntime-gpu`` the CUDA
provider runs with IO binding: input and output stay on the device as torch tensors, bound by
pointer, so nothing round-trips through host memory.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import FCNError
from ..export import OnnxMetadata, check_verified, ort_run, ort_session, read_onnx_metadata
from ..export.ort import (
    CUDA_PROVIDER,
    cuda_provider_problem,
    cuda_providers,
    provider_problem,
    require_providers,
)
from ..meta import ModelInfo
from .base import Runner, cuda_index, resolve_device

__all__ = ["OnnxRuntimeRunner", "output_shape"]

log = logging.getLogger(__name__)

_NUMPY = {torch.float32: np.float32, torch.float16: np.float16, torch.uint8: np.uint8}


def _cuda_available() -> bool:
    return cuda_provider_problem() is None


def output_shape(info: ModelInfo, io: str, shape: Sequence[int]) -> tuple[int, ...]:
    """The output shape for an input of ``shape`` (N×3×H×W, or N×H×W×3 for image I/O).

    FCNs answer at the input's size; the convolutionalized VGG16 answers with its coarse map,
    ``ceil(H/32) - 6`` by ``ceil(W/32) - 6`` (five ceil-mode pools, then fc6's 7×7 window).
    """
    n, h, w = (shape[0], shape[1], shape[2]) if io == "image" else (shape[0], shape[2], shape[3])
    if info.variant == "vgg16":
        h, w = math.ceil(h / 32) - 6, math.ceil(w / 32) - 6
    return (n, h, w) if io == "image" else (n, info.num_classes, h, w)


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
        cuda_options: CUDA provider options besides the device (e.g. ``{"use_tf32": 0}``).
        allow_unverified: open a file whose export failed verification (refused otherwise).
    """

    backend = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str | None = None,
        threads: int | None = None,
        inter_threads: int | None = None,
        providers: Sequence[Any] | None = None,
        cuda_options: Mapping[str, Any] | None = None,
        allow_unverified: bool = False,
    ) -> None:
        self.metadata: OnnxMetadata = read_onnx_metadata(path)
        check_verified(self.metadata, path, allow_unverified)
        auto = device is None and providers is None
        if device is None:
            device = "cuda" if torch.cuda.is_available() and _cuda_available() else "cpu"
        dev = resolve_device(device)  # indexed: ONNX Runtime binds a GPU by its number
        if providers is None:
            if dev.type == "cuda":
                problem = cuda_provider_problem(cuda_index(dev))
                if problem:
                    raise FCNError(
                        f"device {device}: {problem} (bash scripts/setup.sh gpu, or use "
                        "device='cpu')"
                    )
                providers = cuda_providers(cuda_index(dev), cuda_options)
            else:
                providers = ["CPUExecutionProvider"]
        m = self.metadata
        super().__init__(
            m.info, m.io, m.precision, m.bounds, dev, torch.float16 if m.fp16_io else torch.float32
        )
        self.session: Any = ort_session(
            path, threads=threads, inter_threads=inter_threads, providers=providers
        )
        # CUDA listed is not CUDA loaded: a session that fell back to the CPU must not be handed
        # CUDA pointers (IO binding) or be reported as a GPU result. Asked for CUDA: an error;
        # picked automatically: say so and run on the CPU as a CPU runner.
        problem = provider_problem(self.session.get_providers(), CUDA_PROVIDER)
        if dev.type == "cuda" and problem and auto:
            log.warning("%s; running on the CPU", problem)
            self.device = torch.device("cpu")
        else:
            require_providers(self.session, providers)
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
        m, index = self.metadata, cuda_index(self.device)
        binding = self.session.io_binding()
        binding.bind_input(
            m.input_name, "cuda", index, _NUMPY[x.dtype], tuple(x.shape), x.data_ptr()
        )
        shape = output_shape(self.info, self.io, tuple(x.shape))
        out = torch.empty(shape, dtype=self.output_dtype, device=self.device)
        binding.bind_output(m.output_name, "cuda", index, _NUMPY[out.dtype], shape, out.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # x was written on torch's stream
        self.session.run_with_iobinding(binding)
        return out.float() if m.fp16_io else out

    def close(self) -> None:
        self.session = None
