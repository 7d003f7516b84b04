"""Exact seeking: with a start, frame i is still the i-th frame a plain decoding loop returns, on
H.264 and MPEG-4 with B-frames (stored out of display order; MPEG-4's in open GOPs, whose
B-frames after a keyframe are shown before it) and with a variable frame rate, in each container
family: MP4 (its index), Matroska (packets counted) and MPEG-TS and AVI (decoded from the first
frame). Clips are encoded here by PyAV with chosen timestamps."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcn_deploy.api.video import FrameSelection, open_video

GOP = 12  # frames from one keyframe to the next


def encode_clip(
    path: Path,
    codec: str = "libx264",
    frames: int = 40,
    vfr: bool = False,
    size: tuple[int, int] = (48, 64),
    rate: int = 25,
    hidden: int = 0,
    options: dict[str, str] | None = None,
) -> Path:
    """A clip of distinct frames (a moving gradient and the frame's number) with two B-frames
    between anchors and a keyframe every `GOP` frames; ``vfr``: each frame lasts 10 to 89 ms.
    ``hidden``: so many frames before time 0, which an MP4's edit list hides (decoded, not
    shown). ``options``: the muxer's (``movflags``)."""
    import av

    h, w = size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w", options=options or {}) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        context = stream.codec_context
        context.max_b_frames, context.gop_size = 2, GOP
        context.time_base = Fraction(1, 1000) if vfr else Fraction(1, rate)  # AVI: 1/rate
        # keyframes only every GOP frames (no scene-cut keyframes on a number changing)
        context.options = (
            {"x264-params": "scenecut=0"} if codec == "libx264" else {"sc_threshold": "1000000000"}
        )
        pts = -hidden
        for i in range(frames):
            image = np.stack(
                [(xx * 4 + i * 3) % 256, (yy * 5 + i * 2) % 256, np.full_like(xx, 100)], -1
            ).astype(np.uint8)
            cv2.putText(image, str(i), (4, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255,) * 3, 2)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = pts, context.time_base
            pts += int(rng.integers(10, 90)) if vfr else 1
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def plain_loop(path: Path) -> list[tuple[Fraction, np.ndarray]]:
    """Every frame as a plain PyAV decoding loop returns it: (seconds from the first, BGR)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = stream.start_time or 0
        return [
            ((frame.pts - origin) * stream.time_base, frame.to_ndarray(format="bgr24"))
            for frame in container.decode(stream)
        ]


def selected(frames: list[tuple[Fraction, np.ndarray]], selection: FrameSelection) -> list[int]:
    """The frame numbers ``selection`` takes, by the rule FrameSelection states."""
    start, end = selection.window()
    inside = [i for i, (t, _) in enumerate(frames) if t >= start and (end is None or t < end)]
    return inside[:: selection.every]


def starts(frames: list[tuple[Fraction, np.ndarray]]) -> list[float]:
    """Times around the keyframes at 12 and 24 (MPEG-4's 10 and 11 are shown before 12 and
    stored after it), inside a GOP, off the frames' own times, and at the very end."""
    times = [float(t) for t, _ in frames]
    on = [times[k] for k in (1, 10, 11, 12, 13, 23, 24, 30, len(times) - 1)]
    return [0.0, *on, times[17] + 0.0004, times[29] - 0.0004]


@pytest.mark.parametrize(
    "ext, seeking", [("mp4", "index"), ("mkv", "packets"), ("fragmented.mp4", "packets")]
)
@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
@pytest.mark.parametrize("vfr", [False, True], ids=["cfr", "vfr"])
def test_start_lands_on_the_exact_frame(
    tmp_path: Path, ext: str, seeking: str, codec: str, vfr: bool
) -> None:
    fragments = {"movflags": "frag_keyframe+empty_moov"} if ext.startswith("frag") else None
    clip = encode_clip(tmp_path / f"clip.{ext}", codec, vfr=vfr, options=fragments)
    frames = plain_loop(clip)
    reader, info = open_video(clip)
    try:
        assert info.seeking == seeking and (info.width, info.height) == (64, 48)
        assert info.frames == (len(frames) if seeking == "index" else 0)  # no count otherwise
        for start in starts(frames):
            for every, span in ((1, None), (3, 0.5)):
                selection = FrameSelection(every, start, None if span is None else start + span)
                got = list(reader.frames(selection))
                assert [i for i, _, _ in got] == selected(frames, selection), (start, every)
                for index, time, image in got:
                    np.testing.assert_array_equal(image, frames[index][1], err_msg=str(index))
                    assert time == float(frames[index][0])
    finally:
        reader.close()


