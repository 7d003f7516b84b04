"""The accuracy gate's arithmetic: which sizes to check and whether an engine passes.

Dynamic-shape engines go wrong at particular shapes (outputs sized from the profile instead of
the context are right only at the max shape; a tactic may fail at odd sizes), so every profile
is checked at its min, opt and max and at an odd size in between, against ONNX Runtime running the
same ONNX file. An engine passes when, at every size, the share of pixels whose label matches is
at least the threshold (or only one pixel differs) and the output is finite; max absolute and
relative errors are reported.

Where ONNX Runtime's CUDA provider is missing, the reference runs on the CPU, where a full FCN-8s
at the default profile's 4096×4096 takes minutes per size: there every size is brought within
`CPU_GATE_PIXELS` (batch × H × W), keeping the aspect and the profile's minimum, and the rows
name the shapes really checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np

from ..metrics import agreement_passes
from .profiles import Profile, Shape, format_shape

__all__ = [
    "CPU_GATE_PIXELS",
    "GateRow",
    "compare_outputs",
    "format_gate",
    "gate_jobs",
    "gate_passed",
    "gate_shapes",
]

# the most pixels (batch × H × W) one gate input has when the reference runs on the CPU: a full
# FCN-8s there is ~1.1 TFLOP per megapixel, seconds on a GPU machine's cores, not minutes
CPU_GATE_PIXELS = 1024 * 1024


@dataclass(frozen=True)
class GateRow:
    """The engine against the reference at one NCHW input shape of one profile."""

    profile: int
    shape: Shape
    max_abs_error: float | None  # None in image mode (labels only)
    rel_error: float | None  # max abs error / max abs reference
    label_agreement: float
    finite: bool
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _odd_between(lo: int, hi: int) -> int:
    """An odd value strictly inside (lo, hi) when there is one, else the closest odd value in
    range."""
    mid = (lo + hi) // 2 | 1
    return mid if lo <= mid <= hi else (lo + hi) // 2


def _within(shape: Shape, profile: Profile, max_pixels: int) -> Shape:
    """``shape`` with H and W scaled down (same aspect, not below the profile's minimum) until
    batch × H × W is at most ``max_pixels``; unchanged when it already is."""
    n, c, h, w = shape
    if n * h * w <= max_pixels:
        return shape
    scale = (max_pixels / (n * h * w)) ** 0.5
    _, _, h0, w0 = profile.min
    return (n, c, max(h0, int(h * scale)), max(w0, int(w * scale)))


def gate_shapes(profile: Profile, max_pixels: int | None = None) -> list[Shape]:
    """min, opt, max and an odd non-square size in between (batch of the opt), without repeats;
    each brought within ``max_pixels`` (batch × H × W) when given (a CPU reference)."""
    n = profile.opt[0]
    (_, _, h0, w0), (_, _, h1, w1) = profile.min, profile.max
    odd = (n, 3, _odd_between(h0, h1), _odd_between(w0, (w0 + w1) // 2 if w1 - w0 > 2 else w1))
    shapes = [profile.min, profile.opt, profile.max, odd]
    if max_pixels is not None:
        shapes = [_within(s, profile, max_pixels) for s in shapes]
    return list(dict.fromkeys(shapes))


def gate_jobs(
    profiles: Sequence[Profile], max_pixels: int | None = None
) -> list[tuple[int, Shape]]:
    """(profile, shape) for each profile at its own `gate_shapes`; each run is forced to that
    profile.

    Shapes repeat across profiles on purpose (the default two share their min): each profile's
    kernels are checked at each of its sizes.
    """
    return [(i, s) for i, p in enumerate(profiles) for s in gate_shapes(p, max_pixels)]


def compare_outputs(
    reference: np.ndarray,
    output: np.ndarray,
    io: str,
    threshold: float,
    profile: int = 0,
    shape: Shape | None = None,
) -> GateRow:
    """One gate row: logits (tensor mode, N×C×H×W) or labels (image mode, N×H×W) against the
    reference."""
    shape = shape or cast(Shape, tuple(reference.shape))
    if output.shape != reference.shape:
        return GateRow(profile, shape, None, None, 0.0, bool(np.isfinite(output).all()), False)
    if io == "image":
        agreement = float((output == reference).mean())
        ok = agreement_passes(agreement, reference.size, threshold)
        return GateRow(profile, shape, None, None, agreement, True, ok)
    out, ref = output.astype(np.float32), reference.astype(np.float32)
    finite = bool(np.isfinite(out).all())
    err = float(np.abs(out - ref).max()) if out.size else 0.0
    peak = float(np.abs(ref).max()) if ref.size else 0.0
    rel = err / peak if peak > 0 else (0.0 if err == 0 else float("inf"))
    labels = out.argmax(axis=1) == ref.argmax(axis=1)
    agreement = float(labels.mean())
    ok = finite and agreement_passes(agreement, labels.size, threshold)
    return GateRow(profile, shape, err, rel, agreement, finite, ok)


def gate_passed(rows: Sequence[GateRow]) -> bool:
    """All rows passed (and there was at least one)."""
    return bool(rows) and all(r.passed for r in rows)


def format_gate(rows: Sequence[GateRow], threshold: float) -> str:
    """The gate table: one line per profile and size, with the rule it was held to."""
    lines = [
        f"{'profile':>7}  {'N×C×H×W':>16}  {'max abs err':>11}  {'rel err':>9}  {'labels':>8}  "
        f"result   (pass: labels >= {threshold:.2%}, finite)"
    ]
    for r in rows:
        err = f"{r.max_abs_error:11.3g}" if r.max_abs_error is not None else f"{'-':>11}"
        rel = f"{r.rel_error:9.2e}" if r.rel_error is not None else f"{'-':>9}"
        note = "" if r.finite else "  NaN/inf in output"
        lines.append(
            f"{r.profile:>7}  {format_shape(r.shape):>16}  {err}  {rel}  {r.label_agreement:8.4%}  "
            f"{'ok' if r.passed else 'FAIL'}{note}"
        )
    return "\n".join(lines)
