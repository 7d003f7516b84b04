"""What the property tests of outside input share (tests/test_fuzz_*.py): byte mutations of valid
seed files, the one-error rule, and the record a fuzzing campaign reads.

``benchmarks/fuzz_campaign.py`` runs each property in a subprocess of its own with
``FCN_FUZZ_RECORD=<file>``; `tried` then writes there how many inputs the property has run and the
input it is running, so a segfault or a hang is reported with the input that caused it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import strategies as st

from fcn_deploy import FCNError

_RECORD = os.environ.get("FCN_FUZZ_RECORD")
_COUNT = [0]

#: Values that break size, offset and count fields: zero, one, sign and width boundaries.
INTERESTING_INTS = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
                    0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)  # fmt: skip


def tried(data: bytes | str) -> None:
    """Count one input of the running property and keep it where a campaign can read it."""
    _COUNT[0] += 1
    if _RECORD is None:
        return
    payload = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    with open(_RECORD, "wb") as f:
        f.write(b"%d\n" % _COUNT[0] + payload)


@contextmanager
def one_error(source: str, seconds: float) -> Iterator[None]:
    """The rule every reader keeps: its outcome is a value or one `FCNError`, one line, naming
    ``source``, within ``seconds``; any other exception propagates (a finding)."""
    start = time.perf_counter()
    try:
        yield
    except FCNError as e:
        message = str(e)
        assert "\n" not in message and "\r" not in message, message
        assert source in message, message
    elapsed = time.perf_counter() - start
    assert elapsed < seconds, f"took {elapsed:.1f} s, over the bound of {seconds} s"


@st.composite
def mutated(draw: Callable[..., Any], seeds: st.SearchStrategy[bytes], header: int = 64) -> bytes:
    """A seed file with up to 4 mutations: byte flips, interesting integers written over fields
    (both byte orders), inserted or deleted runs, a truncation, a copied range. Half of the
    positions fall in the first ``header`` bytes, where sizes and offsets live."""
    data = bytearray(draw(seeds))
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        n = len(data)
        at = draw(st.one_of(st.integers(0, min(header, n) - 1), st.integers(0, n - 1)))
        kind = draw(st.sampled_from(["flip", "int", "insert", "delete", "truncate", "copy"]))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "int":
            value = draw(st.sampled_from(INTERESTING_INTS))
            width = draw(st.sampled_from([1, 2, 4]))
            order = draw(st.sampled_from(["big", "little"]))
            data[at : at + width] = (value & ((1 << 8 * width) - 1)).to_bytes(width, order)
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del data[at:]
        else:
            start, length = draw(st.integers(0, n - 1)), draw(st.integers(1, 256))
            data[at:at] = data[start : start + length]
    return bytes(data)
