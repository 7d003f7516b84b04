"""Ownership of outputs: fcn-deploy deletes or replaces only what it can prove it wrote.

Bulk outputs get their names from the inputs (``photo.jpg`` → ``OUT/photo.png``, a video
``clip.mp4`` → the folder ``OUT/clip/``), so a name says nothing about who wrote a file: a user's
``OUT/clip/`` may hold a thesis. Proof is therefore carried by the outputs themselves and checked
by file type and content, never by a name pattern:

- a label-map PNG carries a ``tEXt`` chunk ``fcn-deploy``; an overlay JPEG a comment (``COM``)
  segment; an overlay MP4 a trailing ``free`` box (all three ignored by every reader);
- a folder fcn-deploy writes (a video's frames, a Triton model) holds a mark file, ``.fcn-deploy``
  (JSON: what it is, and the size of each listed file that cannot carry a mark of its own);
- temporary files live in a private folder beside their target, ``.fcn-deploy-tmp-*``, whose mark
  names its process: a folder left by a killed process is removed at the next write there, once
  its mark, name and dead process agree.

`foreign_entry` says what in a path is not provably fcn-deploy's; `publish` moves a finished file
or folder onto its final name only when what is there is fcn-deploy's own; `remove_owned` deletes
only proven entries. Marks guard against accidents (a run replacing a user's files), not against
someone forging them.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import stat
import struct
import tempfile
import threading
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import FCNError

__all__ = [
    "HEAD_BYTES",
    "MARK_FILE",
    "carries_mark",
    "check_replaceable",
    "foreign_entry",
    "in_the_way",
    "mark_jpeg",
    "mark_mp4",
    "mark_png",
    "marked_head",
    "publish",
    "remove_owned",
    "temp_name",
    "temp_space",
    "write_folder_mark",
]

log = logging.getLogger(__name__)

MARK = b"fcn-deploy"
MARK_FILE = ".fcn-deploy"  # a folder's mark
TEMP_PREFIX = ".fcn-deploy-tmp-"
HEAD_BYTES = 1 << 16  # how far into a file its mark is looked for (PNG: before IDAT, JPEG: SOS)
_PNG = b"\x89PNG\r\n\x1a\n"
_DEPTH = 4  # folders below an owned folder that are looked into (frames: 1; Triton: 2)


# -- marks carried by files ---------------------------------------------------------------------


def mark_png(data: bytes) -> bytes:
    """A PNG's bytes with a ``tEXt`` chunk ``fcn-deploy`` right after ``IHDR`` (where the spec
    allows text chunks; decoders skip it)."""
    if not data.startswith(_PNG) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG with IHDR first")
    body = b"tEXt" + MARK + b"\x00" + b"output"
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return data[:33] + chunk + data[33:]  # signature (8) + IHDR (4 + 4 + 13 + 4)


def mark_jpeg(data: bytes) -> bytes:
    """A JPEG's bytes with a comment segment ``fcn-deploy`` right after SOI."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(MARK) + 2) + MARK + data[2:]


def mark_mp4(path: str | os.PathLike[str]) -> None:
    """Append a ``free`` box holding ``fcn-deploy`` to a finished MP4/MOV (ISO base media) file:
    top-level ``free`` boxes are padding every reader skips."""
    with open(path, "ab") as f:
        f.write(struct.pack(">I", 8 + len(MARK)) + b"free" + MARK)


def carries_mark(path: str | os.PathLike[str]) -> bool:
    """Whether a regular file carries fcn-deploy's mark for its type (PNG, JPEG or MP4)."""
    try:
        with open(path, "rb", buffering=0) as f:
            head = f.read(HEAD_BYTES)
            if head[4:8] == b"ftyp":
                size = os.fstat(f.fileno()).st_size
                tail_size = 8 + len(MARK)
                if size < tail_size:
                    return False
                f.seek(size - tail_size)
                return f.read(tail_size) == struct.pack(">I", tail_size) + b"free" + MARK
            return marked_head(head)
    except OSError:
        return False


def marked_head(head: bytes) -> bool:
    """Whether the first 64 KiB of a PNG or JPEG carry fcn-deploy's mark (for files on object
    stores, read without a local path)."""
    if head.startswith(_PNG):
        return _png_marked(head)
    if head.startswith(b"\xff\xd8"):
        return _jpeg_marked(head)
    return False


