"""ONNX graphs whose large weights stay outside the ModelProto until the file is written.

`onnx.save` builds the whole file in memory: protobuf serializes the ModelProto into one buffer
and copies it into a bytes object, and building that ModelProto from the exporter's graph has
copied every weight once already. For a full FCN-8s (0.5 GB of weights) that costs 2 GB of
memory on top of the weights (measured: 1.5 → 3.5 GB peak) and several seconds. The exporter
instead gives the ModelProto an external-data placeholder (`PLACEHOLDER`) for each large weight,
keeps the weights as they are (the PyTorch tensors, seen as NumPy arrays), checks and edits the
small proto, and `write_model` streams proto and weights into one ordinary self-contained file:
byte for byte what ``onnx.save`` writes for the full proto.

`weightless` makes the copy onnx.checker and shape inference run on: large initializers become
graph inputs of the same name, type and shape, which is all those checks read of them.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, MutableSequence
from typing import Any

import numpy as np

from ..errors import FCNError

__all__ = ["PLACEHOLDER", "SMALL_TENSOR", "hold_weights", "weightless", "write_model"]

PLACEHOLDER = "fcn-deploy:weights-in-memory"  # external-data location of a weight held aside
SMALL_TENSOR = 4096  # elements: initializers up to this size stay in the proto (shapes, offsets)
MAX_FILE_BYTES = 2**31 - 1  # protobuf's limit for one message

_GRAPH = 7  # ModelProto.graph
_INITIALIZER = 5  # GraphProto.initializer
_RAW_DATA = 9  # TensorProto.raw_data


def hold_weights(model: Any) -> dict[str, np.ndarray]:
    """Move the large initializers of an onnx_ir ``model`` out of it, in place: each becomes a
    `PLACEHOLDER` of the same name, type and shape. Returns the weights by name, as NumPy views
    of the tensors the graph held (no copy)."""
    import onnx_ir as ir

    weights = {}
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        if tensor is None or isinstance(tensor, ir.ExternalTensor) or tensor.size <= SMALL_TENSOR:
            continue
        weights[name] = tensor.numpy()
        value.const_value = ir.ExternalTensor(
            PLACEHOLDER, None, None, tensor.dtype, shape=ir.Shape(tensor.shape), name=name
        )
    return weights


def weightless(proto: Any) -> Any:
    """A copy of the ModelProto ``proto`` whose large initializers are graph inputs of the same
    name, type and shape; small ones (shapes, crop offsets: values shape inference may need)
    stay. Milliseconds and kilobytes, where onnx.checker and shape inference would each take a
    serialized copy of every weight."""
    import onnx

    model = onnx.ModelProto()
    _copy_fields(proto, model, skip=_GRAPH)
    _copy_fields(proto.graph, model.graph, skip=_INITIALIZER)
    inputs = {v.name for v in proto.graph.input}
    for t in proto.graph.initializer:
        if math.prod(t.dims) <= SMALL_TENSOR:
            model.graph.initializer.append(t)
        elif t.name not in inputs:  # an older exporter's initializer listed as input: typed there
            model.graph.input.append(
                onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
            )
    return model


def write_model(
    proto: Any, path: str | os.PathLike[str], weights: Mapping[str, np.ndarray]
) -> None:
    """Write ``proto`` to ``path`` as one self-contained ONNX file, each `PLACEHOLDER` initializer
    filled from ``weights``: the bytes ``onnx.save`` writes for the full proto, streamed. Any
    other external-data initializer is refused: nothing the file needs lies outside it.

    Protobuf serializes fields in number order and a length-prefixed message is its fields in
    a row, so the file is: the model's fields before ``graph``, the graph's header, the graph's
    fields before ``initializer``, each initializer (header fields, then ``raw_data`` from the
    array's own memory), the graph's remaining fields, the model's remaining fields.
    """
    import onnx

    parts: list[tuple[bytes, memoryview | None]] = []  # per initializer: its fields, raw bytes
    for t in proto.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            parts.append((t.SerializeToString(), None))
            continue
        if not _is_placeholder(t):  # the file is self-contained: no data of it lies elsewhere
            raise FCNError(f"initializer {t.name!r} names external data; load it first")
        if t.name not in weights:
            raise FCNError(f"initializer {t.name!r} is held aside but no weights were given")
        array = np.ascontiguousarray(weights[t.name])
        if sys.byteorder != "little":  # ONNX raw_data is little-endian
            array = array.astype(array.dtype.newbyteorder("<"))
        raw = memoryview(array.data).cast("B")
        header = onnx.TensorProto(name=t.name, data_type=t.data_type, dims=t.dims)
        parts.append((header.SerializeToString() + _field(_RAW_DATA, raw.nbytes), raw))
    graph_before, graph_after = _split(proto.graph, _INITIALIZER)
    sizes = [len(head) + (raw.nbytes if raw is not None else 0) for head, raw in parts]
    graph_size = len(graph_before) + len(graph_after)
    graph_size += sum(len(_field(_INITIALIZER, n)) + n for n in sizes)
    model_before, model_after = _split(proto, _GRAPH)
    total = len(model_before) + len(_field(_GRAPH, graph_size)) + graph_size + len(model_after)
    if total > MAX_FILE_BYTES:
        raise FCNError(
            f"the model takes {total / 2**30:.2f} GiB, over protobuf's 2 GiB single-file limit"
        )
    with open(path, "wb") as f:
        f.write(model_before + _field(_GRAPH, graph_size) + graph_before)
        for (head, data), size in zip(parts, sizes, strict=True):
            f.write(_field(_INITIALIZER, size) + head)
            if data is not None:
                f.write(data)
        f.write(graph_after + model_after)


def _is_placeholder(tensor: Any) -> bool:
    return any(e.key == "location" and e.value == PLACEHOLDER for e in tensor.external_data)


def _copy_fields(source: Any, dest: Any, skip: int) -> None:
    """Copy every set field of the protobuf message ``source`` but field number ``skip``."""
    for field, value in source.ListFields():
        if field.number != skip:
            _copy_field(dest, field, value)


def _split(message: Any, number: int) -> tuple[bytes, bytes]:
    """``message`` serialized without field ``number``, cut where that field would be."""
    before, after = type(message)(), type(message)()
    for field, value in message.ListFields():
        if field.number != number:
            _copy_field(before if field.number < number else after, field, value)
    return before.SerializeToString(), after.SerializeToString()


def _copy_field(dest: Any, field: Any, value: Any) -> None:
    if isinstance(value, MutableSequence):
        getattr(dest, field.name).extend(value)
    elif field.message_type is not None:
        getattr(dest, field.name).CopyFrom(value)
    else:
        setattr(dest, field.name, value)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, length: int) -> bytes:
    """The key and length of a length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(length)
