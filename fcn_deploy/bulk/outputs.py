"""fcn-predict's outputs, written the same way by the plain CLI, the video path and Ray replicas.

Per image ``NAME``: ``NAME.png``, a palette PNG of class ids, and with an overlay
``NAME_overlay.jpg``, the image tinted by class colour. Every file is written whole or not at all
(a temp name renamed at the end) and the label map last, so "``NAME.png`` exists" means "this
image is done": that is what a re-run checks to skip it. Both carry fcn-deploy's mark
(`fcn_deploy._owned`), and a file in their way that does not is never replaced.

`OutputNames` gives each input its ``NAME`` as inputs stream in, deciding collisions on every file
an input writes (`output_files`), not on stems.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from .._io import atomic_write_bytes, os_reason
from .._owned import (
    HEAD_BYTES,
    carries_mark,
    foreign_entry,
    in_the_way,
    mark_jpeg,
    marked_head,
)
from ..errors import FCNError
from ..imageio import encode_label_png

if TYPE_CHECKING:
    from ..api import Segmenter

__all__ = [
    "NAME_MAX",
    "OVERLAY_JPEG_QUALITY",
    "OutputFolder",
    "OutputNames",
    "check_name_length",
    "check_palette_size",
    "output_files",
    "overlay_jpeg",
]

OVERLAY_JPEG_QUALITY = 92
NAME_MAX = 255  # bytes in a file name (ext4, XFS, btrfs, APFS, NTFS's 255 UTF-16 units)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # s3://, gs://, hdfs://, file:/// (not C:/)


def overlay_jpeg(
    segmenter: Segmenter, image: np.ndarray, labels: np.ndarray, alpha: float
) -> bytes:
    """``NAME_overlay.jpg``'s bytes: the image tinted by class colour."""
    ok, data = cv2.imencode(
        ".jpg",
        segmenter.overlay(image, labels, alpha),
        [cv2.IMWRITE_JPEG_QUALITY, OVERLAY_JPEG_QUALITY],
    )
    if not ok:
        raise FCNError("could not encode the overlay as JPEG")
    return mark_jpeg(bytes(data.tobytes()))


def check_palette_size(num_classes: int) -> None:
    """Refuse a model whose labels a palette PNG cannot hold (256 entries)."""
    if num_classes > 256:
        raise FCNError(f"this model has {num_classes} classes; palette PNGs hold at most 256")


def output_files(name: str, overlay: bool, video: bool = False) -> list[str]:
    """What one input named ``name`` writes, the label map last: for an image ``NAME.png`` (and
    ``NAME_overlay.jpg``), for a video the folder ``NAME/`` of per-frame label maps (and
    ``NAME_overlay.mp4``). The one definition the writers and fcn-predict's checks share."""
    labels, tinted = (
        (name, f"{name}_overlay.mp4") if video else (f"{name}.png", f"{name}_overlay.jpg")
    )
    return [tinted, labels] if overlay else [labels]


class OutputNames:
    """Output names for inputs that arrive one by one (see `name`).

    Only earlier inputs are known when a name is given (inputs stream in), so an input keeps its
    stem unless a file it would write (`output_files`) is taken by an earlier input or reserved,
    then it is ``STEM-2``, ``STEM-3``, ...: ``x.jpg`` writes ``x.png``, so a video ``x.png.mp4``,
    whose frames would go to the folder ``x.png/``, is written as ``x.png-2/``. The same inputs
    in the same order get the same names, so a re-run finds its earlier results.

    Memory: the names taken (about 100 bytes per output file) and, per stem seen more than once,
    where to go on counting, so N inputs cost O(N) time however many share a stem.
    """

    def __init__(self, overlay: bool, reserved: Iterable[str] = ()) -> None:
        self.overlay = overlay
        self.taken: set[str] = set(reserved)  # names in OUTDIR not to write (inputs lie there)
        self._next: dict[str, int] = {}  # stem → the number to try next, once it was taken

    def name(self, stem: str, video: bool = False) -> str:
        """The name of the next input with this stem (a video writes a folder of that name)."""
        k = self._next.get(stem, 1)
        while True:
            name = stem if k == 1 else f"{stem}-{k}"
            files = output_files(name, self.overlay, video)
            if not any(f in self.taken for f in files):
                break
            k += 1
        if k > 1:
            self._next[stem] = k + 1
        self.taken.update(files)
        return name

    def release(self) -> None:
        """Forget the names taken, once the last input is named (their memory goes back)."""
        self.taken, self._next = set(), {}


def check_name_length(name: str, overlay: bool, video: bool = False) -> None:
    """Refuse an output name too long for a file name (`NAME_MAX` bytes) before any work."""
    for file in output_files(name, overlay, video):
        size = len(os.fsencode(file))
        if size > NAME_MAX:
            raise FCNError(
                f"its result {file[:40]}... would have a name of {size} bytes, and file names "
                f"hold at most {NAME_MAX}: give the input a shorter name"
            )


