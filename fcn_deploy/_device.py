"""Indexed torch devices, compared by type and index: the one place every layer normalizes them.

``torch.device("cuda:0") != torch.device("cuda")``, so a runner holding bare ``cuda`` would
refuse every tensor torch puts on ``cuda:0``. Devices are therefore made indexed once
(`indexed_device`) and compared with `same_device`, which also accepts a bare ``cuda`` on
either side as the current device.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = [
    "cuda_index",
    "indexed_device",
    "on_requested_gpu",
    "requested_cuda_index",
    "same_device",
]


def indexed_device(device: torch.device) -> torch.device:
    """``cuda`` → ``cuda:<current>``; indexed CUDA devices and CPU come back as they are."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def cuda_index(device: torch.device) -> int:
    """The GPU a CUDA ``device`` means: its index, or the current GPU for a bare ``cuda`` (ONNX
    Runtime and TensorRT need the number; ``index or 0`` would pick the wrong one)."""
    index = indexed_device(device).index
    if device.type != "cuda" or index is None:
        raise ValueError(f"{device} is not a CUDA device")
    return index


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one: same type and, for CUDA, the same index (bare = current)."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    return indexed_device(a).index == indexed_device(b).index


def requested_cuda_index(device: str | torch.device | None) -> int | None:
    """The GPU ``device`` names (``cuda:N``), when torch can reach it: the device to make current
    before a library (TensorRT) creates anything, so nothing opens a context on another GPU.
    None, meaning "stay on the current GPU", for no device, bare ``cuda``, a CPU device, a name
    torch cannot parse or a GPU torch does not see: the caller's own checks then say why."""
    try:
        dev = torch.device(device) if device is not None else None
    except (RuntimeError, ValueError):
        return None
    if dev is None or dev.type != "cuda" or dev.index is None:
        return None
    if not torch.cuda.is_available() or dev.index >= torch.cuda.device_count():
        return None
    return dev.index


def on_requested_gpu(device: str | torch.device | None) -> contextlib.AbstractContextManager[None]:
    """The GPU of `requested_cuda_index` current inside the block (nothing changes for None)."""
    index = requested_cuda_index(device)
    return torch.cuda.device(index) if index is not None else contextlib.nullcontext()
