"""The one place that talks HTTP: owns the aiohttp session, maps its errors to ours.

Every aiohttp exception becomes a `TransportError` whose `Phase` says whether the request
could have reached the provider. That phase is what keeps a paid create from being sent
twice, so the mapping is a table (`phase_for_exception`) with a test of its own.

Queries (GETs) are idempotent: a failed one is simply sent again later, so whether it
reached the provider does not matter. They skip aiohttp's socket read timer, which is
armed and cancelled twice per request (about 8 % of a poll's CPU), and share one
`_Watchdog` timer instead, which cancels a query still unanswered after ``Timeouts.read``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Iterator
from typing import Any

import aiohttp
from yarl import URL

from ._config import Limits, Timeouts
from ._errors import Phase, TransportError
from ._http import HTTPRequest, HTTPResponse

__all__ = ["Transport", "client_timeout", "map_aiohttp_errors", "phase_for_exception"]

# Responses larger than this are refused rather than buffered (a base64 image batch is the
# largest legitimate answer).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


def phase_for_exception(exc: BaseException) -> Phase:
    """Return how far a request that raised ``exc`` got.

    Only failures before the connection was established are ``NOT_SENT``: once a request
    was written, a reset, a disconnect or a read timeout may come after the provider acted.
    """
    # ClientConnectorError subclasses ClientOSError; it must be checked first.
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return Phase.NOT_SENT
    if isinstance(exc, aiohttp.InvalidURL):
        return Phase.NOT_SENT
    return Phase.AMBIGUOUS


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "timed out connecting (nothing was sent)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"could not connect to {exc.host}:{exc.port} (nothing was sent)"
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return "timed out waiting for the response after the request was sent"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected after the request was sent"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timed out after the request was sent"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


@contextlib.contextmanager
def map_aiohttp_errors(
    provider: str, operation: str, *, subject: str | None = None
) -> Iterator[None]:
    """Turn any aiohttp error (or timeout) raised inside into a `TransportError`.

    The error's phase comes from `phase_for_exception`; its message starts with ``subject``
    (default ``"{provider} {operation}"``). The one aiohttp error boundary of the package.
    """
    try:
        yield
    except _AIOHTTP_ERRORS as exc:
        raise _transport_error(exc, provider, operation, subject) from exc


_AIOHTTP_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError)


def _transport_error(
    exc: BaseException, provider: str, operation: str, subject: str | None = None
) -> TransportError:
    return TransportError(
        f"{subject or f'{provider} {operation}'}: {_describe(exc)}",
        provider=provider,
        phase=phase_for_exception(exc),
        operation=operation,
    )


def client_timeout(timeouts: Timeouts, *, read: float) -> aiohttp.ClientTimeout:
    """Return aiohttp's timeout for ``timeouts`` with ``read`` as the socket read timeout.

    No total: it would count time queued for a pooled connection and so hide whether the
    request was sent (Timeouts' docstring).
    """
    return aiohttp.ClientTimeout(
        total=None, connect=timeouts.pool, sock_connect=timeouts.connect, sock_read=read
    )


#: The methods sent under the `_Watchdog` instead of aiohttp's read timer (idempotent ones).
WATCHED_METHODS = frozenset({"GET", "HEAD"})

# A query string made only of characters that need no quoting (what adapters send: they
# quote ids themselves), which yarl may take as it stands.
_ENCODED_QUERY = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")
_MAX_BASES = 64


class _URLs:
    """Turns request URLs into yarl URLs without parsing each one.

    aiohttp parses every URL given as a string; yarl caches the last 128, but a poll's URL
    names its job, so with more jobs in flight than that every poll parsed its URL again.
    Here the part before ``?`` is parsed once and the (already encoded) query is attached.
    """

    __slots__ = ("_bases",)

    def __init__(self) -> None:
        self._bases: dict[str, tuple[str, str, str]] = {}

    def __call__(self, url: str) -> URL | str:
        base, mark, query = url.partition("?")
        if not mark or _ENCODED_QUERY.fullmatch(query) is None:
            return url  # no query (the same URL each time: yarl's cache has it), or unusual
        parts = self._bases.get(base)
        if parts is None:
            parsed = URL(base)
            if not parsed.absolute or parsed.raw_fragment:
                return url
            if len(self._bases) >= _MAX_BASES:
                self._bases.clear()
            parts = self._bases[base] = (parsed.scheme, parsed.raw_authority, parsed.raw_path)
        scheme, authority, path = parts
        return URL.build(
            scheme=scheme, authority=authority, path=path, query_string=query, encoded=True
        )


#: The watchdog's checks fall on multiples of this many seconds (the poll scheduler's
#: coarsest grid), so that a check shares the event loop's wake-up with the polls due then
#: instead of waking the process on its own.
_TICK_GRID = 0.25


class _Watchdog:
    """One timer for every query in flight: cancels a query unanswered after ``limit`` s.

    A query registers its task (`watch`) and unregisters it when it ends (`done`). While
    any is in flight, a check runs every ``limit / 8`` seconds (at most 1 s), rounded up
    onto the `_TICK_GRID` (or onto the tick, if shorter), so a query ends between ``limit``
    and ``limit`` plus two ticks after it started.
    """

    __slots__ = ("_expired", "_grid", "_handle", "_inflight", "_limit", "_tick")

    def __init__(self, limit: float) -> None:
        self._limit = limit
        self._tick = min(1.0, limit / 8)
        self._grid = min(_TICK_GRID, self._tick)
        self._inflight: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._inflight)

    def watch(self, task: asyncio.Task[Any]) -> None:
        loop = task.get_loop()
        now = loop.time()
        self._inflight[task] = now + self._limit
        if self._handle is None:
            self._handle = loop.call_at(self._next_check(now), self._check, loop)

    def done(self, task: asyncio.Task[Any]) -> bool:
        """Unregister ``task``; return whether the watchdog cancelled it (and nobody else
        did: a cancellation from elsewhere still pending makes this ``False``)."""
        if self._inflight.pop(task, None) is not None or task not in self._expired:
            return False
        self._expired.discard(task)
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+
        return uncancel is None or uncancel() == 0

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        inflight = self._inflight
        late = [task for task, deadline in inflight.items() if deadline <= now]
        for task in late:
            del inflight[task]
            self._expired.add(task)
            task.cancel()
        self._handle = loop.call_at(self._next_check(now), self._check, loop) if inflight else None

    def _next_check(self, now: float) -> float:
        """The time of the next check: a tick from ``now``, rounded up onto the grid."""
        grid = self._grid
        return math.ceil((now + self._tick) / grid) * grid

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Transport:
    """Sends `HTTPRequest`s over one aiohttp session.

    Args:
        session: a session owned by the caller (never closed here), or ``None`` to create one
            on `open` and close it on `close`.
    """

    def __init__(
        self,
        *,
        limits: Limits,
        timeouts: Timeouts,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._limits = limits
        self._timeouts = timeouts
        self._session = session
        self._owns_session = session is None
        self._timeout = client_timeout(timeouts, read=timeouts.read)
        self._timeout_sync = client_timeout(timeouts, read=timeouts.read_sync)
        # Queries: the connect timeouts only (they cost nothing on a pooled connection);
        # the watchdog bounds the rest.
        self._timeout_query = aiohttp.ClientTimeout(
            total=None, connect=timeouts.pool, sock_connect=timeouts.connect
        )
        self._watchdog = _Watchdog(timeouts.read)
        self._urls = _URLs()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session in use (after `open`)."""
        if self._session is None:
            raise RuntimeError("transport not open")
        return self._session

    async def open(self) -> None:
        """Create the session if the caller gave none."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0, limit_per_host=0, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                # The client never reads cookies; a shared jar only costs CPU per request.
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=True,
            )

    async def close(self) -> None:
        """Close the session if this transport created it."""
        self._watchdog.close()
        if self._owns_session and self._session is not None:
            await self._session.close()

    async def send(
        self, request: HTTPRequest, *, provider: str, long_read: bool = False
    ) -> HTTPResponse:
        """Send ``request`` and return the whole response.

        Raises:
            TransportError: no usable response, with the phase it failed in.
        """
        session = self.session
        task: asyncio.Task[Any] | None = None
        if long_read:
            timeout = self._timeout_sync
        elif request.method in WATCHED_METHODS:
            timeout = self._timeout_query
            task = asyncio.current_task()
            if task is not None:
                self._watchdog.watch(task)
        else:
            timeout = self._timeout
        # map_aiohttp_errors written out: a context manager per request costs a generator.
        try:
            async with session.request(
                request.method,
                self._urls(request.url),
                headers=request.headers,
                data=request.body,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                length = response.content_length
                if length is None:
                    # Chunked (or close-delimited): the size is known only as it arrives.
                    body = await _read_capped(response, provider, request.operation)
                else:
                    if length > MAX_RESPONSE_BYTES:
                        raise _too_large(provider, request.operation, response.status, length)
                    body = await response.read()
                return HTTPResponse(response.status, response.headers, body)
        except _AIOHTTP_ERRORS as exc:
            raise _transport_error(exc, provider, request.operation) from exc
        except asyncio.CancelledError:
            if task is not None and self._watchdog.done(task):
                raise self._query_timed_out(provider, request.operation) from None
            raise
        finally:
            if task is not None:
                self._watchdog.done(task)

    def _query_timed_out(self, provider: str, operation: str) -> TransportError:
        return TransportError(
            f"{provider} {operation}: timed out: no whole answer within "
            f"{self._timeouts.read:g}s (the query may have been sent)",
            provider=provider,
            phase=Phase.AMBIGUOUS,
            operation=operation,
        )


async def _read_capped(response: aiohttp.ClientResponse, provider: str, operation: str) -> bytes:
    """Read a body of unannounced length, refusing it once it passes the cap."""
    buffer = bytearray()
    async for chunk in response.content.iter_any():
        buffer += chunk
        if len(buffer) > MAX_RESPONSE_BYTES:
            raise _too_large(provider, operation, response.status, len(buffer), so_far=True)
    return bytes(buffer)


def _too_large(
    provider: str, operation: str, status: int, size: int, *, so_far: bool = False
) -> TransportError:
    what = f"more than {MAX_RESPONSE_BYTES} bytes (chunked)" if so_far else f"{size} bytes"
    return TransportError(
        f"{provider} {operation}: response of {what} is over the {MAX_RESPONSE_BYTES} byte limit",
        provider=provider,
        phase=Phase.AMBIGUOUS,  # the request was sent and answered
        operation=operation,
        status=status,
    )
