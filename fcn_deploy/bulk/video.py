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
  (``mp4v``, which every OpenCV FFmpeg build encodes), the source's size, and its frame rate
  divided by ``every`` so that it lasts as long as the selected span.

Both are written in a temp space (`fcn_deploy._owned`) and moved into place only when the whole
video succeeded: a video that fails half way (truncated, corrupt, interrupted) leaves nothing that
looks complete. The frame folder carries fcn-deploy's mark file and each frame's PNG its mark, the
overlay video its own: a later run replaces them, and nothing it cannot prove fcn-deploy wrote.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2

from .._io import make_output_dir, os_reason
from .._owned import check_replaceable, mark_mp4, publish, temp_name, temp_space, write_folder_mark
from .._progress import Progress
from ..api import Segmenter
from ..api.video import FrameSelection, VideoFrame, VideoSource, open_video, predict_frames
from ..errors import FCNError
from ..imageio import check_megapixels, encode_label_png
from .outputs import output_files

__all__ = ["OVERLAY_FOURCC", "VideoResult", "frame_file", "segment_video"]

log = logging.getLogger(__name__)

OVERLAY_FOURCC = "mp4v"


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


class _Writer(threading.Thread):
    """Writes each frame's label PNG (and overlay frame) off the inference thread."""

    def __init__(
        self,
        segmenter: Segmenter,
        folder: Path,
        video: cv2.VideoWriter | None,
        alpha: float,
        size: int,
    ) -> None:
        super().__init__(daemon=True)
        self.segmenter, self.folder, self.video, self.alpha = segmenter, folder, video, alpha
        self.frames: queue.Queue[VideoFrame | None] = queue.Queue(maxsize=size)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while (frame := self.frames.get()) is not None:
                png = encode_label_png(frame.labels, self.segmenter.palette)
                (self.folder / frame_file(frame.index)).write_bytes(png)
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
    frames the model cannot take; nothing of it is left behind then.
    """
    start = time.perf_counter()
    capture, info = open_video(source)
    output = Path(output)
    *overlay, labels = output_files(name, overlay_alpha is not None, video=True)
    final, overlay_path = output / labels, output / overlay[0] if overlay else None
    frames = 0
    try:
        with contextlib.ExitStack() as stack:
            if not isinstance(source, cv2.VideoCapture):
                stack.callback(capture.release)
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
            video = tmp_video = None
            if overlay_path is not None:
                tmp_video = temp_name(space, overlay_path.suffix)
                fps = info.fps / selection.every
                fourcc = cv2.VideoWriter.fourcc(*OVERLAY_FOURCC)
                video = cv2.VideoWriter(str(tmp_video), fourcc, fps, (info.width, info.height))
                stack.callback(video.release)
                if not video.isOpened():
                    raise FCNError(
                        f"cannot write {overlay_path}: this OpenCV cannot encode "
                        f"{OVERLAY_FOURCC} video"
                    )
            writer = _Writer(segmenter, tmp, video, overlay_alpha or 0.0, 2 * segmenter.batch_size)
            writer.start()
            progress = stack.enter_context(Progress(selection.count(info), name, unit="frame"))
            try:
                stream = stack.enter_context(
                    contextlib.closing(predict_frames(segmenter, capture, info, selection, tile))
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
            if video is not None and tmp_video is not None and overlay_path is not None:
                video.release()  # finish the file before it is published
                mark_mp4(tmp_video)
                publish(tmp_video, overlay_path, "this video's overlay")
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
    return VideoResult(final, overlay_path, frames, seconds)
