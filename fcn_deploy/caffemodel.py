"""Caffe's ``.caffemodel``: the FCN authors' released weights (and the VGG16 they started from),
read without Caffe.

A ``.caffemodel`` is a protobuf ``NetParameter`` (BVLC Caffe, ``src/caffe/proto/caffe.proto``).
Only the fields below are decoded; every other field is skipped by its length, so no generated
protobuf code is needed:

    NetParameter      layer = 100 (LayerParameter)      layers = 2 (V1LayerParameter, old files)
    LayerParameter    name = 1, type = 2 (string), blobs = 7
    V1LayerParameter  name = 4, type = 5 (enum),   blobs = 6
    BlobProto         num/channels/height/width = 1..4 (old 4-D shape), data = 5 (packed float),
                      shape = 7 (BlobShape: dim = 1, packed int64), double_data = 8 (packed double)

Blob data are read with ``readinto`` straight into the array that becomes the tensor, after the
blob's declared shape has been checked against its data length and every length against what is
left of the file: a 540 MB FCN-8s costs one copy of its weights, and a damaged length or shape is
refused before anything is allocated for it.

`read_caffemodel` gives a state dict with Caffe's layer names (``conv1_1.weight``,
``upscore8.weight`` …), which are the model's own keys; ``load_model`` picks this reader for such
files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ._io import describe_file, os_reason
from .errors import FCNError
from .meta import Preprocessing
from .models.fcn import AT_ONCE_POOL3_SCALE, AT_ONCE_POOL4_SCALE
from .models.vgg import FC6_KERNEL

__all__ = [
    "CAFFE_VGG16_PREPROCESSING",
    "NYUD_PREPROCESSING",
    "SIFT_FLOW_PREPROCESSING",
    "CaffeWeights",
    "is_caffe_file",
    "read_caffemodel",
]

log = logging.getLogger(__name__)

SUFFIXES = (".caffemodel", ".prototxt")

# The mean pixel (BGR, 0..255) each release subtracts; nothing in a .caffemodel says which, so it
# is told by the net: VGG16's classifier (the VGG team's ILSVRC-2014 model), the two-headed SIFT
# Flow nets (siftflow_layers.py of the FCN release), the 40-class NYUDv2 colour net
# (nyud_layers.py), and otherwise PASCAL VOC's and PASCAL-Context's (infer.py, voc_layers.py).
CAFFE_VGG16_PREPROCESSING = Preprocessing("bgr", 1.0, (103.939, 116.779, 123.68))
SIFT_FLOW_PREPROCESSING = Preprocessing("bgr", 1.0, (114.578, 115.294, 108.353))
NYUD_PREPROCESSING = Preprocessing("bgr", 1.0, (116.190, 97.203, 92.318))
NYUD_CLASSES = 40

# protobuf wire types
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5

_NET_LAYER, _NET_LAYER_V1 = 100, 2
_LAYER_FIELDS = {False: (1, 2, 7), True: (4, 5, 6)}  # (name, type, blobs) for V2 / V1
_V1_TYPES = {4: "Convolution", 14: "InnerProduct", 39: "Deconvolution"}  # V1LayerParameter enum
_BLOB_LEGACY_DIMS, _BLOB_DATA, _BLOB_SHAPE, _BLOB_DOUBLE = (1, 2, 3, 4), 5, 7, 8
_DOUBLE_CHUNK = 1 << 22  # double blobs are converted to float32 this many values at a time

_AT_ONCE_SCALES = {"scale_pool4": AT_ONCE_POOL4_SCALE, "scale_pool3": AT_ONCE_POOL3_SCALE}


@dataclass
class CaffeWeights:
    """What a ``.caffemodel`` holds, in the terms ``load_model`` needs.

    ``state_dict`` has Caffe's layer names (``conv1_1.weight``, ``fc6.bias`` …): InnerProduct
    weights are already the convolutions they are equivalent to (fc6: ``out×C×7×7``, the others
    ``out×in×1×1``), Deconvolution blobs are PyTorch's transposed-convolution layout as they stand.
    ``at_once`` says the file had FCN-8s at-once's fixed ``scale_pool4``/``scale_pool3`` layers.
    ``layers`` names every layer with weights, in file order (for messages). ``preprocessing`` is
    the release's: BGR 0..255 minus the mean of the data the net was trained on.
    """

    state_dict: dict[str, torch.Tensor]
    at_once: bool = False
    layers: list[str] = field(default_factory=list)
    preprocessing: Preprocessing = field(default_factory=Preprocessing.caffe)


def is_caffe_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is for this reader: a Caffe suffix, or a protobuf ``NetParameter`` by its
    first bytes (a name field or a layer list) under another name."""
    path = Path(path)
    if path.suffix.lower() in SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    looks_like_net = head[:1] in (b"\x0a", b"\x12") or head == b"\xa2\x06"
    return looks_like_net and describe_file(path) is None


