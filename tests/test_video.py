"""Videos: `Segmenter.predict_video` and fcn-predict on video files, on clips OpenCV's own writer
makes, checked frame by frame against `Segmenter.predict` on the frames as decoded."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_api import scene

from fcn_deploy.api import FrameSelection, Segmenter
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
        ".fcn-deploy",
        frame_file(0),
        frame_file(1),
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


def retimed_clip(
    path: Path, tick: Fraction, frames: int = 4, sizes: dict[int, tuple[int, int]] | None = None
) -> Path:
    """An MJPEG clip whose frame ``i`` is shown at ``i × tick`` seconds (a container's frame rate
    of ``1 / tick``), with the frames in ``sizes`` (index → (h, w)) of another size than 48x64:
    each JPEG carries its own size, so a stream can change size mid-way."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg")
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        stream.time_base = tick
        for i in range(frames):
            h, w = (sizes or {}).get(i, (48, 64))
            encoder = av.CodecContext.create("mjpeg", "w")
            encoder.width, encoder.height, encoder.pix_fmt = w, h, "yuvj420p"
            encoder.time_base = Fraction(1, 25)
            frame = av.VideoFrame.from_ndarray(scene(h, w, i), format="bgr24")
            frame.pts = 0
            for packet in [*encoder.encode(frame), *encoder.encode(None)]:
                packet.stream, packet.time_base = stream, tick
                packet.pts = packet.dts = i
                packet.duration = 1
                out.mux(packet)
    return path


