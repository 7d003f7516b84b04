"""The benchmark scenarios: a size sweep and a stream of changing sizes.

Every backend sees the same seeded inputs; eager PyTorch FP32 on those inputs is the reference
for the accuracy columns (run untimed when ``torch`` itself is not among the backends). Only the
runner interface is used here, never "which backend is this".
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._progress import Progress
from ..errors import FCNError
from ..meta import ModelInfo
from ..runtime import Runner
from .backends import CALIBRATION_IMAGES, REFERENCE, Backend, ModelSource
from .flops import flops_per_image
from .machine import compute_precision, cudnn_autotune, ieee_fp32
from .results import EndToEnd, SizeRow, Skipped, StreamRow, StreamShape
from .timing import PeakHostMemory, measure, peak_gpu_memory_mb

__all__ = [
    "BENCH_CALIBRATION",
    "BenchConfig",
    "Outputs",
    "calibration_images",
    "random_images",
    "release_gpu_cache",
    "row_line",
    "run_sizes",
    "run_stream",
    "scored_precision",
    "stream_shapes",
]

Size = tuple[int, int]

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    """How long and on what each backend is measured."""

    sizes: list[Size] = field(default_factory=lambda: [(224, 224), (500, 500)])
    batch: int = 1
    warmup: int = 1
    iters: int = 5
    min_time: float = 0.0
    e2e_iters: int = 3  # end-to-end (decoded image → labels) calls per size; 0 skips them
    seed: int = 0


@dataclass
class Outputs:
    """What one backend produced on one input: logits (tensor I/O) or just labels (image I/O)."""

    labels: np.ndarray
    logits: np.ndarray | None = None

    def agreement(self, reference: Outputs) -> float:
        """Share of pixels labelled the same."""
        return float((self.labels == reference.labels).mean())

    def max_abs_err(self, reference: Outputs) -> float | None:
        """Largest logit difference (None when either side has labels only)."""
        if self.logits is None or reference.logits is None:
            return None
        return float(np.abs(self.logits - reference.logits).max())


def random_images(batch: int, height: int, width: int, seed: int) -> np.ndarray:
    """Seeded uint8 ``N×H×W×3`` BGR images: smooth blobs plus noise, so labels vary in regions."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (batch, max(2, height // 32), max(2, width // 32), 3)).astype(
        np.float32
    )
    import cv2

    smooth = np.stack(
        [cv2.resize(c, (width, height), interpolation=cv2.INTER_LINEAR) for c in coarse]
    )
    noisy = smooth.reshape(batch, height, width, 3) + rng.normal(0, 12, (batch, height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


BENCH_CALIBRATION = "bench"  # fcn-bench's default INT8 calibration: images like its inputs
CALIBRATION_MAX_SIDE = 500  # calibration images are at most 500×500 (calibrator memory)


def calibration_images(
    sizes: Sequence[Size], seed: int, count: int = CALIBRATION_IMAGES
) -> list[np.ndarray]:
    """``count`` images drawn as the measured ones are (`random_images` at the run's ``sizes``)
    from seeds a run with ``seed`` never uses: INT8 is calibrated on the distribution it is
    scored on, never on the scored images themselves. Sides are capped at
    ``CALIBRATION_MAX_SIDE`` to bound the calibrator's memory (see `CALIBRATION_IMAGES`)."""
    capped = [(min(h, CALIBRATION_MAX_SIDE), min(w, CALIBRATION_MAX_SIDE)) for h, w in sizes]
    return [
        random_images(1, *capped[i % len(capped)], seed=seed + 1_000_000 + i)[0]
        for i in range(count)
    ]


def _model_input(runner: Runner, images: np.ndarray) -> torch.Tensor:
    """The batch in the runner's I/O mode, already on its device in its dtype (so no copy is
    timed)."""
    if runner.io == "image":
        return runner.check_input(images)
    return runner.check_input(runner.info.preprocessing.apply(images))


def _outputs(runner: Runner, y: torch.Tensor) -> Outputs:
    if runner.io == "image":
        return Outputs(labels=y.cpu().numpy().astype(np.int64))
    logits = y.float().cpu().numpy()
    return Outputs(labels=logits.argmax(1), logits=logits)


class _Flops:
    """FLOPs per image per size, counted once."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, int, float, int, int], int] = {}

    def __call__(self, info: ModelInfo, h: int, w: int) -> int:
        key = (info.variant, info.num_classes, info.width, h, w)
        if key not in self.cache:
            self.cache[key] = flops_per_image(info, h, w)
        return self.cache[key]


def _segment_timing(runner: Runner, image: np.ndarray, cfg: BenchConfig) -> EndToEnd:
    """End-to-end: one decoded uint8 BGR image → uint8 labels through the Segmenter, with where
    the last call's time went (the Segmenter's own breakdown)."""
    if cfg.e2e_iters <= 0:
        return EndToEnd(note="end-to-end timing off (--e2e-iters 0)")
    from ..api import Segmenter

    segmenter = Segmenter(runner)  # not closed: it would close the runner still in use
    timing = measure(
        lambda: segmenter.predict(image),
        runner.synchronize,
        warmup=1,
        iters=cfg.e2e_iters,
    )
    last = segmenter.last_timing
    return EndToEnd(
        latency_ms=timing.summary(),
        images_per_s=1e3 / timing.percentile(50),
        last_call_ms={
            "preprocess": last.preprocess * 1e3,
            "model": last.model * 1e3,
            "postprocess": last.postprocess * 1e3,
        },
    )


def _reference_runner(source: ModelSource, device: torch.device) -> Runner | None:
    if source.module is None:
        return None
    from ..runtime.torch_runner import TorchRunner

    return TorchRunner(source.module, device=str(device))


@ieee_fp32()
@cudnn_autotune()
def run_sizes(
    backends: list[Backend],
    source: ModelSource,
    device: torch.device,
    cfg: BenchConfig,
    peaks: dict[str, dict[str, Any]],
) -> tuple[list[SizeRow], list[Skipped]]:
    """The sweep: every runnable backend at every size. Returns (result rows, skipped backends)."""
    skipped = [b.skip() for b in backends if b.skipped]
    runnable = [b for b in backends if not b.skipped]
    # eager FP32 first: its outputs are the reference for every later row
    runnable.sort(key=lambda b: b.name != REFERENCE)
    inputs = {
        size: random_images(cfg.batch, *size, seed=cfg.seed + i) for i, size in enumerate(cfg.sizes)
    }
    references: dict[Size, Outputs] = {}
    if not any(b.name == REFERENCE for b in runnable):
        references = _untimed_references(source, device, inputs)
    flops = _Flops()
    rows: list[SizeRow] = []
    with Progress(len(runnable) * len(cfg.sizes), "fcn-bench", unit="row") as progress:
        for backend in runnable:
            runner = _open(backend, skipped)
            if runner is None:
                progress.update(len(cfg.sizes))
                continue
            with runner:
                for size in cfg.sizes:
                    progress.update(0, backend=backend.name, size=f"{size[0]}x{size[1]}")
                    try:
                        row = _measure_row(
                            runner, backend, inputs[size], cfg, references, flops, peaks
                        )
                    except (FCNError, RuntimeError, ValueError) as e:
                        failure = f"failed at {size[0]}x{size[1]}: {e}"
                        skipped.append(Skipped(backend.name, failure, "failed"))
                        log.warning("fcn-bench: %s %s", backend.name, failure)
                        row = None
                    if row is not None:
                        rows.append(row)
                        log.info("fcn-bench: %s", row_line(row))  # visible in a log, not a bar
                    progress.update(1)
            release_gpu_cache(device)
    _add_speedups(rows)
    return rows, skipped


def _open(backend: Backend, skipped: list[Skipped]) -> Runner | None:
    """The backend's runner, or None with the reason added to ``skipped`` (no GPU memory, a
    provider that did not load, ...): one backend that cannot open never aborts the others."""
    assert backend.open is not None
    try:
        return backend.open()
    except (FCNError, RuntimeError, OSError, ValueError) as e:
        skipped.append(Skipped(backend.name, f"failed to open: {e}", "failed"))
        log.warning("fcn-bench: %s failed to open: %s", backend.name, e)
        return None


def _untimed_references(
    source: ModelSource, device: torch.device, inputs: dict[Size, np.ndarray]
) -> dict[Size, Outputs]:
    runner = _reference_runner(source, device)
    if runner is None:
        return {}
    with runner:
        return {
            size: _outputs(runner, runner.infer(_model_input(runner, images)))
            for size, images in inputs.items()
        }


def _measure_row(
    runner: Runner,
    backend: Backend,
    images: np.ndarray,
    cfg: BenchConfig,
    references: dict[Size, Outputs],
    flops: _Flops,
    peaks: dict[str, dict[str, Any]],
) -> SizeRow:
    n, h, w = images.shape[:3]
    x = _model_input(runner, images)
    cuda = runner.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(runner.device)
    last: list[torch.Tensor] = []

    def call() -> None:
        last[:] = [runner.infer(x)]

    with PeakHostMemory() as memory:
        timing = measure(
            call,
            runner.synchronize,
            warmup=cfg.warmup,
            iters=cfg.iters,
            min_time=cfg.min_time,
        )
    peak_gpu_mb = peak_gpu_memory_mb(runner.device)  # before the end-to-end calls allocate more
    outputs = _outputs(runner, last[0])
    if backend.name == REFERENCE:
        references[(h, w)] = outputs
    reference = references.get((h, w))

    per_image_s = timing.percentile(50) / 1e3 / n
    gflops = flops(runner.info, h, w) / 1e9
    achieved = gflops / per_image_s
    arithmetic = scored_precision(backend, runner.device)
    peak = peaks.get(arithmetic)
    peak = peak if peak and peak["gflops_per_s"] else None  # None: no usable kernel measured
    row = SizeRow(
        backend=backend.name,
        precision=runner.precision,
        compute_precision=arithmetic,
        io=runner.io,
        height=h,
        width=w,
        batch=n,
        warmup=cfg.warmup,
        iters=len(timing.samples_ms),
        latency_ms=timing.summary(),
        first_call_ms=timing.first_call_ms,
        images_per_s=1.0 / per_image_s,
        megapixels_per_s=h * w / 1e6 / per_image_s,
        gflops_per_image=gflops,
        achieved_gflops_per_s=achieved,
        peak_gflops_per_s=peak["gflops_per_s"] if peak else None,
        peak_fraction=achieved / peak["gflops_per_s"] if peak else None,
        max_abs_err=outputs.max_abs_err(reference) if reference else None,
        label_agreement=outputs.agreement(reference) if reference else None,
        peak_host_mb=memory.peak_mb,
        host_memory_method=memory.method,
        peak_gpu_mb=peak_gpu_mb,
        prepare_s=backend.prepare_s,
    )
    row.set_end_to_end(_segment_timing(runner, images[0], cfg))
    return row


def row_line(row: SizeRow) -> str:
    """One finished row in one line: ``onnxruntime-int8 500x500 batch 1: p50 345.2 ms, ...``."""
    parts = [
        f"p50 {row.latency_ms['p50']:.1f} ms",
        f"{row.images_per_s:.2f} images/s",
        f"{row.achieved_gflops_per_s:.1f} GFLOP/s",
    ]
    if row.peak_fraction is not None:
        parts.append(f"{row.peak_fraction:.1%} of the {row.compute_precision.upper()} peak")
    if row.label_agreement is not None:
        parts.append(f"labels {row.label_agreement:.2%} as eager FP32")
    return f"{row.backend} {row.height}x{row.width} batch {row.batch}: " + ", ".join(parts)


def scored_precision(backend: Backend, device: torch.device) -> str:
    """The arithmetic a row is held to: what the backend was asked for (``tensorrt``: FP16),
    never the runner's own label. TensorRT's inspector labels an FP16 engine ``unknown`` when
    Myelin nodes hide its convolutions, and ``compute_precision`` reads that as FP32: the row
    would be scored against the FP32 peak, its peak fraction inflated (past 1 on tensor cores).
    The label stays in the row's ``precision``."""
    return compute_precision(device, backend.precision)


