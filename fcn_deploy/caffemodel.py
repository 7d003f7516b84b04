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

The file is outside input, so the parse is bounded before it starts and every number is checked
before it is used: a regular file of at most 2 GiB (Caffe's own limit), at most `MAX_LAYERS`
layer records, `MAX_FIELDS` fields in a layer or blob, `MAX_RECORDS` fields in all, `MAX_BLOBS`
blobs per layer and `MAX_DIMS` dims per shape, each refused as the one past the cap is reached
(not after reading them all); every length is checked against the end of the record holding it.
So the Python loop over records runs at most `MAX_RECORDS` times whatever the file holds, and
memory is bounded by the file's size: blob data are read with ``readinto`` straight into the
array that becomes the tensor, after the blob's declared shape has been checked against its data
length. A 540 MB FCN-8s costs one copy of its weights.

`read_caffemodel` gives a state dict with Caffe's layer names (``conv1_1.weight``,
``upscore8.weight`` …), which are the model's own keys; ``load_model`` picks this reader for such
files.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ._gate import open_regular, regular_file
from ._io import describe_file, os_reason
from .errors import FCNError
from .meta import Preprocessing, read_classes
from .models.fcn import AT_ONCE_POOL3_SCALE, AT_ONCE_POOL4_SCALE
from .models.vgg import FC6_KERNEL

