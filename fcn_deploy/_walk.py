"""Files under a folder or matching a glob, found one by one, visiting each real folder once.

``Path.rglob`` and ``glob.glob(recursive=True)`` follow symlinked folders again and again: two
links back up the tree (``d/self → .``, ``d/sub/up → ..``) make the walk exponential, and it never
ends. Here every folder is identified by device and inode and entered once, symlinked or not.

The walk is a stream: a folder's entries are listed and sorted when it is entered, and files come
out in the order of their sorted path components while the rest of the tree is still unread, so a
caller can start on the first of a million files at once. Each file comes with its identity
(device, inode) for the caller to tell a file reached twice.

A folder can be left out with everything in it, also when it is reached through a symbolic link
(fcn-predict's output folder is never read as input).
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = ["FileKey", "glob_files", "iter_files", "iter_glob", "walk_files"]

FileKey = tuple[int, int]  # (device, inode): what identifies a file or folder
_FILE, _DIR, _LINK, _OTHER = range(4)


def walk_files(root: Path, skip: Path | None = None) -> list[Path]:
    """Every file below ``root`` in sorted order, each real folder visited once; ``skip``: a
    folder whose contents are left out."""
    return [path for path, _ in iter_files(root, skip)]


def glob_files(pattern: str, skip: Path | None = None) -> list[Path]:
    """The files `iter_glob` finds, as a list."""
    return [path for path, _ in iter_glob(pattern, skip)]


def iter_files(root: Path, skip: Path | None = None) -> Iterator[tuple[Path, FileKey]]:
    """(file, its identity) for every file below ``root``, as they are found, in the order of
    their sorted path components; each real folder visited once; nothing inside ``skip``."""
    for path, _, key, is_dir in _walk(root, _Skip(skip)):
        if not is_dir:
            yield path, key


def iter_glob(pattern: str, skip: Path | None = None) -> Iterator[tuple[Path, FileKey]]:
    """(file, its identity) for the files a glob pattern (``*``, ``?``, ``[...]``, ``**`` for any
    depth) matches, plus the files below any folder it matches, as they are found, in sorted
    order; hidden names only where the pattern spells the dot, like `glob.glob`."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    base = Path(*parts[:fixed]) if fixed else Path(".")
    rest = parts[fixed:]
    if not rest:
        try:
            st = os.stat(base)
        except OSError:
            return
        if stat.S_ISREG(st.st_mode):
            yield base, (st.st_dev, st.st_ino)
        return
    folders: set[tuple[str, ...]] = set()  # matched folders: all their files count
    for path, relative, key, is_dir in _walk(base, _Skip(skip), dirs=True):
        inside = any(relative[:i] in folders for i in range(1, len(relative)))
        if inside or _matches(rest, relative):
            if is_dir:
                folders.add(relative)
            else:
                yield path, key


class _Skip:
    """The folder left out: by identity where it is met directly, by real path where a
    symbolic link leads (into it, or into a folder inside it)."""

    def __init__(self, folder: Path | None) -> None:
        self.key: FileKey | None = None
        self.real: str | None = None
        if folder is not None:
            self.real = os.path.realpath(folder)
            with contextlib.suppress(OSError):  # not created yet: only links can lead inside
                self.key = _key(os.stat(folder))

    def holds(self, path: Path) -> bool:
        """Whether a symbolic link ``path`` leads into the folder (or is it)."""
        if self.real is None:
            return False
        real = os.path.realpath(path)
        return real == self.real or real.startswith(self.real.rstrip(os.sep) + os.sep)


def _key(st: os.stat_result) -> FileKey:
    return st.st_dev, st.st_ino


def _entries(folder: Path) -> list[tuple[str, int, int]]:
    """A folder's entries, sorted: (name, kind, inode), the kind as the listing says it (no
    stat per file)."""
    found = []
    with os.scandir(folder) as listing:
        for entry in listing:
            try:
                if entry.is_symlink():
                    kind = _LINK
                elif entry.is_dir(follow_symlinks=False):
                    kind = _DIR
                elif entry.is_file(follow_symlinks=False):
                    kind = _FILE
                else:
                    kind = _OTHER
                found.append((entry.name, kind, entry.inode()))
            except OSError:
                continue  # gone meanwhile
    found.sort()
    return found


def _walk(
    root: Path, skip: _Skip, dirs: bool = False
) -> Iterator[tuple[Path, tuple[str, ...], FileKey, bool]]:
    """(path, its parts relative to ``root``, identity, is a folder) for every file (and folder
    with ``dirs``) below ``root``, depth first in sorted order."""
    try:
        st = os.stat(root)
        listing = _entries(root)
    except OSError:
        return
    seen = {_key(st)}
    if skip.key in seen:
        return
    start: tuple[str, ...] = ()
    stack = [(root, start, st.st_dev, iter(listing))]
    while stack:
        folder, relative, device, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        name, kind, inode = entry
        path, parts = folder / name, (*relative, name)
        if kind == _FILE:
            yield path, parts, (device, inode), False
            continue
        try:
            if kind == _LINK and skip.holds(path):
                continue  # a link into the folder left out
            st = os.stat(path)  # follows links: a linked folder is read once, like any other
            key = _key(st)
            if stat.S_ISDIR(st.st_mode):
                if key in seen or key == skip.key:
                    continue
                seen.add(key)
                listing = _entries(path)
            elif stat.S_ISREG(st.st_mode):
                yield path, parts, key, False
                continue
            else:
                continue  # a FIFO, socket or device: never read
        except OSError:
            continue  # a dangling link, an unreadable folder, a file gone meanwhile
        if dirs:
            yield path, parts, key, True
        stack.append((path, parts, st.st_dev, iter(listing)))


def _matches(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Whether path ``parts`` match glob ``pattern`` parts (``**``: zero or more folders)."""
    if not pattern:
        return not parts
    head = pattern[0]
    if head == "**":
        if _matches(pattern[1:], parts):
            return True
        return bool(parts) and not parts[0].startswith(".") and _matches(pattern, parts[1:])
    if not parts or (parts[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], head) and _matches(pattern[1:], parts[1:])