def _add_speedups(rows: list[SizeRow]) -> None:
    """Speed over eager FP32 at the same size and batch (p50 against p50)."""
    base = {
        (r.height, r.width, r.batch): r.latency_ms["p50"] for r in rows if r.backend == REFERENCE
    }
    for r in rows:
        ref = base.get((r.height, r.width, r.batch))
        r.speedup_vs_torch = ref / r.latency_ms["p50"] if ref else None


def stream_shapes(count: int, low: int, high: int, seed: int) -> list[Size]:
    """``count`` frames over ``ceil(count/2)`` seeded random shapes, each seen about twice,
    shuffled,
    so every shape has a first call and (mostly) a repeat to compare it with."""
    rng = np.random.default_rng(seed)
    distinct = [
        (int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1)))
        for _ in range(math.ceil(count / 2))
    ]
    frames = (distinct * 2)[:count]
    order = rng.permutation(len(frames))
    return [frames[i] for i in order]


@ieee_fp32()
@cudnn_autotune()
def run_stream(
    backends: list[Backend],
    source: ModelSource,
    device: torch.device,
    shapes: list[Size],
    seed: int = 0,
) -> tuple[list[StreamRow], list[Skipped]]:
    """Every frame through one runner per backend: throughput, and the first call at each new shape
    against its repeats (a rebuild per shape would show as a first call far above the repeat)."""
    skipped = [b.skip() for b in backends if b.skipped]
    runnable = sorted((b for b in backends if not b.skipped), key=lambda b: b.name != REFERENCE)
    images = [random_images(1, h, w, seed + i) for i, (h, w) in enumerate(shapes)]
    references: list[Outputs] = []
    if not any(b.name == REFERENCE for b in runnable):
        ref = _reference_runner(source, device)
        if ref is not None:
            with ref:
                references = [_outputs(ref, ref.infer(_model_input(ref, im))) for im in images]
    rows = []
    with Progress(len(runnable) * len(shapes), "fcn-bench stream", unit="frame") as progress:
        for backend in runnable:
            runner = _open(backend, skipped)
            if runner is None:  # skipped with its reason, like the sizes scenario
                progress.update(len(shapes))
                continue
            with runner:
                try:
                    rows.append(_stream_row(runner, backend.name, images, references, progress))
                except (FCNError, RuntimeError, ValueError) as e:  # an OOM, say: the next goes on
                    skipped.append(
                        Skipped(backend.name, f"failed during the stream: {e}", "failed")
                    )
            release_gpu_cache(device)
    return rows, skipped


