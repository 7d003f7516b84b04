"""The rows a benchmark produces, typed, and the one way they become JSON.

Scenarios build these dataclasses; `to_json` turns them into the plain data of the result
document (``report.SCHEMA`` describes it), which the report, the plots and ``--json`` read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "SCENARIOS",
    "EndToEnd",
    "SizeRow",
    "SkipStatus",
    "Skipped",
    "SlidingWindowRow",
    "StaticDynamicRow",
    "StreamRow",
    "StreamShape",
    "to_json",
]

SCENARIOS = ("sizes", "stream", "sliding-window", "static-vs-dynamic")

#: Why a backend has no rows: it cannot run here (no GPU, no TensorRT: not a failure), or it
#: was tried and failed (fcn-bench then exits 1).
SkipStatus = Literal["unavailable", "failed"]


@dataclass
class Skipped:
    """A backend without rows (at one size, or at all), and why."""

    backend: str
    reason: str
    status: SkipStatus = "unavailable"


@dataclass
class EndToEnd:
    """A decoded image → labels through the Segmenter (or why that was not timed)."""

    latency_ms: dict[str, float] | None = None
    images_per_s: float | None = None
    last_call_ms: dict[str, float] | None = None  # the Segmenter's own breakdown of one call
    note: str | None = None


@dataclass
class SizeRow:
    """One backend at one input size: latency, throughput, work against the machine's peak,
    accuracy against eager FP32, memory."""

    backend: str
    precision: str
    compute_precision: str
    io: str
    height: int
    width: int
    batch: int
    warmup: int
    iters: int
    latency_ms: dict[str, float]  # mean, p50, p90, p99, min, max
    first_call_ms: float | None
    images_per_s: float
    megapixels_per_s: float
    gflops_per_image: float
    achieved_gflops_per_s: float
    peak_gflops_per_s: float | None
    peak_fraction: float | None
    max_abs_err: float | None  # against eager FP32 logits (None: no logits to compare)
    label_agreement: float | None
    peak_host_mb: float | None
    host_memory_method: str
    peak_gpu_mb: float | None
    prepare_s: float | None
    speedup_vs_torch: float | None = None
    e2e_latency_ms: dict[str, float] | None = None
    e2e_images_per_s: float | None = None
    e2e_last_call_ms: dict[str, float] | None = None
    e2e_note: str | None = None

    def set_end_to_end(self, e2e: EndToEnd) -> None:
        self.e2e_latency_ms, self.e2e_images_per_s = e2e.latency_ms, e2e.images_per_s
        self.e2e_last_call_ms, self.e2e_note = e2e.last_call_ms, e2e.note


@dataclass
class StreamShape:
    height: int
    width: int
    first_call_ms: float
    repeat_ms: float | None  # mean of the later calls at this shape (None: seen once)


@dataclass
class StreamRow:
    """One backend over a stream of changing sizes, served by one runner."""

    backend: str
    precision: str
    frames: int
    distinct_shapes: int
    total_s: float
    images_per_s: float
    megapixels_per_s: float
    first_call_over_repeat: float | None  # median over shapes seen more than once
    label_agreement: float | None
    shapes: list[StreamShape] = field(default_factory=list)
    runners_opened: int = 1  # one runner (one ONNX session / one engine) served every shape


@dataclass
class SlidingWindowRow:
    """One image size: the convolutionalized VGG16 in one pass against the FC classifier run on
    every 224×224 window, timed (p50) and compared score by score."""

    height: int
    width: int
    windows: int
    conv_ms: float
    fc_windows_ms: float
    speedup: float
    conv_gflops: float
    fc_windows_gflops: float
    score_correlation: float
    top1_agreement: float
    max_abs_diff: float
    max_abs_score: float
    equal: bool | None  # bit-for-bit within tolerance; only meaningful for a single window


@dataclass
class StaticDynamicRow:
    """One size: p50 latency of the one dynamic engine against a static engine built for it."""

    height: int
    width: int
    batch: int
    dynamic_p50_ms: float
    static_p50_ms: float
    dynamic_over_static: float
    static_build_s: float
    static_build_cached_s: float


def to_json(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows (dataclasses) → plain dicts for the result document: the one serializer."""
    return [dataclasses.asdict(row) for row in rows]
