"""Properties of the ONNX metadata readers: `OnnxMetadata.from_props` on damaged metadata, and
`read_onnx_metadata` on mutated files, give metadata or one `FCNError`, quickly.

The seed is a real fcn-export file of a tiny FCN-32s (240 KB). Its metadata values are replaced by
other JSON (wrong types, nesting, huge and negative numbers, NaN) or arbitrary text; its bytes are
mutated like every other reader's input; its graph's input dimensions are rewritten.
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from fuzz_helpers import INTERESTING_INTS, mutated, one_error, tried
from hypothesis import given
from hypothesis import strategies as st

from fcn_deploy import save_checkpoint
from fcn_deploy.export.metadata import PREFIX, OnnxMetadata, read_onnx_metadata
from fcn_deploy.models import create_model

SECONDS = 10.0
# what read_onnx_metadata turns into its "metadata is damaged" line
DAMAGED = (KeyError, ValueError, TypeError, RecursionError)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fcn_deploy.export import export_onnx

    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    save_checkpoint(create_model("fcn32s", num_classes=3, width=1 / 64), root / "tiny.pt")
    export_onnx(root / "tiny.pt", root / "tiny.onnx", max_size=(64, 64), max_batch=2,
                verify=False, progress=False)  # fmt: skip
    return root / "tiny.onnx"


@functools.cache
def _model(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))


@functools.cache
def _seed(path: Path) -> bytes:
    return path.read_bytes()


def _props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in _model(path).metadata_props}


numbers = st.one_of(
    st.integers(-(2**70), 2**70), st.sampled_from(INTERESTING_INTS),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([10**9, 10**12, -1, 0]),
)  # fmt: skip
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)  # fmt: skip


@st.composite
def damaged_props(draw: st.DrawFn, props: dict[str, str]) -> dict[str, str]:
    """``props`` with some values replaced: by other JSON, by one field of their own JSON
    changed (num_classes 10**12, palette entries as text, bounds out of order, ...), by deep
    nesting, by arbitrary text, or removed."""
    out = dict(props)
    for key in draw(st.lists(st.sampled_from(sorted(props)), min_size=1, max_size=3)):
        kind = draw(st.sampled_from(["json", "field", "nested", "text", "drop"]))
        if kind == "json":
            out[key] = json.dumps(draw(json_values))
        elif kind == "field":
            try:
                value = json.loads(props[key])
            except ValueError:
                value = None
            if isinstance(value, dict) and value:
                value[draw(st.sampled_from(sorted(value)))] = draw(json_values)
            out[key] = json.dumps(value)
        elif kind == "nested":
            depth = draw(st.sampled_from([10, 1000, 100_000]))
            out[key] = "[" * depth + "]" * depth
        elif kind == "text":
            out[key] = draw(st.text(max_size=40))
        else:
            out.pop(key, None)
    return out


@given(data=st.data())
def test_from_props_gives_metadata_or_a_damaged_error(tiny: Path, data: st.DataObject) -> None:
    props = data.draw(damaged_props(_props(tiny)))
    tried(json.dumps(props))
    start = time.perf_counter()
    try:
        meta = OnnxMetadata.from_props(props)
    except DAMAGED:
        meta = None
    assert time.perf_counter() - start < SECONDS
    if meta is not None:
        assert meta.info.num_classes == len(meta.info.class_names) >= 1
        assert all(math.isfinite(v) for v in meta.info.preprocessing.mean)


def _check_file(path: Path, data: bytes) -> Any:
    path.write_bytes(data)
    tried(data)
    with one_error(str(path), SECONDS):
        return read_onnx_metadata(path)


@given(data=st.data())
def test_mutated_files_give_metadata_or_one_error(tiny: Path, data: st.DataObject) -> None:
    _check_file(tiny.with_name("mutated.onnx"), data.draw(mutated(st.just(_seed(tiny)))))


@given(data=st.data())
def test_files_with_damaged_metadata_or_dims_give_metadata_or_one_error(
    tiny: Path, data: st.DataObject
) -> None:
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(_model(tiny))
    del copy.metadata_props[:]
    for key, value in data.draw(damaged_props(_props(tiny))).items():
        copy.metadata_props.add(key=key, value=value)
    dims = data.draw(st.lists(st.one_of(st.none(), numbers), max_size=6))
    if dims:
        shape = copy.graph.input[0].type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            dim = shape.dim.add()
            if isinstance(d, int) and -(2**63) <= d < 2**63:
                dim.dim_value = d
            elif d is not None:
                dim.dim_param = str(d)
    _check_file(tiny.with_name("damaged.onnx"), copy.SerializeToString())


def test_the_seed_is_read(tiny: Path) -> None:
    """The properties start from a file the reader accepts (else they would test nothing)."""
    meta = read_onnx_metadata(tiny)
    assert meta.info.num_classes == 3 and all(k.startswith(PREFIX) for k in _props(tiny))
