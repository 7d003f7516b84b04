"""fcn-predict's outputs, written the same way by the plain CLI, the video path and Ray replicas.

Per image ``NAME``: ``NAME.png``, a palette PNG of class ids, and with an overlay
``NAME_overlay.jpg``, the image tinted by class colour. Every file is written whole or not at all
(a temp name renamed at the end) and the label map last, so "``NAME.png`` exists" means "this
image is done": that is what a re-run checks to skip it. Both carry fcn-deploy's mark
(`fcn_deploy._owned`), and a file in their way that does not is never replaced.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from .._io import atomic_write_bytes, os_reason
from .._owned import HEAD_BYTES, carries_mark, in_the_way, mark_jpeg, marked_head
from ..errors import FCNError
from ..imageio import encode_label_png

if TYPE_CHECKING:
    from ..api import Segmenter

__all__ = [
    "OVERLAY_JPEG_QUALITY",
    "OutputFolder",
    "check_palette_size",
    "output_files",
    "overlay_jpeg",
]

OVERLAY_JPEG_QUALITY = 92
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
        tmp = f"{root}/.{name}.{uuid.uuid4().hex}.tmp"
        try:
            with filesystem.open_output_stream(tmp) as f:
                f.write(data)
            filesystem.move(tmp, f"{root}/{name}")
        except OSError as e:
            raise FCNError(f"cannot write {self.where}/{name}: {os_reason(e)}") from None

    def complete(self, name: str, overlay: bool) -> bool:
        """Whether every output of image ``name`` is already there (a re-run skips it)."""
        return all(self.done(n) for n in output_files(name, overlay))

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
