"""Running a deserialized engine on torch CUDA tensors: the core both the gate and the runner use.

Per call: pick the profile that holds the input (plain `select_profile`, so an out-of-range
shape gets a message, never a crash), set the input shape, read each output's concrete shape
from the CONTEXT (an engine says -1 for dynamic dims, and sizing from the profile is a known
source of wrong outputs), reuse the output buffer while the shape repeats, and enqueue on torch's
current CUDA stream so the work orders with the caller's own kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import FCNError
from ._trt import import_tensorrt
from .profiles import Profile, select_profile
from .sidecar import EngineMetadata, check_compatible

if TYPE_CHECKING:
    import tensorrt as trt
else:
    trt = import_tensorrt()

__all__ = ["EngineExecutor", "cuda_device", "device_identity"]

# TensorRT DataType name → torch dtype, for the I/O tensors an FCN engine can have
_TORCH_DTYPES = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "UINT8": torch.uint8,
    "INT8": torch.int8,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
}


def cuda_device(device: str | torch.device | None = None) -> torch.device:
    """The CUDA device to build or run on (default: the current one); FCNError without a GPU."""
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cuda")
    )
    if dev.type != "cuda":
        raise FCNError(
            f"TensorRT engines run on an NVIDIA GPU, not {dev}; use device cuda or cuda:N"
        )
    if not torch.cuda.is_available():
        raise FCNError(
            "TensorRT is installed but torch sees no CUDA GPU; install a CUDA build of torch"
        )
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise FCNError(
            f"device {dev} does not exist: this machine has {torch.cuda.device_count()} GPU(s)"
        )
    return torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())


def device_identity(device: torch.device) -> tuple[str, tuple[int, int]]:
    """GPU name and compute capability: what an engine is tied to, besides the TensorRT release."""
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), (int(major), int(minor))


def _torch_dtype(dtype: trt.DataType) -> torch.dtype:
    try:
        return _TORCH_DTYPES[dtype.name]
    except KeyError:
        raise FCNError(
            f"engine tensor type {dtype.name} is not one an fcn-deploy engine uses; rebuild the "
            "engine"
        ) from None


class EngineExecutor:
    """One engine and one execution context on one CUDA device."""

    def __init__(self, serialized: bytes, meta: EngineMetadata, device: torch.device) -> None:
        if device.type != "cuda":
            raise FCNError("TensorRT engines run on an NVIDIA GPU; pass device='cuda' (or cuda:N)")
        gpu_name, capability = device_identity(device)
        check_compatible(meta, str(trt.__version__), capability, gpu_name)
        self.device = device
        self.profiles: list[Profile] = list(meta.profiles)
        self.io = meta.onnx.io
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(device):
            engine = self._runtime.deserialize_cuda_engine(serialized)
            if engine is None:
                raise FCNError(
                    "TensorRT could not deserialize the engine (see its error above); rebuild the "
                    "engine"
                )
            self.engine = engine
            self._check_io(meta)
            context = engine.create_execution_context()
            if context is None:
                raise FCNError(
                    "TensorRT could not create an execution context (out of GPU memory?)"
                )
            self.context = context
        self.input_dtype = _torch_dtype(engine.get_tensor_dtype(self.input_name))
        self.output_dtype = _torch_dtype(engine.get_tensor_dtype(self.output_name))
        self._profile = 0
        self._shape: tuple[int, ...] | None = None
        self._out: torch.Tensor | None = None

    def _check_io(self, meta: EngineMetadata) -> None:
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [meta.onnx.input_name] or outputs != [meta.onnx.output_name]:
            raise FCNError(
                f"engine I/O {inputs} → {outputs} does not match its sidecar "
                f"({meta.onnx.input_name} → {meta.onnx.output_name}); the .json beside it belongs "
                "to another engine: rebuild"
            )
        if self.engine.num_optimization_profiles != len(meta.profiles):
            raise FCNError(
                f"engine has {self.engine.num_optimization_profiles} optimization profiles but its "
                f"sidecar lists {len(meta.profiles)}; the .json beside it belongs to another "
                "engine: rebuild"
            )
        self.input_name, self.output_name = meta.onnx.input_name, meta.onnx.output_name

    def nchw(self, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """The NCHW shape profiles are written in, from the input's (NHWC for image mode)."""
        n, a, b, c = shape
        return (n, c, a, b) if self.io == "image" else (n, a, b, c)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Run on a contiguous CUDA tensor of the engine's input dtype; returns the (reused) output
        buffer.

        The returned tensor is overwritten by the next call with the same shape: clone it to keep
        it.
        """
        if x.device != self.device or x.dtype != self.input_dtype or not x.is_contiguous():
            raise FCNError(
                f"engine input must be a contiguous {self.input_dtype} tensor on {self.device}"
            )
        profile = select_profile(self.profiles, self.nchw(tuple(x.shape)))
        stream = torch.cuda.current_stream(self.device)
        if profile != self._profile:
            if not self.context.set_optimization_profile_async(profile, stream.cuda_stream):
                raise FCNError(f"TensorRT refused to switch to optimization profile {profile}")
            self._profile, self._shape = profile, None
        shape = tuple(x.shape)
        if shape != self._shape:
            if not self.context.set_input_shape(self.input_name, trt.Dims(list(shape))):
                raise FCNError(f"TensorRT rejected input shape {shape} for profile {profile}")
            dims = self.context.get_tensor_shape(
                self.output_name
            )  # from the context, not the profile
            out_shape = tuple(dims[i] for i in range(len(dims)))
            if any(d < 0 for d in out_shape):
                raise FCNError(f"TensorRT could not infer the output shape for input {shape}")
            self._out = torch.empty(out_shape, dtype=self.output_dtype, device=self.device)
            self._shape = shape
        assert self._out is not None
        for name, tensor in ((self.input_name, x), (self.output_name, self._out)):
            if not self.context.set_tensor_address(name, tensor.data_ptr()):
                raise FCNError(
                    f"TensorRT rejected the device buffer for {name!r} (misaligned or not on "
                    f"{self.device})"
                )
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise FCNError(
                f"TensorRT failed to run the engine at input shape {shape} (see its error above)"
            )
        return self._out

    def close(self) -> None:
        """Drop the context before the engine before the runtime (TensorRT's required order)."""
        for name in ("context", "engine", "_runtime"):
            if hasattr(self, name):
                delattr(self, name)
        self._out = None
