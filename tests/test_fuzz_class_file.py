"""Properties of the class-file reader (`fcn_deploy.meta.read_classes`): any file gives names
with colours 0..255, one per class line, or one `FCNError` naming the file.

Inputs are valid class files (names, names with colours, comments, blank lines) mutated line by
line, arbitrary text, and arbitrary bytes (not UTF-8, NUL, control characters, huge numbers).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fuzz_helpers import mutated, one_error, tried
from hypothesis import given
from hypothesis import strategies as st

from fcn_deploy.meta import read_classes

SECONDS = 5.0
FOLDER = Path(tempfile.mkdtemp(prefix="fcn-fuzz-classes-"))

words = st.text(st.characters(codec="utf-8", exclude_characters="\n\r#"), min_size=1, max_size=12)
numbers = st.one_of(st.integers(0, 255), st.integers(-300, 10**30), st.sampled_from(["1e3", "0x10",
                    "٣", "²", "①", "9" * 5000, "+5", "-0", "255.0", "00255"]))  # fmt: skip
lines = st.one_of(
    words,
    st.builds(lambda w, r, g, b: f"{w} {r} {g} {b}", words, numbers, numbers, numbers),
    st.builds(lambda w, c: f"{w} # {c}", words, words),
    st.sampled_from(["", "   ", "# a comment", "\t", "0 0 0", "name 1 2", "a b c d e f"]),
)
class_files = st.lists(lines, max_size=30).map(lambda ls: "\n".join(ls).encode("utf-8"))


def check(data: bytes) -> None:
    tried(data)
    path = FOLDER / "classes.txt"
    path.write_bytes(data)
    with one_error(str(path), SECONDS):
        names, palette = read_classes(path)
        assert len(names) == len(palette) >= 1
        assert all(name.strip() == name and name for name in names)
        assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in palette)


@given(class_files)
def test_class_files_give_names_and_colours_or_one_error(data: bytes) -> None:
    check(data)


@given(mutated(class_files, header=16))
def test_mutated_class_files_give_names_and_colours_or_one_error(data: bytes) -> None:
    check(data)


@given(st.binary(max_size=2048))
def test_any_bytes_give_names_and_colours_or_one_error(data: bytes) -> None:
    check(data)
