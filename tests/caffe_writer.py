"""Writes ``.caffemodel`` files for tests, with the protobuf wire format written out by hand.

Independent of the reader in fcn_deploy.caffemodel: it encodes the fields of BVLC Caffe's
``caffe.proto`` (NetParameter.layer = 100 / V1 layers = 2; LayerParameter name 1, type 2, blobs 7;
V1LayerParameter name 4, type 5 (enum), blobs 6; BlobProto num/channels/height/width 1..4,
data 5, shape 7 (BlobShape.dim 1), double_data 8) in the field order Caffe writes them, so the
shape comes after the data. Blob data is streamed from the arrays, so a full-size FCN-8s (540 MB)
is written without a second copy in memory.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

V1_TYPES = {"Convolution": 4, "InnerProduct": 14, "Deconvolution": 39}


@dataclass
class Layer:
    """``shapes``, when given, are the shapes the file declares for the blobs instead of their
    own (a lying header, for the tests of damaged files)."""

    name: str
    type: str  # Convolution, Deconvolution, InnerProduct, Scale
    blobs: list[np.ndarray]
    shapes: Sequence[Sequence[int]] | None = None


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 as ten bytes, as protobuf does
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def length_delimited(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


def _blob_parts(
    blob: np.ndarray, shape: Sequence[int], legacy: bool, double: bool
) -> list[bytes | memoryview]:
    """A BlobProto as byte pieces (the data a memoryview of the array, not a copy)."""
    data = np.ascontiguousarray(blob, "<f8" if double else "<f4")
    parts: list[bytes | memoryview] = []
    if legacy:  # num, channels, height, width: the old 4-D form, leading dims of 1
        dims = [1] * (4 - len(shape)) + list(shape)
        for number, dim in zip((1, 2, 3, 4), dims, strict=True):
            parts.append(key(number, 0) + varint(dim))
    field = 8 if double else 5
    payload = memoryview(data).cast("B") if data.size else b""  # (no cast of a 0 in a shape)
    parts += [key(field, 2) + varint(data.nbytes), payload]
    if not legacy:
        dims_payload = b"".join(varint(d) for d in shape)
        parts.append(length_delimited(7, length_delimited(1, dims_payload)))
    return parts


def _layer_parts(layer: Layer, v1: bool, legacy: bool, double: bool) -> list[bytes | memoryview]:
    name = layer.name.encode()
    parts: list[bytes | memoryview] = []
    if v1:
        parts += [length_delimited(4, name), key(5, 0) + varint(V1_TYPES[layer.type])]
    else:
        parts += [length_delimited(1, name), length_delimited(2, layer.type.encode())]
        # a field the reader must skip: ParamSpec { lr_mult: 1 }
        parts.append(length_delimited(6, key(3, 5) + struct.pack("<f", 1.0)))
    shapes = layer.shapes if layer.shapes is not None else [b.shape for b in layer.blobs]
    for blob, shape in zip(layer.blobs, shapes, strict=True):
        pieces = _blob_parts(blob, shape, legacy, double)
        size = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in pieces)
        parts += [key(6 if v1 else 7, 2) + varint(size), *pieces]
    return parts


def write_caffemodel(
    path: Path,
    layers: Iterable[Layer],
    *,
    v1: bool = False,
    legacy: bool = False,
    double: bool = False,
) -> Path:
    """Write a NetParameter with ``layers``: V2 (``layer``, field 100) or V1 (``layers``, 2),
    blob shapes as ``shape`` or the old 4-D ``legacy`` form, data as float or ``double``."""
    with open(path, "wb") as f:
        for part in net_parts(layers, v1, legacy, double):
            f.write(part)
    return path


def caffemodel_bytes(
    layers: Iterable[Layer], *, v1: bool = False, legacy: bool = False, double: bool = False
) -> bytes:
    """`write_caffemodel`'s bytes, in memory (small nets: the property tests)."""
    return b"".join(net_parts(layers, v1, legacy, double))


def net_parts(
    layers: Iterable[Layer], v1: bool = False, legacy: bool = False, double: bool = False
) -> Iterator[bytes | memoryview]:
    """The file's pieces in order: the records' keys, lengths, names and shapes as ``bytes``,
    each blob's data as a ``memoryview`` of its array (the property tests aim at the former)."""
    yield length_delimited(1, b"FCN")  # NetParameter.name
    for layer in layers:
        parts = _layer_parts(layer, v1, legacy, double)
        size = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)
        yield key(2 if v1 else 100, 2) + varint(size)
        yield from parts


def layers_of(model: nn.Module, inner_product: Sequence[str] = ()) -> list[Layer]:
    """A net's layers as Caffe writes them: its Caffe-named state dict (``conv1_1.weight`` …)
    grouped per layer; ``upscore*`` are Deconvolution; names in ``inner_product`` become
    InnerProduct with the ``out×in`` matrix Caffe stores (fc6's 7×7 kernel flattened)."""
    grouped: dict[str, list[np.ndarray]] = {}
    for key_, value in model.state_dict().items():
        name = key_.rpartition(".")[0]
        grouped.setdefault(name, []).append(value.detach().numpy())
    layers = []
    for name, blobs in grouped.items():
        kind = "Deconvolution" if name.startswith("upscore") else "Convolution"
        if name in inner_product:
            kind = "InnerProduct"
            blobs = [blobs[0].reshape(blobs[0].shape[0], -1), *blobs[1:]]
        layers.append(Layer(name, kind, blobs))
    return layers


def two_headed(semantic: nn.Module, geometric: nn.Module, heads: Sequence[str]) -> list[Layer]:
    """A SIFT Flow net as the release has it: ``semantic``'s layers, those named in ``heads``
    renamed ``NAME_sem``, then ``geometric``'s layers of those names as ``NAME_geo``."""
    return [
        Layer(
            f"{layer.name}_{head}" if layer.name in heads else layer.name, layer.type, layer.blobs
        )
        for head, net in (("sem", semantic), ("geo", geometric))
        for layer in layers_of(net)
        if head == "sem" or layer.name in heads
    ]


def at_once_scales(width_pool4: int, width_pool3: int) -> list[Layer]:
    """FCN-8s at-once's fixed Scale layers (one value per channel, as Caffe's Scale holds)."""
    return [
        Layer("scale_pool4", "Scale", [np.full(width_pool4, 0.01, np.float32)]),
        Layer("scale_pool3", "Scale", [np.full(width_pool3, 0.0001, np.float32)]),
    ]


def random_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter random (upsampling too, so no symmetry hides a transposed layout)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5)
    return model.eval()
