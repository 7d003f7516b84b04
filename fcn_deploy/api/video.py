"""Video in, labels per frame out: `Segmenter.predict_video`'s decoding and frame selection.

Video files are decoded by PyAV (FFmpeg's libraries, bundled in its wheel) on a background thread
that feeds a bounded queue, while the caller's thread runs the model on batches of
``Segmenter.batch_size`` frames: decoding overlaps inference and memory stays flat however long
the video is. An open ``cv2.VideoCapture`` is read the same way, frame after frame.

Frame numbers are exact: frame ``i`` is always the ``i``-th frame a plain decoding loop returns
(``for f in av.open(path).decode(video=0)``, or a ``cv2.VideoCapture`` loop), however the first
selected frame was reached. A ``start`` after 0 seeks as ffmpeg's accurate seek does: to the last
keyframe shown at or before ``start``, then decodes forward, dropping the frames before it. How
the keyframe's own number is known depends on the container (`VideoInfo.seeking`):

- ``"index"``: MP4/MOV, whose sample tables list every frame: the frames stored before the
  keyframe are counted in the container's index, without reading them;
- ``"packets"``: Matroska/WebM, and MP4s whose index does not list every frame (fragmented
  ones): the packets stored before the keyframe are read and counted, without decoding;
- ``"decode"``: every other container (AVI, MPEG-TS/PS, FLV, Ogg, ...) and an open
  ``cv2.VideoCapture``: the frames before ``start`` are decoded, from the first one.

After the keyframe, a frame's number is the keyframe's plus the count of packets demuxed since
then that are shown before it (B-frames are stored out of display order). Both counts rest on one
property of the stream: no frame stored before a keyframe is shown after it, which is what every
encoder writes (and what H.264/HEVC IDR pictures guarantee).
"""

from __future__ import annotations

import abc
import bisect
import contextlib
import heapq
import itertools
import logging
import math
import numbers
import os
import queue
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import cv2
import numpy as np

from .._gate import regular_file
from .._io import describe_file
from ..errors import FCNError
from ..imageio import check_megapixels

if TYPE_CHECKING:
    from av.packet import Packet

    from .segmenter import Segmenter

__all__ = [
    "FrameSelection",
    "VideoFrame",
    "VideoInfo",
    "VideoReader",
    "VideoSource",
    "is_video",
    "looks_like_video",
    "open_video",
    "predict_frames",
    "predict_video",
]

VideoSource = Union[str, "os.PathLike[str]", cv2.VideoCapture]

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
log = logging.getLogger(__name__)

_SEEK_TRIES = 16  # keyframes stepped back over when one lands after the start (open GOPs)
_LARGEST_SEEK = 1 << 62  # FFmpeg takes int64 timestamps


VIDEO_HEAD_BYTES = 4 * _TS_PACKET  # what `looks_like_video` needs of a file's start


def is_video(path: str | os.PathLike[str]) -> bool:
    """Whether a file is a video container, from its first bytes (whatever its suffix says)."""
    try:
        with open(path, "rb") as f:
            head = f.read(VIDEO_HEAD_BYTES)
    except OSError:
        return False
    return looks_like_video(head)


