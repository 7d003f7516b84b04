"""A video file through fcn-predict: a folder of per-frame label maps and an overlay video.

Three stages overlap, joined by bounded queues so memory stays flat on a long video: decoding
(a thread in `fcn_deploy.api.video`), inference (the calling thread, ``Segmenter.batch_size``
frames a call) and writing (a thread here: PNG encoding and the overlay video's encoder).

Outputs, per video ``NAME``:

- ``NAME/000123.png``: the labels of frame 123 (numbered from 0 in the file) as a palette PNG of
  class ids. A folder of palette PNGs rather than a lossless video: each frame reads back exactly
  with any image library (``read_label_png``, PIL, OpenCV as grayscale), any single frame can be
  opened without decoding the ones before it, it opens coloured in an image viewer, and it needs
  no lossless codec (FFV1, lossless H.264) that many OpenCV builds lack. Frames left out by
  ``every``/``start``/``end`` have no file.
- ``NAME_overlay.mp4`` (with an overlay): the frames tinted by class colour, MPEG-4 Part 2
  (``mp4v``, which every player and FFmpeg build decodes) written by PyAV, the source's size, and
  its frame rate divided by ``every`` so that it lasts as long as the selected span.

Both are written in a temp space (`fcn_deploy._owned`) and moved into place only when the whole
video succeeded: a video that fails half way (truncated, corrupt, interrupted, a disk that fills
up) leaves nothing that looks complete. Every write is checked: PNGs by Python's file writes, the
overlay by PyAV, which raises on a failed write where OpenCV's VideoWriter says nothing, and the
finished overlay is opened again and its frames counted before it is published. The frame folder
carries fcn-deploy's mark file and each frame's PNG its mark, the overlay video its own: a later
run replaces them, and nothing it cannot prove fcn-deploy wrote.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .._io import make_output_dir, os_reason
from .._owned import check_replaceable, mark_mp4, publish, temp_name, temp_space, write_folder_mark
from .._progress import Progress
from ..api import Segmenter
from ..api.video import (
    FrameSelection,
    VideoFrame,
    VideoInfo,
    VideoSource,
    _pyav,
    open_video,
    predict_frames,
)
from ..errors import FCNError
from ..imageio import check_megapixels, encode_label_png
from .outputs import output_files

__all__ = ["OVERLAY_FOURCC", "VideoResult", "frame_file", "overlay_rate", "segment_video"]

log = logging.getLogger(__name__)

OVERLAY_FOURCC = "mp4v"  # MPEG-4 Part 2, FFmpeg's "mpeg4" encoder
OVERLAY_QUANTIZER = 3  # fixed MPEG-4 quantizer (2 best .. 31): sharp class edges, ~1 bit/pixel
_MPEG4_TICKS = 65535  # MPEG-4 Part 2 times frames in at most 65535 ticks per second
_INT32 = (1 << 31) - 1  # FFmpeg keeps a frame's duration as a 32-bit fraction


def frame_file(index: int) -> str:
    """Name of frame ``index``'s label map in the video's folder (sorted names sort by frame)."""
    return f"{index:06d}.png"


@dataclass(frozen=True)
class VideoResult:
    """What `segment_video` wrote."""

    labels: Path  # folder of per-frame palette PNGs
    overlay: Path | None  # the overlay video, if asked for
    frames: int  # frames segmented
    seconds: float  # wall time, decoding to the last file renamed
    class_pixels: np.ndarray  # int64, one per class: pixels of that label over all frames


def overlay_rate(info: VideoInfo, every: int) -> Fraction:
    """The overlay video's frame rate: the source's divided by ``every``, as MPEG-4 Part 2 carries
    it (a frame lasts a whole number of at most 65535 ticks a second); `FCNError` when it cannot
    (a container that claims 10⁹ frames/s)."""
    wanted = Fraction(info.fps) / every
    duration = (1 / wanted).limit_denominator(_MPEG4_TICKS) if wanted > 0 else Fraction(0)
    if duration <= 0 or duration.numerator > _INT32 or abs(duration * wanted - 1) > 1e-3:
        shown = f"{info.fps:g} frames/s" + (f", one frame in {every}" if every > 1 else "")
        raise FCNError(
            f"{info.name}: its container gives {shown}, which an overlay video cannot carry "
            f"(MPEG-4 video times frames in steps of 1/{_MPEG4_TICKS} s: at most {_MPEG4_TICKS} "
            "frames/s); the file's timing looks wrong: leave the overlay out, or re-time the "
            "video (e.g. ffmpeg -r 25)",
            param="overlay_alpha",
        )
    return 1 / duration


class _OverlayVideo:
    """``NAME_overlay.mp4`` being written in a temp space: PyAV raises on every failed write."""

    def __init__(self, path: Path, final: Path, info: VideoInfo, every: int) -> None:
        av = _pyav()
        rate = overlay_rate(info, every)
        self.path, self.final, self.frames = path, final, 0
        self._time_base = 1 / rate
        try:
            self._container: Any = av.open(str(path), "w", format="mp4")
        except (av.FFmpegError, OSError) as e:
            raise self._failed(e) from None
        try:
            self._stream = self._container.add_stream("mpeg4", rate=rate)
            self._stream.width, self._stream.height = info.width, info.height
            self._stream.pix_fmt = "yuv420p"
            context = self._stream.codec_context
            context.qmin = context.qmax = OVERLAY_QUANTIZER
            context.open()  # now, not at the first frame: a refusal comes before any decoding
        except (av.FFmpegError, OSError, ValueError) as e:
            self.abort()
            raise self._failed(e) from None

    def _failed(self, error: BaseException) -> FCNError:
        reason = os_reason(error) if isinstance(error, OSError) else str(error)
        return FCNError(f"cannot write {self.final}: {reason}")

    def write(self, image: np.ndarray) -> None:
        av = _pyav()
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = self.frames, self._time_base
        try:
            self._container.mux(self._stream.encode(frame))
        except (av.FFmpegError, OSError) as e:
            raise self._failed(e) from None
        self.frames += 1

    def finish(self) -> None:
        """Flush the encoder, close the file, and open it again: it must hold every frame."""
        av = _pyav()
        try:
            self._container.mux(self._stream.encode())
            self._container.close()
            with av.open(str(self.path)) as written:
                frames = written.streams.video[0].frames
        except (av.FFmpegError, OSError, IndexError) as e:
            raise self._failed(e) from None
        if frames != self.frames:
            raise FCNError(
                f"cannot write {self.final}: the finished file holds {frames} of its "
                f"{self.frames} frames"
            )

    def abort(self) -> None:
        """Close without finishing (the temp space is removed with what is in it)."""
        with contextlib.suppress(Exception):
            self._container.close()


class _Writer(threading.Thread):
    """Writes each frame's label PNG (and overlay frame) off the inference thread, and sums the
    pixels of each class."""

    def __init__(
        self,
        segmenter: Segmenter,
        folder: Path,
        video: _OverlayVideo | None,
        alpha: float,
        size: int,
    ) -> None:
        super().__init__(daemon=True)
        self.segmenter, self.folder, self.video, self.alpha = segmenter, folder, video, alpha
        self.frames: queue.Queue[VideoFrame | None] = queue.Queue(maxsize=size)
        self.error: BaseException | None = None
        self.class_pixels = np.zeros(segmenter.info.num_classes, np.int64)

    def run(self) -> None:
        try:
            while (frame := self.frames.get()) is not None:
                png = encode_label_png(frame.labels, self.segmenter.palette)
                (self.folder / frame_file(frame.index)).write_bytes(png)
                self.class_pixels += np.bincount(
                    frame.labels.ravel(), minlength=self.class_pixels.size
                )
                if self.video is not None:
                    self.video.write(self.segmenter.overlay(frame.image, frame.labels, self.alpha))
        except BaseException as e:  # raised again in the inference thread
            self.error = e
            while self.frames.get() is not None:  # unblock the producer until it stops
                pass

    def put(self, frame: VideoFrame | None) -> None:
        self.frames.put(frame)
        if self.error is not None:
            raise self.error


def segment_video(
    segmenter: Segmenter,
    source: VideoSource,
    output: str | os.PathLike[str],
    name: str,
    selection: FrameSelection = FrameSelection(),
    overlay_alpha: float | None = None,
    tile: bool | None = None,
) -> VideoResult:
    """Segment one video into ``output/NAME/`` (and ``output/NAME_overlay.mp4``); see the module.

    Raises `FCNError` naming the video when it cannot be read, is cut short, has no frames or
    frames the model cannot take, or a result cannot be written; nothing of it is left behind
    then.
    """
    start = time.perf_counter()
    reader, info = open_video(source)
    output = Path(output)
    *overlay, labels = output_files(name, overlay_alpha is not None, video=True)
    final, overlay_path = output / labels, output / overlay[0] if overlay else None
    frames = 0
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(reader.close)
            # before any file exists: a frame over the limit, or something not ours in the way
            check_megapixels(info.height, info.width, segmenter.max_megapixels, "a video frame")
            for path in (final, overlay_path):
                if path is not None:
                    check_replaceable(path, "this video's results")
            make_output_dir(output)
            space = stack.enter_context(temp_space(output, f"cannot write {final}"))
            tmp = temp_name(space)
            try:
                tmp.mkdir()
            except OSError as e:
                raise FCNError(f"cannot write {final}: {os_reason(e)}") from None
            video = None
            if overlay_path is not None:
                video = _OverlayVideo(temp_name(space, ".mp4"), overlay_path, info, selection.every)
                stack.callback(video.abort)
            writer = _Writer(segmenter, tmp, video, overlay_alpha or 0.0, 2 * segmenter.batch_size)
            writer.start()
            progress = stack.enter_context(Progress(selection.count(info), name, unit="frame"))
            try:
                stream = stack.enter_context(
                    contextlib.closing(predict_frames(segmenter, reader, info, selection, tile))
                )
                for frame in stream:
                    writer.put(frame)
                    frames += 1
                    progress.update(1)
            finally:
                writer.frames.put(None)
                writer.join()
            if writer.error is not None:
                raise writer.error
            write_folder_mark(tmp, "video-frames")
            if video is not None and overlay_path is not None:
                video.finish()  # whole and read back before it is published
                mark_mp4(video.path)
                publish(video.path, overlay_path, "this video's overlay")
            publish(tmp, final, "this video's frames")
    except OSError as e:
        raise FCNError(
            f"{info.name}: cannot write its results in {output}: {os_reason(e)}"
        ) from None
    except FCNError as e:
        message = str(e)
        raise FCNError(
            message if message.startswith(info.name) else f"{info.name}: {message}",
            param=e.param,
        ) from None
    seconds = time.perf_counter() - start
    log.info("%s: %d frame(s) in %.1f s (%.2f frames/s)", name, frames, seconds, frames / seconds)
    return VideoResult(final, overlay_path, frames, seconds, writer.class_pixels)
