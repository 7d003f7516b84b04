"""What every CLI shares: one-line errors and exit codes, ``-v``/``-q``, argparse types that check
ranges."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .._io import os_reason
from .._progress import LOGGERS, Progress, console
from ..errors import FCNError

__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "OneLineParser",
    "add_allow_unverified",
    "add_model_argument",
    "add_verbosity",
    "error_line",
    "fraction",
    "non_negative_float",
    "non_negative_int",
    "one_line",
    "parse_args",
    "positive_float",
    "positive_int",
    "refuse_overwrites",
    "run_cli",
    "say",
    "size_hw",
    "size_list",
]

EXIT_USAGE = 2  # bad input: a wrong file, path or option
EXIT_FAILED = 1  # the work ran but failed a check (verification, accuracy gate, some inputs failed)


def error_line(error: FCNError, parser: argparse.ArgumentParser | None = None) -> str:
    """``error: <message>``, plus the option for the parameter it names where ``parser`` has one."""
    line = f"error: {one_line(str(error))}"
    flag = f"--{error.param.replace('_', '-')}" if error.param else None
    if flag is not None and parser is not None and flag in parser._option_string_actions:
        line += f" (option {flag})"
    return line


def one_line(text: str) -> str:
    """``text`` with control characters escaped (``\\n``): a file name holding a newline cannot
    split a message or forge an ``error:`` line of its own."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def say(*lines: str, err: bool = False) -> None:
    """Print each of ``lines`` as one line (`one_line`) on stdout, or stderr with ``err``.

    The one way the CLIs print: paths, class names and error messages may hold a user's control
    characters, so nothing they print can split into a line of its own. A table is passed as its
    lines (``say(*table.splitlines())``). Flushed: a supervisor waiting for fcn-serve's
    ``ready:`` line sees it at once, and stdout and stderr keep their order in a shared log.
    On stderr, through `Progress.write` to the user's `console`: a progress bar on a terminal
    stays whole, and the lines reach the terminal while Ray's output is set aside.
    """
    for line in lines:
        if err:
            Progress.write(one_line(line), file=console())
            console().flush()
        else:
            print(one_line(line), flush=True)


def run_cli(
    main: Callable[[Sequence[str] | None], int],
    argv: Sequence[str] | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> int:
    """Run ``main``; turn an `FCNError` into ``error: <message>`` on stderr and exit code 2.

    With ``parser``, an error about a parameter the CLI has an option for names that option too.

    SIGTERM is handled like Ctrl-C (KeyboardInterrupt), so ``kill`` also unwinds through every
    ``finally`` and atomic write, leaving no temp files; an OSError that escaped the library's
    own handling still becomes one line naming the path and the cause.
    """
    try:
        with _sigterm_as_interrupt():
            return main(argv)
    except SystemExit as e:  # argparse's exit (a bad option, --help): a return code like the rest
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)
    except FCNError as e:
        say(error_line(e, parser), err=True)
        return EXIT_USAGE
    except _Terminated:
        say("terminated", err=True)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        say("interrupted", err=True)
        return 130
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        say(f"error: {where}{os_reason(e)}", err=True)
        return EXIT_USAGE


def refuse_overwrites(
    outputs: Mapping[str, str | os.PathLike[str] | None],
    inputs: Mapping[str, str | os.PathLike[str] | None] | None = None,
) -> None:
    """Refuse an output file that is one of the inputs, or another output, before any work.

    Keys name the option (``--json``), values the path (None: not given). Paths are compared as
    files (symlinks, ``..`` and hard links resolved), so ``--json model.onnx`` cannot replace the
    model being measured, nor ``--json`` the weights that ``--out`` writes.
    """
    seen: dict[object, tuple[str, str]] = {}
    for role, group in (("input", inputs or {}), ("output", outputs)):
        for flag, path in group.items():
            if path is None:
                continue
            key = _file_key(Path(path))
            if key in seen:
                other_flag, other_role = seen[key]
                raise FCNError(
                    f"{flag} {path} is the same file as the {other_role} {other_flag}; writing it "
                    f"would replace that {other_role}: choose another name"
                )
            seen[key] = (flag, role)


def _file_key(path: Path) -> object:
    """What identifies a file: device and inode when it exists (hard links), else its real path."""
    try:
        st = path.stat()
        return (st.st_dev, st.st_ino)
    except OSError:
        return path.resolve()


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    """``-v`` (debug messages), ``-q`` (warnings and errors only, no progress bars) and
    ``--version``: what every CLI takes."""
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", help="also print debug messages")
    group.add_argument(
        "-q", "--quiet", action="store_true", help="print only warnings and errors (no progress)"
    )


