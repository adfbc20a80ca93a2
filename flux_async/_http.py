"""Sans-IO HTTP values shared by the adapters, the transport and the downloader.

`HTTPRequest`/`HTTPResponse` are what an adapter builds and decodes; `phase_for_status`
says how far a request answered with an error status got; `parse_retry_after` reads a
``Retry-After`` header. Nothing here touches a socket.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping

from ._errors import Phase

__all__ = ["HTTPRequest", "HTTPResponse", "parse_retry_after", "phase_for_status"]


class HTTPRequest:
    """One request for the transport to send. Its repr never shows the headers (the key)."""

    __slots__ = ("body", "headers", "method", "operation", "url")

    def __init__(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
    ) -> None:
        self.method = method
        self.url = url
        self.operation = operation
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"HTTPRequest({self.method} {self.url}, operation={self.operation!r})"


class HTTPResponse:
    """A complete response: status, headers (case-insensitive mapping) and body bytes;
    ``sent_at``: when its request went out, on the event loop's clock (set by the lane for
    creates: a job's age counts from then)."""

    __slots__ = ("body", "headers", "sent_at", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.sent_at: float | None = None

    def __repr__(self) -> str:
        return f"HTTPResponse(status={self.status}, {len(self.body)} bytes)"


# 429 and 503 mean "did no work, come back later"; 500/502/504 may come after the work
# started (a gateway timing out on a slow upstream), so they are ambiguous for a create.
_REFUSED_STATUSES = frozenset({429, 503})


def phase_for_status(status: int) -> Phase:
    """Return how far a request answered with a non-2xx HTTP ``status`` got."""
    if status in _REFUSED_STATUSES:
        return Phase.REFUSED
    if status >= 500:
        return Phase.AMBIGUOUS
    return Phase.DEFINITIVE


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header (delta seconds or an HTTP date) into seconds >= 0.

    Returns ``None`` for a missing or malformed value. ``now`` is ``time.time()``, needed
    only for the date form.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
