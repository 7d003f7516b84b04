"""``run_benchmark``: one call from options to the result document ``fcn-bench`` prints and
saves."""

from __future__ import annotations

import datetime
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import FCNError
from ..runtime import resolve_device
from .backends import (
    ModelSource,
    default_backends,
    parse_backends,
    prepare_backends,
    tensorrt_unavailable,
)
from .machine import (
    CUDNN_BENCHMARK,
    FP32_MATH,
    PROBE_BUDGET_S,
    compute_precision,
    machine_info,
    matmul_peak,
)
from .results import SCENARIOS, CompileRow, SizeRow, Skipped, to_json
from .scenarios import (
    BENCH_CALIBRATION,
    BenchConfig,
    calibration_images,
    run_sizes,
    run_stream,
    stream_shapes,
)
from .sliding_window import run_sliding_window

__all__ = ["SCENARIOS", "run_benchmark"]


def run_benchmark(
    scenario: str = "sizes",
    *,
    model: str | None = None,
    variant: str | None = None,
    width: float = 1.0,
    num_classes: int = 21,
    backends: str | None = None,
    config: BenchConfig | None = None,
    device: str | None = None,
    threads: int | None = None,
    stream: tuple[int, int, int] = (8, 64, 1024),
    cache_dir: Path | None = None,
    matmul_size: int | None = None,
    command: str = "",
    calibration: str = BENCH_CALIBRATION,
    onnx: Sequence[str | os.PathLike[str]] = (),
    allow_unverified: bool = False,
    peak_seconds: float = PROBE_BUDGET_S,
) -> dict[str, Any]:
    """Run ``scenario`` and return the result document (see ``report.SCHEMA``).

    ``backends``: comma-separated names (default: what is fast on the device,
    `default_backends`). ``onnx``: exported files, or folders of them, that the ONNX backends
    run instead of exporting (`given_exports`; an unverified one only with
    ``allow_unverified``). ``matmul_size`` fixes the side of the matmul whose rate is the peak;
    by default each peak probe picks the largest side (up to 4096 CPU, 8192 GPU) that fits
    ``peak_seconds``. ``calibration`` is where INT8 backends made from weights take their
    calibration images: ``bench`` (images drawn like the measured inputs, `calibration_images`)
    or any `fcn_deploy.export.CalibrationSource` spec.
    """
    if cache_dir is None:  # files exported and engines built for this run go with it
        with tempfile.TemporaryDirectory(prefix="fcn-bench-") as tmp:
            return run_benchmark(
                scenario, model=model, variant=variant, width=width, num_classes=num_classes,
                backends=backends, config=config, device=device, threads=threads, stream=stream,
                cache_dir=Path(tmp), matmul_size=matmul_size, command=command,
                calibration=calibration, onnx=onnx, allow_unverified=allow_unverified,
                peak_seconds=peak_seconds,
            )  # fmt: skip
    if not peak_seconds > 0:
        raise FCNError(f"peak_seconds must be > 0, got {peak_seconds}", param="peak_seconds")
    if scenario not in SCENARIOS:
        raise FCNError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FCNError(f"cache_dir {cache_dir}: {e.strerror}", param="cache_dir") from None
    cfg = config or BenchConfig()
    if cfg.batch < 1 or cfg.iters < 1 or cfg.warmup < 0:
        raise FCNError(
            f"config.batch and config.iters must be at least 1 and config.warmup at least 0, got "
            f"batch={cfg.batch}, iters={cfg.iters}, warmup={cfg.warmup}"
        )
    dev = resolve_device(device)
    if threads is not None:
        if threads < 1:
            raise FCNError(f"threads must be at least 1, got {threads}", param="threads")
        torch.set_num_threads(threads)
    names = parse_backends(backends) if backends else default_backends(dev)
    doc: dict[str, Any] = {
        "schema_version": 1,
        "scenario": scenario,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "config": {
            **cfg.__dict__,
            "sizes": [f"{h}x{w}" for h, w in cfg.sizes],
            "device": str(dev),
            "threads": torch.get_num_threads(),
            "backends": names,
            "fp32_math": FP32_MATH,
            "cudnn_benchmark": CUDNN_BENCHMARK if dev.type == "cuda" else "off: no CUDA device",
            "calibration": calibration,
        },
        "results": [],
        "skipped": [],
        "notes": [],
    }
    if scenario == "sliding-window":
        doc["model"] = {
            "label": f"random VGG16 classifier width {width:g} (FC vs convolutionalized)"
        }
        doc["machine"] = _machine(dev, matmul_size, ["fp32"], peak_seconds)
        doc["sliding_window"] = to_json(run_sliding_window(cfg, dev, width=width))
        doc["notes"].append(
            "both nets eager PyTorch FP32 on the same weights; p50 of the timed calls"
        )
        return doc
    source = ModelSource.open(model, variant, width, num_classes, onnx, allow_unverified)
    doc["config"]["onnx"] = {p: str(path) for p, path in source.exports.items()}
    doc["model"] = {
        "label": source.label,
        **(
            {
                "variant": source.info.variant,
                "width": source.info.width,
                "num_classes": source.info.num_classes,
            }
            if source.info
            else {}
        ),
    }
    if scenario == "static-vs-dynamic":
        doc["config"]["backends"] = ["tensorrt"]  # the scenario builds its own engines
        precision = "fp16" if dev.type == "cuda" else "fp32"
        doc["machine"] = _machine(dev, matmul_size, [precision], peak_seconds)
        _static_vs_dynamic(doc, source, dev, cfg, cache_dir)
        return doc
    from ..export.quantize import CalibrationSource

    # the shapes the backends will run: engines get profiles and INT8 files calibration for them
    sizes = stream_shapes(*stream, cfg.seed) if scenario == "stream" else cfg.sizes
    batch = 1 if scenario == "stream" else cfg.batch  # a stream runs one image at a time
    prepared = prepare_backends(
        names,
        source,
        dev,
        threads=threads,
        max_batch=cfg.batch,
        cache_dir=cache_dir,
        calibration=(
            CalibrationSource.from_arrays(calibration_images(sizes, cfg.seed), "fcn-bench inputs")
            if calibration == BENCH_CALIBRATION
            else calibration
        ),
        shapes=[(batch, 3, h, w) for h, w in sizes],
    )
    precisions = sorted({compute_precision(dev, b.precision) for b in prepared if not b.skipped})
    doc["machine"] = _machine(dev, matmul_size, precisions or ["fp32"], peak_seconds)
    doc["prepare_s"] = {b.name: b.prepare_s for b in prepared if b.prepare_s is not None}
    skipped: list[Skipped]
    if scenario == "sizes":
        rows, skipped = run_sizes(prepared, source, dev, cfg, doc["machine"]["peaks"])
        _remeasure_peaks(doc["machine"]["peaks"], rows, dev, matmul_size, peak_seconds)
        doc["results"] = to_json(rows)
    else:
        stream_rows, skipped = run_stream(prepared, source, dev, sizes, cfg.seed)
        doc["stream"] = to_json(stream_rows)
    doc["skipped"] = to_json(skipped)
    compiles = [
        CompileRow(b.name, b.stats["compilations"], b.stats["compile_s"], list(b.stats["shapes"]))
        for b in prepared
        if b.stats.get("compilations")
    ]
    for c in compiles:
        doc["notes"].append(
            f"{c.backend}: inductor, dynamic shapes: {c.compilations} graph compilation(s) "
            f"({c.compilations - 1} recompilation(s)) taking {c.compile_s:.1f} s over input "
            f"shapes {', '.join(c.shapes)}"
        )
    if compiles:
        doc["compile"] = to_json(compiles)
    if dev.type == "cpu":
        doc["notes"].append(
            "CPU: FP32 and FP16 rows are measured against the FP32 matmul rate (no native FP16 "
            "arithmetic), INT8 rows against the INT8 matmul rate"
        )
    doc["notes"].append(
        "host memory: peak resident set of the whole benchmark process during each row's warm-up "
        "and timed calls"
    )
    return doc


