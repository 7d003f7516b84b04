"""Device buffers handed to TensorRT: the alignment rule, as plain logic tested everywhere.

``IExecutionContext::setTensorAddress`` (include/NvInferRuntime.h, NVIDIA/TensorRT 10.x and
11.1) says "The pointer must have at least 256-byte alignment" and returns false otherwise. A
tensor fresh from torch's CUDA caching allocator is aligned (blocks are 512-byte multiples), but
a contiguous view with an offset (``batch[1:]``, a slice of a larger buffer) need not be: such
an input is copied into a fresh buffer first.
"""

from __future__ import annotations

import torch

__all__ = ["TENSOR_ALIGNMENT", "aligned_input", "is_aligned"]

TENSOR_ALIGNMENT = 256  # bytes


def is_aligned(address: int, alignment: int = TENSOR_ALIGNMENT) -> bool:
    """Whether a device address meets TensorRT's alignment rule."""
    return address % alignment == 0


def aligned_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when its address is aligned, else a contiguous copy in a fresh allocation."""
    if is_aligned(x.data_ptr()):
        return x
    return x.clone(memory_format=torch.contiguous_format)
