"""Properties of the numeric CLI options: every argparse type takes any text to a value in its
documented range or to ``ArgumentTypeError`` (argparse's one line), quickly.

Texts are arbitrary, number-like (signs, exponents, underscores, other scripts' digits, ``nan``,
``inf``, 5000 digits) and in the options' own formats (``HxW``, ``FRAMES:MIN-MAX``). The video
options' values become a `FrameSelection`, whose own properties are in test_fuzz_video.py.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

from fuzz_helpers import tried
from hypothesis import example, given
from hypothesis import strategies as st

from fcn_deploy.cli import _common
from fcn_deploy.cli.bench import _stream
from fcn_deploy.cli.engine_args import _share
from fcn_deploy.cli.serve import port

SECONDS = 1.0

number_texts = st.one_of(
    st.from_regex(r"\A\s*[-+]?(\d{1,30}|\d*\.\d{1,20})([eE][-+]?\d{1,4})?\s*\Z"),
    st.sampled_from(["nan", "-nan", "inf", "-inf", "Infinity", "1e308", "1e309", "-0", "0x10",
                     "1_000", "١٢", "٣.٥", "0.0000001", "9" * 5000, "1" * 4301, "", " ", "1 2",
                     "4e-324", "1.7976931348623157e308"]),
    st.integers().map(str), st.floats().map(repr), st.text(max_size=30),
)  # fmt: skip
size_texts = st.one_of(
    st.builds(lambda h, s, w: f"{h}{s}{w}", number_texts, st.sampled_from(["x", "X", "×", "*",
              " x ", ""]), number_texts),
    number_texts,
)  # fmt: skip

# (type, check of an accepted value)
RANGES: dict[str, tuple[Callable[[str], Any], Callable[[Any], bool]]] = {
    "positive_int": (_common.positive_int, lambda v: isinstance(v, int) and v >= 1),
    "non_negative_int": (_common.non_negative_int, lambda v: isinstance(v, int) and v >= 0),
    "positive_float": (_common.positive_float, lambda v: math.isfinite(v) and v > 0),
    "non_negative_float": (_common.non_negative_float, lambda v: math.isfinite(v) and v >= 0),
    "fraction": (_common.fraction, lambda v: 0 <= v <= 1),
    "share": (_share, lambda v: 0 < v <= 1),
    "port": (port, lambda v: 1 <= v <= 65535),
    "size_hw": (_common.size_hw, lambda v: len(v) == 2 and min(v) >= 1),
    "size_list": (_common.size_list, lambda v: len(v) >= 1 and all(min(s) >= 1 for s in v)),
    "stream": (_stream, lambda v: v[0] >= 1 and 1 <= v[1] <= v[2]),
}


@given(st.sampled_from(sorted(RANGES)), st.one_of(number_texts, size_texts))
@example("size_hw", "9" * 5000)  # int() of over 4300 digits raised ValueError
@example("size_list", "1x" + "9" * 5000)
def test_every_option_type_gives_a_value_in_range_or_one_line(name: str, text: str) -> None:
    tried(f"{name} {text}")
    convert, in_range = RANGES[name]
    start = time.perf_counter()
    try:
        value = convert(text)
    except argparse.ArgumentTypeError as e:
        assert "\n" not in str(e) and str(e)
    else:
        assert in_range(value), (name, text, value)
    assert time.perf_counter() - start < SECONDS
