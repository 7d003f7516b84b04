"""Video in, labels per frame out: `Segmenter.predict_video`'s decoding and frame selection.

Frames are decoded by OpenCV (so any container and codec its FFmpeg reads) on a background thread
that feeds a bounded queue, while the caller's thread runs the model on batches of
``Segmenter.batch_size`` frames: decoding overlaps inference and memory stays flat however long
the video is. Frames are decoded in order and skipped ones only grabbed (no seeking, whose
accuracy depends on the codec), so the labels of frame ``i`` are always those of the ``i``-th
frame a plain ``cv2.VideoCapture`` loop returns.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import cv2
import numpy as np

from .._gate import regular_file
from .._io import describe_file
from ..errors import FCNError
from ..imageio import check_megapixels

if TYPE_CHECKING:
    from .segmenter import Segmenter

__all__ = [
    "FrameSelection",
    "VideoFrame",
    "VideoInfo",
    "VideoSource",
    "is_video",
    "open_video",
    "predict_frames",
    "predict_video",
]

VideoSource = Union[str, "os.PathLike[str]", cv2.VideoCapture]

# FFmpeg's own messages ("moov atom not found") would repeat our one-line error; read once, at
# the first capture opened, so set on import (a value the user set wins)
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

# leading bytes of video containers FFmpeg reads: (offset, magic)
_VIDEO_MAGIC = (
    (4, b"ftyp"),  # MP4, MOV, M4V, 3GP
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska, WebM
    (0, b"\x00\x00\x01\xba"),  # MPEG program stream
    (0, b"\x00\x00\x01\xb3"),  # MPEG-1/2 elementary stream
    (0, b"FLV"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"),  # ASF, WMV
    (0, b"OggS"),
)
_TS_PACKET = 188  # MPEG transport stream: a 0x47 sync byte every 188 bytes


def is_video(path: str | os.PathLike[str]) -> bool:
    """Whether a file is a video container, from its first bytes (whatever its suffix says)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4 * _TS_PACKET)
    except OSError:
        return False
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return True
    if len(head) >= 3 * _TS_PACKET and all(head[k * _TS_PACKET] == 0x47 for k in range(3)):
        return True
    return any(head[at : at + len(magic)] == magic for at, magic in _VIDEO_MAGIC)


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video stream (``frames`` is its estimate; 0: unknown)."""

    name: str
    fps: float
    width: int
    height: int
    frames: int
    codec: str


@dataclass(frozen=True)
class FrameSelection:
    """Which frames to segment: every ``every``-th from ``start`` up to ``end`` seconds.

    Seconds become frame numbers by the container's frame rate (``round(seconds × fps)``);
    ``end=None`` runs to the last frame.
    """

    every: int = 1
    start: float = 0.0
    end: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not float(self.every).is_integer() or self.every < 1:
            raise FCNError(
                f"every must be a whole number 1 or more, got {self.every}", param="every"
            )
        if not 0 <= self.start < math.inf:
            raise FCNError(
                f"start must be a finite number of seconds, 0 or more, got {self.start}",
                param="start",
            )
        if self.end is not None and not math.isfinite(self.end):
            raise FCNError(
                f"end must be a finite number of seconds (None: to the last frame), got {self.end}",
                param="end",
            )
        if self.end is not None and not self.end > self.start:
            raise FCNError(
                f"end ({self.end} s) must come after start ({self.start} s)", param="end"
            )

    def frame_range(self, fps: float) -> tuple[int, int | None]:
        """First frame and the frame to stop before (None: the end of the video)."""
        first = round(self.start * fps)
        return first, None if self.end is None else max(first + 1, round(self.end * fps))

    def count(self, info: VideoInfo) -> int | None:
        """How many frames will be selected, by the container's frame count (None: unknown)."""
        first, stop = self.frame_range(info.fps)
        stop = info.frames if stop is None else min(stop, info.frames or stop)
        return max(0, math.ceil((stop - first) / self.every)) if stop else None


@dataclass(frozen=True)
class VideoFrame:
    """One selected frame: its number in the video, the pixels as decoded (BGR) and its labels."""

    index: int
    time: float  # seconds from the start: index / fps
    image: np.ndarray
    labels: np.ndarray


