"""Progress for long work: a bar redrawn in place on a terminal, a log line every few seconds elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``with Progress(total, "training") as p: p.update(1, loss="0.31")``.

    On a terminal the bar is redrawn at most 10 times a second; in logs (CI, pipes) a line is
    printed every ``log_every`` seconds and at the end, so long runs never look hung.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "it",
        stream: TextIO = sys.stderr,
        log_every: float = 10.0,
    ) -> None:
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.count = 0
        self._drawn = -1  # count at the last line printed
        self.fields: dict[str, str] = {}
        self.start = self._last = time.perf_counter()
        self.tty = stream.isatty()
        self.interval = 0.1 if self.tty else log_every

    def update(self, n: int = 1, **fields: object) -> None:
        self.count += n
        self.fields.update({k: str(v) for k, v in fields.items()})
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._draw(final=False)

    def _draw(self, final: bool) -> None:
        self._drawn = self.count
        elapsed = time.perf_counter() - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        extra = " ".join(f"{k}={v}" for k, v in self.fields.items())
        if self.total:
            frac = min(1.0, self.count / self.total)
            bar = "#" * int(frac * 24)
            head = f"{self.desc} [{bar:<24}] {self.count}/{self.total}"
        else:
            head = f"{self.desc} {self.count}"
        line = f"{head} {rate:.2f} {self.unit}/s {elapsed:.0f}s {extra}".rstrip()
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty or self._drawn != self.count:  # in logs, don't repeat the line just printed
            self._draw(final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
