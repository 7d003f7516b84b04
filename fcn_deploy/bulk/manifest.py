"""A bulk run's manifest: one table row per input, streamed to disk as the inputs finish.

Columns: ``input``; ``status`` (``ok``, ``skipped``: its results were there already, or
``failed``) and ``reason``; ``labels`` and ``overlay``, the result paths (a video's labels are its
folder of frames); ``bytes``, the input's size; ``width`` and ``height``, the image's (or a video
frame's) pixels; ``frames``, the frames a video had segmented; then ``fraction_<class>`` for each
class, the share of the input's pixels (all its frames', for a video) given that class. Cells
that do not apply are empty.

The columns are the same for every run of a model, ``fraction_<class>`` named by its class names
(``fraction_<id>_<name>`` where names repeat). While the run goes, rows are appended to
``FILE.partial.csv``, one line per input, flushed as the input finishes, so a run killed even
with SIGKILL leaves a table of what was done. At the end (after Ctrl-C or SIGTERM too) the table
appears under ``FILE`` in one rename: the journal itself for ``.csv``, converted by pyarrow,
batch by batch, for ``.parquet``.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .._io import atomic_path, check_output_file, os_reason
from ..errors import FCNError

__all__ = ["SUFFIXES", "Manifest", "ManifestRow", "check_manifest_path", "journal_path"]

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".parquet")
COLUMNS = ("input", "status", "reason", "labels", "overlay", "bytes", "width", "height", "frames")
_INTEGERS = ("bytes", "width", "height", "frames")


@dataclass
class ManifestRow:
    """One input's row; ``pixels``: pixels per class id (a bincount), for the fractions."""

    input: str
    status: str  # ok, skipped, failed
    reason: str = ""
    labels: str = ""
    overlay: str = ""
    bytes: int | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    pixels: np.ndarray | None = None


def journal_path(path: str | os.PathLike[str]) -> Path:
    """Where the rows of a run writing the manifest ``path`` go while it runs."""
    return Path(f"{os.fspath(path)}.partial.csv")


def check_manifest_path(
    path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None
) -> Path:
    """Refuse a manifest path that could not be written, before any work: its suffix must say
    the format, its folder must exist (or be the run's ``output`` folder, made with the
    results), and a ``.partial.csv`` beside it must be an earlier run's journal (it is replaced)
    or absent."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise FCNError(
            f"{path}: a manifest is a .csv or .parquet file (the name says which)", param="manifest"
        )
    to_come = output is not None and os.path.abspath(path.parent) == os.path.abspath(output)
    if not (to_come and not path.parent.exists()):  # else the folder is checked as the output's
        try:
            check_output_file(path)
        except FCNError as e:
            raise FCNError(str(e), param="manifest") from None
    journal = journal_path(path)
    if os.path.lexists(journal) and not _is_journal(journal):
        raise FCNError(
            f"{journal} is in the way of the manifest's journal and is not one fcn-deploy "
            "wrote: move it, or choose another manifest name",
            param="manifest",
        )
    return path


def _is_journal(path: Path) -> bool:
    try:
        if not path.is_file() or path.is_symlink():
            return False
        with open(path, encoding="utf-8", newline="") as f:
            return f.readline().startswith(",".join(COLUMNS) + ",")
    except (OSError, UnicodeDecodeError):
        return False


def _text(cell: str | None) -> str | None:
    """``cell`` as valid UTF-8: a file name that is not (kept by Python as surrogates) is written
    with those bytes as ``\\udcff`` escapes, as fcn-predict's lines show it."""
    if cell is None:
        return None
    return cell.encode("utf-8", "backslashreplace").decode("utf-8")


