"""Videos: `Segmenter.predict_video` and fcn-predict on video files, on clips OpenCV's own writer
makes, checked frame by frame against `Segmenter.predict` on the frames as decoded."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_api import scene

from fcn_deploy.api import Segmenter
from fcn_deploy.bulk.video import frame_file, segment_video
from fcn_deploy.errors import FCNError
from fcn_deploy.imageio import read_label_png

FCN_PREDICT = str(Path(sys.executable).with_name("fcn-predict"))
FPS = 10.0


def write_clip(path: Path, frames: int, h: int = 48, w: int = 64, fourcc: str = "MJPG") -> Path:
    """A clip of moving scenes through cv2.VideoWriter (MJPG in AVI, mp4v in MP4)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), FPS, (w, h))
    assert writer.isOpened(), f"this OpenCV cannot write {fourcc}"
    for i in range(frames):
        writer.write(scene(h, w, i))
    writer.release()
    return path


def decoded(path: Path) -> list[np.ndarray]:
    """Every frame as a plain cv2.VideoCapture loop returns it."""
    capture, frames = cv2.VideoCapture(str(path)), []
    while (frame := capture.read())[0]:
        frames.append(frame[1])
    capture.release()
    return frames


@pytest.fixture
def seg(make_checkpoint: Callable[..., Path]) -> Segmenter:
    return Segmenter.load(make_checkpoint("fcn8s"), device="cpu", batch_size=3)


