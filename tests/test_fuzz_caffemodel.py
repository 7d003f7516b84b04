"""Property-based tests of the Caffe reader: whatever bytes a ``.caffemodel`` holds, reading it
gives the weights or one `FCNError` line, within a time and memory bound.

The inputs start as valid files written by `caffe_writer` (small nets of every layer type and
file form, tiny but complete FCNs and VGG16s) and are then damaged as downloads and hand-made
files are: bits flipped, cut short, spliced with pieces of other files, records deleted or
repeated, a varint (a length, a key, a dim) replaced by an interesting number, and shapes that lie
about their data (negative, zero, huge, too many dims). The settings are the profile loaded in
conftest.py: a fixed budget in the suite, 100,000 inputs each in a campaign
(``FCN_HYPOTHESIS_PROFILE=campaign``).
"""

from __future__ import annotations

import functools
import re
import signal
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from caffe_writer import (
    V1_TYPES,
    Layer,
    at_once_scales,
    caffemodel_bytes,
    layers_of,
    net_parts,
    two_headed,
    varint,
)
from fuzz_helpers import tried
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fcn_deploy import FCNError, load_model
from fcn_deploy.caffemodel import CaffeWeights, read_caffemodel
from fcn_deploy.models import Net, create_model

# The bound every input is held to. Reading these files (at most a few hundred KB) takes
# milliseconds; the bounds are far above that, so passing one is a hang or a runaway allocation,
# not a slow machine. Memory: what Python and NumPy allocate (tracemalloc), against the file.
SECONDS = 20.0
MEMORY_PER_BYTE, MEMORY_SLACK = 2, 4 << 20

NAMES = (
    "conv1_1", "fc6", "fc7", "fc8", "score_fr", "upscore", "score_fr_sem", "upscore_geo",
    "scale_pool4", "scale_pool3", "relu1", "",
)  # fmt: skip
TYPES = (*V1_TYPES, "Scale", "ReLU", "BatchNorm", "")
FLOATS = st.floats(-1e6, 1e6, width=32)
RANKS = {"Convolution": 4, "Deconvolution": 4, "InnerProduct": 2, "Scale": 1}  # the weight's
# numbers that break lengths, counts and dims: the edges of each integer width, and small ones
NUMBERS = st.one_of(
    st.integers(0, 300),
    st.sampled_from([2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53, 2**63 - 1, 2**63, 2**64 - 1]),
    st.integers(0, 2**64 - 1),
)
DIMS = st.one_of(st.integers(-3, 5), st.sampled_from([2**31, 2**62, 2**63 - 1, -(2**63)]))


@st.composite
def blob(draw: st.DrawFn, rank: int | None, nan: bool) -> np.ndarray:
    """A small array of ``rank`` dims (any rank up to 4 for None), with ``nan`` now and then a
    NaN."""
    dims = draw(st.integers(1, 4)) if rank is None else rank
    shape = draw(st.tuples(*[st.integers(1, 3)] * dims))
    array = draw(hnp.arrays(np.float32, shape, elements=FLOATS))
    if nan and draw(st.integers(0, 9)) == 0:
        array.flat[draw(st.integers(0, array.size - 1))] = np.nan
    return array


@st.composite
def small_nets(draw: st.DrawFn) -> bytes:
    """A file of a few layers in any form (V1/V2, old 4-D dims, float or double data): half of
    them clean (an FCN's layer types, their blobs of the ranks the type has, distinct names),
    the others of any type, name and blob count, some blobs declaring shapes their data do not
    have."""
    v1, legacy, double = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    clean = draw(st.booleans())
    kinds = tuple(V1_TYPES) if v1 else tuple(RANKS) if clean else TYPES
    names = draw(st.lists(st.sampled_from(NAMES), max_size=4, unique=clean))
    layers = []
    for name in names:
        kind = draw(st.sampled_from(kinds))
        fitting = clean or draw(st.integers(0, 3)) > 0
        ranks = (RANKS.get(kind, 4), 1) if fitting else (None, None, None)
        count = draw(st.integers(1 if clean else 0, len(ranks)))
        blobs = [draw(blob(rank, nan=not clean)) for rank in ranks[:count]]
        shapes = None
        if not clean and draw(st.integers(0, 3)) == 0:  # a lying header; old files: 4 dims
            declared = st.lists(DIMS, max_size=4 if legacy else 6)
            shapes = [draw(declared) for _ in blobs]
        layers.append(Layer(name, kind, blobs, shapes))
    return caffemodel_bytes(layers, v1=v1, legacy=legacy, double=double)


