"""The training loop: batches in, SGD/Adam steps, validation, checkpoints, stop requests.

One `Trainer` per process. Under ``torchrun`` every rank runs the same loop on its own shard of
each global batch, gradients are averaged by DistributedDataParallel, validation confusion
matrices are summed over ranks, and only rank 0 writes files.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.contrib.logging import logging_redirect_tqdm

from fcn_deploy._progress import LOGGERS, Progress
from fcn_deploy.checkpoint import save_checkpoint
from fcn_deploy.errors import FCNError
from fcn_deploy.export.graph import probe_fp16_plan
from fcn_deploy.meta import ModelInfo
from fcn_deploy.runtime import resolve_device

from .checkpointing import (
    BEST,
    LAST,
    TrainerState,
    capture_rng,
    load_training_state,
    restore_rng,
    save_training_checkpoint,
    saved_rng_for,
)
from .config import TrainConfig
from .datasets import StepBatches, training_sets
from .distributed import Dist, init_distributed, rank_device
from .evaluate import evaluate, torch_predictor
from .initialize import initial_model
from .loss import segmentation_loss
from .recipe import make_optimizer, resolve_recipe, select_trainable
from .runlog import RunLog, plot_curves

__all__ = ["TrainResult", "Trainer", "backward_step", "keep_in_fp32", "train"]

log = logging.getLogger(__name__)

CSV_NAME, PLOT_NAME = "log.csv", "curves.png"


@dataclass
class LossWindow:
    """The steps since the loss was last logged: their summed loss, how many, and when they
    began."""

    total: float
    steps: int
    start: float

    @classmethod
    def starting_now(cls) -> LossWindow:
        return cls(0.0, 0, time.perf_counter())


@dataclass
class TrainResult:
    iteration: int
    stopped: str | None  # None when all iterations ran; "time limit", "SIGINT" or "SIGTERM"
    last: Path
    best: Path | None
    scores: dict[str, float]  # validation scores of the final weights
    best_mean_iu: float


def train(config: TrainConfig, resume: Path | dict[str, Any] | None = None) -> TrainResult:
    """Run (or, given ``last.pt``, continue) one training run; see `Trainer`.

    ``resume`` is a ``last.pt`` path or what `load_training_state` read from it (so ``fcn-train
    --resume``, which reads the file for its settings, does not read it twice).
    """
    trainer = Trainer(config, resume)
    try:
        result = trainer.run()
        # Every rank meets here before the group is torn down: rank 0 is still writing when the
        # others finish, and a gloo peer leaving mid-teardown can abort ("terminate called
        # without an active exception"). Only on success, so a failed rank never hangs the rest.
        trainer.dist.barrier()
        return result
    finally:
        trainer.dist.close()


class Trainer:
    def __init__(self, config: TrainConfig, resume: Path | dict[str, Any] | None = None) -> None:
        self.config = config
        device = resolve_device(config.device)
        self.dist = dist = init_distributed(device)
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        self.device = rank_device(device, dist.local_rank, dist.world_size, gpus)
        self.out = Path(config.out)
        if dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.train_set, self.val_set = training_sets(config.data, config.root, config.val_root)
        if config.val_images is not None:
            self.val_set.ids = self.val_set.ids[: config.val_images]
        self.recipe = resolve_recipe(
            config.recipe_name,
            config.variant,
            config.lr,
            config.batch_size,
            config.momentum,
            config.crop,
        )

        saved = load_training_state(resume) if isinstance(resume, Path) else resume
        self.model = initial_model(
            config.variant,
            "scratch" if saved else config.init,
            config.width,
            self.train_set,
            config.seed,
        )
        if saved:
            self.model.info = ModelInfo.from_dict(saved["info"])
            self.model.load_state_dict(saved["state_dict"])
        select_trainable(self.model, config.train)
        self.model.to(self.device).train()
        self.optimizer = make_optimizer(self.model, self.recipe)
        amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if amp else None
        if amp:  # the FP16 export's decision: values past FP16's range stay FP32 under autocast
            kept = keep_in_fp32(self.model, list(probe_fp16_plan(self.model).fp32_layers))
            self.model.train()
            if kept and dist.is_main:
                log.info(
                    "mixed precision: %s run in FP32 (near or past FP16's range)", ", ".join(kept)
                )
        self.autocast = (
            (lambda: torch.autocast("cuda", dtype=torch.float16)) if amp else nullcontext
        )
        self.state = TrainerState()
        if saved:
            self.optimizer.load_state_dict(saved["optimizer"])
            if self.scaler is not None and saved["scaler"]:
                self.scaler.load_state_dict(saved["scaler"])
            self.state = TrainerState(saved["iteration"], saved["best_mean_iu"], saved["elapsed"])
            mine = saved_rng_for(saved["rng"], dist.rank, dist.world_size)
            if mine is not None:
                restore_rng(mine)
            else:
                if dist.is_main:
                    log.warning(
                        "resuming on %d process(es), saved on %d: each reseeds its RNGs with "
                        "seed + rank (the random draws do not continue exactly)",
                        dist.world_size,
                        len(saved["rng"]),
                    )
                _seed_everything(config.seed + dist.rank)
        else:
            _seed_everything(config.seed + dist.rank)
        self.net = (
            DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            if dist.enabled
            else self.model
        )
        self.log = (
            RunLog(self.out / CSV_NAME, resume_at=self.state.iteration if saved else None)
            if dist.is_main
            else None
        )
        self.stop_request: str | None = None

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        config, dist, state = self.config, self.dist, self.state
        start = state.iteration
        batches = StepBatches(
            self.train_set,
            self.recipe.batch_size,
            config.seed,
            self.recipe.crop,
            dist.rank,
            dist.world_size,
            length=config.iterations,
        )
        loader = torch.utils.data.DataLoader(
            batches,
            batch_size=None,
            sampler=range(start, config.iterations),
            num_workers=config.workers,
            collate_fn=_as_is,
            generator=torch.Generator().manual_seed(config.seed),
        )  # not the global RNG
        prep = self.model.info.preprocessing
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        on_screen = ExitStack()  # the bar, and log lines printed above it rather than across it
        bar = (
            on_screen.enter_context(
                Progress(config.iterations - start, f"training {config.variant}")
            )
            if dist.is_main
            else None
        )
        # only loggers with handlers of their own (a CLI's, the user's root one): an added handler
        # on a bare logger would print records the root logger prints too
        printing = [g for g in map(logging.getLogger, ("", *LOGGERS)) if g.handlers]
        if printing:
            on_screen.enter_context(logging_redirect_tqdm(printing))
        self._clock, self._elapsed0 = time.perf_counter(), state.elapsed
        window = LossWindow.starting_now()
        scores: dict[str, float] = {}
        validated_at = checkpointed_at = -1
        try:
            for images, labels in loader:
                x = torch.from_numpy(prep.apply(images)).to(self.device)  # B×3×H×W
                y = torch.from_numpy(labels).to(self.device)  # B×H×W
                with self.autocast():
                    logits = self.net(x)
                loss = segmentation_loss(logits, y, self.recipe.loss)
                value = float(loss.item())
                if not backward_step(loss, self.dist, self.optimizer, self.scaler):
                    self._diverged(value, state.iteration + 1)
                state.iteration += 1
                stop = self._agree_stop(self._check_time())
                window.total += value
                window.steps += 1
                if bar is not None:
                    bar.update(1, it=state.iteration, loss=f"{value:.4g}")
                if (
                    state.iteration % config.log_every == 0
                    or stop
                    or state.iteration == config.iterations
                ):
                    window = self._log_loss(window)
                if state.iteration % config.val_every == 0:
                    scores, validated_at = self._validate(), state.iteration
                    if (
                        config.time_limit is not None
                    ):  # validation takes time too: stop now, not a step later
                        stop = self._agree_stop(self._check_time() or stop)
                        if stop and window.steps:
                            window = self._log_loss(window)
                if state.iteration % config.checkpoint_every == 0:
                    self._checkpoint()
                    checkpointed_at = state.iteration
                if stop:
                    break
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            on_screen.close()
        if validated_at != state.iteration:
            scores = self._validate()
        if checkpointed_at != state.iteration:
            self._checkpoint()
        if self.log is not None:
            plot_curves(self.log.rows, self.out / PLOT_NAME, f"{config.variant} on {config.data}")
        best = self.out / BEST
        return TrainResult(
            state.iteration,
            self.stop_request,
            self.out / LAST,
            best if best.exists() else None,
            scores,
            state.best_mean_iu,
        )

    # -- pieces -------------------------------------------------------------------------------

    def _check_time(self) -> bool:
        """Update the training clock; request a stop once ``--time-limit`` has passed."""
        self.state.elapsed = self._elapsed0 + time.perf_counter() - self._clock
        limit = self.config.time_limit
        if limit is not None and self.state.elapsed >= limit:
            self.stop_request = self.stop_request or "time limit"
        return self.stop_request is not None

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_request in ("SIGINT", "SIGTERM"):
            # a second signal: stop now (last.pt is still whole: writes are atomic)
            raise KeyboardInterrupt
        self.stop_request = signal.Signals(signum).name  # finish this step, save, stop

    def _agree_stop(self, stop: bool) -> bool:
        """A stop every rank takes together (one tiny all-reduce per step under torchrun)."""
        if not self.dist.any(stop):
            return False
        self.stop_request = self.stop_request or "stop requested by another rank"
        return True

    def _diverged(self, value: float, iteration: int) -> None:
        last = self.out / LAST
        kept = (
            f"the last good checkpoint {last} is untouched"
            if last.exists()
            else "no checkpoint was written yet"
        )
        what = (
            f"became {value}" if not math.isfinite(value) else "became non-finite on another rank"
        )
        raise FCNError(
            f"training loss {what} at iteration {iteration}; stopped, and {kept}. Lower the "
            f"learning rate (lr, now {self.recipe.lr:g}) and start again, or resume",
            param="lr",
        )

    def _log_loss(self, window: LossWindow) -> LossWindow:
        """Log the window's mean loss (over all ranks) and its images/s; returns the next window."""
        total, count = self.dist.sum(np.array([window.total, float(window.steps)]))
        now = time.perf_counter()
        images = window.steps * self.recipe.batch_size * self.dist.world_size
        rate = images / max(now - window.start, 1e-9)
        if self.log is not None and count:
            self.log.add(
                self.state.iteration,
                elapsed_s=self.state.elapsed,
                lr=self.recipe.lr,
                loss=total / count,
                images_per_s=rate,
            )
        return LossWindow(0.0, 0, now)

    def _validate(self) -> dict[str, float]:
        self.model.eval()
        try:
            with self.autocast():
                predict = torch_predictor(self.model, self.model.info.preprocessing, self.device)
                results = evaluate(
                    predict, self.val_set, self.model.num_classes, dist=self.dist, progress=False
                )
        finally:
            self.model.train()
        scores = results["scores"]
        state = self.state
        if self.dist.is_main:
            assert self.log is not None
            self.log.add(
                state.iteration,
                elapsed_s=state.elapsed,
                **{f"val_{k}": v for k, v in scores.items()},
            )
            log.info(
                "iteration %d: %s",
                state.iteration,
                ", ".join(f"{k} {v:.4f}" for k, v in scores.items()),
            )
            if scores["mean_iu"] > state.best_mean_iu:
                save_checkpoint(
                    self.model, self.out / BEST, extra={"iteration": state.iteration, "val": scores}
                )
        if scores["mean_iu"] > state.best_mean_iu:
            state.best_mean_iu = scores["mean_iu"]
        return scores

    def _checkpoint(self) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            self._diverged(
                float("nan"), self.state.iteration
            )  # never overwrite a good checkpoint with broken weights
        rng = self.dist.gather(capture_rng())
        if self.dist.is_main:
            save_training_checkpoint(
                self.out / LAST,
                self.model,
                self.state,
                self.config.to_dict(),
                self.optimizer,
                self.scaler,
                rng,
            )


