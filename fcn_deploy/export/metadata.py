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

from .._gate import open_regular
from .._io import describe_bytes, os_reason
from ..errors import FCNError
from ..meta import IO_MODES, ModelInfo, SizeBounds, _mapping
from .external_data import external_data_files

__all__ = [
    "IO_MODES",
    "PRECISIONS",
    "PREFIX",
    "OnnxMetadata",
    "check_verified",
    "read_onnx_metadata",
]

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
    # set when the export's verification failed: what failed. Loaders refuse such a file unless
    # told otherwise (`check_verified`), so a model kept for inspection is not deployed by mistake
    unverified: str | None = None

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
        if self.unverified is not None:
            values["unverified"] = self.unverified
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
            calibration=_mapping(json.loads(p["calibration"]), "calibration")
            if "calibration" in p
            else None,
            unverified=p.get("unverified"),
        )


def read_onnx_metadata(path: str | os.PathLike[str]) -> OnnxMetadata:
    """The `OnnxMetadata` of an exported file, read without loading its weights.

    Also refuses a file naming external data outside its folder (`external_data_files`).
    """
    import onnx

    path = Path(path)
    try:
        with open_regular(path, "ONNX model", "expected an ONNX model written by fcn-export") as f:
            data = f.read()
    except OSError as e:
        raise FCNError(f"{path}: cannot read ({os_reason(e)})") from None
    what = describe_bytes(data)
    if what is not None and not what.startswith("an ONNX"):  # protobuf parses much as "empty"
        raise FCNError(f"{path} is {what}, not an ONNX model")
    try:
        model = onnx.load_model_from_string(data)  # external data is never loaded here
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
        meta = OnnxMetadata.from_props(props)
    except (KeyError, ValueError, TypeError, RecursionError) as e:  # RecursionError: nested JSON
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:200]
        raise FCNError(
            f"{path}: fcn-deploy metadata is damaged or incompatible ({reason})"
        ) from None
    problem = graph_problem(model, meta)
    if problem:
        raise FCNError(f"{path} is damaged: its fcn-deploy metadata disagrees with its graph "
                       f"({problem}); export it again")  # fmt: skip
    return meta


def check_verified(
    meta: OnnxMetadata, path: str | os.PathLike[str], allow_unverified: bool = False
) -> None:
    """Refuse a file whose export failed verification, unless ``allow_unverified``."""
    if meta.unverified is not None and not allow_unverified:
        raise FCNError(
            f"{path} failed verification when it was exported ({meta.unverified}); re-export it, "
            "or pass allow_unverified=True to use it anyway",
            param="allow_unverified",
        )


_ELEM = {1: "float32", 2: "uint8", 10: "float16"}  # onnx.TensorProto element types


def graph_problem(model: Any, meta: OnnxMetadata) -> str | None:
    """Where the graph contradicts its metadata (I/O names and types, input dims against the
    bounds, the class count), or None. Checked at load, so a damaged file is one line instead of
    an ONNX Runtime traceback or labels past the class names at run time."""
    weights = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in weights]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        return f"{len(inputs)} input(s) and {len(model.graph.output)} output(s), not one each"
    x, y = inputs[0], model.graph.output[0]
    if (x.name, y.name) != (meta.input_name, meta.output_name):
        return (f"tensors {meta.input_name!r} → {meta.output_name!r} named, the graph has "
                f"{x.name!r} → {y.name!r}")  # fmt: skip
    want = "uint8" if meta.io == "image" else ("float16" if meta.fp16_io else "float32")
    got = _ELEM.get(x.type.tensor_type.elem_type, f"type {x.type.tensor_type.elem_type}")
    if got != want:
        return f"io={meta.io} takes {want} input, the graph takes {got}"
    dims = [d.dim_value if d.HasField("dim_value") else None for d in x.type.tensor_type.shape.dim]
    if len(dims) != 4:
        return f"the input has {len(dims)} dimensions, not 4"
    n, c, h, w = (dims[0], dims[3], dims[1], dims[2]) if meta.io == "image" else dims
    b = meta.bounds
    if c not in (None, 3):
        return f"the input has {c} channels, not 3"
    if n is not None and (n < b.min_batch or (b.max_batch is not None and n > b.max_batch)):
        return (
            f"the input's batch is fixed at {n}, outside the bounds' {b.min_batch}..{b.max_batch}"
        )
    top = b.max_hw or (None, None)
    sides = ((h, b.min_hw[0], top[0], "height"), (w, b.min_hw[1], top[1], "width"))
    for size, low, high, name in sides:
        if size is not None and (size < low or (high is not None and size > high)):
            return f"the input's {name} is fixed at {size}, outside the bounds' {low}..{high}"
    classes = _graph_classes(model, meta.io)
    if classes is not None and classes != meta.info.num_classes:
        return f"{meta.info.num_classes} classes named, the graph computes {classes}"
    return None


def _graph_classes(model: Any, io: str) -> int | None:
    """The class count the graph computes: the logits' channel dim (tensor I/O), or for image I/O
    the channels of the last convolution before the ArgMax (traced back through the crops)."""
    if io == "tensor":
        dims = model.graph.output[0].type.tensor_type.shape.dim
        return dims[1].dim_value if len(dims) == 4 and dims[1].HasField("dim_value") else None
    producers = {out: node for node in model.graph.node for out in node.output}
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    argmax = [node for node in model.graph.node if node.op_type == "ArgMax"]
    name = argmax[-1].input[0] if argmax else None
    for _ in range(len(model.graph.node)):
        node = producers.get(name) if name is not None else None
        if node is None:
            return None
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            weight = node.input[1]
            quantized = producers.get(weight)  # INT8: the weight comes through DequantizeLinear
            dims = shapes.get(quantized.input[0] if quantized is not None else weight)
            if not dims or len(dims) != 4:
                return None
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            return dims[0] if node.op_type == "Conv" else dims[1] * group
        name = node.input[0] if node.input else None
    return None
