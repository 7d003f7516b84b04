"""Progress: tqdm bars on a terminal, plain lines at a steady interval everywhere else.

A bar is drawn only when stderr is a terminal. Logs, pipes, CI, ``nohup`` and notebook cells get
one line every `interval` seconds instead (``training fcn8s: 120/600 it (20%), 5.1 it/s, 1 min 34
s left; loss 0.31``), through the ``fcn_deploy.progress`` logger, so a long step is never silent
and never fills a log with carriage returns. ``-q`` (the ``fcn_deploy`` logger above INFO) shows
neither. `heartbeat` does the same for one long call that has no steps to count (an export's
tracing, a quantizer run).

Bars and the CLIs' messages go to `console`: ``sys.stderr``, except inside `output_to`, which sends
everything else the process writes to its stdout and stderr (a library's C++ log lines, its
Python loggers, its warnings) to a file while the user's messages still reach the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from tqdm import tqdm

__all__ = ["LOGGERS", "Progress", "console", "heartbeat", "interval", "output_to"]

LOGGERS = ("fcn_deploy", "fcn_train")  # the packages' loggers: what -v/-q set, what bars yield to
INTERVAL_ENV = "FCN_PROGRESS_INTERVAL"  # seconds between progress lines off a terminal
_CONSOLES: list[TextIO] = []  # the terminal's stderr while `output_to` holds the process's

log = logging.getLogger("fcn_deploy.progress")


def interval() -> float:
    """Seconds between progress lines off a terminal: ``$FCN_PROGRESS_INTERVAL``, default 10."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, "10"))
    except ValueError:
        return 10.0
    return value if value > 0 else 10.0


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    return f"{minutes // 60} h {minutes % 60} min"


def _quiet() -> bool:
    return not logging.getLogger("fcn_deploy").isEnabledFor(logging.INFO)


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
        quiet = _quiet()
        super().__init__(
            total=total,
            desc=desc,
            unit=unit,
            file=console(),
            dynamic_ncols=True,
            disable=True if quiet else None,  # None: tqdm draws only when stderr is a terminal
        )
        # tqdm has resolved None by now: disabled off a terminal, where lines take over
        self._lines = not quiet and bool(self.disable)
        self._what = (desc, unit, total)  # a disabled tqdm keeps none of them
        self._count, self._fields = 0.0, ""
        self._start = self._last = time.monotonic()
        self._every = interval()

    def update(self, n: float | None = 1, **fields: object) -> bool | None:
        """Advance by ``n``; ``fields`` (loss, size, ...) are shown after the counts."""
        if self._lines:
            self._count += n or 0
            if fields:
                self._fields = "; " + ", ".join(f"{k} {v}" for k, v in fields.items())
            now = time.monotonic()
            if now - self._last >= self._every:
                self._last = now
                log.info(self._line(now))
            return None
        if fields:
            self.set_postfix({k: str(v) for k, v in fields.items()}, refresh=False)
        return super().update(n)

    def _line(self, now: float, done: bool = False) -> str:
        desc, unit, total = self._what
        elapsed = max(now - self._start, 1e-9)
        rate = self._count / elapsed
        count = f"{self._count:g}" + (f"/{total:g}" if total else "")
        count += f" {unit} ({100 * self._count / total:.0f}%)" if total else f" {unit}"
        text = f"{desc}: {count}, {rate:.3g} {unit}/s"
        if done:
            text += f", in {_duration(elapsed)}"
        elif total and rate > 0:
            text += f", {_duration((total - self._count) / rate)} left"
        return text + self._fields

    def close(self) -> None:
        if getattr(self, "_lines", False) and self._count and self._last != self._start:
            self._lines = False  # the closing line once (close runs again at exit)
            log.info(self._line(time.monotonic(), done=True))
        super().close()


@contextlib.contextmanager
def heartbeat(what: str) -> Iterator[None]:
    """Log ``what: still running (40 s)`` every `interval` seconds while the block runs: one long
    call with no steps to count is not silent (a log shows the tool is alive, and where)."""
    if _quiet():
        yield
        return
    stop = threading.Event()
    start, every = time.monotonic(), interval()

    def beat() -> None:
        while not stop.wait(every):
            log.info(f"{what}: still running ({_duration(time.monotonic() - start)})")

    thread = threading.Thread(target=beat, name="fcn-deploy-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