def looks_like_video(head: bytes) -> bool:
    """Whether bytes (a file's first ``VIDEO_HEAD_BYTES``, or more) start a video container."""
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return True
    if len(head) >= 3 * _TS_PACKET and all(head[k * _TS_PACKET] == 0x47 for k in range(3)):
        return True
    return any(head[at : at + len(magic)] == magic for at, magic in _VIDEO_MAGIC)


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video stream (``frames``: its frame count, 0: unknown;
    ``duration`` in seconds, 0: unknown; ``seeking``: how a ``start`` is reached, see the
    module)."""

    name: str
    fps: float
    width: int
    height: int
    frames: int
    codec: str
    seeking: str = "decode"
    duration: float = 0.0


def _microseconds(seconds: float) -> Fraction:
    """``seconds`` rounded to the microsecond, exactly (ffmpeg's ``-ss`` rounding: 0.1 is 1/10)."""
    return Fraction(round(Fraction(seconds) * 1_000_000), 1_000_000)


@dataclass(frozen=True)
class FrameSelection:
    """Which frames to segment: every ``every``-th from the first frame shown at or after
    ``start`` seconds, up to (without) the first shown at or after ``end`` (None: the last).

    Times are the frames' own timestamps from the video's first frame (exact with a variable
    frame rate), or ``index / fps`` for a ``cv2.VideoCapture``; ``start`` and ``end`` are rounded
    to the microsecond. Any finite ``start`` is taken: one after the video's end selects nothing.
    """

    every: int = 1
    start: float = 0.0
    end: float | None = None

    def __post_init__(self) -> None:
        every: Any = self.every
        whole = (isinstance(every, numbers.Integral) and not isinstance(every, bool)) or (
            isinstance(every, float) and math.isfinite(every) and every.is_integer()
        )
        if not whole or every < 1:
            raise FCNError(f"every must be a whole number 1 or more, got {every}", param="every")
        object.__setattr__(self, "every", int(every))
        if not (_real(self.start) and 0 <= self.start < math.inf):
            raise FCNError(
                f"start must be a finite number of seconds, 0 or more, got {self.start}",
                param="start",
            )
        if self.end is not None and not (_real(self.end) and 0 <= self.end < math.inf):
            raise FCNError(
                f"end must be a finite number of seconds, 0 or more (None: to the last frame), "
                f"got {self.end}",
                param="end",
            )
        if self.end is not None and not self.end > self.start:
            raise FCNError(
                f"end ({self.end} s) must come after start ({self.start} s)", param="end"
            )

    def window(self) -> tuple[Fraction, Fraction | None]:
        """``start`` and ``end`` in seconds, exactly, rounded to the microsecond."""
        return _microseconds(self.start), None if self.end is None else _microseconds(self.end)

    def frame_range(self, fps: float) -> tuple[int, int | None]:
        """First frame and the frame to stop before (None: the end of the video) when frame
        ``i`` is shown at ``i / fps``: exact at a constant frame rate, an estimate otherwise."""
        start, end = self.window()
        rate = Fraction(fps)
        first = math.ceil(start * rate)
        return first, None if end is None else max(first, math.ceil(end * rate))

    def count(self, info: VideoInfo) -> int | None:
        """How many frames will be selected, by the container's frame count (None: unknown)."""
        if not info.frames:
            return None
        first, stop = self.frame_range(info.fps)
        stop = info.frames if stop is None else min(stop, info.frames)
        return max(0, -(-(stop - first) // self.every))


def _real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class VideoFrame:
    """One selected frame: its number in the video, the pixels as decoded (BGR) and its labels."""

    index: int
    time: float  # seconds from the first frame (its timestamp; index / fps for a VideoCapture)
    image: np.ndarray
    labels: np.ndarray


class VideoReader(abc.ABC):
    """An opened video stream (`open_video`); `frames` yields the selected ones, in order."""

    info: VideoInfo

    @abc.abstractmethod
    def frames(
        self, selection: FrameSelection, max_megapixels: float | None = None
    ) -> Generator[tuple[int, float, np.ndarray], None, None]:
        """``(index, time, BGR image)`` of each selected frame; `FCNError` when the video is cut
        short, has no frames, none selected, or a frame of another size or over
        ``max_megapixels``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the reader opened (an open ``cv2.VideoCapture`` stays the caller's)."""


def open_video(source: VideoSource) -> tuple[VideoReader, VideoInfo]:
    """Open a video file (or take an open ``cv2.VideoCapture``) and read its stream's properties.

    A file FFmpeg cannot open, or one without a video stream with a frame rate and size, is one
    `FCNError` saying what the file looks like.
    """
    reader: VideoReader
    if isinstance(source, cv2.VideoCapture):
        reader = _CaptureReader(source)
    else:
        path = Path(source)
        regular_file(path, "video file")  # a FIFO would block FFmpeg, /dev/zero never end
        reader = _FileReader(path)
    return reader, reader.info


def _pyav() -> Any:
    """PyAV, imported when a video is first opened (it loads FFmpeg's libraries)."""
    try:
        import av
    except ImportError as e:
        raise FCNError(
            f"videos are decoded by PyAV, which is not installed here ({e}): pip install 'av>=17'"
        ) from None
    return av


def _rational(value: Any) -> Fraction | None:
    """A PyAV rational (``Fraction``, or ``AVRational`` from PyAV 19) as a Fraction; None when
    unset."""
    if not value or not value.denominator:
        return None
    return Fraction(value.numerator, value.denominator)


def _unreadable(path: Path, why: str | None = None) -> FCNError:
    what = why or (
        "truncated, corrupt, or a codec this FFmpeg lacks"
        if is_video(path)
        else describe_file(path) or "not a container FFmpeg reads"
    )
    return FCNError(f"{path}: not a readable video ({what})")


class _FileReader(VideoReader):
    """A video file through PyAV: seeks to ``start`` as the module describes."""

    def __init__(self, path: Path) -> None:
        av = _pyav()
        self.path = path
        self._read = False
        self._container = self._open()
        try:
            stream = self._stream = self._video_stream()
            rate = (
                _rational(stream.average_rate)
                or _rational(stream.guessed_rate)
                or _rational(stream.base_rate)
            )
            self._time_base = _rational(stream.time_base) or Fraction(1, 1)
            if stream.duration:
                duration = stream.duration * self._time_base
            else:
                duration = Fraction(self._container.duration or 0, av.time_base)
            names = set(self._container.format.name.split(","))
            frames = max(0, int(stream.frames))
            self._discarded: list[int] = []  # index entries decoded but never shown
            if names & {"mov", "mp4"}:
                seeking = "packets"
                if 0 < len(stream.index_entries) == frames:  # one entry per sample
                    seeking, self._discarded = "index", _discarded(stream.index_entries)
                    frames -= len(self._discarded)
                else:  # an edit list left samples out of the index, or fragments: count unknown
                    frames = 0
            else:
                seeking = "packets" if names & {"matroska", "webm"} else "decode"
            self.info = VideoInfo(
                name=str(path),
                fps=float(rate or 0),
                width=int(stream.codec_context.width),
                height=int(stream.codec_context.height),
                frames=frames,
                codec=stream.codec_context.name,
                seeking=seeking,
                duration=float(max(duration, 0)),
            )
            if not (self.info.fps > 0 and self.info.width > 0 and self.info.height > 0):
                raise FCNError(f"{path}: no video stream with a frame rate and size (not a video?)")
        except BaseException:
            self._container.close()
            raise

    def _open(self) -> Any:
        av = _pyav()
        try:
            return av.open(str(self.path))
        except (av.FFmpegError, OSError, UnicodeDecodeError):
            raise _unreadable(self.path) from None

    def _video_stream(self) -> Any:
        if not self._container.streams.video:
            raise FCNError(f"{self.path}: no video stream (not a video?)")
        stream = self._container.streams.video[0]
        if stream.codec_context is None:
            raise _unreadable(self.path, "a codec this FFmpeg lacks")
        stream.thread_type = "AUTO"  # frame and slice threads: the same frames, decoded sooner
        return stream

    def _reopen(self) -> None:
        self._container.close()
        self._container = self._open()
        self._stream = self._video_stream()

    def close(self) -> None:
        self._container.close()

    def frames(
        self, selection: FrameSelection, max_megapixels: float | None = None
    ) -> Generator[tuple[int, float, np.ndarray], None, None]:
        av = _pyav()
        info, time_base = self.info, self._time_base
        start, end = selection.window()
        _check_start(info, start)
        if self._read:  # a second pass: from the first frame again
            self._reopen()
        self._read = True
        origin: int | None = self._stream.start_time
        position = self._position(start)
        base, packets = position or (0, self._container.demux(self._stream))
        numbered = position is not None  # frames numbered by packets, not by decoded frames
        shown: list[int] = []  # presentation times of packets since the keyframe, not yet passed
        fps = Fraction(info.fps)
        seen, passed, selected = base, 0, 0
        first: int | None = None
        stopped = False
        try:
            for packet in packets:
                if numbered and packet.size and not packet.is_discard:
                    heapq.heappush(shown, _timestamp(packet.pts, info))
                for frame in packet.decode():
                    if numbered:
                        pts = _timestamp(frame.pts, info)
                        while shown and shown[0] < pts:
                            heapq.heappop(shown)
                            passed += 1
                        index = base + passed
                    else:
                        index = seen
                    seen = index + 1
                    if frame.pts is None:
                        time = index / fps
                    else:
                        origin = frame.pts if origin is None else origin
                        time = (frame.pts - origin) * time_base
                    if time < start:
                        continue
                    if end is not None and time >= end:
                        stopped = True
                        break
                    first = index if first is None else first
                    if (index - first) % selection.every:
                        continue
                    _check_frame(info, index, frame.height, frame.width, max_megapixels)
                    selected += 1
                    yield index, float(time), frame.to_ndarray(format="bgr24")
                if stopped:
                    break
        except av.FFmpegError as e:
            raise FCNError(
                f"{info.name}: truncated or corrupt: decoding failed after frame {seen} "
                f"({e.strerror or e})"
            ) from None
        _check_end(info, seen, selected, stopped)

    def _position(self, start: Fraction) -> tuple[int, Iterator[Packet]] | None:
        """Seek for ``start`` where the container allows it exactly: (the keyframe's frame
        number, the packets from it on); None: decode from the first frame."""
        origin, info = self._stream.start_time, self.info
        if not start or origin is None or info.seeking == "decode":
            return None
        position = self._seek(origin + math.ceil(start / self._time_base))
        if position is None:  # the demuxer has moved: start again from the first frame
            log.debug("%s: no exact seek here: decoding from the first frame", info.name)
            self._reopen()
        else:
            log.debug(
                "%s: start %g s: decoding from the keyframe stored after %d frames (%s)",
                info.name, float(start), position[0], info.seeking,
            )  # fmt: skip
        return position

    def _seek(self, target: int) -> tuple[int, Iterator[Packet]] | None:
        """Put the demuxer on the last keyframe shown at or before ``target`` (stream time):
        (its frame number, the packets from it on); None where that cannot be known exactly."""
        av = _pyav()
        at = min(target, _LARGEST_SEEK)
        for _ in range(_SEEK_TRIES):
            try:
                self._container.seek(at, stream=self._stream, backward=True, any_frame=False)
                packets = self._container.demux(self._stream)
                key = next(packets, None)
            except av.FFmpegError:
                return None
            if key is None or key.pts is None or not key.size or not key.is_keyframe:
                return None
            if key.pts <= target:
                break
            at = min(at, key.pts) - 1  # an open GOP's keyframe shown after the target: go back
        else:
            return None
        base = self._frames_before(key)
        return None if base is None else (base, itertools.chain([key], packets))

    def _frames_before(self, key: Packet) -> int | None:
        """How many frames are stored before the keyframe packet ``key`` (None: not found)."""
        av = _pyav()
        if self.info.seeking == "index":
            entries = self._stream.index_entries
            if key.dts is None:
                return None
            k = entries.search_timestamp(key.dts, backward=True, any_frame=True)
            if k < 0 or entries[k].pos != key.pos:
                return None
            return k - bisect.bisect_left(self._discarded, k)
        if key.pos is None or key.pos < 0:
            return None
        try:
            with av.open(str(self.path)) as other:
                count = 0
                for packet in other.demux(other.streams.video[self._stream.index]):
                    if packet.pos == key.pos and packet.size:
                        return count
                    count += bool(packet.size and not packet.is_discard)
        except av.FFmpegError:
            return None
        return None


def _discarded(entries: Any) -> list[int]:
    """Positions of the MP4 index entries an edit list flags as decoded but not shown.

    With one entry per sample, an edit list has cut nothing from the index but the frames shown
    before its start: they lie in the first GOP (or, B-frames stored after the next keyframe, the
    second), so the search stops at the third keyframe rather than reading an hour's index."""
    found, keyframes = [], 0
    for at in range(len(entries)):
        entry = entries[at]
        keyframes += entry.is_keyframe
        if keyframes > 2 and entry.is_keyframe:
            break
        if entry.is_discard:
            found.append(at)
    return found


def _timestamp(pts: int | None, info: VideoInfo) -> int:
    if pts is None:  # MP4 and Matroska time every frame: a file that does not is refused
        raise FCNError(f"{info.name}: a frame without a timestamp: frames cannot be numbered")
    return pts


class _CaptureReader(VideoReader):
    """An open ``cv2.VideoCapture``, read frame after frame (frame ``i`` at ``i / fps``)."""

    def __init__(self, capture: cv2.VideoCapture) -> None:
        if not capture.isOpened():
            raise FCNError("the cv2.VideoCapture given is not open")
        self.capture = capture
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC))
        codec = "".join(chr((fourcc >> 8 * k) & 0xFF) for k in range(4)).strip("\x00 ")
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        frames = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        self.info = VideoInfo(
            name="video capture",
            fps=fps,
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            frames=frames,
            codec=codec or "unknown",
        )
        if not (self.info.fps > 0 and self.info.width > 0 and self.info.height > 0):
            raise FCNError("video capture: no video stream with a frame rate and size")

    def close(self) -> None:
        """Nothing: the capture stays open, the caller's to release."""

    def frames(
        self, selection: FrameSelection, max_megapixels: float | None = None
    ) -> Generator[tuple[int, float, np.ndarray], None, None]:
        info, capture = self.info, self.capture
        first, stop = selection.frame_range(info.fps)
        index = selected = 0
        while stop is None or index < stop:
            if not capture.grab():
                break
            if index >= first and (index - first) % selection.every == 0:
                ok, image = capture.retrieve()
                if not ok or image is None:
                    break
                _check_frame(info, index, image.shape[0], image.shape[1], max_megapixels)
                selected += 1
                yield index, index / info.fps, image
            index += 1
        _check_end(info, index, selected, stop is not None and index >= stop)


def _check_start(info: VideoInfo, start: Fraction) -> None:
    """Refuse a start at or after the video's end before any decoding, where the container
    states its duration (an MP4's header; elsewhere it may be estimated from the bit rate)."""
    if info.seeking == "index" and info.duration and start >= Fraction(info.duration):
        raise FCNError(
            f"{info.name}: no frames selected: start ({float(start):g} s) is at or after the "
            f"end of the video ({info.duration:g} s long)",
            param="start",
        )


def _check_frame(
    info: VideoInfo, index: int, height: int, width: int, max_megapixels: float | None
) -> None:
    """Each decoded frame against the limit and the stream's size (a stream may change size
    mid-way: its frames would not fit the overlay video, nor each other's label folder)."""
    check_megapixels(height, width, max_megapixels, f"{info.name}: frame {index}")
    if (width, height) != (info.width, info.height):
        raise FCNError(
            f"{info.name}: frame {index} is {width}x{height} but the video's frames are "
            f"{info.width}x{info.height} (WxH): videos whose frame size changes are not "
            "supported; split the video where the size changes, or re-encode it at one size"
        )


def _check_end(info: VideoInfo, seen: int, selected: int, stopped: bool) -> None:
    """After the last frame: ``seen`` frames numbered, ``selected`` yielded, ``stopped`` at
    ``end`` (rather than at the end of the stream)."""
    if seen == 0 and info.frames == 0:
        raise FCNError(f"{info.name}: the video has no frames")
    if seen == 0:
        raise FCNError(
            f"{info.name}: none of its {info.frames} {info.codec} frame(s) could be decoded "
            "(corrupt, or a codec this FFmpeg lacks)"
        )
    if not stopped and info.frames and seen < info.frames:
        raise FCNError(
            f"{info.name}: truncated or corrupt: decoding stopped at frame {seen} of {info.frames}"
        )
    if selected == 0:
        raise FCNError(
            f"{info.name}: no frames selected (the video has {seen} frame(s) at "
            f"{info.fps:g} fps; check start and end)",
            param="start",
        )


_END = object()  # the decoder's last queue item


def _decode(
    reader: VideoReader,
    selection: FrameSelection,
    max_megapixels: float | None,
    frames: queue.Queue[object],
    stop: threading.Event,
) -> None:
    """Decoder thread: put ``(index, time, BGR frame)`` of each selected frame, then ``_END``
    (or the error); gives up as soon as ``stop`` is set."""

    def put(item: object) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                frames.put(item, timeout=0.1)
                return True
        return False

    try:
        with contextlib.closing(reader.frames(selection, max_megapixels)) as items:
            for item in items:
                if not put(item):
                    return
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
    reader, info = open_video(source)
    try:
        check_megapixels(
            info.height, info.width, segmenter.max_megapixels, f"{info.name}: a video frame"
        )
        yield from predict_frames(segmenter, reader, info, selection, tile, queue_frames)
    finally:
        reader.close()


def predict_frames(
    segmenter: Segmenter,
    reader: VideoReader,
    info: VideoInfo,
    selection: FrameSelection = FrameSelection(),
    tile: bool | None = None,
    queue_frames: int | None = None,
) -> Generator[VideoFrame, None, None]:
    """`predict_video` on a video already opened by `open_video` (which gave ``info``)."""
    size = queue_frames or 2 * segmenter.batch_size
    frames: queue.Queue[object] = queue.Queue(maxsize=size)
    stop = threading.Event()
    decoder = threading.Thread(
        target=_decode,
        args=(reader, selection, segmenter.max_megapixels, frames, stop),
        daemon=True,
    )
    decoder.start()
    try:
        done = False
        while not done:
            batch: list[tuple[int, float, np.ndarray]] = []
            while len(batch) < segmenter.batch_size:
                item = frames.get()
                if item is _END:
                    done = True
                    break
                if isinstance(item, Exception):
                    raise item
                batch.append(item)  # type: ignore[arg-type]
            if batch:
                images = [image for _, _, image in batch]
                # tile only when asked: fcn-predict --server's RemoteSegmenter has no tiling
                labels = (
                    segmenter.predict_batch(images)
                    if tile is None
                    else segmenter.predict_batch(images, tile=tile)
                )
                for (index, time, image), lab in zip(batch, labels, strict=True):
                    yield VideoFrame(index, time, image, lab)
    finally:
        stop.set()
        decoder.join()