@functools.cache
def complete_nets() -> tuple[tuple[bytes, tuple[int, ...]], ...]:
    """Tiny but complete nets of every kind the loader takes, each in another file form, with
    the offsets of their bytes that are not blob data (keys, lengths, names, dims)."""

    def net(variant: str, classes: int = 2) -> torch.nn.Module:
        torch.manual_seed(0)
        return create_model(variant, num_classes=classes, width=1 / 64)

    def sample(layers: list[Layer], **form: bool) -> tuple[bytes, tuple[int, ...]]:
        data, structure = bytearray(), []
        for part in net_parts(layers, **form):
            if isinstance(part, bytes):
                structure.extend(range(len(data), len(data) + len(part)))
            data += part
        return bytes(data), tuple(structure)

    at_once = net("fcn8s-atonce")
    sem, geo = net("fcn16s", 33), net("fcn16s", 3)
    sift_flow = two_headed(sem, geo, ("score_fr", "upscore2", "score_pool4", "upscore16"))
    scales = at_once_scales(at_once.conv4_3.out_channels, at_once.conv3_3.out_channels)
    return (
        sample(layers_of(net("fcn32s"))),
        sample(layers_of(net("fcn16s")), v1=True, legacy=True),
        sample(layers_of(net("fcn8s")), double=True),
        sample(layers_of(at_once) + scales),
        sample(sift_flow),
        sample(
            layers_of(net("vgg16", 10), inner_product=("fc6", "fc7", "fc8")), v1=True, legacy=True
        ),
    )


def _varint_at(data: bytearray, at: int) -> int:
    """How many bytes the varint starting at ``at`` takes (at most 10)."""
    end = at
    while end < len(data) and end - at < 10 and data[end] & 0x80:
        end += 1
    return min(end + 1, len(data)) - at


@dataclass(frozen=True)
class Damaged:
    """A valid file and the damage done to it, as steps replayed by `bytes`: Hypothesis keeps
    what it draws for its last 10,000 examples, which must be a recipe, not a copy of the file."""

    original: bytes
    steps: tuple[tuple[Any, ...], ...]

    def __bytes__(self) -> bytes:
        data = bytearray(self.original)
        for step in self.steps:
            damage(data, *step)
        return bytes(data)

    def __repr__(self) -> str:
        return f"Damaged(<{len(self.original):,} bytes>, steps={self.steps!r})"


def damage(data: bytearray, kind: str, at: int, *args: Any) -> None:
    """One step of damage to ``data`` at byte ``at``."""
    if kind == "flip" and at < len(data):
        data[at] ^= 1 << args[0]
    elif kind == "cut":
        del data[at:]
    elif kind in ("splice", "varint"):  # a piece of another file; a length, key or dim rewritten
        data[at : at + (_varint_at(data, at) if kind == "varint" else 0)] = args[0]
    elif kind == "delete":
        del data[at : at + args[0]]
    elif kind == "repeat":  # a record (or any run of bytes) written again
        end = at + args[0]
        data[end:end] = data[at:end] * args[1]


