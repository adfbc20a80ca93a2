"""What the command's parts share: the usage error and one-line messages."""

from __future__ import annotations

__all__ = ["UsageError", "one_line"]


class UsageError(Exception):
    """The command line or its input cannot work; exit status 2, nothing was sent."""


def one_line(message: object, *, limit: int = 500) -> str:
    """Return ``message`` as one line of at most ``limit`` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
