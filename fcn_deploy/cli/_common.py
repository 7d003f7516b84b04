"""What every CLI shares: one-line errors and exit codes."""

from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

from ..errors import FCNError

__all__ = ["run_cli", "EXIT_USAGE", "EXIT_FAILED"]

EXIT_USAGE = 2  # bad input: a wrong file, path or option
EXIT_FAILED = 1  # the work ran but failed a check (verification, accuracy gate, some inputs failed)


def run_cli(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Run ``main``; turn an `FCNError` into ``error: <message>`` on stderr and exit code 2."""
    try:
        return main(argv)
    except FCNError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