class _Float32Forward:
    """A layer's forward outside autocast, in FP32 (state-dict keys stay those of the layer)."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.forward = forward

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.forward(x.float())


def keep_in_fp32(model: nn.Module, names: list[str]) -> list[str]:
    """Make the named layers of ``model`` compute in FP32 under autocast; returns ``names``.

    Autocast runs every convolution in FP16, where activations near FP16's range overflow to inf
    and training would stop as diverged. ``names`` are `Fp16Plan.fp32_layers`: every layer whose
    input or output passes the range, so autocast casts a kept layer's FP32 output back to FP16
    only for a convolution whose own input was measured within the range (the FP16 export and
    eager FP16 run the same layers in FP32 and cast back the same way).
    """
    for name in names:
        layer = model.get_submodule(name)
        layer.forward = _Float32Forward(layer.forward)  # type: ignore[method-assign]
    return names


def backward_step(
    loss: torch.Tensor,
    dist: Dist,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
) -> bool:
    """One optimizer step on ``loss``, or False on every rank (no step taken anywhere) when the loss
    is not finite on any rank.

    The ranks vote before ``backward()``: a rank that skipped it alone would meet the others' DDP
    gradient all-reduces with its next collective, and every rank would hang.
    """
    if dist.any(not math.isfinite(float(loss.item()))):
        return False
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return True


def _as_is(batch: Any) -> Any:
    """Keep the NumPy batch (DataLoader's default would convert it to tensors)."""
    return batch


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
