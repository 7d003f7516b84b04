"""Trainer checkpoints: the model in the models' format plus everything an exact resume needs.

``last.pt`` is an ordinary fcn-deploy checkpoint (``fcn-eval``, ``fcn-export`` and ``Segmenter``
read it) whose ``extra["trainer"]`` holds the iteration, the run's configuration, the optimizer
and grad-scaler state and every RNG state (torch, NumPy, Python; one set per rank). All of it is
tensors and plain lists so the file loads with ``torch.load(weights_only=True)``. Files are
written atomically: a crash or Ctrl-C while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcn_deploy.checkpoint import read_checkpoint, save_checkpoint
from fcn_deploy.errors import FCNError
from fcn_deploy.models import FCN

log = logging.getLogger(__name__)

__all__ = [
    "BEST",
    "LAST",
    "TrainerState",
    "capture_rng",
    "cuda_states_to_restore",
    "load_training_state",
    "resolve_resume_path",
    "restore_rng",
    "save_training_checkpoint",
    "saved_rng_for",
]

LAST = "last.pt"  # rolling: every --checkpoint-every iterations, at the end and on interrupt
BEST = "best.pt"  # the best validation mean IU so far (model and scores, no optimizer)


def capture_rng() -> dict[str, Any]:
    """This process's RNG states as tensors and lists (safe for ``weights_only`` loading)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [
            torch.from_numpy(np.asarray(keys, np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "python": [int(version), list(state), gauss],
    }


def cuda_states_to_restore(saved: list[Any], gpus: int) -> tuple[list[Any], int]:
    """The saved per-GPU CUDA RNG states this machine has generators for, and how many are dropped.

    A checkpoint holds one state per GPU the saving process could see; resuming on fewer GPUs
    (8 → 1) keeps the first ``gpus`` of them (``set_rng_state_all`` would index GPUs that are not
    there); on more GPUs, the extra generators keep their seeds.
    """
    return list(saved[:gpus]), max(0, len(saved) - gpus)


def saved_rng_for(saved: list[dict[str, Any]], rank: int, world_size: int) -> dict[str, Any] | None:
    """This rank's RNG states from a checkpoint saved by ``len(saved)`` ranks, or None when it
    was saved at another world size: one rank's states restored on every rank would make them
    all draw the same stream, so each rank reseeds instead (``seed + rank``)."""
    return saved[rank] if len(saved) == world_size else None


def restore_rng(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cuda, dropped = cuda_states_to_restore(states["cuda"], gpus)
    for index, state in enumerate(cuda):
        torch.cuda.set_rng_state(state, index)
    if dropped:
        log.warning(
            "the checkpoint holds CUDA RNG states for %d GPU(s), this machine has %d: restored %d, "
            "dropped %d (random draws on the missing GPUs cannot continue exactly)",
            len(states["cuda"]),
            gpus,
            len(cuda),
            dropped,
        )
    keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))


@dataclass
class TrainerState:
    """What a run has done so far; restored on ``--resume``."""

    iteration: int = 0
    best_mean_iu: float = float("-inf")
    elapsed: float = 0.0  # training seconds (counts towards --time-limit across resumes)


def save_training_checkpoint(
    path: Path,
    model: FCN,
    state: TrainerState,
    config: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    rng: list[dict[str, Any]],
) -> None:
    """Write ``path`` (atomically) with the model and the state an exact resume needs."""
    trainer = {
        "iteration": state.iteration,
        "best_mean_iu": state.best_mean_iu,
        "elapsed": state.elapsed,
        "config": config,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": rng,
    }
    save_checkpoint(model, path, extra={"trainer": trainer})


def resolve_resume_path(path: str | os.PathLike[str]) -> Path:
    """``--resume`` takes a run folder (its ``last.pt``) or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.exists():  # a FIFO or a device: read_checkpoint says what it is
        raise FCNError(
            f"{path}: no such checkpoint to resume (give a training output folder holding "
            f"{LAST}, or a .pt file)",
            param="resume",
        )
    return path


def load_training_state(path: Path) -> dict[str, Any]:
    """The ``trainer`` part of a checkpoint written by `save_training_checkpoint`, plus
    ``state_dict`` and ``info``."""
    payload = read_checkpoint(path)
    trainer = (payload.get("extra") or {}).get("trainer")
    if not isinstance(trainer, dict) or "optimizer" not in trainer:
        raise FCNError(
            f"{path} holds no trainer state (it is a model-only checkpoint such as {BEST}); "
            f"resume from the run's {LAST}, or start a new run with init='checkpoint:{path}'",
            param="init",
        )
    return {**trainer, "state_dict": payload["state_dict"], "info": payload["info"]}