class OutputFolder:
    """A local folder, or any path ``pyarrow.fs`` opens (``s3://``, ``gs://``, ``hdfs://``, ...).

    Local files are written by `fcn_deploy._io.atomic_write_bytes`; on other file systems each
    file is written under a hidden temp name and moved onto its name (object stores make a whole
    object appear at once). The object is plain data (a string and a flag), so it pickles to Ray
    workers.
    """

    def __init__(self, where: str | os.PathLike[str]) -> None:
        self.where = str(where)
        self.remote = bool(_URI.match(self.where)) and not self.where.startswith("file:")
        if self.where.startswith("file:"):
            self.where = re.sub(r"^file:/*", "/", self.where)
        elif self.remote:  # s3://b/x that went through pathlib (fcn-predict -o) is s3:/b/x
            self.where = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]+):/(?!/)", r"\1://", self.where)
        self._fs: Any = None
        self._root = ""

    def __getstate__(self) -> dict[str, Any]:
        return {"where": self.where, "remote": self.remote}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["where"])  # type: ignore[misc]

    def __str__(self) -> str:
        return self.where

    def _filesystem(self) -> tuple[Any, str]:
        if self._fs is None:
            from pyarrow import fs

            self._fs, self._root = fs.FileSystem.from_uri(self.where)
            self._fs.create_dir(self._root, recursive=True)
        return self._fs, self._root

    def done(self, name: str) -> bool:
        """Whether the file ``name`` is there and fcn-deploy's (complete: every write is atomic)."""
        if not self.remote:
            return carries_mark(Path(self.where) / name)
        from pyarrow import fs

        filesystem, root = self._filesystem()
        if filesystem.get_file_info(f"{root}/{name}").type != fs.FileType.File:
            return False
        with filesystem.open_input_file(f"{root}/{name}") as f:
            return marked_head(f.read(HEAD_BYTES))

    def write(self, name: str, data: bytes) -> None:
        """Write the file ``name`` whole or not at all; a file there that fcn-deploy did not
        write is never replaced (`FCNError`)."""
        if not self.remote:
            atomic_write_bytes(Path(self.where) / name, data, owned_only=True)
            return
        from pyarrow import fs

        filesystem, root = self._filesystem()
        if filesystem.get_file_info(f"{root}/{name}").type != fs.FileType.NotFound and not (
            self.done(name)
        ):
            raise in_the_way(f"{self.where}/{name} is not an fcn-deploy output")
        tmp = f"{root}/.fcn-deploy-{uuid.uuid4().hex}.tmp"  # short: NAME may be 250 bytes
        try:
            with filesystem.open_output_stream(tmp) as f:
                f.write(data)
            filesystem.move(tmp, f"{root}/{name}")
        except OSError as e:
            raise FCNError(f"cannot write {self.where}/{name}: {os_reason(e)}") from None

    def check(self) -> None:
        """Reach a folder on another file system once (creating it), before a job writes there:
        an unreachable store or a missing permission is one error, not one per image. (Local
        folders are checked by `fcn_deploy._io.check_output_dir`.)"""
        if not self.remote:
            return
        try:
            self._filesystem()
        except (OSError, ValueError) as e:  # pyarrow: OSError, ArrowInvalid for a bad URI
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise FCNError(f"cannot write to {self.where}: {reason}", param="output") from None

    def complete(self, name: str, overlay: bool) -> bool:
        """Whether every output of image ``name`` is already there (a re-run skips it)."""
        return all(self.done(n) for n in output_files(name, overlay))

    def earlier(self, name: str, overlay: bool, video: bool = False) -> list[str]:
        """The outputs of input ``name`` already there, every one fcn-deploy's own (a plain run
        replaces them, a ``--ray`` run that finds all of them skips the input). Raises
        `FCNError` (param ``output``) naming the first that is not fcn-deploy's, so that an
        input is refused before any work for it."""
        found = []
        for file in output_files(name, overlay, video):
            if not self.remote:
                path = Path(self.where) / file
                if not os.path.lexists(path):
                    continue
                problem = foreign_entry(path)
            else:
                from pyarrow import fs

                filesystem, root = self._filesystem()
                if filesystem.get_file_info(f"{root}/{file}").type == fs.FileType.NotFound:
                    continue
                problem = (
                    None if self.done(file) else f"{self.where}/{file} is not an fcn-deploy output"
                )
            if problem is not None:
                raise in_the_way(problem)
            found.append(file)
        return found

    def write_image(
        self,
        segmenter: Segmenter,
        name: str,
        image: np.ndarray,
        labels: np.ndarray,
        overlay_alpha: float | None = None,
    ) -> None:
        """``NAME.png`` and, with ``overlay_alpha``, ``NAME_overlay.jpg`` (written first)."""
        *overlay, label_map = output_files(name, overlay_alpha is not None)
        if overlay_alpha is not None:
            self.write(overlay[0], overlay_jpeg(segmenter, image, labels, overlay_alpha))
        self.write(label_map, encode_label_png(labels, segmenter.palette))
