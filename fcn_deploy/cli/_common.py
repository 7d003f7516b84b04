"""What every CLI shares: one-line errors and exit codes, ``-v``/``-q``, size parsing."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable, Sequence

from .._progress import LOGGERS
from ..errors import FCNError

__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "add_verbosity",
    "parse_args",
    "parse_size",
    "parse_sizes",
    "run_cli",
]

EXIT_USAGE = 2  # bad input: a wrong file, path or option
EXIT_FAILED = 1  # the work ran but failed a check (verification, accuracy gate, some inputs failed)


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main``; turn an `FCNError` into ``error: <message>`` on stderr and exit code 2."""
    try:
        return main(argv)
    except FCNError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    """``-v`` (debug messages) and ``-q`` (warnings and errors only, no progress bars)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", help="also print debug messages")
    group.add_argument(
        "-q", "--quiet", action="store_true", help="print only warnings and errors (no progress)"
    )


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` and send the library's log messages to stderr at the chosen level.

    Messages are plain lines (``message``, or ``warning: message``), so logs and pipes read well.
    Only this package's loggers are set; other libraries keep Python's defaults.
    """
    args = parser.parse_args(argv)
    level = (
        logging.DEBUG
        if getattr(args, "verbose", False)
        else logging.WARNING
        if getattr(args, "quiet", False)
        else logging.INFO
    )
    handler = _CliHandler()
    handler.setFormatter(_LineFormatter())
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        for old in [h for h in logger.handlers if isinstance(h, _CliHandler)]:
            logger.removeHandler(old)  # a second CLI call in one process replaces the first's
        logger.addHandler(handler)
    return args


class _CliHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `parse_args` installs (a later call finds and replaces it).

    It writes to whatever ``sys.stderr`` is at the time, so it outlives a redirected stream.
    """

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def parse_size(text: str, flag: str) -> tuple[int, int]:
    """``"512x768"`` (H×W; ``×`` or ``,`` also accepted) or ``"512"`` (square) → (512, 768)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*", text)
    if not match:
        raise FCNError(f"{flag} must look like HxW (e.g. 1024x2048), got {text!r}")
    h, w = int(match.group(1)), int(match.group(2) or match.group(1))
    if h < 1 or w < 1:
        raise FCNError(f"{flag} {text}: height and width must be at least 1")
    return h, w


def parse_sizes(text: str, flag: str) -> list[tuple[int, int]]:
    """``"224x224,500x500"`` → ``[(224, 224), (500, 500)]``."""
    sizes = [parse_size(part, flag) for part in text.split(",") if part.strip()]
    if not sizes:
        raise FCNError(f"{flag}: no sizes given (e.g. 224x224,500x500)")
    return sizes
