"""What an exported ONNX file says about itself, in its ``metadata_props``.

Everything a runtime needs besides the graph travels inside the file (one key per field, prefixed
``fcn_deploy.``, JSON where structured, so Netron shows it readably): the checkpoint's
`ModelInfo`, the I/O mode, precision, size bounds, tensor names, and where the file came from
(sha256 of the source weights, torch/onnx versions, opset). Readers load the graph without its
weights, so inspecting a 500 MB model costs milliseconds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import describe_file, os_reason
from ..errors import FCNError
from ..meta import IO_MODES, ModelInfo, SizeBounds
from .external_data import external_data_files

__all__ = ["IO_MODES", "PRECISIONS", "PREFIX", "OnnxMetadata", "read_onnx_metadata"]

PREFIX = "fcn_deploy."
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class OnnxMetadata:
    """The fcn-deploy facts stored in an exported ONNX file."""

    info: ModelInfo
    io: str  # "tensor": float N×3×H×W → float logits; "image": uint8 N×H×W×3 BGR → uint8 labels
    precision: str  # "fp32", "fp16" or "int8" (Q/DQ around the convolutions): how it computes
    fp16_io: bool  # tensor mode only: input and output are float16 instead of float32
    bounds: SizeBounds  # the shapes the graph was exported (and verified) for
    input_name: str
    output_name: str
    source_sha256: str  # of the checkpoint file, or of the state dict bytes for an in-memory net
    torch_version: str
    onnx_version: str
    opset: int
    # int8 only: where the activation ranges came from, e.g. {"source": "synthetic", "method":
    # "minmax", "images": 64, "fp32_layers": ["upscore8"]}
    calibration: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.io not in IO_MODES:
            raise ValueError(f"io must be one of {IO_MODES}, got {self.io!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.fp16_io and (self.io != "tensor" or self.precision != "fp16"):
            raise ValueError("fp16_io applies to fp16 tensor-mode models only")

    def to_props(self) -> dict[str, str]:
        """``metadata_props`` entries: one ``fcn_deploy.<field>`` key per field."""
        values = {
            "format_version": str(FORMAT_VERSION),
            "info": self.info.to_json(),
            "io": self.io,
            "precision": self.precision,
            "fp16_io": json.dumps(self.fp16_io),
            "bounds": json.dumps(self.bounds.to_dict()),
            "input_name": self.input_name,
            "output_name": self.output_name,
            "source_sha256": self.source_sha256,
            "torch_version": self.torch_version,
            "onnx_version": self.onnx_version,
            "opset": str(self.opset),
        }
        if self.calibration is not None:
            values["calibration"] = json.dumps(self.calibration)
        return {PREFIX + k: v for k, v in values.items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> OnnxMetadata:
        """Parse ``to_props`` output (extra keys ignored); ValueError/KeyError if damaged."""
        p = {k[len(PREFIX) :]: v for k, v in props.items() if k.startswith(PREFIX)}
        version = int(p.get("format_version", "0"))
        if version > FORMAT_VERSION:
            raise ValueError(
                f"metadata format {version} is newer than this fcn-deploy reads ({FORMAT_VERSION})"
            )
        return cls(
            info=ModelInfo.from_json(p["info"]),
            io=p["io"],
            precision=p["precision"],
            fp16_io=bool(json.loads(p["fp16_io"])),
            bounds=SizeBounds.from_dict(json.loads(p["bounds"])),
            input_name=p["input_name"],
            output_name=p["output_name"],
            source_sha256=p["source_sha256"],
            torch_version=p["torch_version"],
            onnx_version=p["onnx_version"],
            opset=int(p["opset"]),
            calibration=json.loads(p["calibration"]) if "calibration" in p else None,
        )


def read_onnx_metadata(path: str | os.PathLike[str]) -> OnnxMetadata:
    """The `OnnxMetadata` of an exported file, read without loading its weights.

    Also refuses a file naming external data outside its folder (`external_data_files`).
    """
    import onnx

    path = Path(path)
    if path.is_dir():
        raise FCNError(f"{path} is a folder, not an ONNX model")
    if not path.is_file():
        raise FCNError(f"{path}: no such file (expected an ONNX model written by fcn-export)")
    what = describe_file(path)
    if what is not None and not what.startswith("an ONNX"):  # protobuf parses much as "empty"
        raise FCNError(f"{path} is {what}, not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except OSError as e:
        raise FCNError(f"{path}: cannot read ({os_reason(e)})") from None
    except Exception as e:  # protobuf raises its own DecodeError; any failure means "not ONNX"
        raise FCNError(
            f"{path} is not a readable ONNX file ({type(e).__name__}); is it truncated?"
        ) from None
    if not model.graph.node:
        raise FCNError(f"{path} is not an ONNX model (it parses, but holds no graph)")
    external_data_files(path, model)  # every reader of a user's ONNX file comes through here
    props = {p.key: p.value for p in model.metadata_props}
    if not any(k.startswith(PREFIX) for k in props):
        raise FCNError(
            f"{path} is an ONNX file without fcn-deploy metadata; export it with fcn-export "
            "(or pass the checkpoint it came from)"
        )
    try:
        return OnnxMetadata.from_props(props)
    except (KeyError, ValueError, TypeError) as e:
        raise FCNError(f"{path}: fcn-deploy metadata is damaged or incompatible ({e})") from None
