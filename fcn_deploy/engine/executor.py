"""Running a deserialized engine on torch CUDA tensors: the core both the gate and the runner use.

Per call, on the executor's own device and CUDA stream:
- pick the profile that holds the input (plain `choose_profile`: an out-of-range shape gets a
  message, never a crash), or the one the caller forces (the accuracy gate checks each profile);
- order the executor's stream after the caller's current stream with an event, so the input
  written there is ready, and the caller's stream after the engine with a second event, so the
  caller's next kernels see the output. A stream of our own, because ``enqueueV3`` on the
  legacy default stream "may lead to performance issues due to additional cudaDeviceSynchronize()
  calls" (include/NvInferRuntime.h, IExecutionContext::enqueueV3, NVIDIA/TensorRT 11.1);
- run it in that profile's own execution context, set to the profile once, on that same stream
  (``setOptimizationProfileAsync`` copies on the stream it is given; the header warns that not
  synchronizing it with the enqueue stream is undefined);
- set the input shape, read each output's concrete shape from the CONTEXT (an engine says -1
  for dynamic dims, and sizing from the profile is a known source of wrong outputs), reuse the
  output buffer while the shape repeats;
- hand TensorRT 256-byte aligned addresses only (`buffers.aligned_input`).

Calls checked against NVIDIA/TensorRT python/src/infer/pyCore.cpp (11.1 sources):
``set_optimization_profile_async`` raises RuntimeError on failure (PY_ASSERT_RUNTIME_ERROR)
rather than returning False; ``set_tensor_address``/``execute_async_v3`` return the C++ bool.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .._device import cuda_index, indexed_device, on_requested_gpu, same_device
from ..errors import FCNError
from ._trt import import_tensorrt
from .buffers import aligned_input
from .plan import enum_name
from .profiles import Profile, choose_profile, profile_switch_message
from .sidecar import EngineMetadata, check_compatible, check_engine_bytes
from .trt_base import create_runtime, process_logger, reported

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
    """The indexed CUDA device to build or run on (default: the current one); FCNError if none."""
    dev = torch.device(device) if device is not None else torch.device("cuda")
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
    return indexed_device(dev)


def device_identity(device: torch.device) -> tuple[str, tuple[int, int]]:
    """GPU name and compute capability: what an engine is tied to, besides the TensorRT release."""
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), (int(major), int(minor))


def _torch_dtype(dtype: trt.DataType) -> torch.dtype:
    name = enum_name(dtype)  # not .name: a method on some 10.x enums (plan.enum_name)
    try:
        return _TORCH_DTYPES[name]
    except KeyError:
        raise FCNError(
            f"engine tensor type {name} is not one an fcn-deploy engine uses; rebuild the engine"
        ) from None


class _SharedEngine:
    """One deserialized engine and its runtime, shared by every executor of the same engine bytes
    on one device (the instances of an ``fcn-serve`` model): the weights are on the GPU once.
    Destroyed on its own device, engine before runtime, when the last executor lets go."""

    def __init__(self, serialized: bytes, device: torch.device) -> None:
        self.device = device
        with torch.cuda.device(device):  # the Runtime too: made elsewhere, it opens a context there
            self.runtime = create_runtime()
        with torch.cuda.device(device), process_logger().capture() as errors:
            engine = self.runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            raise FCNError(
                f"TensorRT could not deserialize the engine{reported(errors)}; rebuild the engine"
            )
        self.engine = engine

    def __del__(self) -> None:
        # at interpreter exit torch may be gone already
        with contextlib.suppress(Exception), torch.cuda.device(self.device):
            del self.engine, self.runtime


_SHARED: weakref.WeakValueDictionary[tuple[str, int], _SharedEngine] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def _shared_engine(serialized: bytes, sha256: str, device: torch.device) -> _SharedEngine:
    key = (sha256, cuda_index(device))
    with _SHARED_LOCK:
        shared = _SHARED.get(key)
        if shared is None:
            shared = _SHARED[key] = _SharedEngine(serialized, device)
        return shared


@dataclass
class _Context:
    """One execution context, set to one profile for its whole life, and its output buffer."""

    context: trt.IExecutionContext
    shape: tuple[int, ...] | None = None
    out: torch.Tensor | None = None


class EngineExecutor:
    """One engine on one CUDA device and one CUDA stream; an execution context per profile.

    A context per profile instead of one switching between them: no profile switch (whose
    "layer resource updates" the header warns about) between differently shaped calls. Each is
    created with ``ON_PROFILE_CHANGE`` (``ExecutionContextAllocationStrategy``, 10.12+): it
    allocates device memory for its own profile when the profile is set, where the default
    ``STATIC`` reserves the largest profile's memory in every context.
    """

    def __init__(self, serialized: bytes, meta: EngineMetadata, device: torch.device) -> None:
        # TensorRT's own CUDA initialisation first (its failure names the driver), on the GPU
        # asked for: a Runtime made on the current GPU would open a CUDA context there too
        with on_requested_gpu(device):
            create_runtime()
        device = cuda_device(device)
        gpu_name, capability = device_identity(device)
        check_compatible(meta, str(trt.__version__), capability, gpu_name)
        sha256 = hashlib.sha256(serialized).hexdigest()
        check_engine_bytes(meta, sha256)
        self.device = device
        self.profiles: list[Profile] = list(meta.profiles)
        self.io = meta.onnx.io
        self._shared: _SharedEngine | None = _shared_engine(serialized, sha256, device)
        self.engine = self._shared.engine
        self._check_io(meta)
        with torch.cuda.device(device):
            self.stream = torch.cuda.Stream(device)  # never the legacy default stream
            self._ready, self._done = torch.cuda.Event(), torch.cuda.Event()
        self._contexts: dict[int, _Context] = {}
        self.input_dtype = _torch_dtype(self.engine.get_tensor_dtype(self.input_name))
        self.output_dtype = _torch_dtype(self.engine.get_tensor_dtype(self.output_name))
        self.profile = 0  # the profile the last run used
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

    def run(self, x: torch.Tensor, profile: int | None = None) -> torch.Tensor:
        """Run on a contiguous CUDA tensor of the engine's input dtype; returns the reused output.

        ``profile`` forces an optimization profile (FCNError if it does not hold the shape);
        ``None`` picks the fitting one nearest its opt shape. `profile` afterwards names the one
        used. The output is ordered on the caller's current stream like any torch kernel's, and
        overwritten by the next call with the same shape: clone it to keep it.
        """
        if not same_device(x.device, self.device) or x.dtype != self.input_dtype:
            raise FCNError(
                f"engine input must be a contiguous {self.input_dtype} tensor on {self.device}, "
                f"got {x.dtype} on {x.device}"
            )
        if not x.is_contiguous():
            raise FCNError("engine input must be contiguous; call .contiguous() first")
        chosen = choose_profile(self.profiles, self.nchw(tuple(x.shape)), profile)
        with torch.cuda.device(self.device):
            caller = torch.cuda.current_stream(self.device)
            x = aligned_input(x)  # a view with an offset would fail set_tensor_address
            self._ready.record(caller)  # the input is written on the caller's stream
            self.stream.wait_event(self._ready)
            self._enqueue(x, chosen)
            self._done.record(self.stream)
            caller.wait_event(self._done)  # the caller's next kernels see the output
            assert self._out is not None
            # both buffers were used on our stream: the allocator must not hand them out again
            # (e.g. a temporary aligned copy freed now) before the engine is done with them
            x.record_stream(self.stream)
            self._out.record_stream(self.stream)
        return self._out

    def _context(self, profile: int) -> _Context:
        """The context of ``profile``, created (and set to it, on our stream) on first use."""
        state = self._contexts.get(profile)
        if state is not None:
            return state
        strategy = trt.ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE
        with process_logger().capture() as errors:
            context = self.engine.create_execution_context(strategy)
        if context is None:
            raise FCNError(
                f"TensorRT could not create an execution context{reported(errors)} (out of GPU "
                "memory?)"
            )
        try:
            ok = context.set_optimization_profile_async(profile, self.stream.cuda_stream)
        except RuntimeError as e:  # the binding raises instead of returning False
            raise FCNError(profile_switch_message(profile, len(self.profiles), e)) from None
        if not ok:
            raise FCNError(profile_switch_message(profile, len(self.profiles), None))
        state = self._contexts[profile] = _Context(context)
        return state

    def _enqueue(self, x: torch.Tensor, profile: int) -> None:
        """The TensorRT calls of one run, all on ``self.stream``."""
        handle = self.stream.cuda_stream
        state = self._context(profile)
        self.profile, context = profile, state.context
        shape = tuple(x.shape)
        if shape != state.shape:
            if not context.set_input_shape(self.input_name, trt.Dims(list(shape))):
                raise FCNError(f"TensorRT rejected input shape {shape} for profile {profile}")
            dims = context.get_tensor_shape(self.output_name)  # not the profile's
            out_shape = tuple(dims[i] for i in range(len(dims)))
            if any(d < 0 for d in out_shape):
                raise FCNError(f"TensorRT could not infer the output shape for input {shape}")
            state.out = torch.empty(out_shape, dtype=self.output_dtype, device=self.device)
            state.shape = shape
        assert state.out is not None
        self._out = state.out
        for name, tensor in ((self.input_name, x), (self.output_name, state.out)):
            if not context.set_tensor_address(name, tensor.data_ptr()):
                raise FCNError(
                    f"TensorRT rejected the device buffer for {name!r} (address "
                    f"{tensor.data_ptr():#x} on {tensor.device}); pass a fresh contiguous tensor"
                )
        with process_logger().capture() as errors:
            ok = context.execute_async_v3(handle)
        if not ok:
            raise FCNError(
                f"TensorRT failed to run the engine at input shape {shape}{reported(errors)}"
            )

    def synchronize(self) -> None:
        """Wait for everything queued on the executor's stream."""
        self.stream.synchronize()

    def close(self) -> None:
        """Wait for queued work, then destroy the contexts (and, with the last executor, the
        engine and runtime) on the executor's device, whatever device is current."""
        if getattr(self, "_shared", None) is None:
            return
        self.stream.synchronize()  # a context must not go while its kernels still run
        with torch.cuda.device(self.device):
            self._contexts.clear()
            self._out = None
            del self.engine
            self._shared = None  # the last reference: the engine goes, on its device

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit torch may be gone already
            self.close()