def add_model_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """The model as the first positional argument, as every CLI takes it, with ``--model`` kept
    as the same thing's older spelling; `parse_args` merges the two into ``args.model``."""
    parser.add_argument("model", nargs="?", type=Path, metavar="MODEL", help=help)
    parser.add_argument(
        "--model", dest="model_option", type=Path, metavar="MODEL", help="the same as MODEL"
    )


def add_allow_unverified(parser: argparse.ArgumentParser) -> None:
    """``--allow-unverified``: use an ONNX file whose export failed verification, or whose
    verification record is missing or does not match it."""
    parser.add_argument(
        "--allow-unverified",
        action="store_true",
        help="use an ONNX file (or an engine built from one) even though its export failed "
        "verification or its verification record is missing or does not match it",
    )


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` and send the library's log messages to stderr at the chosen level.

    Messages are plain lines (``message``, or ``warning: message``), so logs and pipes read well.
    Only this package's loggers are set; other libraries keep Python's defaults.
    """
    args = parser.parse_args(argv)
    option = getattr(args, "model_option", None)
    if option is not None:
        if args.model is not None and args.model != option:
            parser.error(f"the model is given twice ({args.model} and --model {option})")
        args.model = option
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
        # a library that calls logging.warning() (ONNX Runtime's quantizer does) gives the root
        # logger a handler; propagating to it would print every line twice
        logger.propagate = False
    return args


class _CliHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `parse_args` installs (a later call finds and replaces it).

    It writes to whatever the user's console (`fcn_deploy._progress.console`: ``sys.stderr``, unless
    another library's output is sent aside) is at the time, so it outlives a redirected stream.
    """

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = console()
        super().emit(record)


class _LineFormatter(logging.Formatter):
    """One line per record at every level (`one_line`): a progress line naming a video called
    ``"vid\\nerror: FORGED.mp4"`` stays one line; warnings and errors get their prefix."""

    def format(self, record: logging.LogRecord) -> str:
        text = one_line(super().format(record))
        if record.levelno < logging.WARNING:
            return text
        return f"{record.levelname.lower()}: {text}"


class _Terminated(KeyboardInterrupt):
    """KeyboardInterrupt raised by SIGTERM: unwinds the same way, exits 143."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def on_sigterm(signum: int, frame: Any) -> None:
        raise _Terminated

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (a CLI called from a worker): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line usage errors, like every other error of these CLIs.

    The stock parser prints the whole usage block before its message; a bad option is one line
    (``error: argument --batch: expected a whole number ≥ 1, got '0'``) and exit code 2.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {one_line(message)} (see {self.prog} --help)\n")


# -- argparse types: a bad value is refused by the parser, before any work -----------------------


def _number(kind: Callable[[str], Any], low: float, inclusive: bool, what: str) -> Any:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    convert.__name__ = what  # argparse names the type in some messages
    return convert


positive_int = _number(int, 1, True, "a whole number ≥ 1")
non_negative_int = _number(int, 0, True, "a whole number ≥ 0")
positive_float = _number(float, 0.0, False, "a number > 0")
non_negative_float = _number(float, 0.0, True, "a number ≥ 0")


def fraction(text: str) -> float:
    """A number in 0..1 (an opacity, a share of pixels)."""
    value = non_negative_float(text)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return float(value)


def size_hw(text: str) -> tuple[int, int]:
    """``"512x768"`` (H×W; ``×`` also accepted) or ``"512"`` (square) → (512, 768)."""
    # at most 9 digits a side: a larger side is no image, and 5000 digits made int() raise
    match = re.fullmatch(r"\s*(\d{1,9})\s*(?:[xX×]\s*(\d{1,9}))?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected HxW such as 1024x2048, got {text!r}")
    h, w = int(match.group(1)), int(match.group(2) or match.group(1))
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"height and width must be at least 1, got {text!r}")
    return h, w


def size_list(text: str) -> list[tuple[int, int]]:
    """``"224x224,500x500"`` → ``[(224, 224), (500, 500)]``."""
    sizes = [size_hw(part) for part in text.split(",") if part.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected a list such as 224x224,500x500, got {text!r}")
    return sizes
