"""What the command's parts share: its name, exit codes, the usage error, one-line messages."""

from __future__ import annotations

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "UsageError",
    "one_line",
]

PROG = "flux-async"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """The command line or its input cannot work; exit status 2, nothing was sent."""


def one_line(message: object, *, limit: int = 500) -> str:
    """Return ``message`` as one line of at most ``limit`` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
