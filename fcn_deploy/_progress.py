"""Progress bars and the user's console: tqdm, set up once for the whole package.

A bar is drawn only on a terminal, and not under ``-q`` (the ``fcn_deploy`` logger above INFO):
logs and pipes get the log messages alone, one line each, never a bar's carriage returns.

Bars and the CLIs' messages go to `console`: ``sys.stderr``, except inside `output_to`, which sends
everything else the process writes to its stdout and stderr (a library's C++ log lines, its
Python loggers, its warnings) to a file while the user's messages still reach the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import TextIO

from tqdm import tqdm

__all__ = ["LOGGERS", "Progress", "console", "output_to"]

LOGGERS = ("fcn_deploy", "fcn_train")  # the packages' loggers: what -v/-q set, what bars yield to
_CONSOLES: list[TextIO] = []  # the terminal's stderr while `output_to` holds the process's


def console() -> TextIO:
    """Where messages for the user go (see the module)."""
    return _CONSOLES[-1] if _CONSOLES else sys.stderr


@contextlib.contextmanager
def output_to(log: int) -> Iterator[None]:
    """Send what the process writes to stdout and stderr (file descriptors 1 and 2, so ``print``
    and native code alike) to the open file ``log`` meanwhile; `console` keeps the real
    stderr."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        copy = sys.stderr.fileno() == 2
    except (OSError, ValueError):  # an object of its own (a test's capture): it stays as it is
        copy = False
    stream = sys.stderr
    if copy:  # closed below, once the descriptors are back
        stream = open(os.dup(2), "w", encoding=sys.stderr.encoding, errors="backslashreplace",  # noqa: SIM115
                      buffering=1)  # fmt: skip
    os.dup2(log, 1)
    os.dup2(log, 2)
    _CONSOLES.append(stream)
    try:
        yield
    finally:
        _CONSOLES.remove(stream)
        for flushed in (sys.stdout, sys.stderr, stream):
            flushed.flush()
        for fd, kept in zip((1, 2), saved, strict=True):
            os.dup2(kept, fd)
            os.close(kept)
        if copy:
            stream.close()


class Progress(tqdm):  # type: ignore[type-arg]  # tqdm is generic over its iterable; no iterable here
    """``with Progress(total, "training") as p: p.update(1, loss="0.31")``: counts, rate, ETA."""

    def __init__(self, total: int | None, desc: str, unit: str = "it") -> None:
        quiet = not logging.getLogger("fcn_deploy").isEnabledFor(logging.INFO)
        super().__init__(
            total=total,
            desc=desc,
            unit=unit,
            file=console(),
            dynamic_ncols=True,
            disable=True if quiet else None,  # None: tqdm draws only when stderr is a terminal
        )

    def update(self, n: float | None = 1, **fields: object) -> bool | None:
        """Advance by ``n``; ``fields`` (loss, size, ...) are shown after the counts."""
        if fields:
            self.set_postfix({k: str(v) for k, v in fields.items()}, refresh=False)
        return super().update(n)
