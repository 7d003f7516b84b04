"""The JSON sidecar beside every engine (``model.engine`` → ``model.engine.json``).

A serialized engine is opaque and tied to one TensorRT version and one GPU architecture; the
runtime also needs the model's classes, palette, preprocessing and I/O mode. All of that travels
in a small human-readable JSON file written (atomically) with the engine, so ``cat`` tells what an
engine is, and a runtime refuses a mismatched engine with a message instead of a crash. The ONNX
file's metadata comes along whole, its verification record included: an engine built from an
export that failed verification, or from one whose record no longer matched, says so and is
refused like the file (`fcn_deploy.export.check_verified`).

`publish_engine` puts an engine and its sidecar in place so that a reader never finds an engine
beside a missing sidecar or one written for another build; the sidecar's ``engine_sha256`` lets
the executor refuse engine bytes that are not the ones it describes (`check_engine_bytes`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._gate import read_regular
from .._io import atomic_path, atomic_write_text
from ..errors import FCNError
from ..export.metadata import PREFIX, OnnxMetadata
from .layer_info import LayerSummary
from .profiles import Profile
from .versions import release_key

__all__ = [
    "SIDECAR_FORMAT",
    "EngineMetadata",
    "check_compatible",
    "check_engine_bytes",
    "publish_engine",
    "read_sidecar",
    "same_build",
    "sidecar_path",
    "write_sidecar",
]

SIDECAR_FORMAT = 1
SIDECAR_BYTES = 16 << 20  # far above any sidecar written (layer summaries of a large net)

log = logging.getLogger(__name__)


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    """``model.engine`` → ``model.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


