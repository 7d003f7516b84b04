"""What an exported ONNX file says about itself, in its ``metadata_props``.

Everything a runtime needs besides the graph travels inside the file (one key per field, prefixed
``fcn_deploy.``, JSON where structured, so Netron shows it readably): the checkpoint's
`ModelInfo`, the I/O mode, precision, size bounds, tensor names, and where the file came from
(sha256 of the source weights, torch/onnx versions, opset).

The export's verification outcome travels the same way, as a positive record
(``fcn_deploy.verification``: ``{"status", "graph", "digest"}``) rather than a mark added on
failure, so a file that lost its record reads as unverified, never as verified. ``graph`` is the
sha256 of the graph's structure (`graph_digest`: nodes, I/O, opsets, initializer names, types and
shapes; not the weights' bytes) and ``digest`` the sha256 of the status, that hash and every other
``fcn_deploy.*`` entry: a record that no longer matches its file (metadata edited or deleted, the
graph changed) reads as `RECORD_MISMATCH`, which loaders refuse like a failed verification. The
digests are plain hashes, not signatures: they catch edits, truncation and mix-ups, not someone who
recomputes them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
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
from .proto import SMALL_TENSOR

__all__ = [
    "IO_MODES",
    "NOT_VERIFIED",
    "PASSED",
    "PRECISIONS",
    "PREFIX",
    "RECORD_MISMATCH",
    "UNRECORDED",
    "OnnxMetadata",
    "append_verification",
    "check_verified",
    "graph_digest",
    "read_onnx_metadata",
]

log = logging.getLogger(__name__)

PREFIX = "fcn_deploy."
# 2: a verification record in every file. 1 (fcn-deploy before it): `fcn_deploy.unverified` on
# a failed export only, nothing otherwise; such files load as they did then
FORMAT_VERSION = 2
PRECISIONS = ("fp32", "fp16", "int8")
RECORD_KEY = PREFIX + "verification"

# verification statuses besides "failed: <what>"
PASSED = "passed"
NOT_VERIFIED = "not verified"  # exported with verify=False (fcn-export --no-verify)
RECORD_MISMATCH = "verification record missing or does not match (edited after export?)"
UNRECORDED = "not recorded (metadata format 1, written before verification records)"


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
    # the export's verification: PASSED, "failed: <what>" or NOT_VERIFIED; read back from a file,
    # also RECORD_MISMATCH or UNRECORDED. None while the export is under way (no record is
    # written). Loaders refuse all but PASSED, NOT_VERIFIED (with a warning) and UNRECORDED
    # unless told otherwise (`check_verified`), so a model kept for inspection is not deployed
    # by mistake
    verification: str | None = None
    graph_sha256: str | None = None  # `graph_digest` of the graph the record was made for

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
        props = {PREFIX + k: v for k, v in values.items()}
        if self.verification is not None:
            record = {
                "status": self.verification,
                "graph": self.graph_sha256,
                "digest": _record_digest(props, self.verification, self.graph_sha256),
            }
            props[RECORD_KEY] = json.dumps(record)
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> OnnxMetadata:
        """Parse ``to_props`` output (other keys ignored); ValueError/KeyError if damaged.

        The verification record is checked against the other entries: one missing, damaged or
        not matching them gives ``verification=RECORD_MISMATCH`` (the graph is checked by
        `read_onnx_metadata`, which has it)."""
        p = {k[len(PREFIX) :]: v for k, v in props.items() if k.startswith(PREFIX)}
        version = int(p.get("format_version", "0"))
        if version > FORMAT_VERSION:
            raise ValueError(
                f"metadata format {version} is newer than this fcn-deploy reads ({FORMAT_VERSION})"
            )
        if version < 2:  # the previous release marked failures only
            verification, graph = p.get("unverified", UNRECORDED), None
        else:
            verification, graph = _read_record(props)
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
            verification=verification,
            graph_sha256=graph,
        )


def _record_digest(props: Mapping[str, str], status: str, graph: str | None) -> str:
    """sha256 binding a verification status to a graph hash and every other fcn-deploy entry."""
    entries = {k: v for k, v in props.items() if k.startswith(PREFIX) and k != RECORD_KEY}
    text = json.dumps(
        {"entries": entries, "status": status, "graph": graph}, sort_keys=True, ensure_ascii=True
    )
    return hashlib.sha256(b"fcn-deploy verification record\0" + text.encode()).hexdigest()


def _read_record(props: Mapping[str, str]) -> tuple[str, str | None]:
    """(status, graph hash) of the record in ``props``; (RECORD_MISMATCH, None) unless it is
    there, well formed and matches the other entries."""
    try:
        record = json.loads(props[RECORD_KEY])
        status, graph, digest = record["status"], record["graph"], record["digest"]
    except (KeyError, TypeError, ValueError, RecursionError):
        return RECORD_MISMATCH, None
    if not isinstance(status, str) or not isinstance(graph, (str, type(None))):
        return RECORD_MISMATCH, None
    if digest != _record_digest(props, status, graph):
        return RECORD_MISMATCH, None
    return status, graph


def graph_digest(model: Any) -> str:
    """sha256 of an ONNX model's structure: IR version, opsets, graph inputs and outputs, nodes
    (attributes and Constant values included), local functions, and each initializer's name,
    type and shape (values too for small ones: shapes and crop offsets). Large weights' bytes
    are left out, so it costs milliseconds on a 500 MB file, and an edit of the weights alone
    goes unseen."""
    import onnx

    h = hashlib.sha256(f"fcn-deploy graph structure\0{model.ir_version}".encode())

    def add(section: str, messages: Any) -> None:
        h.update(f"\0{section}".encode())
        for m in messages:
            data = m.SerializeToString(deterministic=True)
            h.update(len(data).to_bytes(8, "little") + data)

    g = model.graph
    add("opsets", model.opset_import)
    add("inputs", g.input)
    add("outputs", g.output)
    add("nodes", g.node)
    add("functions", model.functions)
    add(
        "initializers",
        (
            t
            if math.prod(t.dims) <= SMALL_TENSOR
            else onnx.TensorProto(name=t.name, data_type=t.data_type, dims=t.dims)
            for t in g.initializer
        ),
    )
    return h.hexdigest()


def append_verification(path: str | os.PathLike[str], meta: OnnxMetadata) -> None:
    """Add ``meta``'s verification record to the ONNX file ``path`` written with ``meta``'s other
    entries, without rewriting the file.

    Protobuf reads concatenated messages as one, with repeated fields appended, so a serialized
    ModelProto holding only the record's ``metadata_props`` entry, written at the end, adds the
    entry to the model: a few hundred bytes instead of serializing a 500 MB graph again.
    """
    import onnx

    if meta.verification is None:
        raise ValueError("the metadata has no verification status to record")
    entry = onnx.StringStringEntryProto(key=RECORD_KEY, value=meta.to_props()[RECORD_KEY])
    with open(path, "ab") as f:
        f.write(onnx.ModelProto(metadata_props=[entry]).SerializeToString())


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
    if RECORD_KEY in props and meta.graph_sha256 != graph_digest(model):  # format 1 has none
        meta = dataclasses.replace(meta, verification=RECORD_MISMATCH, graph_sha256=None)
    return meta


_WARNED: set[str] = set()  # files already warned about in this process


def check_verified(
    meta: OnnxMetadata, path: str | os.PathLike[str], allow_unverified: bool = False
) -> None:
    """Refuse a file whose export failed verification, or whose verification record is missing
    or no longer matches it, unless ``allow_unverified``; warn (once per file and process) about
    one exported without verification or of the format without records (a deleted record and
    format version read as that: it loads, but never silently), unless ``allow_unverified``."""
    status = meta.verification
    if allow_unverified or status == PASSED:
        return
    if status in (NOT_VERIFIED, UNRECORDED):
        key = os.path.abspath(path)
        if key not in _WARNED:
            _WARNED.add(key)
            why = (
                "was exported without verification: ONNX Runtime never compared it with PyTorch"
                if status == NOT_VERIFIED  # UNRECORDED: format 1, or a record deleted with it
                else "holds no verification record (written before fcn-deploy kept one, or "
                "edited): nothing in it says it passed verification"
            )
            log.warning("%s %s (export it again with verification to check it)", path, why)
        return
    if status is not None and status.startswith("failed"):
        why = f"failed verification when it was exported ({status})"
    else:
        why = f"cannot be trusted: {status or RECORD_MISMATCH}"
    raise FCNError(
        f"{path} {why}; re-export it, or pass allow_unverified=True to use it anyway",
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
