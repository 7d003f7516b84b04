"""``build_engine``: ONNX file → verified FP16/FP32 TensorRT engine with a JSON sidecar.

The order matters: decide everything (profiles, precision route, sizes) before TensorRT runs;
build; read the layer precisions back from the engine and refuse to call it FP16 unless its
convolutions are; run the accuracy gate against ONNX Runtime at sizes across every profile; and
only then write the engine and its sidecar, atomically and in an order that never shows an
engine beside a sidecar of another build (`publish_engine`). A failed build or gate leaves no
file. An ONNX file whose export failed verification, or whose verification record is missing or
does not match, is refused before any of it unless ``allow_unverified``; the sidecar carries the
file's verification record on.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._device import cuda_index, on_requested_gpu
from .._gate import regular_file
from .._io import atomic_write_bytes, sha256_file
from .._progress import Progress
from ..errors import FCNError
from ..export.metadata import OnnxMetadata, check_verified, read_onnx_metadata
from ..meta import ENGINE_SUFFIXES
from .gate import CPU_GATE_PIXELS, GateRow, compare_outputs, format_gate, gate_jobs, gate_passed
from .layer_info import precision_problem
from .plan import BuildPlan, check_int8_target, check_opt_level, workspace_bytes
from .profiles import Profile, default_profiles, validate_profiles
from .sidecar import EngineMetadata, publish_engine, read_sidecar, same_build, sidecar_path
from .versions import parse_trt_version, precision_route

__all__ = [
    "ENGINE_SUFFIXES",
    "EngineGateError",
    "EngineReport",
    "build_engine",
    "reusable_engine",
    "timing_cache_path",
]

log = logging.getLogger(__name__)


@dataclass
class EngineReport:
    """What `build_engine` built, how precise it really is and how it compared with ONNX Runtime."""

    path: Path | None  # None when the gate failed (nothing was written)
    metadata: EngineMetadata
    gate_rows: list[GateRow] = field(default_factory=list)
    gate_threshold: float | None = None  # None: gate skipped

    @property
    def passed(self) -> bool:
        return self.gate_threshold is None or gate_passed(self.gate_rows)

    def summary(self) -> str:
        m = self.metadata
        lines = [
            f"engine: {self.path or '(not written)'}",
            f"TensorRT {m.tensorrt_version} on {m.gpu_name} "
            f"(sm_{m.compute_capability[0]}{m.compute_capability[1]}), built in "
            f"{m.build_seconds:.1f} s, {m.builder.get('route', '')}",
            f"precision: {m.layers.describe()}",
            "profiles (min / opt / max, NxCxHxW): " + "; ".join(str(p) for p in m.profiles),
        ]
        if self.gate_threshold is None:
            lines.append("accuracy gate: skipped (--no-gate)")
        else:
            lines.append("accuracy gate against ONNX Runtime:")
            lines.append(format_gate(self.gate_rows, self.gate_threshold))
        return "\n".join(lines)


class EngineGateError(FCNError):
    """The engine built but failed the accuracy gate; ``report`` holds the rows. Nothing was
    written."""

    def __init__(self, message: str, report: EngineReport) -> None:
        super().__init__(message)
        self.report = report


def _check_paths(onnx_path: Path, engine_path: Path) -> None:
    regular_file(onnx_path, "ONNX file", "export one with fcn-export first")
    if engine_path.suffix.lower() not in ENGINE_SUFFIXES:
        raise FCNError(
            f"engine path {engine_path} must end in {' or '.join(ENGINE_SUFFIXES)} so runners "
            "recognize it"
        )
    if engine_path.parent and not engine_path.parent.is_dir():
        raise FCNError(
            f"cannot write {engine_path}: folder {engine_path.parent} does not exist (create it "
            "first)"
        )


def _node_ops(onnx_path: Path) -> dict[str, str]:
    """ONNX node name → op type: identifies the convolutions inside Myelin layers exactly."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return {node.name: node.op_type for node in graph.node if node.name}


def _reference_session(onnx_path: Path, device: torch.device) -> tuple[Any, bool]:
    """ONNX Runtime on the engine's GPU when onnxruntime-gpu can run there (large gate shapes),
    else the CPU; and whether it is on the GPU. A CUDA session that fell back to the CPU is
    refused, not silently used."""
    from ..export.ort import cuda_provider_problem, cuda_providers, ort_session, require_providers

    cuda = cuda_provider_problem(cuda_index(device)) is None
    providers = cuda_providers(cuda_index(device)) if cuda else None
    session = ort_session(onnx_path, providers=providers)
    require_providers(session, providers)
    return session, cuda