def read_caffemodel(path: str | os.PathLike[str]) -> CaffeWeights:
    """The weights of a ``.caffemodel`` as a state dict with Caffe's layer names.

    SIFT Flow's two-headed nets give their semantic head (``score_fr_sem`` → ``score_fr`` …); the
    geometric head (``*_geo``) is left out. Raises `FCNError` with one line for a file that is not
    a readable ``.caffemodel``.
    """
    path = Path(path)
    size = _check_file(path)
    try:
        with open(path, "rb") as f:
            raw = _read_layers(_Wire(f, path), size)
    except OSError as e:
        raise FCNError(f"{path}: cannot read ({os_reason(e)})") from None
    if not raw:
        raise FCNError(
            f"{path} holds no Caffe layers with weights; it is not a .caffemodel (or an empty net)"
        )
    return _to_state_dict(raw, path)


def _check_file(path: Path) -> int:
    if not path.exists():
        raise FCNError(f"{path}: no such file (expected a Caffe .caffemodel)")
    if path.is_dir():
        raise FCNError(f"{path} is a folder; expected a Caffe .caffemodel file")
    what = describe_file(path)
    if what == "a text file":
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
        if any(word in head for word in ("layer {", "layers {", "name:", "input:", "type:")):
            raise FCNError(
                f"{path} is a Caffe prototxt (the net's text description, without weights); pass "
                "the .caffemodel file that holds the weights (the prototxt is not needed)"
            )
    if what is not None:
        raise FCNError(f"{path} is {what}, not a Caffe .caffemodel")
    return path.stat().st_size


@dataclass
class _RawLayer:
    name: str
    type: str
    blobs: list[np.ndarray]