def test_a_failed_write_is_never_reported_as_success(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """A file size limit (prlimit --fsize), then a full disk (a tiny tmpfs, where mount is
    allowed): the video fails in one line naming the cause, and nothing of it is left."""
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    model, clip = make_checkpoint("fcn8s"), write_clip(tmp_path / "clip.mp4", 12, 96, 128, "mp4v")
    still = tmp_path / "still.png"
    cv2.imwrite(str(still), scene(30, 40, 1))

    def run(out: Path, *limit: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*limit, FCN_PREDICT, model, still, clip, "-o", out, "--overlay", "--device", "cpu"],
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip

    out = tmp_path / "limited"
    result = run(out, "prlimit", "--fsize=30000")  # the overlay grows past 30 KB, the rest not
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {clip}: cannot write {out}/clip_overlay.mp4: File too large"]
    assert "1 image(s)" in result.stdout and "1 failed" in result.stdout
    assert "video(s)" not in result.stdout  # none done
    assert sorted(p.name for p in out.iterdir()) == ["still.png", "still_overlay.jpg"]

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40k", "tmpfs", disk],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        result = run(disk / "out")
        assert result.returncode == 1, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "No space left on device" in errors[0], result.stderr
        assert errors[0].startswith(f"error: {clip}: ")
        assert sorted(p.name for p in (disk / "out").iterdir()) == [
            "still.png", "still_overlay.jpg"
        ]  # fmt: skip
    finally:
        subprocess.run(["umount", disk], check=True)


def test_frame_selections_are_checked_before_any_input(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    model, out = make_checkpoint("fcn8s"), tmp_path / "out"
    clip = write_clip(tmp_path / "clip.mp4", 6, fourcc="mp4v")
    still = tmp_path / "still.png"
    cv2.imwrite(str(still), scene(30, 40, 1))

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FCN_PREDICT, model, still, clip, "-o", out, "--device", "cpu", *args],
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip

    backwards = run("--start", "5", "--end", "2")  # refused before the image is done
    assert backwards.returncode == 2 and not out.exists(), backwards.stderr
    assert backwards.stderr == "error: end (2.0 s) must come after start (5.0 s) (option --end)\n"

    far = run("--start", "1e308", "--end", "1e309")  # 1e309 is not a finite number
    assert far.returncode == 2 and "--end: expected a number > 0, got '1e309'" in far.stderr
    far = run("--start", "1e308")  # finite, past the end: the video fails, in one line
    assert far.returncode == 1 and "Traceback" not in far.stderr, far.stderr
    assert far.stderr.splitlines()[-1] == (
        f"error: {clip}: no frames selected: start (1e+308 s) is at or after the end of the "
        "video (0.6 s long) (option --start)"
    )
    assert sorted(p.name for p in out.iterdir()) == ["still.png"]
    long_end = run("--start", "0.35", "--end", "1e308")  # to the last frame
    assert long_end.returncode == 0, long_end.stderr
    assert sorted(p.name for p in (out / "clip").iterdir()) == [
        ".fcn-deploy", frame_file(4), frame_file(5)
    ]  # fmt: skip


def test_a_frame_size_change_fails_the_video(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """A stream whose frames grow mid-way: each decoded frame is checked, against the limit and
    the stream's size, before it is converted, and the video leaves nothing."""
    seg = Segmenter.load(make_checkpoint("fcn8s"), device="cpu", max_megapixels=0.1)
    out = tmp_path / "out"
    bigger = retimed_clip(tmp_path / "grows.avi", Fraction(1, 10), 6, {3: (60, 80), 4: (60, 80)})
    changed = r"grows.avi: frame 3 is 80x60 but the video's frames are 64x48 \(WxH\): videos"
    with pytest.raises(FCNError, match=changed):
        segment_video(seg, bigger, out, "grows", overlay_alpha=0.5)
    huge = retimed_clip(tmp_path / "huge.avi", Fraction(1, 10), 6, {4: (480, 640)})
    with pytest.raises(FCNError, match=r"huge.avi: frame 4 of 640x480 \(WxH\) is 0.3 megapixels, "
                                       "over the limit"):  # fmt: skip
        segment_video(seg, huge, out, "huge")
    assert not any(p for p in out.iterdir() if not p.name.startswith(".fcn-deploy-tmp"))
    with pytest.raises(FCNError, match="frame 4 of 640x480"):  # the Python API as well
        list(seg.predict_video(huge))


def test_absurd_frame_rates(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    """A container that says 10⁹ frames/s: its labels are fine (frames are timed by their own
    timestamps) and its overlay is refused, saying why, before anything is decoded; one frame
    in 1000 s is slow but exact, and the overlay keeps it."""
    import av

    seg = Segmenter.load(make_checkpoint("fcn8s"), device="cpu")
    out = tmp_path / "out"
    fast = retimed_clip(tmp_path / "fast.mp4", Fraction(1, 10**9))
    with pytest.raises(FCNError, match=r"fast.mp4: its container gives 1e\+09 frames/s, which an "
                                       r"overlay video cannot carry") as e:  # fmt: skip
        segment_video(seg, fast, out, "fast", overlay_alpha=0.5)
    assert "leave the overlay out" in str(e.value) and not (out / "fast").exists()
    result = segment_video(seg, fast, out, "fast", FrameSelection(every=2))
    assert result.frames == 2 and sorted(p.name for p in result.labels.iterdir()) == [
        ".fcn-deploy", frame_file(0), frame_file(2)
    ]  # fmt: skip

    slow = retimed_clip(tmp_path / "slow.mp4", Fraction(1000))
    result = segment_video(seg, slow, out, "slow", FrameSelection(start=1500), overlay_alpha=0.5)
    assert result.frames == 2 and result.overlay is not None
    with av.open(str(result.overlay)) as written:
        assert written.streams.video[0].average_rate == Fraction(1, 1000)
        assert written.streams.video[0].frames == 2


def test_class_pixels_of_a_video(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    seg = Segmenter.load(make_checkpoint("fcn8s"), device="cpu", batch_size=2)
    clip = write_clip(tmp_path / "clip.avi", 5, h=40, w=56)
    result = segment_video(seg, clip, tmp_path / "out", "clip", FrameSelection(every=2))
    counts = sum(
        np.bincount(read_label_png(p).ravel(), minlength=seg.info.num_classes)
        for p in sorted(result.labels.glob("*.png"))
    )
    assert result.class_pixels.dtype == np.int64 and result.class_pixels.shape == (21,)
    np.testing.assert_array_equal(result.class_pixels, counts)
    assert result.class_pixels.sum() == 3 * 40 * 56 and np.count_nonzero(result.class_pixels) > 1
