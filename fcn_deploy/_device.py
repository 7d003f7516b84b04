"""Indexed torch devices, compared by type and index: the one place every layer normalizes them.

``torch.device("cuda:0") != torch.device("cuda")``, so a runner holding bare ``cuda`` would
refuse every tensor torch puts on ``cuda:0``. Devices are therefore made indexed once
(`indexed_device`) and compared with `same_device`, which also accepts a bare ``cuda`` on
either side as the current device.
"""

from __future__ import annotations

import torch

__all__ = ["cuda_index", "indexed_device", "same_device"]


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
