"""ONNX Runtime against PyTorch on realistic inputs, at input sizes chosen fresh each run.

Dynamic-shape bugs hide at the sizes nobody tried (a crop off by one at odd sizes, a degenerate
1×1 input, batch > 1), so every run draws new ones from a printed seed that reproduces it. Inputs
are image-like (`synthetic_images`) passed through the checkpoint's own preprocessing, because
white noise exercises neither the value range FP16 must hold nor realistic label boundaries.

The PyTorch side (`reference_probes`) and the ONNX Runtime side (`compare_onnx`) are separate
steps, so an export computes the references while it holds the PyTorch net anyway, and frees
the net before ONNX Runtime loads the file. ONNX Runtime runs the file with its graph rewrites
except the NCHWc layout one (`VERIFY_DISABLED_OPTIMIZERS`): that rewrite copies every
convolution weight into a blocked memory layout while the originals are still held (1.3 GB more,
transiently, for a full FCN-8s), and it changes how ONNX Runtime lays out memory, not what the
graph computes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .._progress import Progress
from ..meta import SizeBounds
from ..metrics import agreement_passes
from .graph import synthetic_images
from .metadata import OnnxMetadata
from .ort import ort_run, ort_session

__all__ = [
    "FP16_LABEL_AGREEMENT",
    "FP32_LABEL_AGREEMENT",
    "FP32_REL_TOL",
    "INT8_LABEL_AGREEMENT",
    "VERIFY_DISABLED_OPTIMIZERS",
    "Probe",
    "VerifyRow",
    "choose_sizes",
    "compare_onnx",
    "format_rows",
    "reference_probes",
    "verify_onnx",
]

FP32_REL_TOL = 1e-4  # max abs error / max abs reference, FP32 logits
FP32_LABEL_AGREEMENT = 0.999  # FP32 image mode (labels only; near-ties may flip a pixel)
FP16_LABEL_AGREEMENT = 0.99
# INT8 against FP32 on held-out images like the ones it was calibrated for (default). The
# random-size probes are not held to it: they test shapes and values, not accuracy, because a
# net calibrated for scenes need not be accurate on random pixels (91-97% on a trained net whose
# held-out scenes agree on 99%+).
INT8_LABEL_AGREEMENT = 0.98
VERIFY_DISABLED_OPTIMIZERS = ("NchwcTransformer",)


@dataclass
class VerifyRow:
    """ONNX Runtime against FP32 PyTorch at one input shape (N, H, W)."""

    shape: tuple[int, int, int]
    max_abs_error: float | None  # None in image mode (labels only)
    rel_error: float | None  # max abs error / max abs reference logit
    label_agreement: float  # share of pixels with the same class
    passed: bool
    note: str = ""


def choose_sizes(
    bounds: SizeBounds, rng: np.random.Generator, large_side: int = 512
) -> list[tuple[int, int, int]]:
    """Fresh (N, H, W) triples: tiny, odd non-square, batch > 1, and one large one, within
    bounds."""
    max_h, max_w = bounds.max_hw or (4096, 4096)
    max_n = bounds.max_batch or 4

    def fit(n: int, h: int, w: int) -> tuple[int, int, int]:
        return min(n, max_n), max(1, min(h, max_h)), max(1, min(w, max_w))

    odd = lambda lo, hi: int(rng.integers(lo, hi)) | 1  # noqa: E731
    sizes = [
        fit(1, 1, int(rng.integers(1, 8))),  # degenerate: one row
        fit(1, odd(17, 99), odd(101, 199)),  # odd, non-square
        fit(
            int(rng.integers(2, 4)), int(rng.integers(40, 96)), int(rng.integers(40, 96))
        ),  # batch > 1
        fit(
            1,
            int(rng.integers(large_side * 3 // 4, large_side)),
            int(rng.integers(large_side // 2, large_side)),
        ),
    ]
    return list(dict.fromkeys(sizes))


@dataclass
class Probe:
    """One verification input, as the ONNX graph takes it, and FP32 PyTorch's logits for it."""

    shape: tuple[int, int, int]  # N, H, W
    inputs: np.ndarray  # uint8 images (image I/O) or the preprocessed batch in the graph's dtype
    reference: np.ndarray  # FP32 logits, N×C×H×W


def reference_probes(
    model: nn.Module,
    meta: OnnxMetadata,
    sizes: Sequence[tuple[int, int, int]],
    rng: np.random.Generator,
    progress: bool = True,
) -> list[Probe]:
    """Image-like inputs at ``sizes`` (N, H, W) and the FP32 PyTorch ``model``'s logits for them."""
    in_dtype = np.float16 if meta.fp16_io else np.float32
    probes = []
    for n, h, w in _each_size(sizes, "PyTorch reference", progress):
        images = synthetic_images(n, h, w, rng)
        x = meta.info.preprocessing.apply(images)
        with torch.inference_mode():
            reference = model.eval()(torch.from_numpy(x)).numpy()
        inputs = images if meta.io == "image" else x.astype(in_dtype)
        probes.append(Probe((n, h, w), inputs, reference))
    return probes