__all__ = [
    "CAFFE_VGG16_PREPROCESSING",
    "MAX_BLOBS",
    "MAX_DIMS",
    "MAX_FIELDS",
    "MAX_FILE_BYTES",
    "MAX_LAYERS",
    "MAX_RECORDS",
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
# The class counts of the releases of other label sets than VOC's: the class lists in the
# package's classes/ folder name them (each file says where its names come from).
NYUD_CLASSES, PASCAL_CONTEXT_CLASSES, SIFT_FLOW_CLASSES = 40, 60, 33

# The bounds of the parse (see the module's docstring). A full FCN-8s has about 60 layers, at
# most 2 blobs in each, 4 dims per blob and some hundreds of fields in all (341 in the tests'
# full-size file; Caffe writes a few more a layer), so each cap is far above a real file and far
# below what would cost time: the loop ends within MAX_RECORDS steps (100,000 take 0.3 s on a
# busy 2-core machine).
MAX_FILE_BYTES = (1 << 31) - 1  # Caffe's kProtoReadBytesLimit (INT_MAX, src/caffe/util/io.cpp)
MAX_LAYERS = 1024
MAX_FIELDS = 1024  # in one layer, blob or shape
MAX_RECORDS = 100_000  # fields in the whole file
MAX_BLOBS = 2  # a weight and a bias
MAX_DIMS = 4  # a weight is at most 4-D
MAX_TEXT = 1024  # bytes of a layer's name or type

# protobuf wire types
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_U64 = (1 << 64) - 1

_NET_LAYER, _NET_LAYER_V1 = 100, 2
_LAYER_FIELDS = {False: (1, 2, 7), True: (4, 5, 6)}  # (name, type, blobs) for V2 / V1
_V1_TYPES = {4: "Convolution", 14: "InnerProduct", 39: "Deconvolution"}  # V1LayerParameter enum
_BLOB_LEGACY_DIMS, _BLOB_DATA, _BLOB_SHAPE, _BLOB_DOUBLE = (1, 2, 3, 4), 5, 7, 8
_CHUNK = 1 << 22  # values converted (double data) or checked (finite) at a time

# The layers that hold weights in an FCN or VGG16: (the weight's rank, its layout); a bias is
# one value per output. Old files write every blob 4-D, padded with leading dims of 1.
_WEIGHT_LAYOUTS = {
    "Convolution": (4, "out×in×kh×kw"),
    "Deconvolution": (4, "in×out×kh×kw"),
    "InnerProduct": (2, "out×in (old files: 1×1×out×in)"),
    "Scale": (1, "one value per channel"),
}
_AT_ONCE_SCALES = {"scale_pool4": AT_ONCE_POOL4_SCALE, "scale_pool3": AT_ONCE_POOL3_SCALE}

_WHAT = "Caffe .caffemodel file"  # for the gate's messages: "m: no such Caffe .caffemodel file"


@dataclass
class CaffeWeights:
    """What a ``.caffemodel`` holds, in the terms ``load_model`` needs.

    ``state_dict`` has Caffe's layer names (``conv1_1.weight``, ``fc6.bias`` …): InnerProduct
    weights are already the convolutions they are equivalent to (fc6: ``out×C×7×7``, the others
    ``out×in×1×1``), Deconvolution blobs are PyTorch's transposed-convolution layout as they stand.
    ``at_once`` says the file had FCN-8s at-once's fixed ``scale_pool4``/``scale_pool3`` layers.
    ``layers`` names every layer with weights, in file order (for messages). ``preprocessing`` is
    the release's: BGR 0..255 minus the mean of the data the net was trained on.
    ``class_names`` are the release's for the PASCAL-Context, NYUDv2 and SIFT Flow nets (empty
    otherwise: VOC's for 21 classes, ``class_<k>`` for others).
    """

    state_dict: dict[str, torch.Tensor]
    at_once: bool = False
    layers: list[str] = field(default_factory=list)
    preprocessing: Preprocessing = field(default_factory=Preprocessing.caffe)
    class_names: list[str] = field(default_factory=list)


def is_caffe_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is for this reader: a Caffe suffix, or a protobuf ``NetParameter`` by its
    first bytes (a name field or a layer list) under another name. Only a regular file is opened
    to look: a named pipe would block the open, a device never end."""
    path = Path(path)
    if path.suffix.lower() in SUFFIXES:
        return True
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
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
    a readable ``.caffemodel`` of an FCN's kind of layers, however it is damaged.
    """
    path = Path(path)
    _check_file(path)
    try:
        with open_regular(path, _WHAT) as f:  # still the regular file checked, never a pipe
            size = os.fstat(f.fileno()).st_size
            _check_size(path, size)
            raw = _read_layers(_Wire(f, path, size))
    except OSError as e:
        raise FCNError(f"{path}: cannot read ({os_reason(e)})") from None
    if not raw:
        raise FCNError(
            f"{path} holds no Caffe layers with weights; it is not a .caffemodel (or an empty net)"
        )
    return _to_state_dict(raw, path)


def _check_file(path: Path) -> None:
    """A regular file (the gate's `regular_file`: a pipe or device is refused from its type,
    before it is opened) of a size Caffe reads that is not a prototxt or a known other format."""
    _check_size(path, os.stat(regular_file(path, _WHAT)).st_size)
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


def _check_size(path: Path, size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise FCNError(
            f"{path} is {size / 2**30:.1f} GiB; a .caffemodel is at most 2 GiB (Caffe's own "
            "limit; a full FCN-8s is 0.5 GiB): this is not one"
        )


@dataclass
class _RawLayer:
    name: str
    type: str
    blobs: list[np.ndarray]


class _Wire:
    """The protobuf wire format over a seekable file of ``size`` bytes: every length checked
    against the end of the record that holds it before it is followed, every field counted."""

    def __init__(self, f: BinaryIO, path: Path, size: int) -> None:
        self.f, self.path, self.size = f, path, size
        self.pos = self.records = 0

    def damaged(self, what: str) -> FCNError:
        return FCNError(f"{self.path}: {what}; the file is damaged or not a .caffemodel")

    def past(self, end: int) -> FCNError:
        """A read that would go beyond ``end``: the end of the file, or of the record holding it."""
        if end >= self.size:
            return FCNError(
                f"{self.path} ends at byte {self.pos:,} inside a record: the file is truncated "
                "(an interrupted download?) or not a .caffemodel"
            )
        return self.damaged(f"a field at byte {self.pos:,} runs past the record holding it")

    def byte(self, end: int) -> int:
        b = self.f.read(1) if self.pos < end else b""
        if not b:
            raise self.past(end if self.pos >= end else self.size)
        self.pos += 1
        return b[0]

    def varint(self, end: int) -> int:
        start, value, shift = self.pos, 0, 0
        while True:
            b = self.byte(end)
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value & _U64
            shift += 7
            if shift > 63:
                raise self.damaged(f"a number at byte {start:,} is longer than 10 bytes")

    def signed(self, end: int) -> int:
        value = self.varint(end)
        return value - (1 << 64) if value >= 1 << 63 else value

    def length(self, end: int) -> int:
        """A length-delimited field's size, refused if it runs past ``end`` (truncated files and
        absurd sizes both land here, before anything is read or allocated)."""
        n = self.varint(end)
        left = end - self.pos
        if n > left and end >= self.size:
            raise FCNError(
                f"{self.path}: a record at byte {self.pos:,} declares {n:,} bytes but only "
                f"{left:,} follow: the file is truncated or damaged"
            )
        if n > left:
            raise self.damaged(
                f"a record at byte {self.pos:,} declares {n:,} bytes but the record holding it "
                f"ends {left:,} bytes later"
            )
        return n

    def fields(self, end: int, what: str, limit: int = MAX_FIELDS) -> Iterator[tuple[int, int]]:
        """``(field number, wire type)`` of each field of ``what`` up to ``end``; the caller reads
        the value or calls `skip`. At most ``limit`` fields, and `MAX_RECORDS` in the file."""
        count = 0
        while self.pos < end:
            at = self.pos
            key = self.varint(end)
            number, wire = key >> 3, key & 7
            if number == 0 or wire not in (_VARINT, _FIXED64, _LEN, _FIXED32):
                raise FCNError(
                    f"{self.path}: bytes at {at:,} are not a protobuf field (field {number}, "
                    f"wire type {wire}); this is not a .caffemodel, or it is damaged"
                )
            count += 1
            self.records += 1
            if count > limit:
                raise self.damaged(f"{what} has more than {limit:,} fields (at byte {at:,})")
            if self.records > MAX_RECORDS:
                raise FCNError(
                    f"{self.path} holds more than {MAX_RECORDS:,} protobuf fields (at byte "
                    f"{at:,}); an FCN or VGG16 has a few thousand at most: this is another net, "
                    "or the file is damaged"
                )
            yield number, wire

    def skip(self, wire: int, end: int) -> None:
        if wire == _VARINT:
            self.varint(end)
            return
        n = 8 if wire == _FIXED64 else 4 if wire == _FIXED32 else self.length(end)
        if self.pos + n > end:
            raise self.past(end)
        self.seek(self.pos + n)

    def seek(self, pos: int) -> None:
        self.f.seek(pos)
        self.pos = pos

    def text(self, end: int, what: str) -> str:
        """A layer's name or type: short printable UTF-8, so every message naming it is one
        line of what the file says."""
        n = self.length(end)
        at = self.pos
        if n > MAX_TEXT:
            raise self.damaged(f"a layer {what} at byte {at:,} is {n:,} bytes long")
        data = self.f.read(n)
        if len(data) < n:
            raise self.past(self.size)
        self.pos += n
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise self.damaged(f"a layer {what} at byte {at:,} is not UTF-8 text") from None
        if not text.isprintable():
            raise self.damaged(f"a layer {what} at byte {at:,} holds control characters")
        return text

    def array(self, offset: int, nbytes: int, dtype: np.dtype) -> np.ndarray:
        """``nbytes`` at ``offset`` as little-endian float32 (float64 data converted in chunks)."""
        self.seek(offset)
        out = np.empty(nbytes // dtype.itemsize, np.float32)
        if dtype == np.float32:
            self._fill(out)
        else:
            buffer = np.empty(min(out.size, _CHUNK), dtype)
            for start in range(0, out.size, _CHUNK):
                part = buffer[: min(_CHUNK, out.size - start)]
                self._fill(part)
                with np.errstate(over="ignore"):  # beyond float32's range: inf, refused below
                    out[start : start + part.size] = part
        return out

    def _fill(self, array: np.ndarray) -> None:
        view = memoryview(array).cast("B")  # type: ignore[arg-type]  # ndarray is a buffer
        got = 0
        while got < len(view):
            n = self.f.readinto(view[got:])  # type: ignore[attr-defined]  # an open() file
            if not n:
                self.pos += got
                raise self.past(self.size)
            got += n
        self.pos += got


def _read_layers(wire: _Wire) -> list[_RawLayer]:
    layers = []
    count, lists = 0, set()
    for number, kind in wire.fields(wire.size, "the net", MAX_LAYERS + MAX_FIELDS):
        if number in (_NET_LAYER, _NET_LAYER_V1) and kind == _LEN:
            count += 1
            if count > MAX_LAYERS:
                raise FCNError(
                    f"{wire.path} holds more than {MAX_LAYERS:,} layers (at byte {wire.pos:,}); "
                    "an FCN or VGG16 has under 100: this is another net, or the file is damaged"
                )
            lists.add(number)
            if len(lists) > 1:
                raise wire.damaged(
                    "it holds both old (V1 'layers') and new ('layer') layer lists, of which "
                    "Caffe reads one"
                )
            n = wire.length(wire.size)
            layer = _read_layer(wire, wire.pos + n, v1=number == _NET_LAYER_V1)
            if layer.blobs:
                layers.append(layer)
        else:
            wire.skip(kind, wire.size)
    return layers


def _read_layer(wire: _Wire, end: int, v1: bool) -> _RawLayer:
    name_field, type_field, blobs_field = _LAYER_FIELDS[v1]
    name, kind = "", ""
    blobs: list[np.ndarray] = []
    for number, wire_type in wire.fields(end, "a layer"):
        if number == name_field and wire_type == _LEN:
            name = wire.text(end, "name")
        elif number == type_field and wire_type == (_VARINT if v1 else _LEN):
            if v1:
                code = wire.varint(end)
                kind = _V1_TYPES.get(code, f"V1 layer type {code}")
            else:
                kind = wire.text(end, "type")
        elif number == blobs_field and wire_type == _LEN:
            if len(blobs) == MAX_BLOBS:
                raise FCNError(
                    f"{wire.path}: layer {name or '?'} ({kind or 'no type'}) has more than "
                    f"{MAX_BLOBS} blobs (at byte {wire.pos:,}); the layers of an FCN or VGG16 have "
                    "a weight and at most a bias"
                )
            n = wire.length(end)
            blobs.append(_read_blob(wire, wire.pos + n, name or "?", len(blobs)))
        else:
            wire.skip(wire_type, end)
    return _RawLayer(name, kind, blobs)


def _read_blob(wire: _Wire, end: int, layer: str, index: int) -> np.ndarray:
    what = f"layer {layer} blob {index}"
    legacy = [0, 0, 0, 0]
    has_legacy = False
    shape: list[int] | None = None
    data: tuple[int, int, np.dtype] | None = None
    for number, kind in wire.fields(end, what):
        if number in _BLOB_LEGACY_DIMS and kind == _VARINT:
            legacy[number - 1], has_legacy = wire.signed(end), True
        elif number in (_BLOB_DATA, _BLOB_DOUBLE) and kind == _LEN:
            dtype = np.dtype("<f4" if number == _BLOB_DATA else "<f8")
            if data is not None:
                raise wire.damaged(
                    f"{what} holds both float and double data (at byte {wire.pos:,})"
                    if data[2] != dtype
                    else f"{what} has its data in 2 records (at byte {wire.pos:,}; Caffe "
                    "writes one)"
                )
            n = wire.length(end)
            data = (wire.pos, n, dtype)
            wire.seek(wire.pos + n)
        elif number in (_BLOB_DATA, _BLOB_DOUBLE) and kind in (_FIXED32, _FIXED64):
            raise wire.damaged(
                f"{what} has unpacked values at byte {wire.pos:,} (Caffe packs them)"
            )
        elif number == _BLOB_SHAPE and kind == _LEN:
            if shape is not None:
                raise wire.damaged(f"{what} declares its shape twice (at byte {wire.pos:,})")
            n = wire.length(end)
            shape = _read_dims(wire, wire.pos + n, what)
        else:
            wire.skip(kind, end)
    offset, nbytes, dtype = data if data is not None else (0, 0, np.dtype("<f4"))
    if nbytes % dtype.itemsize:
        raise wire.damaged(f"{what} has {nbytes:,} bytes of {dtype.name} data")
    count = nbytes // dtype.itemsize
    dims = shape if shape is not None else legacy if has_legacy else [count]
    if any(d < 0 for d in dims):
        raise wire.damaged(f"{what} declares shape {tuple(dims)}: a negative dim")
    if any(d == 0 for d in dims):
        raise wire.damaged(f"{what} has shape {tuple(dims)}: a dim of 0 holds no weights")
    declared = int(np.prod(dims, dtype=object)) if dims else 1
    if declared != count:
        raise FCNError(
            f"{wire.path}: {what} declares shape {tuple(dims)} ({declared:,} values) but holds "
            f"{count:,}; the file is damaged"
        )
    array = wire.array(offset, nbytes, dtype)
    for start in range(0, array.size, _CHUNK):
        if not np.isfinite(array[start : start + _CHUNK]).all():
            raise FCNError(
                f"{wire.path}: {what} holds NaN or infinite values; the file is damaged (or the "
                "net diverged in training): no label it gives would mean anything"
            )
    wire.seek(end)
    return array.reshape(dims)


def _read_dims(wire: _Wire, end: int, what: str) -> list[int]:
    dims: list[int] = []

    def add(value: int, at: int) -> None:
        if len(dims) == MAX_DIMS:
            raise wire.damaged(
                f"{what} has more than {MAX_DIMS} dims (at byte {at:,}; a weight has at most 4)"
            )
        dims.append(value)

    for number, kind in wire.fields(end, f"{what}'s shape"):
        if number == 1 and kind == _LEN:  # packed
            n = wire.length(end)
            stop = wire.pos + n
            while wire.pos < stop:
                at = wire.pos
                add(wire.signed(stop), at)
        elif number == 1 and kind == _VARINT:
            at = wire.pos
            add(wire.signed(end), at)
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
    held_by: dict[str, str] = {}  # the model's layer name → the file's
    for layer in raw:
        name = layer.name
        if two_headed:
            if name.endswith("_geo"):
                continue
            name = name.removesuffix("_sem")
        if name in held_by:
            both = f" ({held_by[name]} and {layer.name})" if held_by[name] != layer.name else ""
            raise FCNError(
                f"{path}: two layers with weights are named {name}{both}, where a net has one; "
                "the file is damaged or assembled by hand"
            )
        held_by[name] = layer.name
        blobs = _checked_blobs(layer, path)
        if layer.type == "Scale":
            if name not in _AT_ONCE_SCALES:
                raise FCNError(
                    f"{path}: layer {layer.name} is a Scale layer; the only ones an FCN has are "
                    "FCN-8s at-once's scale_pool4 and scale_pool3"
                )
            scales[name] = blobs[0]
            continue
        sd[f"{name}.weight"] = torch.from_numpy(_as_conv_weight(layer, blobs[0], name, path))
        if len(blobs) == 2:
            sd[f"{name}.bias"] = torch.from_numpy(blobs[1])
    preprocessing, classes = _release(sd, two_headed, path)
    return CaffeWeights(sd, _at_once(scales, path), names, preprocessing, classes)


def _checked_blobs(layer: _RawLayer, path: Path) -> list[np.ndarray]:
    """A layer's blobs at the ranks its type gives them (old files' leading dims of 1 dropped);
    any other shape, or weights in a layer type an FCN does not have, is refused here, so every
    shape the net is built from has been checked."""
    if layer.type not in _WEIGHT_LAYOUTS:
        raise FCNError(
            f"{path}: layer {layer.name} is a {layer.type or 'typeless'} layer with weights; an "
            f"FCN or VGG16 has weights only in {', '.join(_WEIGHT_LAYOUTS)} layers"
        )
    rank, layout = _WEIGHT_LAYOUTS[layer.type]
    blobs = []
    for index, blob in enumerate(layer.blobs):
        want, role, shape = (
            (1, "bias", "one value per output") if index else (rank, "weight", layout)
        )
        extra = blob.ndim - want
        if extra < 0 or any(d != 1 for d in blob.shape[:extra]):
            raise FCNError(
                f"{path}: layer {layer.name} ({layer.type}) blob {index} (the {role}) has shape "
                f"{blob.shape}; {'an' if layer.type[0] in 'AEIOU' else 'a'} {layer.type} {role} "
                f"is {shape}"
            )
        blobs.append(blob.reshape(blob.shape[extra:]))
    return blobs


def _release(
    sd: dict[str, torch.Tensor], sift_flow: bool, path: Path
) -> tuple[Preprocessing, list[str]]:
    """The preprocessing and class names of the release a net is from, told by its heads and
    class count (nothing in the file names the data set)."""
    if "fc8.weight" in sd:
        return CAFFE_VGG16_PREPROCESSING, []
    score = sd.get("score_fr.weight")
    classes = int(score.shape[0]) if score is not None else 0
    if sift_flow:
        return SIFT_FLOW_PREPROCESSING, _release_classes("sift-flow", classes, SIFT_FLOW_CLASSES)
    if classes == NYUD_CLASSES:
        log.info("%s: 40 classes, NYUDv2's colour net: its mean pixel is subtracted", path)
        return NYUD_PREPROCESSING, _release_classes("nyud", classes, NYUD_CLASSES)
    if classes == PASCAL_CONTEXT_CLASSES:
        log.info("%s: 60 classes, a PASCAL-Context net (59 classes and background)", path)
        return Preprocessing.caffe(), _release_classes("pascal-context", classes, classes)
    return Preprocessing.caffe(), []


def _release_classes(release: str, classes: int, expected: int) -> list[str]:
    """The class names shipped for ``release`` (``classes/<release>.txt`` in the package) when
    the net has its class count; none otherwise."""
    if classes != expected:
        return []
    resource = importlib.resources.files(__package__) / "classes" / f"{release}.txt"
    with importlib.resources.as_file(resource) as file:
        return read_classes(file)[0]


def _as_conv_weight(layer: _RawLayer, weight: np.ndarray, name: str, path: Path) -> np.ndarray:
    """A layer's (checked) weight as the weight of the model's layer of that name.

    Convolution (``out×in×kh×kw``) and Deconvolution (``in×out×kh×kw``, PyTorch's
    ``ConvTranspose2d`` layout too) need nothing. InnerProduct is ``out×in`` applied to the
    flattened input, so it is the convolution whose kernel covers the whole input map: fc6 sees
    pool5's 7×7, the rest a 1×1 map.
    """
    if layer.type != "InnerProduct":
        return weight
    out, inputs = weight.shape
    kernel = FC6_KERNEL if name == "fc6" else 1
    if inputs % (kernel * kernel):
        raise FCNError(
            f"{path}: InnerProduct {layer.name} takes {inputs} inputs, not a {kernel}×{kernel} "
            "map of channels"
        )
    return weight.reshape(out, inputs // (kernel * kernel), kernel, kernel)


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