@dataclass
class EngineMetadata:
    """What a built engine is, where it came from and what it may run on."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    profiles: list[Profile]
    precision: str  # what the inspector found: "fp16", "mixed", "fp32" or "unknown"
    requested_precision: str
    layers: LayerSummary
    onnx: OnnxMetadata
    onnx_sha256: str  # of the ONNX file the engine was built from
    engine_sha256: str
    build_seconds: float
    built_at: str  # ISO 8601, UTC
    builder: dict[str, Any] = field(
        default_factory=dict
    )  # workspace, opt level, route, timing cache
    gate: dict[str, Any] | None = None  # the accuracy gate's threshold and rows, None if skipped

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "fcn-deploy engine sidecar",
            "format_version": SIDECAR_FORMAT,
            "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": list(self.compute_capability),
            "profiles": [p.to_dict() for p in self.profiles],
            "precision": self.precision,
            "requested_precision": self.requested_precision,
            "layers": self.layers.to_dict(),
            "onnx": {k.removeprefix(PREFIX): v for k, v in self.onnx.to_props().items()},
            "onnx_sha256": self.onnx_sha256,
            "engine_sha256": self.engine_sha256,
            "build_seconds": round(self.build_seconds, 3),
            "built_at": self.built_at,
            "builder": self.builder,
            "gate": self.gate,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineMetadata:
        version = int(d.get("format_version", 0))
        if version > SIDECAR_FORMAT:
            raise ValueError(
                f"sidecar format {version} is newer than this fcn-deploy reads ({SIDECAR_FORMAT})"
            )
        cc = d["compute_capability"]
        return cls(
            tensorrt_version=str(d["tensorrt_version"]),
            gpu_name=str(d["gpu_name"]),
            compute_capability=(int(cc[0]), int(cc[1])),
            profiles=[Profile.from_dict(p) for p in d["profiles"]],
            precision=str(d["precision"]),
            requested_precision=str(d["requested_precision"]),
            layers=LayerSummary.from_dict(d["layers"]),
            onnx=OnnxMetadata.from_props({PREFIX + k: v for k, v in d["onnx"].items()}),
            onnx_sha256=str(d["onnx_sha256"]),
            engine_sha256=str(d["engine_sha256"]),
            build_seconds=float(d["build_seconds"]),
            built_at=str(d["built_at"]),
            builder=dict(d.get("builder") or {}),
            gate=d.get("gate"),
        )


def _sidecar_text(meta: EngineMetadata) -> str:
    return json.dumps(meta.to_dict(), indent=2) + "\n"


def write_sidecar(engine_path: str | os.PathLike[str], meta: EngineMetadata) -> Path:
    """Write ``<engine>.json`` atomically; returns its path."""
    path = sidecar_path(engine_path)
    atomic_write_text(path, _sidecar_text(meta))
    return path


def publish_engine(
    engine_path: str | os.PathLike[str], serialized: bytes, meta: EngineMetadata
) -> None:
    """Write the engine ``serialized`` and its sidecar ``meta`` to ``engine_path`` and beside it.

    Both are written whole under temp names first (a full disk leaves the old pair as it was).
    Then, in this order: the old engine is removed, the new sidecar renamed into place, the new
    engine renamed into place. A reader between two steps finds no engine (its sidecar alone is
    never used), and the engine appears only once the sidecar beside it describes it. A crash
    between the steps leaves no engine under the name, never an engine with a wrong or missing
    sidecar. The one race left, a reader that read the old sidecar just before and the new
    engine just after, is caught by ``engine_sha256`` (`check_engine_bytes`).
    """
    engine_path = Path(engine_path)
    with atomic_path(engine_path) as engine_tmp, atomic_path(sidecar_path(engine_path)) as tmp:
        engine_tmp.write_bytes(serialized)
        tmp.write_text(_sidecar_text(meta), encoding="utf-8")
        engine_path.unlink(missing_ok=True)
    # leaving the block renamed the sidecar (inner block) first, then the engine


def check_engine_bytes(meta: EngineMetadata, engine_sha256: str) -> None:
    """Refuse engine bytes (by their sha256) that are not the engine ``meta`` describes."""
    if engine_sha256 != meta.engine_sha256:
        raise FCNError(
            f"the engine does not match its sidecar (sha256 {engine_sha256[:12]}…, the sidecar "
            f"says {meta.engine_sha256[:12]}…): the .json beside it describes another build, or "
            "the engine was replaced while it was read; rebuild it (fcn-export MODEL.onnx "
            "--engine ...)"
        )


def read_sidecar(engine_path: str | os.PathLike[str]) -> EngineMetadata:
    """The sidecar of ``engine_path``; FCNError naming the file and the fix when missing or
    damaged."""
    path = sidecar_path(engine_path)
    if not path.exists():
        raise FCNError(
            f"{path} is missing: fcn-deploy engines carry a JSON sidecar with their classes, "
            "profiles and TensorRT version; rebuild the engine with fcn-export --engine (or "
            "build_engine)"
        )
    text = read_regular(path, "sidecar file", SIDECAR_BYTES, " (sidecars are at most 16 MB)")
    try:
        return EngineMetadata.from_dict(json.loads(text.decode("utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, ValueError, TypeError,
            IndexError, RecursionError) as e:  # fmt: skip
        raise FCNError(
            f"{path} is damaged or from an incompatible fcn-deploy ({type(e).__name__}: {e}); "
            "rebuild the engine"
        ) from None


def check_compatible(
    meta: EngineMetadata,
    tensorrt_version: str,
    compute_capability: tuple[int, int],
    gpu_name: str = "",
) -> None:
    """Refuse an engine built for another TensorRT release or GPU architecture.

    TensorRT deserializes only engines of its own exact release (major.minor.patch.build: a
    repackaged wheel's ``.post1`` is the same release), and kernels are compiled for one compute
    capability; catching both here gives a message saying to rebuild, instead of a
    deserialization error or a crash deep in the runtime. Another GPU model of the same compute
    capability loads the engine but its kernels were timed elsewhere: a warning, not a refusal.
    """
    if release_key(meta.tensorrt_version) != release_key(tensorrt_version):
        raise FCNError(
            f"this engine was built with TensorRT {meta.tensorrt_version} but TensorRT "
            f"{tensorrt_version} is installed; engines only load in the TensorRT release that "
            "built them: rebuild it from the ONNX file (fcn-export MODEL.onnx --engine ...)"
        )
    if tuple(meta.compute_capability) != tuple(compute_capability):
        here = f"{gpu_name} " if gpu_name else ""
        raise FCNError(
            f"this engine was built for {meta.gpu_name} (compute capability "
            f"{meta.compute_capability[0]}.{meta.compute_capability[1]}) "
            f"but this GPU is {here}(compute capability "
            f"{compute_capability[0]}.{compute_capability[1]}); rebuild the engine on this machine "
            "(fcn-export MODEL.onnx --engine ...)"
        )
    if gpu_name and meta.gpu_name and gpu_name != meta.gpu_name:
        log.warning(
            "this engine was built on %s and runs on %s (same compute capability): it works, but "
            "its kernels were chosen on the other GPU; rebuild it here for the best speed",
            meta.gpu_name,
            gpu_name,
        )


def same_build(
    meta: EngineMetadata,
    onnx_sha256: str,
    profiles: list[Profile],
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
) -> bool:
    """Whether the engine ``meta`` describes is what a build now would make: the same ONNX file,
    profiles, TensorRT release and GPU model (the kernels were timed on it). Then a benchmark or
    check reuses it instead of building again."""
    return (
        meta.onnx_sha256 == onnx_sha256
        and list(meta.profiles) == list(profiles)
        and release_key(meta.tensorrt_version) == release_key(tensorrt_version)
        and meta.gpu_name == gpu_name
        and tuple(meta.compute_capability) == tuple(compute_capability)
    )
