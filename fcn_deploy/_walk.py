"""Files under a folder or matching a glob, visiting each real folder once.

``Path.rglob`` and ``glob.glob(recursive=True)`` follow symlinked folders again and again: two
links back up the tree (``d/self → .``, ``d/sub/up → ..``) make the walk exponential, and it never
ends. Here every folder is identified by device and inode and entered once, symlinked or not; a
folder can also be left out (fcn-predict's output folder is never read as input).
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["glob_files", "walk_files"]


def walk_files(root: Path, skip: Path | None = None) -> list[Path]:
    """Every file below ``root`` in sorted order, each real folder visited once; ``skip``: a
    folder whose contents are left out (compared after resolving links)."""
    return sorted(p for p, _ in _walk(root, _identity(skip)))


def glob_files(pattern: str, skip: Path | None = None) -> list[Path]:
    """The files a glob pattern (``*``, ``?``, ``[...]``, ``**`` for any depth) matches, plus the
    files below any folder it matches, in sorted order; hidden names only where the pattern
    spells the dot, like `glob.glob`."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    base = Path(*parts[:fixed]) if fixed else Path(".")
    rest = parts[fixed:]
    if not rest:
        return [base] if base.is_file() else []
    if not base.is_dir():
        return []
    found: list[Path] = []
    folders: set[tuple[str, ...]] = set()  # matched folders: all their files count
    for path, relative in _walk(
        base, _identity(skip), dirs=True
    ):  # a folder comes before its files
        inside = any(relative[:i] in folders for i in range(1, len(relative)))
        if inside or _matches(rest, relative):
            if path.is_dir():
                folders.add(relative)
            else:
                found.append(path)
    return sorted(found)


def _identity(folder: Path | None) -> tuple[int, int] | None:
    try:
        return None if folder is None else _key(os.stat(folder))
    except OSError:
        return None


def _key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _walk(
    root: Path, skip: tuple[int, int] | None, dirs: bool = False
) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """(path, its parts relative to ``root``) for every file (and folder with ``dirs``)."""
    try:
        seen = {_key(os.stat(root))}
    except OSError:
        return
    if skip in seen:
        return
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        folder, relative = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue  # unreadable folder: skipped, as rglob does
        for entry in entries:
            path, parts = Path(entry.path), (*relative, entry.name)
            try:
                if entry.is_dir():  # follows links: a linked folder is read once, like any other
                    key = _key(entry.stat())
                    if key in seen or key == skip:
                        continue
                    seen.add(key)
                    stack.append((path, parts))
                    if dirs:
                        yield path, parts
                elif entry.is_file():
                    yield path, parts
            except OSError:
                continue  # a dangling link or a file gone meanwhile


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
