"""Outside files are read only when they are regular files.

A named pipe (``mkfifo m.pt``) blocks its reader until something writes to it, ``/dev/zero`` never
ends, and a symlink can turn either into an innocent-looking ``photo.png``. Every reader of a file
a user names (models, images, videos, class files, calibration folders) comes through here first,
and learns in one line what the file is instead of hanging or reading forever.

`regular_file` checks by ``os.stat`` (symlinks followed) for readers that hand the path to a
library; `open_regular` also opens the file without blocking (``O_NONBLOCK``) and checks the open
descriptor, so nothing can swap the file for a pipe between the check and the read.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import FCNError

__all__ = ["open_regular", "os_reason", "read_regular", "regular_file"]

_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def os_reason(error: OSError) -> str:
    """The cause of an OSError in a few words ("Permission denied"), without the path repeated."""
    return error.strerror or str(error) or type(error).__name__


def regular_file(
    path: str | os.PathLike[str],
    what: str = "file",
    hint: str | None = None,
    param: str | None = None,
) -> Path:
    """``path`` if it names a regular file (after symlinks); else one `FCNError` saying what it is.

    ``what`` names the expected file ("model file": "m.pt: no such model file"), ``hint`` is added
    in parentheses when the file is missing, ``param`` is the error's parameter.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FCNError(f"{path}: no such {what}" + (f" ({hint})" if hint else ""),
                       param=param) from None  # fmt: skip
    except OSError as e:
        raise FCNError(f"{path}: cannot read ({os_reason(e)})", param=param) from None
    _check_mode(path, st.st_mode, what, param)
    return path


def _check_mode(path: Path, mode: int, what: str, param: str | None) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise FCNError(f"{path} is a folder, not {_a(what)}", param=param)
    kind = next((name for test, name in _KINDS if test(mode)), "not a plain file")
    raise FCNError(f"{path} is {kind}{_via_link(path)}, not a regular file", param=param)


def _via_link(path: Path) -> str:
    """`` (a symlink to /dev/zero)`` when ``path`` is a link: the name alone would not say it."""
    if not path.is_symlink():
        return ""
    with contextlib.suppress(OSError):
        return f" (a symlink to {os.path.realpath(path)})"
    return " (through a symlink)"


@contextlib.contextmanager
def open_regular(
    path: str | os.PathLike[str],
    what: str = "file",
    hint: str | None = None,
    param: str | None = None,
) -> Iterator[BinaryIO]:
    """Open a regular file for reading (binary), refusing anything else (`regular_file`'s words).

    The file is checked by name first, so a device is never opened, then opened with
    ``O_NONBLOCK`` (opening a FIFO would otherwise block) and checked again by its descriptor.
    """
    path = regular_file(path, what, hint, param)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise FCNError(f"{path}: cannot read ({os_reason(e)})", param=param) from None
    try:
        _check_mode(path, os.fstat(fd).st_mode, what, param)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        yield f


def read_regular(
    path: str | os.PathLike[str],
    what: str = "file",
    limit: int | None = None,
    why: str = "",
    hint: str | None = None,
    param: str | None = None,
) -> bytes:
    """The bytes of a regular file (`open_regular`). A file over ``limit`` bytes is refused from
    its size, before anything is read: "x.txt is 3.2 GB, too large for a class file" + ``why``."""
    with open_regular(path, what, hint, param) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            # size + 1, not limit + 1: read(n) allocates n bytes first (a 1.6 GB limit cost ms)
            data = f.read() if limit is None else f.read(size + 1) if size <= limit else b""
        except OSError as e:
            raise FCNError(f"{path}: cannot read ({os_reason(e)})", param=param) from None
    if limit is not None and max(size, len(data)) > limit:  # len: a file that grew while read
        raise FCNError(
            f"{path} is {_bytes(max(size, len(data)))}, too large for {_a(what)}{why}", param=param
        )
    return data


def _a(what: str) -> str:
    return f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