def test_predict_video_equals_predict_on_each_decoded_frame(seg: Segmenter, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", 11, fourcc="mp4v")
    frames = decoded(clip)
    assert len(frames) == 11

    got = list(seg.predict_video(clip, every=2, start=0.1, end=0.95))  # frames 1..9, odd ones
    assert [f.index for f in got] == [1, 3, 5, 7, 9]
    for f in got:
        assert f.time == pytest.approx(f.index / FPS)
        np.testing.assert_array_equal(f.image, frames[f.index])
        np.testing.assert_array_equal(f.labels, seg.predict(frames[f.index]), err_msg=str(f.index))

    capture = cv2.VideoCapture(str(clip))  # an open capture works too, and stays the caller's
    assert len(list(seg.predict_video(capture))) == 11 and capture.isOpened()
    capture.release()

    threads = threading.active_count()
    stream = seg.predict_video(clip)
    next(stream)
    stream.close()  # a caller that stops early: the decoder thread ends with it
    assert threading.active_count() == threads


@pytest.mark.slow
def test_frames_over_the_model_bounds(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    """An exported model's largest input: refused with a pointer to tiling, run with it."""
    from fcn_deploy.export import export_onnx

    model = tmp_path / "small.onnx"
    export_onnx(make_checkpoint("fcn8s"), model, max_size=(64, 64), verify=False, progress=False)
    clip, out = write_clip(tmp_path / "big.avi", 3, h=80, w=96), tmp_path / "out"
    out.mkdir()
    with pytest.raises(FCNError, match=r"big.avi: .*80x96.*tile=True") as e:
        segment_video(Segmenter.load(model, device="cpu"), clip, out, "big")
    assert e.value.param == "tile" and not any(out.iterdir())

    tiled = Segmenter.load(model, device="cpu", tile=True)
    result = segment_video(tiled, clip, out, "big")
    assert result.frames == 3 and sorted(p.name for p in out.iterdir()) == ["big"]
    for i, frame in enumerate(decoded(clip)):
        np.testing.assert_array_equal(
            read_label_png(out / "big" / frame_file(i)), tiled.predict(frame)
        )


def test_fcn_predict_on_videos_and_broken_ones(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    model, out, src = make_checkpoint("fcn8s"), tmp_path / "out", tmp_path / "videos"
    src.mkdir()
    write_clip(src / "walk.avi", 7)
    # no suffix: found by its content
    write_clip(tmp_path / "cam0.mp4", 5, h=40, w=56, fourcc="mp4v").rename(src / "cam0")
    data = write_clip(tmp_path / "whole.avi", 12).read_bytes()
    (src / "cut.avi").write_bytes(data[: len(data) // 2])  # truncated half way
    (src / "odd.avi").write_bytes(data.replace(b"MJPG", b"QQQQ"))  # a codec no FFmpeg has
    write_clip(src / "empty.avi", 0)
    (src / "fake.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(200))
    cv2.imwrite(str(src / "still.png"), scene(30, 40, 9))

    result = subprocess.run(
        [FCN_PREDICT, src, "-o", out, "--model", model, "--overlay", "--every", "2", "--batch",
         "2", "--device", "cpu"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.endswith("frames/s)")]
    assert [line.split(":")[1].strip() for line in lines] == [
        f"{src}/{name}" for name in ("cut.avi", "empty.avi", "fake.mp4", "odd.avi")
    ], result.stderr  # one line each, nothing from FFmpeg or OpenCV
    assert "truncated" in lines[0] and "no frames" in lines[1]
    assert all("not a readable video" in line and "codec" in line for line in lines[2:])
    assert "1 image(s)" in result.stdout and "2 video(s), 7 frame(s), 4 failed" in result.stdout

    assert sorted(p.name for p in out.iterdir()) == [
        "cam0", "cam0_overlay.mp4", "still.png", "still_overlay.jpg", "walk", "walk_overlay.mp4"
    ]  # fmt: skip
    seg = Segmenter.load(model, device="cpu")
    for name, n, size in (("walk", 7, (64, 48)), ("cam0", 5, (56, 40))):
        frames = decoded(src / name if name == "cam0" else src / f"{name}.avi")
        assert len(frames) == n
        kept = sorted(p.name for p in (out / name).iterdir())
        assert kept == [".fcn-deploy"] + [frame_file(i) for i in range(0, n, 2)]
        for i in range(0, n, 2):
            labels = read_label_png(out / name / frame_file(i))  # exact ids back
            np.testing.assert_array_equal(labels, seg.predict(frames[i]), err_msg=f"{name} {i}")
        overlay = cv2.VideoCapture(str(out / f"{name}_overlay.mp4"))
        assert overlay.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS / 2)  # --every 2: same duration
        w, h = overlay.get(cv2.CAP_PROP_FRAME_WIDTH), overlay.get(cv2.CAP_PROP_FRAME_HEIGHT)
        assert (w, h) == size and len(decoded(out / f"{name}_overlay.mp4")) == len(kept) - 1


def test_a_video_never_replaces_what_is_not_its_own_earlier_result(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """``OUTDIR/NAME/`` is replaced only when it is fcn-deploy's earlier result, all of it."""
    model, out = make_checkpoint("fcn8s"), tmp_path / "out"
    clip = write_clip(tmp_path / "clip.avi", 2)
    (out / "clip").mkdir(parents=True)
    cv2.imwrite(str(out / "clip" / "mine.jpg"), scene(30, 40, 1))
    (out / "clip" / "notes.png").write_bytes(b"not a frame")
    kept = {p.name: p.read_bytes() for p in (out / "clip").iterdir()}

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FCN_PREDICT, model, *args, "-o", out, "--device", "cpu"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    named = run(clip, out / "clip" / "mine.jpg")  # an input inside the video's folder
    assert named.returncode == 2 and "mine.jpg would be replaced" in named.stderr, named.stderr
    alone = run(clip)  # the folder holds files that are not frame results: refused
    assert alone.returncode == 2 and "did not write" in alone.stderr, alone.stderr
    assert len(alone.stderr.splitlines()) == 1, alone.stderr
    assert {p.name: p.read_bytes() for p in (out / "clip").iterdir()} == kept
    with pytest.raises(FCNError, match="did not write"):  # the library refuses it as well
        segment_video(Segmenter.load(model, device="cpu"), clip, out, "clip")
    assert {p.name: p.read_bytes() for p in (out / "clip").iterdir()} == kept

    for p in (out / "clip").iterdir():
        p.unlink()
    (out / "clip").rmdir()
    assert run(clip, "--every", "2").returncode == 0
    again = run(clip)  # its own earlier result: replaced whole, and said
    assert again.returncode == 0 and "1 earlier result(s)" in again.stderr, again.stderr
    assert sorted(p.name for p in (out / "clip").iterdir()) == [
        ".fcn-deploy", frame_file(0), frame_file(1)
    ]


def test_video_frames_over_the_megapixel_limit_and_bad_selections(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    seg = Segmenter.load(make_checkpoint("fcn8s"), device="cpu", max_megapixels=0.001)
    clip, out = write_clip(tmp_path / "clip.avi", 2), tmp_path / "out"
    with pytest.raises(FCNError, match=r"clip.avi: a video frame of 64x48 .*over the limit"):
        segment_video(seg, clip, out, "clip")
    assert not out.exists()  # refused from the container's size, before any file
    with pytest.raises(FCNError, match=r"clip.avi: a video frame of 64x48 .*over the limit"):
        next(seg.predict_video(clip))

    for kwargs, param in (
        ({"end": float("inf")}, "end"), ({"start": float("nan")}, "start"),
        ({"start": float("inf")}, "start"), ({"every": 1.5}, "every"),
        ({"every": float("inf")}, "every"),
    ):  # fmt: skip
        with pytest.raises(FCNError) as e:
            next(seg.predict_video(clip, **kwargs))
        assert e.value.param == param, kwargs
