"""Property tests of the video readers, which take outside input: frame selections of any
numbers, exact seeking at any start, and damaged video files. Each case is a result or one
`FCNError`, never another exception. The examples come from the Hypothesis profile conftest.py
loads (150 in CI; FCN_HYPOTHESIS_PROFILE=campaign runs 100,000)."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from fuzz_helpers import tried
from hypothesis import given
from hypothesis import strategies as st
from test_video import write_clip
from test_video_seek import encode_clip, plain_loop, selected

from fcn_deploy.api.video import FrameSelection, VideoInfo, open_video
from fcn_deploy.errors import FCNError

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**400),
    st.booleans(),
    st.just("1"),
)


@given(every=NUMBERS, start=NUMBERS, end=st.one_of(st.none(), NUMBERS),
       fps=st.floats(min_value=1e-9, max_value=1e12), frames=st.integers(0, 10**12))  # fmt: skip
def test_any_selection_is_valid_or_refused(
    every: object, start: object, end: object, fps: float, frames: int
) -> None:
    tried(repr((every, start, end, fps, frames)))
    try:
        selection = FrameSelection(every, start, end)  # type: ignore[arg-type]
    except FCNError as e:
        assert e.param in ("every", "start", "end")
        return
    first_s, end_s = selection.window()  # exact: no overflow at 1e308 s
    assert first_s >= 0 and (end_s is None or end_s >= first_s)
    first, stop = selection.frame_range(fps)
    assert first >= 0 and (stop is None or stop >= first)
    info = VideoInfo("v", fps, 64, 48, frames, "h264")
    count = selection.count(info)
    assert count is None if frames == 0 else 0 <= count <= frames  # type: ignore[operator]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list]]:
    """A variable-frame-rate H.264 MP4 (seeks by its index) and MPEG-4 Matroska (by packets),
    with every frame as the plain loop decodes it."""
    folder = tmp_path_factory.mktemp("clips")
    made = {
        "mp4": encode_clip(folder / "h264.mp4", "libx264", frames=50, vfr=True),
        "mkv": encode_clip(folder / "mpeg4.mkv", "mpeg4", frames=50, vfr=True),
    }
    return {kind: (path, plain_loop(path)) for kind, path in made.items()}


@given(kind=st.sampled_from(["mp4", "mkv"]), start=st.floats(0, 3), every=st.integers(1, 5),
       span=st.one_of(st.none(), st.floats(0.001, 3)))  # fmt: skip
def test_any_start_gives_the_plain_loops_frames(
    clips: dict[str, tuple[Path, list]], kind: str, start: float, every: int, span: float | None
) -> None:
    path, frames = clips[kind]
    tried(repr((kind, start, every, span)))
    selection = FrameSelection(every, start, None if span is None else start + span)
    want = selected(frames, selection)
    reader, _ = open_video(path)
    try:
        got = list(reader.frames(selection))
    except FCNError as e:
        assert not want and "no frames selected" in str(e), e
        return
    finally:
        reader.close()
    assert [index for index, _, _ in got] == want
    for index, time, image in got:
        assert time == float(frames[index][0])
        np.testing.assert_array_equal(image, frames[index][1])


@pytest.fixture(scope="module")
def sound_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("sound")
    return {
        "mp4": encode_clip(folder / "a.mp4", "libx264", frames=16, size=(24, 32)).read_bytes(),
        "mkv": encode_clip(folder / "a.mkv", "mpeg4", frames=16, size=(24, 32)).read_bytes(),
        "avi": write_clip(folder / "a.avi", 8, h=24, w=32).read_bytes(),  # OpenCV's MJPEG
    }


@given(data=st.data(), kind=st.sampled_from(["mp4", "mkv", "avi"]), start=st.floats(0, 1))
def test_damaged_videos_are_one_error(
    sound_files: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject, kind: str, start: float,
) -> None:  # fmt: skip
    """Cut short, bytes overwritten, bytes inserted: decoded or refused in one FCNError."""
    damaged = bytearray(sound_files[kind])
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(damaged)))
        how = data.draw(st.sampled_from(["cut", "overwrite", "insert"]))
        chunk = data.draw(st.binary(min_size=1, max_size=8))
        if how == "cut":
            del damaged[at:]
        elif how == "overwrite":
            damaged[at : at + len(chunk)] = chunk
        else:
            damaged[at:at] = chunk
    tried(bytes(damaged))
    path = tmp_path_factory.mktemp("damaged") / f"v.{kind}"
    path.write_bytes(bytes(damaged))
    try:
        reader, info = open_video(path)
    except FCNError:
        return
    try:
        for index, time, image in reader.frames(FrameSelection(1, start), max_megapixels=1.0):
            assert image.shape == (info.height, info.width, 3) and image.dtype == np.uint8
            assert index >= 0 and math.isfinite(time)
    except FCNError:
        pass
    finally:
        reader.close()


def test_frame_times_are_exact_fractions() -> None:
    """0.1 s is 1/10 s (not the float just above it), as ffmpeg's -ss rounds it."""
    assert FrameSelection(start=0.1, end=0.3).window() == (Fraction(1, 10), Fraction(3, 10))
    assert FrameSelection(start=0.1).frame_range(10.0) == (1, None)
    assert FrameSelection(start=1e308).frame_range(1e9)[0] == int(1e308) * 10**9
