"""TensorRT: one dynamic-shape engine against one static engine per shape.

A static engine is tuned for exactly one shape; a dynamic one covers a range with a single build
and a single file. This measures what the range costs at run time (latency of the dynamic engine
at each size against the static engine built for that size) and what the per-shape alternative
costs at build time, with and without a warm timing cache.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .._progress import Progress
from .backends import ModelSource, onnx_for
from .results import StaticDynamicRow, to_json
from .scenarios import BenchConfig, random_images
from .timing import measure

__all__ = ["run_static_vs_dynamic"]


def _build(
    onnx_path: Path,
    engine: Path,
    shapes: tuple[Any, Any, Any],
    cache: Path | None,
    device: torch.device,
) -> float:
    from ..engine import Profile, build_engine

    t0 = time.perf_counter()
    build_engine(
        onnx_path,
        engine,
        profiles=[Profile(*shapes)],
        timing_cache=cache,
        device=str(device),
        gate=False,
        progress=False,
    )
    return time.perf_counter() - t0


def _latency(engine: Path, images: Any, cfg: BenchConfig, device: torch.device) -> float:
    from ..runtime.trt_runner import TensorRTRunner

    with TensorRTRunner(engine, device=str(device), reuse_outputs=True) as runner:
        x = runner.check_input(
            runner.info.preprocessing.apply(images) if runner.io == "tensor" else images
        )
        return measure(
            lambda: runner.infer(x),
            runner.synchronize,
            warmup=cfg.warmup,
            iters=cfg.iters,
        ).percentile(50)


def run_static_vs_dynamic(
    source: ModelSource, cfg: BenchConfig, cache_dir: Path, device: torch.device
) -> dict[str, Any]:
    """Build times and per-size p50 latency, on GPU ``device``, of one dynamic engine and one
    static engine per size."""
    onnx_path, export_s, why = onnx_for(source, "fp16", cfg.batch, cache_dir)
    if onnx_path is None:
        raise RuntimeError(why)
    n = cfg.batch
    lo = (n, 3, min(h for h, _ in cfg.sizes), min(w for _, w in cfg.sizes))
    hi = (n, 3, max(h for h, _ in cfg.sizes), max(w for _, w in cfg.sizes))
    cache = cache_dir / "timing.cache"
    cache.unlink(missing_ok=True)
    dynamic = cache_dir / "dynamic.engine"
    rows = []
    with Progress(2 * len(cfg.sizes) + 1, "fcn-bench static-vs-dynamic", unit="build") as progress:
        dynamic_s = _build(
            onnx_path, dynamic, (lo, (n, 3, *cfg.sizes[0]), hi), cache, device
        )  # cold: writes the cache
        progress.update(1)
        for i, (h, w) in enumerate(cfg.sizes):
            shape = (n, 3, h, w)
            static = cache_dir / f"static-{h}x{w}.engine"
            cold_s = _build(onnx_path, static, (shape, shape, shape), None, device)
            warm_s = _build(onnx_path, static, (shape, shape, shape), cache, device)
            images = random_images(n, h, w, cfg.seed + i)
            dyn_ms = _latency(dynamic, images, cfg, device)
            static_ms = _latency(static, images, cfg, device)
            rows.append(
                StaticDynamicRow(
                    height=h,
                    width=w,
                    batch=n,
                    dynamic_p50_ms=dyn_ms,
                    static_p50_ms=static_ms,
                    dynamic_over_static=dyn_ms / static_ms,
                    static_build_s=cold_s,
                    static_build_cached_s=warm_s,
                )
            )
            progress.update(2, size=f"{h}x{w}")
    torch.cuda.empty_cache()
    return {
        "onnx_export_s": export_s,
        "dynamic_build_s": dynamic_s,
        "dynamic_profile": [list(lo), list(hi)],
        "static_build_total_s": sum(r.static_build_s for r in rows),
        "rows": to_json(rows),
    }