def _png_marked(head: bytes) -> bool:
    at = len(_PNG)
    while at + 8 <= len(head):
        length, kind = struct.unpack(">I4s", head[at : at + 8])
        if kind == b"IDAT":
            return False
        if kind == b"tEXt" and head[at + 8 : at + 8 + len(MARK) + 1] == MARK + b"\x00":
            return True
        at += 12 + length
    return False


def _jpeg_marked(head: bytes) -> bool:
    at = 2
    while at + 4 <= len(head) and head[at] == 0xFF:
        kind, length = head[at + 1], struct.unpack(">H", head[at + 2 : at + 4])[0]
        if kind == 0xDA:  # SOS: the image data
            return False
        if kind == 0xFE and head[at + 4 : at + 2 + length] == MARK:
            return True
        at += 2 + length
    return False


# -- folders ------------------------------------------------------------------------------------


def write_folder_mark(
    folder: str | os.PathLike[str], kind: str, files: Mapping[str, int] | None = None
) -> None:
    """Mark ``folder`` as fcn-deploy's ``kind`` (``video-frames``, ``triton-model``, ...);
    ``files``: relative path → size of files inside that carry no mark of their own."""
    text = json.dumps({"owner": "fcn-deploy", "kind": kind, "files": dict(files or {})})
    (Path(folder) / MARK_FILE).write_text(text, encoding="utf-8")


def _folder_mark(folder: Path) -> dict[str, object] | None:
    """The folder's mark when it is a regular file of fcn-deploy's JSON (else None)."""
    mark = folder / MARK_FILE
    try:
        if not stat.S_ISREG(os.lstat(mark).st_mode) or os.lstat(mark).st_size > HEAD_BYTES:
            return None
        found = json.loads(mark.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("owner") != "fcn-deploy":
        return None
    if not isinstance(found.get("files", {}), dict):
        return None
    return found


def foreign_entry(path: str | os.PathLike[str]) -> str | None:
    """What in ``path`` (a file, or a folder and everything in it) fcn-deploy cannot prove it
    wrote, in words (``"OUT/clip/notes.txt is not an fcn-deploy output"``); None if all is its
    own (or nothing is there)."""
    path = Path(path)
    try:
        os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"{path} cannot be examined ({e.strerror})"
    return _foreign(path, {}, "", 0)


def _foreign(path: Path, listed: Mapping[str, object], rel: str, depth: int) -> str | None:
    try:
        st = os.lstat(path)
    except OSError as e:
        return f"{path} cannot be examined ({e.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link"
    if stat.S_ISREG(st.st_mode):
        if listed.get(rel) == st.st_size or carries_mark(path):
            return None
        return f"{path} is not an fcn-deploy output"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a regular file or folder"
    if depth > _DEPTH:
        return f"{path} lies deeper than fcn-deploy writes"
    mark = _folder_mark(path)
    if mark is not None:
        listed, rel = mark.get("files", {}), ""  # type: ignore[assignment]
    elif not any(str(k).startswith(f"{rel}/") for k in listed):
        return f"{path} is a folder fcn-deploy did not write (it holds no {MARK_FILE} mark)"
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as e:
        return f"{path} cannot be listed ({e.strerror})"
    for entry in entries:
        if mark is not None and entry.name == MARK_FILE:
            continue
        problem = _foreign(Path(entry.path), listed, f"{rel}/{entry.name}".lstrip("/"), depth + 1)
        if problem is not None:
            return problem
    return None


def remove_owned(path: str | os.PathLike[str]) -> str | None:
    """Delete ``path`` if it is fcn-deploy's, entry by entry, each proven before it goes; what
    could not be proven (or removed) is left in place and described (None: all gone)."""
    path = Path(path)
    problem = foreign_entry(path)
    if problem is not None:
        return problem
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)  # proven above; rmtree never follows links
        else:
            path.unlink(missing_ok=True)
    except OSError as e:
        return f"{path} could not be removed ({e.strerror})"
    return None