def run_gate(
    executor: Any,
    onnx_path: Path,
    meta: OnnxMetadata,
    profiles: Sequence[Profile],
    threshold: float,
    seed: int = 0,
    progress: bool = True,
) -> list[GateRow]:
    """The engine against ONNX Runtime on image-like inputs at `gate_shapes` of every profile."""
    from ..export.graph import synthetic_images
    from ..export.ort import ort_run

    session, on_gpu = _reference_session(onnx_path, executor.device)
    rng = np.random.default_rng(seed)
    jobs = gate_jobs(profiles, None if on_gpu else CPU_GATE_PIXELS)
    if not on_gpu and jobs != gate_jobs(profiles):
        log.info(
            "the accuracy gate's reference runs on the CPU (no ONNX Runtime CUDA provider here): "
            "sizes over %d pixels per input are checked scaled down to it",
            CPU_GATE_PIXELS,
        )
    bar = Progress(len(jobs), "accuracy gate", unit="size") if progress else None
    rows = []
    for index, (n, _, h, w) in jobs:
        images = synthetic_images(n, h, w, rng)
        x = images if meta.io == "image" else meta.info.preprocessing.apply(images)
        x = x if meta.io == "image" else x.astype(np.float16 if meta.fp16_io else np.float32)
        reference = ort_run(session, x)
        # forced: profiles overlap (the default two share their min shape), and a row must
        # name the profile that really ran, which the executor reports back
        x_dev = torch.from_numpy(x).to(executor.device).contiguous()
        out = executor.run(x_dev, profile=index).cpu().numpy()
        rows.append(
            compare_outputs(
                reference, out, meta.io, threshold, profile=executor.profile, shape=(n, 3, h, w)
            )
        )
        if bar is not None:
            bar.update(1, size=f"{n}x{h}x{w}", labels=f"{rows[-1].label_agreement:.4f}")
    if bar is not None:
        bar.close()
    return rows


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    *,
    profiles: Sequence[Profile] | None = None,
    precision: str | None = None,
    workspace_gib: float = 4.0,
    opt_level: int = 3,
    timing_cache: str | os.PathLike[str] | None = None,
    gate: bool = True,
    gate_threshold: float = 0.99,
    progress: bool = True,
    device: str | None = None,
    allow_unverified: bool = False,
) -> EngineReport:
    """Build a dynamic-shape engine from an fcn-export ONNX file, verify it, write it and its
    sidecar.

    ``profiles``: default `default_profiles` of the export bounds. ``precision``: default the ONNX
    graph's (FP16 comes from an FP16 export on TensorRT 10.12+). ``timing_cache``: loaded if it
    exists and saved after the build. Raises `EngineGateError` (nothing written) below
    ``gate_threshold`` label agreement. ``allow_unverified``: build from an ONNX file whose
    export failed verification or whose verification record does not match (the engine's
    sidecar says so, and loaders refuse it in turn unless told).
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    _check_paths(onnx_path, engine_path)
    meta = read_onnx_metadata(onnx_path)
    check_verified(meta, onnx_path, allow_unverified)
    profiles = list(profiles) if profiles else default_profiles(meta.bounds)
    validate_profiles(profiles, meta.bounds)
    precision = precision or meta.precision
    check_int8_target(meta, precision)
    if not 0.0 < gate_threshold <= 1.0:
        raise FCNError(
            f"gate_threshold must be in (0, 1], got {gate_threshold}", param="gate_threshold"
        )
    cache_path = Path(timing_cache) if timing_cache is not None else None
    cache_bytes = (
        cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else None
    )

    from . import compile as trt_compile  # imports TensorRT: FCNError where it is missing
    from .executor import EngineExecutor, cuda_device, device_identity
    from .trt_base import create_builder

    version = trt_compile.tensorrt_version()
    route = precision_route(
        parse_trt_version(version), precision, meta.precision, trt_compile.has_fp16_flag()
    )
    # TensorRT's own CUDA initialisation first (its failure names the driver), on the GPU asked
    # for: a Builder made on the current GPU would open a CUDA context there too
    with on_requested_gpu(device):
        create_builder()
    dev = cuda_device(device)
    plan = BuildPlan(
        meta.input_name,
        meta.io,
        tuple(profiles),
        route,
        workspace_bytes(workspace_gib),
        check_opt_level(opt_level),
        cache_bytes,
    )
    with torch.cuda.device(dev):
        compiled = trt_compile.compile_engine(onnx_path, plan, progress=progress)
        layers = trt_compile.inspect_layers(
            compiled.serialized, meta.input_name, plan.profile_shapes()[0][1], _node_ops(onnx_path)
        )
    problem = precision_problem(precision, layers)
    if problem:  # the silent-FP32 trap (or INT8 without Q/DQ fused): refuse, never mislabel
        raise FCNError(problem)
    if layers.label != precision:
        log.info(
            "note: the engine is labelled %r, not %r: %s",
            layers.label,
            precision,
            layers.describe(),
        )
    gpu_name, capability = device_identity(dev)
    engine_meta = EngineMetadata(
        tensorrt_version=version,
        gpu_name=gpu_name,
        compute_capability=capability,
        profiles=profiles,
        precision=layers.label,
        requested_precision=precision,
        layers=layers,
        onnx=meta,
        onnx_sha256=sha256_file(onnx_path),
        engine_sha256=hashlib.sha256(compiled.serialized).hexdigest(),
        build_seconds=compiled.build_seconds,
        built_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        builder={
            "route": route.note,
            "workspace_gib": workspace_gib,
            "opt_level": opt_level,
            "timing_cache": str(cache_path) if cache_path else None,
            "timing_cache_loaded": compiled.timing_cache_used,
        },
    )
    report = EngineReport(None, engine_meta, gate_threshold=gate_threshold if gate else None)
    if gate:
        executor = EngineExecutor(compiled.serialized, engine_meta, dev)
        try:
            report.gate_rows = run_gate(
                executor, onnx_path, meta, profiles, gate_threshold, progress=progress
            )
        finally:
            executor.close()
        engine_meta.gate = {
            "threshold": gate_threshold,
            "reference": "onnxruntime",
            "rows": [r.to_dict() for r in report.gate_rows],
        }
        if not report.passed:
            worst = min(report.gate_rows, key=lambda r: r.label_agreement)
            raise EngineGateError(
                f"engine failed the accuracy gate: {worst.label_agreement:.2%} label agreement "
                f"with ONNX Runtime at {'x'.join(map(str, worst.shape))} (profile "
                f"{worst.profile}), below {gate_threshold:.2%}; nothing was written",
                report,
            )
    publish_engine(engine_path, compiled.serialized, engine_meta)
    if cache_path is not None:
        atomic_write_bytes(cache_path, compiled.timing_cache)
    report.path = engine_path
    size_mb = len(compiled.serialized) / 1e6
    log.info("wrote %s (%.1f MB) and %s", engine_path, size_mb, sidecar_path(engine_path).name)
    return report


def _gpu_here(device: str | None) -> tuple[str, str, tuple[int, int]]:
    """TensorRT release, GPU name and compute capability of ``device`` (imports TensorRT)."""
    from . import compile as trt_compile
    from .executor import cuda_device, device_identity

    gpu_name, capability = device_identity(cuda_device(device))
    return trt_compile.tensorrt_version(), gpu_name, capability


def reusable_engine(
    engine_path: str | os.PathLike[str],
    onnx_path: str | os.PathLike[str],
    profiles: Sequence[Profile],
    device: str | None = None,
) -> bool:
    """Whether ``engine_path`` already holds the engine a build from ``onnx_path`` with
    ``profiles`` would make on ``device`` with this TensorRT (its sidecar and bytes say so)."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        return False
    try:
        meta = read_sidecar(engine_path)
    except FCNError:
        return False
    version, gpu_name, capability = _gpu_here(device)
    onnx_sha = sha256_file(onnx_path)
    return same_build(
        meta, onnx_sha, list(profiles), version, gpu_name, capability
    ) and meta.engine_sha256 == sha256_file(engine_path)


def timing_cache_path(folder: str | os.PathLike[str], device: str | None = None) -> Path:
    """``folder/timing-<gpu>-trt<release>.cache``: one timing cache per GPU model and TensorRT
    release, so a folder shared between machines never hands one GPU's timings to another."""
    version, gpu_name, _ = _gpu_here(device)
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-")
    return Path(folder) / f"timing-{slug}-trt{version}.cache"