def compare_onnx(
    path: str | os.PathLike[str],
    meta: OnnxMetadata,
    probes: Sequence[Probe],
    threads: int | None = None,
    progress: bool = True,
    model: Any | None = None,
) -> list[VerifyRow]:
    """One row per probe: the ONNX file under ONNX Runtime against its PyTorch reference
    (``model``: as for `ort_session`).

    INT8 rows pass on the right shape with finite values; their label agreement is shown, and
    INT8 accuracy is judged on held-out images (`fcn_deploy.export.quantize.int8_accuracy`).
    """
    session = ort_session(
        path, threads=threads, disabled_optimizers=VERIFY_DISABLED_OPTIMIZERS, model=model
    )
    rows = []
    shapes = _each_size([probe.shape for probe in probes], "verifying", progress)
    for shape, probe in zip(shapes, probes, strict=True):
        rows.append(_compare(probe.reference, ort_run(session, probe.inputs), meta, shape))
    return rows


def _each_size(
    sizes: Sequence[tuple[int, int, int]], label: str, progress: bool
) -> Iterator[tuple[int, int, int]]:
    """``sizes`` one by one, each counted on a progress bar named ``label`` when ``progress``."""
    bar = Progress(len(sizes), label, unit="size") if progress else None
    try:
        for n, h, w in sizes:
            yield n, h, w
            if bar is not None:
                bar.update(1, size=f"{n}x{h}x{w}")
    finally:
        if bar is not None:
            bar.close()


def verify_onnx(
    path: str | os.PathLike[str],
    model: nn.Module,
    meta: OnnxMetadata,
    sizes: Sequence[tuple[int, int, int]],
    rng: np.random.Generator,
    threads: int | None = None,
    progress: bool = True,
) -> list[VerifyRow]:
    """One row per size: the ONNX file under ONNX Runtime against the FP32 PyTorch ``model``
    (`reference_probes`, then `compare_onnx`)."""
    probes = reference_probes(model, meta, sizes, rng, progress)
    return compare_onnx(path, meta, probes, threads, progress)


def label_threshold(precision: str, io: str) -> float | None:
    """The label agreement a row must reach (None: FP32 tensor mode, held to relative error;
    INT8, held to shape and finite values)."""
    if precision == "fp16":
        return FP16_LABEL_AGREEMENT
    if precision == "int8":
        return None
    return FP32_LABEL_AGREEMENT if io == "image" else None


def _compare(
    reference: np.ndarray,
    out: np.ndarray,
    meta: OnnxMetadata,
    shape: tuple[int, int, int],
) -> VerifyRow:
    ref_labels = reference.argmax(axis=1)
    peak = float(np.abs(reference).max())
    note = (
        ""
        if peak > 0
        else "reference is all zeros (untrained score layers?): agreement says nothing"
    )
    threshold = label_threshold(meta.precision, meta.io)
    if meta.io == "image":
        same_shape = out.shape == ref_labels.shape
        agreement = float((out == ref_labels).mean()) if same_shape else 0.0
        ok = same_shape and agreement_passes(agreement, ref_labels.size, threshold or 0.0)
        return VerifyRow(shape, None, None, agreement, ok, note)
    out = out.astype(np.float32)
    err = float(np.abs(out - reference).max()) if out.shape == reference.shape else float("inf")
    rel = err / peak if peak > 0 else (0.0 if err == 0 else float("inf"))
    agreement = (
        float((out.argmax(axis=1) == ref_labels).mean()) if out.shape == reference.shape else 0.0
    )
    if not np.isfinite(out).all():
        note = "output has NaN/inf (FP16 overflow?)"
    if meta.precision == "int8":
        ok = out.shape == reference.shape
    elif threshold is not None:
        ok = agreement_passes(agreement, ref_labels.size, threshold)
    else:
        ok = rel <= FP32_REL_TOL
    return VerifyRow(shape, err, rel, agreement, bool(ok and np.isfinite(out).all()), note)


def format_rows(rows: Sequence[VerifyRow], meta: OnnxMetadata) -> str:
    """The verification table, with the tolerance each row was held to."""
    threshold = label_threshold(meta.precision, meta.io)
    if meta.precision == "int8":
        rule = "right shape, finite values; accuracy is judged on held-out images"
    elif threshold is not None:
        rule = f"label agreement >= {threshold:.1%}"
    else:
        rule = f"relative error <= {FP32_REL_TOL:g}"
    lines = [
        f"{'N×H×W':>14}  {'max abs err':>11}  {'rel err':>9}  {'labels':>8}  result   (pass: "
        f"{rule})"
    ]
    for r in rows:
        n, h, w = r.shape
        err = f"{r.max_abs_error:11.3g}" if r.max_abs_error is not None else f"{'-':>11}"
        rel = f"{r.rel_error:9.2e}" if r.rel_error is not None else f"{'-':>9}"
        shape, result = f"{n}×{h}×{w}", "ok" if r.passed else "FAIL"
        lines.append(
            f"{shape:>14}  {err}  {rel}  {r.label_agreement:8.4%}  {result}  {r.note}".rstrip()
        )
    return "\n".join(lines)