def check_replaceable(final: str | os.PathLike[str], what: str = "a result") -> None:
    """Refuse (`FCNError`, param ``output``) when something at ``final`` is not provably
    fcn-deploy's: checked before the work that would replace it, and again by `publish`."""
    problem = foreign_entry(final)
    if problem is not None:
        raise in_the_way(problem, what)


def in_the_way(problem: str, what: str = "a result") -> FCNError:
    """The error for something fcn-deploy did not write (``problem``) where ``what`` goes."""
    return FCNError(
        f"{problem}, and it is in the way of {what}: fcn-deploy replaces only its own outputs; "
        "move it, or write the results to another folder",
        param="output",
    )


def publish(tmp: Path, final: Path, what: str = "a result") -> bool:
    """Move the finished ``tmp`` (a file, or a folder) onto ``final``; True when it replaced an
    earlier output there. Raises `FCNError` (param ``output``) when something at ``final`` is not
    provably fcn-deploy's: it is never deleted.

    A folder replaces a folder by two renames, the old one moved into ``tmp``'s temp space first
    (a process killed between them leaves it there, to be removed with the space)."""
    check_replaceable(final, what)
    replaced = os.path.lexists(final)
    try:
        if replaced and (tmp.is_dir() or final.is_dir()):  # rename() cannot replace a folder
            aside = tmp.with_name(tmp.name + ".old")  # in tmp's temp space: removed with it
            os.rename(final, aside)
            os.rename(tmp, final)
            if aside.is_dir():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                aside.unlink()
        else:
            os.replace(tmp, final)
    except OSError as e:
        raise FCNError(f"cannot write {final}: {e.strerror}") from None
    return replaced


# -- temp spaces --------------------------------------------------------------------------------


@dataclass
class _Space:
    path: Path
    pid: int
    users: int = 0


_SPACES: dict[tuple[int, str], _Space] = {}
_CLEANED: set[tuple[int, str]] = set()
_LOCK = threading.Lock()
_NAMES = itertools.count()


@contextlib.contextmanager
def temp_space(parent: str | os.PathLike[str], what: str) -> Iterator[Path]:
    """A private folder beside the outputs of ``parent`` for their temp files (shared by the
    writes of this process while any is in progress; removed after the last). Temp folders of
    dead processes there are removed first. ``what``: the message prefix when it cannot be made
    (``"cannot write OUT/x.png"``)."""
    parent = Path(parent) if str(parent) else Path(".")
    key = (os.getpid(), os.path.realpath(parent))
    with _LOCK:
        if key not in _CLEANED:
            _CLEANED.add(key)
            _remove_stale(parent)
        space = _SPACES.get(key)
        if space is None:
            space = _SPACES[key] = _Space(_make_space(parent, what), os.getpid())
        space.users += 1
    try:
        yield space.path
    finally:
        with _LOCK:
            space.users -= 1
            if space.users == 0:
                del _SPACES[key]
                shutil.rmtree(space.path, ignore_errors=True)


def temp_name(space: Path, suffix: str = "") -> Path:
    """A fresh short name in a temp space: writers that choose a format by suffix keep it, and a
    255-byte final name still fits."""
    return space / f"{next(_NAMES)}{suffix}"


def _make_space(parent: Path, what: str) -> Path:
    try:
        folder = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=parent))
        mark = {"owner": "fcn-deploy", "kind": "temp", "pid": os.getpid(),
                "started": _started(os.getpid()), "name": folder.name}  # fmt: skip
        (folder / MARK_FILE).write_text(json.dumps(mark), encoding="utf-8")
    except OSError as e:
        raise FCNError(f"{what}: {e.strerror or e}") from None
    return folder


def _started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux), to tell a reused PID."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _dead(pid: object, started: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return started is not None and _started(pid) not in (None, started)


def _remove_stale(parent: Path) -> None:
    """Remove temp spaces in ``parent`` whose mark names them and a process that is gone."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            if not entry.name.startswith(TEMP_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            mark = _folder_mark(Path(entry.path))
            if (
                mark is not None
                and mark.get("kind") == "temp"
                and mark.get("name") == entry.name
                and _dead(mark.get("pid"), mark.get("started"))
            ):
                shutil.rmtree(entry.path, ignore_errors=True)
                log.info("removed %s, left by an interrupted run", entry.path)
