"""Finishing and checking an exported graph before it is written.

The exporter names output dims with symbolic expressions (``Min(height + 31, …) - 31``); they
equal the input's H and W, so the output is renamed to ``batch``/``height``/``width`` for tools
(Netron, Triton, TensorRT profiles) that read names. Then the checks that TensorRT would otherwise
report much later: onnx.checker, strict shape inference, one float dtype per node's inputs (the
strongly typed parser rejects mixed ones) and transposed convs without ``output_shape``. They run
on the graph with its weights as typed inputs (`weightless`): the checker and shape inference see
every node, name, type and shape, and no copy of hundreds of MB of weights is serialized for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import FCNError
from .metadata import OnnxMetadata
from .proto import weightless

__all__ = ["GraphSummary", "check_graph", "finish_graph"]

_FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}
_MIXED_OK = {"Cast", "CastLike", "Shape", "Size"}  # ops whose inputs may legitimately differ


@dataclass(frozen=True)
class GraphSummary:
    """What the checks found: node counts and how many convs compute in FP16."""

    nodes: int
    convs: int
    fp16_convs: int
    casts: int


def finish_graph(proto: Any, meta: OnnxMetadata, same_size_output: bool) -> None:
    """Name the I/O dims, store the metadata and a readable description (in place)."""
    out = proto.graph.output[0].type.tensor_type.shape.dim
    names = ["batch"] + (["height", "width"] if same_size_output else [])
    spatial = [len(out) - 2, len(out) - 1] if meta.io == "tensor" else [1, 2]
    for index, name in zip([0, *spatial], names, strict=False):
        out[index].ClearField("dim_value")
        out[index].dim_param = name
    del proto.metadata_props[:]
    for key, value in meta.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (
        f"fcn-deploy {meta.info.variant} (width {meta.info.width:g}, {meta.info.num_classes} "
        f"classes), {meta.precision}, {meta.io} I/O"
    )


def check_graph(proto: Any) -> GraphSummary:
    """Run the checks on `weightless` ``proto`` (FCNError naming the first problem); summarize
    the graph."""
    import onnx

    proto = weightless(proto)
    try:
        onnx.checker.check_model(proto)
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise FCNError(
            "the exported graph fails ONNX's checks (a bug in fcn-deploy or torch.onnx): "
            f"{_first(e)}"
        ) from None
    g = inferred.graph
    dtypes: dict[str, int] = {t.name: t.data_type for t in g.initializer}
    for v in list(g.input) + list(g.value_info) + list(g.output):
        dtypes[v.name] = v.type.tensor_type.elem_type
    convs = fp16_convs = casts = 0
    for node in g.node:
        if node.op_type == "ConvTranspose" and any(
            a.name == "output_shape" for a in node.attribute
        ):
            raise FCNError(
                f"{node.name}: ConvTranspose with output_shape, which TensorRT's importer "
                "mishandles"
            )
        floats = {
            name: _FLOAT_TYPES[dtypes[name]]
            for name in node.input
            if dtypes.get(name) in _FLOAT_TYPES
        }
        if node.op_type == "Resize":  # roi/scales are float32 whatever the data type
            floats = {k: v for k, v in floats.items() if k == node.input[0]}
        if node.op_type not in _MIXED_OK and len(set(floats.values())) > 1:
            detail = ", ".join(f"{k}: {v}" for k, v in floats.items())
            raise FCNError(
                f"{node.name} ({node.op_type}) mixes input dtypes ({detail}); TensorRT's strongly "
                "typed parser rejects it"
            )
        if node.op_type in ("Conv", "ConvTranspose"):
            convs += 1
            fp16_convs += floats.get(node.input[0]) == "float16"
        casts += node.op_type == "Cast"
    return GraphSummary(len(g.node), convs, fp16_convs, casts)


def _first(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(e).__name__
