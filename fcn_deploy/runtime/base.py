"""The runner interface every backend implements (after Polygraphy's runners).

A runner owns one loaded model on one device and does one thing: ``infer(batch)``. The base class
does the guarding (rank, dtype, channels, size bounds, device placement) so each backend only
fills in ``_infer``; the API and the benchmark use this interface and never ask which backend
they hold.

Two I/O modes, fixed when a model is exported:
- ``tensor``: float ``N×3×H×W`` already preprocessed → float logits ``N×C×H×W``;
- ``image``: uint8 ``N×H×W×3`` BGR pixels as OpenCV decodes them → uint8 labels ``N×H×W``
  (preprocessing and argmax folded into the model).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from .._device import cuda_index, indexed_device, same_device
from ..errors import FCNError
from ..meta import IO_MODES, ModelInfo, SizeBounds

__all__ = [
    "IO_MODES",
    "ArrayLike",
    "Runner",
    "cuda_index",
    "non_blocking_copy",
    "resolve_device",
    "same_device",
]

ArrayLike = np.ndarray | torch.Tensor


def resolve_device(device: str | torch.device | None) -> torch.device:
    """An indexed device (``cpu`` or ``cuda:N``, never bare ``cuda``), checked against the machine.

    ``None`` → the current CUDA device if there is one, else cpu; ``cuda`` → the current CUDA
    device. Compare the result with `same_device`, not ``==`` (``cuda:0 != cuda`` in torch).
    """
    if device is None:
        return indexed_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise FCNError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FCNError(
                f"device={device!r} requested but this machine has no CUDA GPU (use device='cpu')",
                param="device",
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FCNError(
                f"device {device} does not exist: this machine has {torch.cuda.device_count()} "
                "GPU(s)"
            )
    elif dev.type != "cpu":
        raise FCNError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    return indexed_device(dev)


def non_blocking_copy(destination: torch.device, pinned_source: bool = False) -> bool:
    """Whether a copy to ``destination`` may be ``non_blocking``: only to a GPU, where later work on
    the stream is ordered after it, and only from pageable memory. A copy *from* a GPU with
    ``non_blocking=True`` returns before the data has arrived, and host code (``.numpy()``) would
    read it half-written. From pinned host memory the copy is a DMA that may still be reading
    the buffer when the call returns, so a caller refilling it for the next batch would race;
    from pageable memory CUDA stages the data before returning (the CUDA Runtime API's "API
    synchronization behavior": cudaMemcpyAsync from pageable host memory), so the buffer is free
    again at once. The contract: an input may be refilled as soon as ``infer`` returns."""
    return destination.type == "cuda" and not pinned_source


class Runner(ABC):
    """One backend holding one model. Subclasses set the attributes below and implement
    ``_infer``."""

    #: short backend name: "torch", "onnxruntime", "tensorrt"
    backend: str = ""

    def __init__(
        self,
        info: ModelInfo,
        io: str = "tensor",
        precision: str = "fp32",
        bounds: SizeBounds = SizeBounds(),
        device: torch.device = torch.device("cpu"),
        input_dtype: torch.dtype = torch.float32,
    ) -> None:
        if io not in IO_MODES:
            raise FCNError(f"unknown I/O mode {io!r}; expected one of {', '.join(IO_MODES)}")
        self.info = info
        self.io = io
        self.precision = precision
        self.bounds = bounds
        self.device = device
        self.input_dtype = torch.uint8 if io == "image" else input_dtype
        # the layout `check_input` hands over, so no conversion is left inside the timed call
        self.memory_format = torch.contiguous_format

    @property
    def size_ranges(self) -> tuple[SizeBounds, ...]:
        """The sizes this runner holds, as ranges (`fcn_deploy._sizes`): its ``bounds`` here; one
        per optimization profile for a TensorRT engine, whose profiles need not nest."""
        return (self.bounds,)

    @property
    def name(self) -> str:
        """e.g. ``onnxruntime-fp16`` or ``torch``: backend plus precision when not FP32."""
        return self.backend if self.precision == "fp32" else f"{self.backend}-{self.precision}"

    def infer(self, batch: ArrayLike) -> torch.Tensor:
        """Run one batch; returns logits (tensor mode) or labels (image mode) on ``self.device``."""
        x = self.check_input(batch)
        return self._infer(x)

    def check_input(self, batch: ArrayLike) -> torch.Tensor:
        """Validate rank, dtype, channels and bounds; return a contiguous tensor on the device."""
        x = (
            torch.from_numpy(np.ascontiguousarray(batch))
            if isinstance(batch, np.ndarray)
            else batch
        )
        if not isinstance(x, torch.Tensor):
            raise FCNError(f"expected a numpy array or torch tensor, got {type(batch).__name__}")
        if self.io == "image":
            if x.dim() != 4 or x.shape[3] != 3:
                raise FCNError(
                    f"this model takes uint8 N×H×W×3 BGR images; got shape {tuple(x.shape)}"
                )
            if x.dtype != torch.uint8:
                raise FCNError(
                    f"this model takes uint8 images; got {x.dtype} (convert with .astype(np.uint8))"
                )
            n, h, w = x.shape[0], x.shape[1], x.shape[2]
        else:
            if x.dim() != 4 or x.shape[1] != 3:
                raise FCNError(
                    f"this model takes float N×3×H×W tensors; got shape {tuple(x.shape)}"
                )
            if not x.is_floating_point():
                raise FCNError(
                    f"this model takes preprocessed float input; got {x.dtype} (see Segmenter for "
                    "raw images)"
                )
            n, h, w = x.shape[0], x.shape[2], x.shape[3]
        problem = self.bounds.violation(n, h, w)
        if problem:
            raise FCNError(
                f"{self.name}: input {problem}; resize or tile the input, or re-export with larger "
                "bounds"
            )
        asynchronous = non_blocking_copy(self.device, x.is_pinned())
        return x.to(self.device, self.input_dtype, non_blocking=asynchronous).contiguous(
            memory_format=self.memory_format
        )

    @abstractmethod
    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        """Run a checked input already on the device with the right dtype."""

    def synchronize(self) -> None:
        """Wait for queued device work (for timing); a no-op on CPU."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def close(self) -> None:  # noqa: B027  # optional: backends that hold memory override it
        """Release the model and device memory; the runner is unusable afterwards."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.info.variant} {self.name} io={self.io} on {self.device}>"
        )
