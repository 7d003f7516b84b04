"""Progress bars: tqdm, set up once for the whole package.

A bar is drawn only on a terminal, and not under ``-q`` (the ``fcn_deploy`` logger above INFO):
logs and pipes get the log messages alone, one line each, never a bar's carriage returns.
"""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm

__all__ = ["LOGGERS", "Progress"]

LOGGERS = ("fcn_deploy", "fcn_train")  # the packages' loggers: what -v/-q set, what bars yield to


class Progress(tqdm):  # type: ignore[type-arg]  # tqdm is generic over its iterable; no iterable here
    """``with Progress(total, "training") as p: p.update(1, loss="0.31")``: counts, rate, ETA."""

    def __init__(self, total: int | None, desc: str, unit: str = "it") -> None:
        quiet = not logging.getLogger("fcn_deploy").isEnabledFor(logging.INFO)
        super().__init__(
            total=total,
            desc=desc,
            unit=unit,
            file=sys.stderr,
            dynamic_ncols=True,
            disable=True if quiet else None,  # None: tqdm draws only when stderr is a terminal
        )

    def update(self, n: float | None = 1, **fields: object) -> bool | None:
        """Advance by ``n``; ``fields`` (loss, size, ...) are shown after the counts."""
        if fields:
            self.set_postfix({k: str(v) for k, v in fields.items()}, refresh=False)
        return super().update(n)
