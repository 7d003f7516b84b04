"""Multi-GPU / multi-node through ``torchrun``: process group, sharding and reductions.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them everything here is a
no-op for one process. On GPUs the group is ``cpu:gloo,cuda:nccl``: DDP's gradient all-reduces
run on NCCL, while the small host-side reductions here (stop votes, loss totals, confusion
matrices) are CPU tensors, which a plain ``nccl`` group refuses ("No backend type associated with
device type cpu"). On CPUs it is gloo (how the tests run two processes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from fcn_deploy.errors import FCNError

__all__ = ["Dist", "init_distributed", "process_group_backend", "rank_device"]


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes checkpoints, logs and plots."""
        return self.rank == 0

    def sum(self, array: np.ndarray) -> np.ndarray:
        """Element-wise sum over ranks (confusion matrices, loss totals): a CPU tensor, so the
        group must have a CPU backend (see `process_group_backend`)."""
        if not self.enabled:
            return array
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.numpy().astype(array.dtype)

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on one (stop requests: signal, time limit, NaN)."""
        return bool(self.sum(np.array([float(flag)]))[0] > 0)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (RNG states for the checkpoint)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def process_group_backend(device: torch.device) -> str:
    """The process-group backend for ranks on ``device``: gloo for CPU tensors always, NCCL for
    CUDA tensors when training on GPUs."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def rank_device(device: torch.device, local_rank: int, world_size: int, gpus: int) -> torch.device:
    """The device this rank trains on: under torchrun on GPUs, ``cuda:LOCAL_RANK``.

    NCCL refuses two ranks on one GPU ("Duplicate GPU detected", NCCL ≥ 2.5), so a node needs a
    GPU per local rank; ``device`` (the ``--device`` given) only says CPU or CUDA then.
    """
    if device.type != "cuda" or world_size <= 1:
        return device
    if local_rank >= gpus:
        raise FCNError(
            f"local rank {local_rank} has no GPU of its own: this node has {gpus} GPU(s) and NCCL "
            "needs one per process (lower torchrun's --nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


def init_distributed(device: torch.device) -> Dist:
    """Join the process group ``torchrun`` describes, or return the single-process `Dist`."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        torch.cuda.set_device(rank_device(device, local_rank, world_size, gpus))
    if not dist.is_initialized():
        dist.init_process_group(backend=process_group_backend(device))
    return Dist(rank, world_size, local_rank)
