"""The one exception type users see: a single line saying what is wrong and how to fix it."""

from __future__ import annotations

__all__ = ["FCNError"]


class FCNError(Exception):
    """A user-facing error. The CLIs print ``error: <message>`` and exit 2, with no traceback.

    ``param`` names the keyword argument the message is about (e.g. ``"tile"``), so a CLI can
    name its own option for it (``--tile``) while the library speaks in parameters.
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param
