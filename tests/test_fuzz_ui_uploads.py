"""Property-based tests of what ``fcn-ui`` reads from the browser: the page's request (a JSON list
of files in base64), the bytes of each file, and what it writes back about them.

Whatever a request holds, the page answers with cards and one-line errors, never an exception
(which Gradio would show as a bare "Error"), and nothing in a file's name or bytes reaches the page
as markup. The settings are the profile loaded in conftest.py: a fixed budget in the suite,
100,000 inputs each in a campaign (``FCN_HYPOTHESIS_PROFILE=campaign``).
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from fuzz_helpers import tried
from hypothesis import given
from hypothesis import strategies as st

from fcn_deploy import FCNError
from fcn_deploy.api.video import VIDEO_HEAD_BYTES, looks_like_video

pytest.importorskip("gradio", reason="needs the ui extra (gradio)")

from fcn_deploy.serve.ui import (
    PageModel,
    UIConfig,
    Upload,
    parse_uploads,
    render_error,
    segment_request,
)

NAMES = st.text(max_size=300)
DATA = st.binary(max_size=2048)
# the starts of the formats the page tells apart, so that damaged files reach every decoder
MAGIC = st.sampled_from([
    b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"RIFF\0\0\0\0WEBP",
    b"\0\0\0\x18ftypmp42", b"\x1a\x45\xdf\xa3", b"RIFF\0\0\0\0AVI ", b"OggS", b"FLV", b"GIF89a",
])  # fmt: skip
ERROR_LINE = re.compile(r'<p class="fcn-error">error: [^<>\n]*</p>')


def _payload(files: list[tuple[str, bytes]]) -> str:
    return json.dumps([{"name": n, "data": base64.b64encode(d).decode()} for n, d in files])


@st.composite
def requests(draw: st.DrawFn) -> str:
    """A request as the page sends it, or damaged: JSON of other shapes, cut, characters
    replaced, data that is not base64."""
    files = draw(st.lists(st.tuples(NAMES, DATA), max_size=5))
    text = _payload(files)
    kind = draw(st.integers(0, 5))
    if kind == 1 and text:
        text = text[: draw(st.integers(0, len(text)))]
    elif kind == 2 and text:
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.characters()) + text[at + 1 :]
    elif kind == 3:
        value = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                             lambda c: st.lists(c, max_size=3) | st.dictionaries(
                                 st.sampled_from(["name", "data", "x"]), c, max_size=3),
                             max_leaves=10)  # fmt: skip
        text = json.dumps(draw(value))
    elif kind == 4:
        text = draw(st.text(max_size=200))
    return text


@given(requests(), st.integers(1, 6), st.integers(0, 8192))
def test_any_request_gives_files_or_one_error_line(
    text: str, max_files: int, max_bytes: int
) -> None:
    tried(text)
    try:
        uploads = parse_uploads(text, max_files, max_bytes)
    except FCNError as e:
        message = str(e)
        assert message and "\n" not in message and message.isprintable(), message
        return
    assert len(uploads) <= max_files
    assert sum(len(u.data) for u in uploads) <= max_bytes
    for upload in uploads:
        assert 0 < len(upload.name) <= 200 and upload.name.isprintable(), upload.name


@given(st.lists(st.tuples(NAMES, DATA), max_size=4))
def test_files_arrive_whole_and_named_on_one_line(files: list[tuple[str, bytes]]) -> None:
    uploads = parse_uploads(_payload(files), 4, 4 * 2048)
    assert [u.data for u in uploads] == [d for _, d in files]
    for upload, (name, _) in zip(uploads, files, strict=True):
        if name and name.isprintable() and len(name) <= 200:
            assert upload.name == name


@given(st.lists(st.tuples(NAMES, DATA), min_size=1, max_size=6), st.integers(0, 4096))
def test_limits_are_checked_before_decoding(files: list[tuple[str, bytes]], limit: int) -> None:
    """Too many files or too many bytes: refused, naming the parameter, whatever the data."""
    damaged = [{"name": n, "data": base64.b64encode(d).decode() + "!"} for n, d in files]
    total = sum(len(item["data"]) // 4 * 3 for item in damaged)  # "!" ends them: no padding
    try:
        parse_uploads(json.dumps(damaged), 3, limit)
    except FCNError as e:
        if len(files) > 3:
            assert e.param == "max_files"
        elif total > limit:
            assert e.param == "max_upload_mb"
        else:
            assert "did not arrive whole" in str(e)
    else:
        raise AssertionError("data that is not base64 was accepted")


@given(MAGIC, st.binary(max_size=VIDEO_HEAD_BYTES + 16))
def test_video_sniffing_takes_any_bytes(magic: bytes, rest: bytes) -> None:
    assert isinstance(looks_like_video(magic + rest), bool)
    assert looks_like_video(magic + rest) == looks_like_video((magic + rest)[:VIDEO_HEAD_BYTES])


@given(st.one_of(st.none(), NAMES), st.text(max_size=300))
def test_errors_are_one_line_of_text(name: str | None, message: str) -> None:
    """Names and messages reach the page as text on one line, never as markup."""
    shown = render_error(name, message)
    assert ERROR_LINE.fullmatch(shown), shown
    text = html.unescape(shown[len('<p class="fcn-error">') : -len("</p>")])
    assert " ".join(message.split()) in text


@pytest.fixture(scope="module")
def page_model(tmp_path_factory: pytest.TempPathFactory) -> PageModel:
    """A width-0.125 FCN-8s, as fcn-ui loads it."""
    import torch
    from conftest import randomize

    import fcn_deploy
    from fcn_deploy.models import create_model

    path = tmp_path_factory.mktemp("model") / "fcn8s.pt"
    torch.manual_seed(0)
    fcn_deploy.save_checkpoint(randomize(create_model("fcn8s", width=0.125)), path)
    return PageModel.load(path, device="cpu")


@given(st.lists(st.tuples(MAGIC, DATA), min_size=1, max_size=3))
def test_any_file_gives_a_card_or_one_error_line(
    page_model: PageModel,
    tmp_path_factory: pytest.TempPathFactory,
    files: list[tuple[bytes, bytes]],
) -> None:
    """Damaged pictures and videos of every format the page tells apart: each file gets its card
    or its one-line error, and nothing stays in the folder videos are worked in."""
    folder = tmp_path_factory.mktemp("work", numbered=True)
    uploads = [(f"f{k}", magic + data) for k, (magic, data) in enumerate(files)]
    answer = segment_request(page_model, UIConfig(), folder, _payload(uploads), 0.5)
    parts = re.findall(
        r'<section class="fcn-card.*?</section>|<p class="fcn-error">.*?</p>', answer
    )
    assert "".join(parts) == answer and len(parts) == len(uploads), answer[:500]
    for part in parts:  # (that a damaged file is the file's fault, not an internal error, is
        if part.startswith("<p"):  # the decoders' property: tests/test_fuzz_* of imageio)
            assert ERROR_LINE.fullmatch(part), part
    assert not list(Path(folder).iterdir())


def test_a_small_valid_picture_among_them_gets_its_card(
    page_model: PageModel, tmp_path: Path
) -> None:
    """The property above mostly sees refusals: a whole picture is answered with its card."""
    picture = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    png = cv2.imencode(".png", picture)[1].tobytes()
    answer = segment_request(page_model, UIConfig(), tmp_path, _payload([("ok.png", png)]), 0.5)
    assert answer.startswith('<section class="fcn-card fcn-image" data-name="ok.png"')
    assert Upload("ok.png", png) == parse_uploads(_payload([("ok.png", png)]), 1, len(png))[0]
