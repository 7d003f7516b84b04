"""Property tests of the verification record reader (`OnnxMetadata.from_props`), outside input
in every ONNX file and engine sidecar a user hands over.

Whatever the record's text, and whichever other entry was changed, reading either says the
metadata is damaged (the errors `read_onnx_metadata` turns into one line) or gives a status, and
that status is the recorded one only for the record the writer made for exactly these entries.
"""

from __future__ import annotations

import json

from fuzz_helpers import tried
from hypothesis import given
from hypothesis import strategies as st

from fcn_deploy.export.metadata import (
    PASSED,
    RECORD_KEY,
    RECORD_MISMATCH,
    UNRECORDED,
    OnnxMetadata,
)
from fcn_deploy.meta import ModelInfo, SizeBounds

META = OnnxMetadata(
    ModelInfo("fcn8s", 3, 0.125, ["a", "b", "c"]),
    "tensor",
    "fp32",
    False,
    SizeBounds((1, 1), (512, 512), 1, 4),
    "x",
    "logits",
    "ab" * 32,
    "2.13.0",
    "1.23.2",
    20,
    verification=PASSED,
    graph_sha256="cd" * 32,
)
PROPS = META.to_props()
DAMAGED = (KeyError, ValueError, TypeError, RecursionError)  # what read_onnx_metadata words

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
records = st.fixed_dictionaries(
    {"status": st.text() | json_values, "graph": st.text() | st.none(), "digest": st.text()}
)


@given(st.text() | json_values.map(json.dumps) | records.map(json.dumps))
def test_any_record_text_reads_as_mismatch_unless_it_is_the_written_one(text: str) -> None:
    tried(text)
    meta = OnnxMetadata.from_props(PROPS | {RECORD_KEY: text})
    if meta.verification != RECORD_MISMATCH:  # the same record, written differently
        assert (meta.verification, meta.graph_sha256) == (PASSED, META.graph_sha256)
        assert json.loads(text)["digest"] == json.loads(PROPS[RECORD_KEY])["digest"]


@given(st.sampled_from(sorted(set(PROPS) - {RECORD_KEY})), st.text())
def test_changing_any_other_entry_is_seen(key: str, value: str) -> None:
    tried(f"{key}={value}")
    try:
        meta = OnnxMetadata.from_props(PROPS | {key: value})
    except DAMAGED:
        return  # one line from read_onnx_metadata: "fcn-deploy metadata is damaged"
    if value == PROPS[key]:
        assert meta == META
    elif key == "fcn_deploy.format_version" and int(value) < 2:
        assert meta.verification == UNRECORDED  # read as the previous release's file
    else:
        assert meta.verification == RECORD_MISMATCH


@given(st.dictionaries(st.text().map("fcn_deploy.".__add__), st.text(), max_size=3))
def test_added_entries_are_seen(extra: dict[str, str]) -> None:
    extra.pop(RECORD_KEY, None)
    tried(repr(extra))
    try:
        meta = OnnxMetadata.from_props(PROPS | extra)
    except DAMAGED:
        return
    same = all(PROPS.get(k) == v for k, v in extra.items())
    assert meta.verification == (PASSED if same else RECORD_MISMATCH) or (
        int(extra.get("fcn_deploy.format_version", "2")) < 2
    )
