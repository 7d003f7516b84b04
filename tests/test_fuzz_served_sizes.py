"""Property tests of the sizes a client reads from a served model's config (``max_sizes``):
whatever a server publishes there, the client gets ranges it can use or one ValueError."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from fcn_deploy.meta import ModelInfo, SizeBounds
from fcn_deploy.serve.protocol import ServedModel

BOUNDS = SizeBounds(min_hw=(1, 1), max_hw=(1280, 1280), max_batch=8)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)
SIZES = st.lists(
    st.none() | st.tuples(st.integers(1, 10_000), st.integers(1, 10_000)).map(list), max_size=4
)


def _params(max_sizes: object) -> dict[str, str]:
    params = ServedModel(ModelInfo("fcn8s", 21), BOUNDS, "tensorrt-fp16", "cuda:0").to_parameters()
    params["fcn_deploy.max_sizes"] = json.dumps(max_sizes, allow_nan=True)
    return params


@given(SIZES)
def test_well_formed_sizes_round_trip(max_sizes: list[object]) -> None:
    served = ServedModel.from_parameters(_params(max_sizes))
    expected = [tuple(top) if top else None for top in max_sizes]  # type: ignore[arg-type]
    assert [r.max_hw for r in served.ranges] == (expected or [BOUNDS.max_hw])
    assert all(r.min_hw == BOUNDS.min_hw and r.max_batch == 8 for r in served.ranges)


@given(JSON)
def test_any_published_value_is_ranges_or_one_value_error(max_sizes: object) -> None:
    try:
        served = ServedModel.from_parameters(_params(max_sizes))
    except ValueError:
        return
    for r in served.ranges:
        assert r.max_hw is None or (min(r.max_hw) >= 1 and r.max_hw >= r.min_hw)