class Manifest:
    """``--manifest FILE`` (see the module): the path is checked when made (``output``: the run's
    output folder, which may hold it before it exists), rows go to the journal at once while
    ``writing`` holds it open, and the table appears under its name when ``writing`` ends.

    ``m = Manifest("run.parquet")``, then ``with m.writing(class_names): m.add(ManifestRow(...))``;
    rows may be added by anyone holding ``m`` while it is open."""

    def __init__(
        self, path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = check_manifest_path(path, output)
        if self.path.suffix.lower() == ".parquet" and importlib.util.find_spec("pyarrow") is None:
            raise FCNError(
                f"{self.path}: a Parquet manifest needs pyarrow (pip install pyarrow), or name "
                "it .csv",
                param="manifest",
            )
        self.journal = journal_path(self.path)
        self.columns: list[str] = list(COLUMNS)
        self.rows = 0
        self._file: IO[str] | None = None
        self._writer: Any = None

    @contextlib.contextmanager
    def writing(self, class_names: Sequence[str]) -> Iterator[Manifest]:
        """Open the journal with a ``fraction_<class>`` column per class; on leaving (also by
        an exception or an interrupt) publish the table under its name."""
        fractions = [f"fraction_{name}" for name in class_names]
        if len(set(fractions)) < len(fractions) or set(fractions) & set(COLUMNS):
            fractions = [f"fraction_{i}_{name}" for i, name in enumerate(class_names)]
        self.columns = [*COLUMNS, *fractions]
        if self.journal.exists():
            log.warning("%s, left by an interrupted run, is replaced", self.journal)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # the output folder, made now
            self._file = open(self.journal, "w", encoding="utf-8", newline="")  # noqa: SIM115
            self._writer = csv.writer(self._file, lineterminator="\n")
            self._writer.writerow(self.columns)
            self._file.flush()
        except OSError as e:
            raise FCNError(
                f"cannot write {self.journal}: {os_reason(e)}", param="manifest"
            ) from None
        try:
            yield self
        except BaseException:
            self._publish(failing=True)
            raise
        self._publish(failing=False)

    def add(self, row: ManifestRow) -> None:
        """Append one input's row (flushed: a killed run's journal holds it)."""
        if self._file is None:
            raise RuntimeError("Manifest.add outside Manifest.writing")
        classes = len(self.columns) - len(COLUMNS)
        fractions: list[str] = [""] * classes
        if row.pixels is not None and row.pixels.sum() > 0:
            counts = np.asarray(row.pixels, dtype=np.float64)[:classes]
            fractions = [f"{v:.6g}" for v in counts / counts.sum()]
        numbers = (row.bytes, row.width, row.height, row.frames)
        cells = [_text(c) for c in (row.input, row.status, row.reason, row.labels, row.overlay)]
        cells += ["" if v is None or v < 0 else str(int(v)) for v in numbers]
        try:
            self._writer.writerow(cells + fractions)
            self._file.flush()
        except OSError as e:
            raise FCNError(
                f"cannot write {self.journal}: {os_reason(e)}", param="manifest"
            ) from None
        self.rows += 1

    def _publish(self, failing: bool) -> None:
        """The journal under the manifest's name (as it is for CSV, converted for Parquet)."""
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            with file:
                file.flush()
                os.fsync(file.fileno())
            if self.path.suffix.lower() == ".parquet":
                self._write_parquet()
                self.journal.unlink()
            else:
                os.replace(self.journal, self.path)
        except (OSError, FCNError) as e:
            reason = os_reason(e) if isinstance(e, OSError) else str(e)
            failure = FCNError(f"cannot write {self.path}: {reason}", param="manifest")
            if not failing:
                raise failure from None
            log.error("%s", failure)  # the run's own error is the one that goes on

    def _write_parquet(self) -> None:
        import pyarrow as pa
        from pyarrow import csv as pacsv
        from pyarrow import parquet as pq

        types = {c: pa.int64() for c in _INTEGERS}
        types.update({c: pa.float64() for c in self.columns[len(COLUMNS) :]})
        types.update({c: pa.string() for c in COLUMNS if c not in _INTEGERS})
        reader = pacsv.open_csv(
            self.journal,
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types=types),
        )
        with atomic_path(self.path) as tmp, pq.ParquetWriter(tmp, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
