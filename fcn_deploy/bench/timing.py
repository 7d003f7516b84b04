"""Timing done right: warm-up excluded, device work waited for, many repetitions, percentiles.

Each call is bracketed by the runner's ``synchronize()`` and timed on the host clock: latency to
completion as a caller sees it, launch overhead included. (CUDA events would not do better here:
ONNX Runtime and TensorRT queue work on streams of their own, so the events would have to bracket
a host synchronize too, and then they measure host time as well.) Peak host memory is the process's
high-water mark (``VmHWM``), reset before each measured run through ``/proc/self/clear_refs``;
where that is not allowed a thread samples ``VmRSS`` every 5 ms instead (and can miss short spikes).
Both are the whole process's resident memory: Python, the libraries and every loaded model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["LatencySamples", "PeakHostMemory", "measure", "peak_gpu_memory_mb"]


@dataclass
class LatencySamples:
    """Per-call latencies of one measured run (warm-up excluded), in milliseconds."""

    samples_ms: list[float] = field(default_factory=list)
    warmup: int = 0
    first_call_ms: float | None = None  # the first warm-up call: what a new shape costs once

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q))

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples_ms))

    def summary(self) -> dict[str, float]:
        """``{"mean", "p50", "p90", "p99", "min", "max"}`` in ms (``np.percentile`` interpolates
        linearly, so p50 ≤ p90 ≤ p99 always; with few samples p99 is close to the max)."""
        s = self.samples_ms
        return {
            "mean": self.mean,
            "p50": self.percentile(50),
            "p90": self.percentile(90),
            "p99": self.percentile(99),
            "min": float(min(s)),
            "max": float(max(s)),
        }


def measure(
    fn: Callable[[], Any],
    synchronize: Callable[[], None],
    *,
    warmup: int = 1,
    iters: int = 10,
    min_time: float = 0.0,
) -> LatencySamples:
    """Call ``fn`` ``warmup`` times untimed, then at least ``iters`` times and for at least
    ``min_time`` seconds, timing each call to completion of its device work."""
    timing = LatencySamples(warmup=warmup)
    for i in range(warmup):
        t0 = time.perf_counter()
        fn()
        synchronize()
        if i == 0:
            timing.first_call_ms = (time.perf_counter() - t0) * 1e3
    start = time.perf_counter()
    while len(timing.samples_ms) < max(1, iters) or time.perf_counter() - start < min_time:
        timing.samples_ms.append(_timed_call(fn, synchronize))
    return timing


def _timed_call(fn: Callable[[], Any], synchronize: Callable[[], None]) -> float:
    synchronize()
    t0 = time.perf_counter()
    fn()
    synchronize()
    return (time.perf_counter() - t0) * 1e3


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakHostMemory:
    """``with PeakHostMemory() as mem: ...``; then ``mem.peak_mb`` (None where /proc is absent)."""

    def __init__(self) -> None:
        self.peak_mb: float | None = None
        self.method = "none"
        self._peak_kb = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakHostMemory:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
            self.method = "VmHWM"
        except OSError:
            if _status_kb("VmRSS") is not None:
                self.method = "VmRSS sampled every 5 ms"
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak_kb = max(self._peak_kb, _status_kb("VmRSS") or 0)

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._peak_kb = max(self._peak_kb, _status_kb("VmRSS") or 0)
        elif self.method == "VmHWM":
            self._peak_kb = _status_kb("VmHWM") or 0
        self.peak_mb = self._peak_kb / 1024 if self._peak_kb else None


def peak_gpu_memory_mb(device: torch.device) -> float | None:
    """PyTorch's peak allocated GPU memory since the last reset (None on CPU). Memory that ONNX
    Runtime or TensorRT allocate themselves is not seen by PyTorch's allocator."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
