"""What a client and `fcn-serve` agree on: model names, tensor names and the published metadata.

Two Triton models are served from one `Segmenter`:

- ``<name>`` takes ``image`` (UINT8 ``[-1, -1, 3]`` BGR, batch dimension first) and returns
  ``labels`` (UINT8 ``[-1, -1]``); Triton's dynamic batcher merges requests of equal size.
- ``<name>_encoded`` takes ``image_bytes`` (BYTES ``[1]``: a JPEG/PNG file as it is) and returns
  ``labels``. It is not batched: Triton reports an error for a whole batch, so a batched
  undecodable file would fail the good files it was batched with.

Both publish the model's class names, palette, preprocessing, size bounds, precision and
verification status as ``parameters`` in their Triton model config (``GET
/v2/models/<name>/config``), one JSON string per key. ``max_sizes`` lists the largest image of
each size range served (an engine's optimization profiles need not nest): an image is served
when it fits one of them; ``max_hw`` is the box around them all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..meta import ModelInfo, SizeBounds

if TYPE_CHECKING:
    from ..api import Segmenter
    from ..runtime import Runner

__all__ = [
    "ENCODED_SUFFIX",
    "IMAGE_BYTES_INPUT",
    "IMAGE_INPUT",
    "LABELS_OUTPUT",
    "PARAMETER_PREFIX",
    "ServedModel",
    "verification_status",
]

IMAGE_INPUT = "image"
IMAGE_BYTES_INPUT = "image_bytes"
LABELS_OUTPUT = "labels"
ENCODED_SUFFIX = "_encoded"
PARAMETER_PREFIX = "fcn_deploy."
UNKNOWN = "unknown (not published by this server)"  # keys an older fcn-serve lacks


def verification_status(runner: Runner) -> str:
    """What the export's verification record says of the model file a runner holds, in words."""
    from ..engine.sidecar import EngineMetadata
    from ..export import OnnxMetadata
    from ..export.metadata import NOT_VERIFIED, PASSED, RECORD_MISMATCH, UNRECORDED

    meta = getattr(runner, "metadata", None)
    if isinstance(meta, EngineMetadata):  # an engine: the ONNX file it was built from
        meta = meta.onnx
    if not isinstance(meta, OnnxMetadata):
        return "not an export (a PyTorch checkpoint has nothing to verify)"
    status = meta.verification or RECORD_MISMATCH
    if status == PASSED:
        return "passed at export (ONNX Runtime against PyTorch)"
    if status == NOT_VERIFIED:
        return "not verified at export"
    if status == UNRECORDED:
        return "no record (an earlier fcn-deploy's export, which marked failures only)"
    return f"{status} (loaded with allow_unverified)"


def _served_sizes(value: Any, bounds: SizeBounds) -> tuple[SizeBounds, ...]:
    """The published ``max_sizes`` (a list of ``[height, width]`` or null) as ranges; ValueError
    for anything else."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"max_sizes must be a list, got {value!r}")
    base = {"min_hw": list(bounds.min_hw), "max_batch": bounds.max_batch}
    return tuple(SizeBounds.from_dict({**base, "max_hw": top}) for top in value)


@dataclass(frozen=True)
class ServedModel:
    """What a served model is: its `ModelInfo`, the sizes it accepts and how it runs."""

    info: ModelInfo
    bounds: SizeBounds  # H×W box around every size served; max_batch is the server's
    backend: str  # the Segmenter's runner, e.g. "onnxruntime" or "torch-fp16"
    device: str
    # the ranges served, one per size range of the model (an engine's profiles need not nest):
    # an image is served when one range holds it; empty means ``bounds`` alone
    sizes: tuple[SizeBounds, ...] = ()
    precision: str = UNKNOWN  # "fp32", "fp16", "int8" or an engine's measured "mixed"
    verification: str = UNKNOWN  # `verification_status`

    @classmethod
    def of(
        cls, segmenter: Segmenter, bounds: SizeBounds, sizes: tuple[SizeBounds, ...] = ()
    ) -> ServedModel:
        """What ``segmenter`` serves: images within one of ``sizes`` (``bounds``: their box)."""
        runner = segmenter.runner
        return cls(
            segmenter.info, bounds, runner.name, str(segmenter.device), sizes=sizes,
            precision=runner.precision, verification=verification_status(runner),
        )  # fmt: skip

    @property
    def ranges(self) -> tuple[SizeBounds, ...]:
        """The sizes served, as ranges: an image fits when one of them holds it."""
        return self.sizes or (self.bounds,)

    def to_parameters(self) -> dict[str, str]:
        """Triton model-config ``parameters``: one string per key (JSON where structured)."""
        values: dict[str, Any] = {
            "class_names": self.info.class_names,
            "palette": [list(c) for c in self.info.palette],
            "min_hw": list(self.bounds.min_hw),
            "max_hw": list(self.bounds.max_hw) if self.bounds.max_hw else None,
            "max_batch": self.bounds.max_batch,
            # what an image must fit: one [height, width] per range (null: any size)
            "max_sizes": [list(r.max_hw) if r.max_hw else None for r in self.ranges],
            "info": self.info.to_dict(),
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "verification": self.verification,
        }
        return {PARAMETER_PREFIX + k: json.dumps(v) for k, v in values.items()}

    @classmethod
    def from_parameters(cls, params: Mapping[str, str]) -> ServedModel:
        """Parse `to_parameters` output; KeyError/ValueError when a key is missing or damaged
        (``precision`` and ``verification`` may be missing: an older fcn-serve's)."""
        p = {k[len(PARAMETER_PREFIX) :]: json.loads(v) for k, v in params.items()
             if k.startswith(PARAMETER_PREFIX)}  # fmt: skip
        max_hw = p["max_hw"]
        min_hw = (int(p["min_hw"][0]), int(p["min_hw"][1]))
        bounds = SizeBounds(
            min_hw=min_hw,
            max_hw=(int(max_hw[0]), int(max_hw[1])) if max_hw else None,
            max_batch=p["max_batch"],
        )
        sizes = _served_sizes(p.get("max_sizes"), bounds)  # absent from older servers
        return cls(
            info=ModelInfo.from_dict(p["info"]),
            bounds=bounds,
            backend=str(p["backend"]),
            device=str(p["device"]),
            sizes=sizes,
            precision=str(p.get("precision", UNKNOWN)),
            verification=str(p.get("verification", UNKNOWN)),
        )
