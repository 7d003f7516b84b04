"""What every CLI shares: one-line errors and exit codes."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence

from ..errors import FCNError

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "parse_size", "parse_sizes", "run_cli"]

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