@st.composite
def mutated(
    draw: st.DrawFn, valid: st.SearchStrategy[tuple[bytes, tuple[int, ...]]], least: int = 1
) -> Damaged:
    """A valid file damaged ``least`` to four times, half of the damage aimed at the bytes that
    are not blob data (when the file says which they are)."""
    original, structure = draw(valid)
    data, steps = bytearray(original), []
    undamaged = least == 0 and draw(st.booleans())  # half of them, where that is allowed
    for _ in range(0 if undamaged else draw(st.integers(max(least, 1), 4))):
        aimed = structure and draw(st.booleans())
        at = min(draw(st.sampled_from(structure)), len(data)) if aimed else None
        at = draw(st.integers(0, len(data))) if at is None else at
        kind = draw(st.sampled_from(["flip", "cut", "splice", "delete", "repeat", "varint"]))
        args: tuple[Any, ...] = ()
        if kind == "flip":
            args = (draw(st.integers(0, 7)),)
        elif kind == "splice":
            other = draw(valid)[0]
            start = draw(st.integers(0, len(other)))
            args = (other[start : start + draw(st.integers(0, 64))],)
        elif kind == "delete":
            args = (draw(st.integers(1, 16)),)
        elif kind == "repeat":
            args = (draw(st.integers(1, 64)), draw(st.integers(1, 3)))
        elif kind == "varint":
            args = (varint(draw(NUMBERS)),)
        steps.append((kind, at, *args))
        damage(data, *steps[-1])
    return Damaged(original, tuple(steps))


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """One file name reused by every example (hypothesis runs a test many times per fixture),
    after each complete net has loaded once: the modules a first load imports are not the
    reader's memory."""
    with tempfile.TemporaryDirectory(prefix="fuzz-caffe-") as folder:
        path = Path(folder) / "net.caffemodel"
        for data, _ in complete_nets():
            path.write_bytes(data)
            load_model(path)
        yield path


class _Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Hang(f"no answer within {SECONDS:g} s")


def bounded(read: Callable[[Path], Any], path: Path, data: bytes, memory: bool = True) -> Any:
    """``read(path)`` with ``data`` in ``path``: the result or the `FCNError`, checked to be one
    printable line naming the file, within `SECONDS` and (with ``memory``) the memory bound."""
    path.write_bytes(data)
    previous = signal.signal(signal.SIGALRM, _alarm)
    if memory:
        tracemalloc.start()
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, SECONDS)
    try:
        result: Any = read(path)
    except FCNError as e:
        result = e
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        signal.signal(signal.SIGALRM, previous)
    assert seconds < SECONDS
    assert peak <= MEMORY_PER_BYTE * len(data) + MEMORY_SLACK, (peak, len(data))
    outcome = "gave a result"
    if isinstance(result, FCNError):
        message = str(result)
        assert message.isprintable() and str(path) in message, message
        outcome = re.sub(r"[-\d,.]+", "N", message.replace(str(path), ""))[:70]
    event(f"{read.__name__}: {outcome}")
    return result


def check_weights(weights: CaffeWeights) -> None:
    """What the reader promises of the weights it gives: finite, at the ranks the net needs."""
    assert weights.layers
    for key, tensor in weights.state_dict.items():
        assert tensor.dtype == torch.float32 and bool(torch.isfinite(tensor).all()), key
        assert tensor.dim() == (4 if key.endswith(".weight") else 1), (key, tensor.shape)
        assert tensor.numel() > 0, key
    if weights.class_names:
        assert len(weights.class_names) == weights.state_dict["score_fr.weight"].shape[0]


@given(data=mutated(st.tuples(small_nets(), st.just(())), least=0))
def test_any_small_net_gives_weights_or_one_error(scratch: Path, data: Damaged) -> None:
    tried(bytes(data))
    result = bounded(read_caffemodel, scratch, bytes(data))
    if isinstance(result, CaffeWeights):
        check_weights(result)


@given(data=mutated(st.sampled_from(complete_nets())))
def test_any_damaged_fcn_loads_or_gives_one_error(scratch: Path, data: Damaged) -> None:
    """Read, then (where the reader gives weights) loaded as a net: building the net on top of
    the reader's arrays is PyTorch's work, held to the time bound alone (tracing its allocations
    would cost ten times the reading)."""
    damaged = bytes(data)
    tried(damaged)
    weights = bounded(read_caffemodel, scratch, damaged)
    if not isinstance(weights, CaffeWeights):
        return
    check_weights(weights)
    result = bounded(load_model, scratch, damaged, memory=False)
    if isinstance(result, Net):
        assert result.info.num_classes >= 1 and len(result.info.class_names) >= 1
        assert all(bool(torch.isfinite(p).all()) for p in result.parameters())


@given(data=st.binary(max_size=2048), head=st.sampled_from([b"", b"\n\x03FCN", b"\xa2\x06"]))
def test_any_bytes_give_weights_or_one_error(scratch: Path, head: bytes, data: bytes) -> None:
    tried(head + data)
    result = bounded(read_caffemodel, scratch, head + data)
    if isinstance(result, CaffeWeights):
        check_weights(result)