def release_gpu_cache(device: torch.device) -> None:
    """Hand the memory PyTorch's allocator keeps cached back to the driver once a backend is done:
    an FP32 batch-8 1024x2048 row leaves ~20 GB cached that ONNX Runtime's and TensorRT's own
    arenas could not otherwise use."""
    if device.type == "cuda":
        gc.collect()  # the closed runner's tensors, if a cycle still holds them
        torch.cuda.empty_cache()


def _stream_row(
    runner: Runner,
    name: str,
    images: list[np.ndarray],
    references: list[Outputs],
    progress: Progress,
) -> StreamRow:
    per_shape: dict[Size, list[float]] = {}
    agreement: list[float] = []
    total_ms, pixels = 0.0, 0
    for i, im in enumerate(images):
        x = _model_input(runner, im)
        out: list[torch.Tensor] = []

        def call(x: torch.Tensor = x, out: list[torch.Tensor] = out) -> None:
            out.append(runner.infer(x))

        timing = measure(call, runner.synchronize, warmup=0, iters=1)
        ms = timing.samples_ms[0]
        per_shape.setdefault((im.shape[1], im.shape[2]), []).append(ms)
        total_ms += ms
        pixels += im.shape[1] * im.shape[2]
        outputs = _outputs(runner, out[-1])
        if name == REFERENCE:
            references.append(outputs)
        if i < len(references):
            agreement.append(outputs.agreement(references[i]))
        progress.update(1, backend=name)
    shapes = [
        StreamShape(h, w, t[0], float(np.mean(t[1:])) if len(t) > 1 else None)
        for (h, w), t in per_shape.items()
    ]
    ratios = [t[0] / float(np.mean(t[1:])) for t in per_shape.values() if len(t) > 1]
    return StreamRow(
        backend=name,
        precision=runner.precision,
        frames=len(images),
        distinct_shapes=len(per_shape),
        total_s=total_ms / 1e3,
        images_per_s=len(images) / (total_ms / 1e3),
        megapixels_per_s=pixels / 1e6 / (total_ms / 1e3),
        first_call_over_repeat=float(np.median(ratios)) if ratios else None,
        label_agreement=float(np.mean(agreement)) if agreement else None,
        shapes=shapes,
    )