class _Wire:
    """The protobuf wire format over a seekable file, every length checked against the end of
    the message that holds it before it is followed."""

    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.f, self.path, self.pos = f, path, 0

    def fail(self, what: str) -> FCNError:
        return FCNError(f"{self.path}: {what} at byte {self.pos}; the file is damaged")

    def byte(self, end: int) -> int:
        b = self.f.read(1) if self.pos < end else b""
        if not b:
            raise self.truncated(end)
        self.pos += 1
        return b[0]

    def truncated(self, end: int) -> FCNError:
        return FCNError(
            f"{self.path} ends inside a record at byte {self.pos} (it should go on to byte {end}): "
            "the file is truncated (an interrupted download?) or not a .caffemodel"
        )

    def varint(self, end: int) -> int:
        value = shift = 0
        while True:
            b = self.byte(end)
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise self.fail("a number longer than 10 bytes")

    def signed(self, end: int) -> int:
        value = self.varint(end)
        return value - (1 << 64) if value >= 1 << 63 else value

    def length(self, end: int) -> int:
        """A length-delimited field's size, refused if it runs past ``end`` (truncated files and
        absurd sizes both land here, before anything is read or allocated)."""
        n = self.varint(end)
        if self.pos + n > end:
            raise FCNError(
                f"{self.path}: a record at byte {self.pos} declares {n:,} bytes but only "
                f"{end - self.pos:,} follow: the file is truncated or damaged"
            )
        return n

    def fields(self, end: int) -> Iterator[tuple[int, int]]:
        """``(field number, wire type)`` of each field up to ``end``; the caller reads the value
        or calls `skip`."""
        while self.pos < end:
            key = self.varint(end)
            number, wire = key >> 3, key & 7
            if number == 0 or wire not in (_VARINT, _FIXED64, _LEN, _FIXED32):
                raise FCNError(
                    f"{self.path}: bytes at {self.pos} are not a protobuf field (wire type "
                    f"{wire}); this is not a .caffemodel, or it is damaged"
                )
            yield number, wire

    def skip(self, wire: int, end: int) -> None:
        n = {_FIXED64: 8, _FIXED32: 4}.get(wire)
        if wire == _VARINT:
            self.varint(end)
            return
        if n is None:
            n = self.length(end)
        elif self.pos + n > end:
            raise self.truncated(end)
        self.seek(self.pos + n)

    def seek(self, pos: int) -> None:
        self.f.seek(pos)
        self.pos = pos

    def string(self, end: int) -> str:
        n = self.length(end)
        data = self.f.read(n)
        self.pos += len(data)
        return data.decode("utf-8", "replace")

    def array(self, offset: int, nbytes: int, dtype: np.dtype) -> np.ndarray:
        """``nbytes`` at ``offset`` as little-endian float32 (float64 data converted in chunks)."""
        self.seek(offset)
        out = np.empty(nbytes // dtype.itemsize, np.float32)
        if dtype == np.float32:
            self._fill(out)
        else:
            buffer = np.empty(min(out.size, _DOUBLE_CHUNK), dtype)
            for start in range(0, out.size, _DOUBLE_CHUNK):
                part = buffer[: min(_DOUBLE_CHUNK, out.size - start)]
                self._fill(part)
                out[start : start + part.size] = part
        return out

    def _fill(self, array: np.ndarray) -> None:
        view = memoryview(array).cast("B")  # type: ignore[arg-type]  # ndarray is a buffer
        got = 0
        while got < len(view):
            n = self.f.readinto(view[got:])  # type: ignore[attr-defined]  # an open() file
            if not n:
                raise self.truncated(self.pos + len(view))
            got += n
        self.pos += got


def _read_layers(wire: _Wire, size: int) -> list[_RawLayer]:
    layers = []
    for number, kind in wire.fields(size):
        if number in (_NET_LAYER, _NET_LAYER_V1) and kind == _LEN:
            n = wire.length(size)
            layer = _read_layer(wire, wire.pos + n, v1=number == _NET_LAYER_V1)
            if layer.blobs:
                layers.append(layer)
        else:
            wire.skip(kind, size)
    return layers


def _read_layer(wire: _Wire, end: int, v1: bool) -> _RawLayer:
    name_field, type_field, blobs_field = _LAYER_FIELDS[v1]
    name, kind = "", ""
    blobs: list[np.ndarray] = []
    for number, wire_type in wire.fields(end):
        if number == name_field and wire_type == _LEN:
            name = wire.string(end)
        elif number == type_field and wire_type == (_VARINT if v1 else _LEN):
            if v1:
                code = wire.varint(end)
                kind = _V1_TYPES.get(code, f"V1 layer type {code}")
            else:
                kind = wire.string(end)
        elif number == blobs_field and wire_type == _LEN:
            n = wire.length(end)
            blobs.append(_read_blob(wire, wire.pos + n, name or "?", len(blobs)))
        else:
            wire.skip(wire_type, end)
    return _RawLayer(name, kind, blobs)


def _read_blob(wire: _Wire, end: int, layer: str, index: int) -> np.ndarray:
    legacy = [0, 0, 0, 0]
    has_legacy = False
    shape: list[int] | None = None
    data: tuple[int, int, np.dtype] | None = None
    for number, kind in wire.fields(end):
        if number in _BLOB_LEGACY_DIMS and kind == _VARINT:
            legacy[number - 1], has_legacy = wire.signed(end), True
        elif number in (_BLOB_DATA, _BLOB_DOUBLE) and kind == _LEN:
            n = wire.length(end)
            if n:
                if data is not None:
                    raise wire.fail(f"layer {layer} blob {index} holds both float and double data")
                data = (wire.pos, n, np.dtype("<f4" if number == _BLOB_DATA else "<f8"))
            wire.seek(wire.pos + n)
        elif number in (_BLOB_DATA, _BLOB_DOUBLE) and kind in (_FIXED32, _FIXED64):
            raise wire.fail(f"layer {layer} blob {index} has unpacked values (Caffe packs them)")
        elif number == _BLOB_SHAPE and kind == _LEN:
            n = wire.length(end)
            shape = _read_dims(wire, wire.pos + n)
        else:
            wire.skip(kind, end)
    offset, nbytes, dtype = data if data is not None else (0, 0, np.dtype("<f4"))
    if nbytes % dtype.itemsize:
        raise wire.fail(f"layer {layer} blob {index} has {nbytes} bytes of {dtype.name} data")
    count = nbytes // dtype.itemsize
    dims = shape if shape is not None else legacy if has_legacy else [count]
    declared = int(np.prod(dims, dtype=object)) if dims else 1
    if any(d < 0 for d in dims) or declared != count:
        raise FCNError(
            f"{wire.path}: layer {layer} blob {index} declares shape {tuple(dims)} "
            f"({declared:,} values) but holds {count:,}; the file is damaged"
        )
    array = wire.array(offset, nbytes, dtype).reshape(dims)
    wire.seek(end)
    return array


def _read_dims(wire: _Wire, end: int) -> list[int]:
    dims = []
    for number, kind in wire.fields(end):
        if number == 1 and kind == _LEN:  # packed
            n = wire.length(end)
            stop = wire.pos + n
            while wire.pos < stop:
                dims.append(wire.signed(stop))
        elif number == 1 and kind == _VARINT:
            dims.append(wire.signed(end))
        else:
            wire.skip(kind, end)
    return dims


def _to_state_dict(raw: list[_RawLayer], path: Path) -> CaffeWeights:
    """Caffe layers → a state dict of the model's keys (weight = blob 0, bias = blob 1)."""
    sd: dict[str, torch.Tensor] = {}
    names = [layer.name for layer in raw]
    two_headed = any(name.endswith("_sem") for name in names)
    if two_headed:
        log.info("%s: two-headed SIFT Flow net; using its semantic head (*_sem)", path)
    scales: dict[str, np.ndarray] = {}
    for layer in raw:
        name = layer.name
        if two_headed:
            if name.endswith("_geo"):
                continue
            name = name.removesuffix("_sem")
        if len(layer.blobs) > 2:
            raise FCNError(
                f"{path}: layer {layer.name} ({layer.type}) has {len(layer.blobs)} blobs; the "
                "layers of an FCN or VGG16 have a weight and at most a bias"
            )
        if layer.type == "Scale" and name in _AT_ONCE_SCALES:
            scales[name] = layer.blobs[0]
            continue
        weight = _as_conv_weight(layer, name, path)
        sd[f"{name}.weight"] = torch.from_numpy(weight)
        if len(layer.blobs) == 2:
            sd[f"{name}.bias"] = torch.from_numpy(layer.blobs[1].reshape(-1))
    return CaffeWeights(sd, _at_once(scales, path), names, _release_mean(sd, two_headed, path))


def _release_mean(sd: dict[str, torch.Tensor], sift_flow: bool, path: Path) -> Preprocessing:
    if "fc8.weight" in sd:
        return CAFFE_VGG16_PREPROCESSING
    if sift_flow:
        return SIFT_FLOW_PREPROCESSING
    score = sd.get("score_fr.weight")
    if score is not None and score.shape[0] == NYUD_CLASSES:
        log.info("%s: 40 classes, NYUDv2's colour net: its mean pixel is subtracted", path)
        return NYUD_PREPROCESSING
    return Preprocessing.caffe()


def _as_conv_weight(layer: _RawLayer, name: str, path: Path) -> np.ndarray:
    """A layer's blob 0 as the weight of the model's layer of that name.

    Convolution (``out×in×kh×kw``) and Deconvolution (``in×out×kh×kw``, PyTorch's
    ``ConvTranspose2d`` layout too) need nothing. InnerProduct is ``out×in`` (old files:
    ``1×1×out×in``) applied to the flattened input, so it is the convolution whose kernel covers
    the whole input map: fc6 sees pool5's 7×7, the rest a 1×1 map.
    """
    weight = layer.blobs[0]
    if layer.type != "InnerProduct":
        return weight
    matrix = weight.reshape(weight.shape[-2], weight.shape[-1]) if weight.ndim >= 2 else weight
    if matrix.ndim != 2:
        raise FCNError(f"{path}: InnerProduct {layer.name} has a weight of shape {weight.shape}")
    out, inputs = matrix.shape
    kernel = FC6_KERNEL if name == "fc6" else 1
    if inputs % (kernel * kernel):
        raise FCNError(
            f"{path}: InnerProduct {layer.name} takes {inputs} inputs, not a {kernel}×{kernel} "
            "map of channels"
        )
    return matrix.reshape(out, inputs // (kernel * kernel), kernel, kernel)


def _at_once(scales: dict[str, np.ndarray], path: Path) -> bool:
    """FCN-8s at-once's fixed skip scales, checked: the model applies them as constants."""
    if not scales:
        return False
    for name, expected in _AT_ONCE_SCALES.items():
        values = scales.get(name)
        if values is None or not np.allclose(values, expected, rtol=1e-5, atol=0):
            found = "none" if values is None else f"{float(values.reshape(-1)[0]):g}"
            raise FCNError(
                f"{path}: FCN-8s at-once scales {name} by {expected:g}, but this file's {name} "
                f"holds {found}; it is another net"
            )
    return True