@pytest.mark.parametrize("ext, codec", [("ts", "libx264"), ("avi", "mpeg4")])
def test_containers_without_an_index_are_decoded_from_the_first_frame(
    tmp_path: Path, ext: str, codec: str
) -> None:
    clip = encode_clip(tmp_path / f"clip.{ext}", codec, frames=30)
    frames = plain_loop(clip)
    reader, info = open_video(clip)
    try:
        assert info.seeking == "decode"
        for start in (0.0, float(frames[13][0]), float(frames[25][0]) + 0.001):
            selection = FrameSelection(2, start)
            got = list(reader.frames(selection))
            assert [i for i, _, _ in got] == selected(frames, selection)
            for index, _, image in got:
                np.testing.assert_array_equal(image, frames[index][1])
    finally:
        reader.close()


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_frames_an_edit_list_hides_are_not_counted(tmp_path: Path, codec: str) -> None:
    """An MP4 whose edit list starts after its first frames (as a cut without re-encoding
    leaves it): those are decoded but never shown, and not numbered. FFmpeg flags them in its
    index or, where it left samples out of the index, the packets are counted instead."""
    clip = encode_clip(tmp_path / "cut.mp4", codec, frames=40, hidden=5)
    frames = plain_loop(clip)
    assert len(frames) == 35
    reader, info = open_video(clip)
    try:
        assert info.frames == (35 if info.seeking == "index" else 0)
        for start in (0.0, float(frames[13][0]), float(frames[30][0])):
            got = list(reader.frames(FrameSelection(start=start)))
            assert [i for i, _, _ in got] == selected(frames, FrameSelection(start=start))
            for index, _, image in got:
                np.testing.assert_array_equal(image, frames[index][1])
    finally:
        reader.close()


def test_a_late_start_decodes_from_the_keyframe_before_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The cost of a start: the frames from the last keyframe before it, not all before it."""
    clip = encode_clip(tmp_path / "long.mp4", "mpeg4", frames=200)
    reader, _ = open_video(clip)
    with caplog.at_level(logging.DEBUG, logger="fcn_deploy.api.video"):
        first = next(reader.frames(FrameSelection(start=7.0)))  # frame 175
    reader.close()
    assert first[0] == 175
    found = re.search(r"keyframe stored after (\d+) frames \(index\)", caplog.text)
    assert found and 175 - GOP <= int(found[1]) <= 175, caplog.text


def test_variable_frame_rate_times(tmp_path: Path) -> None:
    """Times are the frames' own timestamps, and start/end select by them."""
    clip = encode_clip(tmp_path / "vfr.mp4", frames=30, vfr=True)
    frames = plain_loop(clip)
    times = [float(t) for t, _ in frames]
    assert len(set(np.round(np.diff(times), 6))) > 5  # really variable
    reader, _ = open_video(clip)
    got = list(reader.frames(FrameSelection(start=times[7], end=times[20])))
    reader.close()
    assert [(i, t) for i, t, _ in got] == [(i, times[i]) for i in range(7, 20)]


def test_a_video_capture_is_read_in_order(tmp_path: Path) -> None:
    """An open cv2.VideoCapture: frame i at i / fps, selected as a constant-rate file is."""
    clip = encode_clip(tmp_path / "clip.mp4", "mpeg4", frames=30)
    frames = plain_loop(clip)
    capture = cv2.VideoCapture(str(clip))
    reader, _ = open_video(capture)
    got = list(reader.frames(FrameSelection(2, start=0.5, end=1.0)))  # frames 13 to 24
    assert [i for i, _, _ in got] == [13, 15, 17, 19, 21, 23]
    for index, time, image in got:
        np.testing.assert_array_equal(image, frames[index][1])
        assert time == pytest.approx(index / 25)
    reader.close()
    assert capture.isOpened()  # still the caller's
    capture.release()


def test_predict_video_after_a_start_on_a_variable_frame_rate(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """`Segmenter.predict_video`: the frames from the first at or after ``start``, numbered as
    the plain loop numbers them, with the labels of those very pixels."""
    from fcn_deploy.api import Segmenter

    seg = Segmenter.load(make_checkpoint("fcn8s"), device="cpu", batch_size=2)
    clip = encode_clip(tmp_path / "vfr.mp4", frames=30, vfr=True)
    frames = plain_loop(clip)
    start = float(frames[17][0])
    got = list(seg.predict_video(clip, every=2, start=start))
    assert [f.index for f in got] == list(range(17, 30, 2))
    for f in got:
        assert f.time == float(frames[f.index][0])
        np.testing.assert_array_equal(f.image, frames[f.index][1])
        np.testing.assert_array_equal(f.labels, seg.predict(frames[f.index][1]))


def test_without_pyav_a_video_is_one_line_saying_so(tmp_path: Path) -> None:
    clip = encode_clip(tmp_path / "clip.mp4", frames=3)
    code = (
        "import sys; sys.modules['av'] = None\n"  # as if PyAV were not installed
        "from fcn_deploy.api.video import open_video\n"
        "from fcn_deploy.errors import FCNError\n"
        f"try: open_video({str(clip)!r})\n"
        "except FCNError as e: print(e)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert run.stdout.startswith("videos are decoded by PyAV, which is not installed here")
    assert run.stdout.rstrip().endswith("pip install 'av>=17'")