def _machine(
    dev: torch.device, matmul_size: int | None, precisions: Sequence[str], peak_seconds: float
) -> dict[str, Any]:
    info = machine_info(dev)
    info["peaks"] = {p: matmul_peak(dev, p, matmul_size, budget_s=peak_seconds) for p in precisions}
    info["environment"] = {
        k: v
        for k, v in os.environ.items()
        if k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
    }
    return info


def _remeasure_peaks(
    peaks: dict[str, dict[str, Any]],
    rows: list[SizeRow],
    dev: torch.device,
    matmul_size: int | None,
    peak_seconds: float,
) -> None:
    """Measure the peak again after the sweep and keep the higher one for every row.

    On a machine shared with other work the rate available changes during a run; the higher of the
    two measurements is the conservative limit (it gives the lower fraction).
    """
    for precision, before in peaks.items():
        after = matmul_peak(dev, precision, matmul_size, budget_s=peak_seconds)
        peaks[precision] = {
            **max(before, after, key=lambda p: p["gflops_per_s"] or 0.0),
            "start_gflops_per_s": before["gflops_per_s"],
            "end_gflops_per_s": after["gflops_per_s"],
        }
        peaks[precision]["method"] += ", higher of the measurements before and after the sweep"
    for row in rows:
        peak = peaks.get(row.compute_precision)
        if peak and peak["gflops_per_s"]:
            row.peak_gflops_per_s = peak["gflops_per_s"]
            row.peak_fraction = row.achieved_gflops_per_s / peak["gflops_per_s"]


def _static_vs_dynamic(
    doc: dict[str, Any],
    source: ModelSource,
    dev: torch.device,
    cfg: BenchConfig,
    cache_dir: Path,
) -> None:
    """One dynamic engine against per-shape static engines (TensorRT only)."""
    reason = tensorrt_unavailable(dev)
    if reason:
        doc["skipped"] = to_json([Skipped("tensorrt", reason)])
    else:
        from .static_dynamic import run_static_vs_dynamic

        doc["static_vs_dynamic"] = run_static_vs_dynamic(source, cfg, cache_dir, dev)
