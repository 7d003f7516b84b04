"""The one exception type users see: a single line saying what is wrong and how to fix it."""

__all__ = ["FCNError"]


class FCNError(Exception):
    """A user-facing error. The CLIs print ``error: <message>`` and exit 2, with no traceback."""
