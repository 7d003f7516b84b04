"""OpenVINO: runs an fcn-deploy ONNX file (FP32, FP16 or INT8 QDQ) on the CPU.

OpenVINO reads the ONNX graph directly and compiles it for the CPU it runs on; with an INT8 QDQ
file it folds the Q/DQ pairs into INT8 convolutions (AVX-512 VNNI / AMX where the CPU has them).
The file's metadata (`OnnxMetadata`) says what it takes and returns, as for ONNX Runtime, and the
shapes stay dynamic: one compiled model serves every size within the exported bounds.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import torch

from ..errors import FCNError
from ..export import OnnxMetadata, check_verified, read_onnx_metadata
from .base import Runner, resolve_device

__all__ = ["OpenVINORunner"]


_SOURCE_LINE = re.compile(r"^(Exception from|Check '.*' failed at) \S+:\d+:$")


def openvino_reason(error: Exception) -> str:
    """The cause in an OpenVINO error, on one line: its C++ source locations dropped (the first
    line is only "Exception from src/inference/src/cpp/core.cpp:84:"; the cause follows)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = "; ".join(line for line in lines if not _SOURCE_LINE.match(line))
    return cause[:400] or type(error).__name__


def _openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise FCNError(
            "openvino is not installed (pip install openvino; from a clone: "
            "pip install -e '.[openvino]')"
        ) from None
    return openvino


class OpenVINORunner(Runner):
    """An fcn-deploy ONNX file under OpenVINO's CPU plugin.

    Args:
        path: an ONNX file written by ``fcn-export``.
        device: ``cpu`` (OpenVINO's GPU plugin targets Intel GPUs, not CUDA; None means cpu).
        threads: inference threads (None: OpenVINO's default, one stream over all cores).
        hint: OpenVINO performance hint, ``LATENCY`` (default: one request at a time, as here)
            or ``THROUGHPUT``.
        allow_unverified: open a file whose export failed verification (refused otherwise).
    """

    backend = "openvino"

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str | None = None,
        threads: int | None = None,
        hint: str = "LATENCY",
        allow_unverified: bool = False,
    ) -> None:
        self.metadata: OnnxMetadata = read_onnx_metadata(path)
        check_verified(self.metadata, path, allow_unverified)
        dev = resolve_device(device or "cpu")
        if dev.type != "cpu":
            raise FCNError(
                f"device={device!r}: the openvino backend runs on the CPU only", param="device"
            )
        if hint not in ("LATENCY", "THROUGHPUT"):
            raise FCNError(f"hint={hint!r}: choose LATENCY or THROUGHPUT", param="hint")
        m = self.metadata
        super().__init__(
            m.info, m.io, m.precision, m.bounds, dev, torch.float16 if m.fp16_io else torch.float32
        )
        ov = _openvino()
        config: dict[str, Any] = {"PERFORMANCE_HINT": hint}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if m.precision == "fp32":
            # OpenVINO may run FP32 models in bf16/fp16 on CPUs that have it; keep FP32 FP32.
            config["INFERENCE_PRECISION_HINT"] = "f32"
        try:
            core = ov.Core()
            self.compiled: Any = core.compile_model(core.read_model(os.fspath(path)), "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError subclasses with long C++ traces
            raise FCNError(f"OpenVINO cannot load {path}: {openvino_reason(e)}") from None
        self.request: Any = self.compiled.create_infer_request()

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        if self.request is None:
            raise FCNError("this runner was closed")
        self.request.infer({0: np.ascontiguousarray(x.numpy())}, share_inputs=True)
        out = torch.from_numpy(np.array(self.request.get_output_tensor(0).data, copy=True))
        return out.float() if out.dtype == torch.float16 else out

    def close(self) -> None:
        self.request = None
        self.compiled = None