def open_video(source: VideoSource) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Open a video file (or take an open ``cv2.VideoCapture``) and read its stream's properties.

    A file FFmpeg cannot open, or one without a frame rate or size, is one `FCNError` saying what
    the file looks like.
    """
    if isinstance(source, cv2.VideoCapture):
        capture, name = source, "video capture"
        if not capture.isOpened():
            raise FCNError("the cv2.VideoCapture given is not open")
    else:
        path = Path(source)
        name = str(path)
        regular_file(path, "video file")  # a FIFO would block FFmpeg, /dev/zero never end
        with _opencv_silent():  # its ERROR lines ("could not find decoder") would repeat ours
            capture = cv2.VideoCapture(name, cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            what = (
                "truncated, corrupt, or a codec this OpenCV's FFmpeg lacks"
                if is_video(path)
                else describe_file(path) or "not a container this OpenCV's FFmpeg reads"
            )
            raise FCNError(f"{path}: not a readable video ({what})")
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC))
    codec = "".join(chr((fourcc >> 8 * k) & 0xFF) for k in range(4)).strip("\x00 ") or "unknown"
    info = VideoInfo(
        name=name,
        fps=float(capture.get(cv2.CAP_PROP_FPS)),
        width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        frames=max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))),
        codec=codec,
    )
    if not (info.fps > 0 and info.width > 0 and info.height > 0):
        if not isinstance(source, cv2.VideoCapture):
            capture.release()
        raise FCNError(f"{name}: no video stream with a frame rate and size (not a video?)")
    return capture, info


@contextlib.contextmanager
def _opencv_silent() -> Iterator[None]:
    """OpenCV's log off for a block (``cv2.utils.logging`` in opencv 5, ``cv2`` in 4.x)."""
    module = getattr(getattr(cv2, "utils", None), "logging", None)
    get = getattr(module, "getLogLevel", None) or getattr(cv2, "getLogLevel", None)
    set_ = getattr(module, "setLogLevel", None) or getattr(cv2, "setLogLevel", None)
    if get is None or set_ is None:
        yield
        return
    level = get()
    set_(0)
    try:
        yield
    finally:
        set_(level)


_END = object()  # the decoder's last queue item


def _decode(
    capture: cv2.VideoCapture,
    info: VideoInfo,
    selection: FrameSelection,
    frames: queue.Queue[object],
    stop: threading.Event,
) -> None:
    """Decoder thread: put ``(index, BGR frame)`` of each selected frame, then ``_END`` (or the
    error); gives up as soon as ``stop`` is set."""

    def put(item: object) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                frames.put(item, timeout=0.1)
                return True
        return False

    try:
        first, stop_at = selection.frame_range(info.fps)
        index = decoded = 0
        while stop_at is None or index < stop_at:
            if not capture.grab():
                break
            if index >= first and (index - first) % selection.every == 0:
                ok, image = capture.retrieve()
                if not ok or image is None:
                    break
                decoded += 1
                if not put((index, image)):
                    return
            index += 1
        if index == 0 and info.frames == 0:
            raise FCNError(f"{info.name}: the video has no frames")
        if index == 0:
            raise FCNError(
                f"{info.name}: none of its {info.frames} {info.codec} frame(s) could be decoded "
                "(corrupt, or a codec this OpenCV's FFmpeg lacks)"
            )
        wanted = info.frames if stop_at is None else min(stop_at, info.frames)
        if info.frames and index < wanted:
            raise FCNError(
                f"{info.name}: truncated or corrupt: decoding stopped at frame {index} of "
                f"{info.frames}"
            )
        if decoded == 0:
            raise FCNError(
                f"{info.name}: no frames selected (the video has {index} frame(s) at "
                f"{info.fps:g} fps; check start and end)",
                param="start",
            )
        put(_END)
    except Exception as e:  # handed to the consumer, raised there
        put(e)


def predict_video(
    segmenter: Segmenter,
    source: VideoSource,
    selection: FrameSelection = FrameSelection(),
    tile: bool | None = None,
    queue_frames: int | None = None,
) -> Generator[VideoFrame, None, None]:
    """`VideoFrame` of each selected frame, in order; see `Segmenter.predict_video`."""
    capture, info = open_video(source)
    try:
        check_megapixels(
            info.height, info.width, segmenter.max_megapixels, f"{info.name}: a video frame"
        )
        yield from predict_frames(segmenter, capture, info, selection, tile, queue_frames)
    finally:
        if not isinstance(source, cv2.VideoCapture):
            capture.release()


def predict_frames(
    segmenter: Segmenter,
    capture: cv2.VideoCapture,
    info: VideoInfo,
    selection: FrameSelection = FrameSelection(),
    tile: bool | None = None,
    queue_frames: int | None = None,
) -> Generator[VideoFrame, None, None]:
    """`predict_video` on a capture already opened by `open_video` (which gave ``info``)."""
    size = queue_frames or 2 * segmenter.batch_size
    frames: queue.Queue[object] = queue.Queue(maxsize=size)
    stop = threading.Event()
    decoder = threading.Thread(
        target=_decode, args=(capture, info, selection, frames, stop), daemon=True
    )
    decoder.start()
    try:
        done = False
        while not done:
            batch: list[tuple[int, np.ndarray]] = []
            while len(batch) < segmenter.batch_size:
                item = frames.get()
                if item is _END:
                    done = True
                    break
                if isinstance(item, Exception):
                    raise item
                batch.append(item)  # type: ignore[arg-type]
            if batch:
                images = [image for _, image in batch]
                # tile only when asked: fcn-predict --server's RemoteSegmenter has no tiling
                labels = (
                    segmenter.predict_batch(images)
                    if tile is None
                    else segmenter.predict_batch(images, tile=tile)
                )
                for (index, image), lab in zip(batch, labels, strict=True):
                    yield VideoFrame(index, index / info.fps, image, lab)
    finally:
        stop.set()
        decoder.join()
