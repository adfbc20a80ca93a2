"""The one place that talks HTTP: owns the aiohttp session, maps its errors to ours.

Every aiohttp exception becomes a `TransportError` whose `Phase` says whether the request
could have reached the provider. That phase is what keeps a paid create from being sent
twice, so the mapping is a table (`phase_for_exception`) with a test of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import aiohttp

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
        # map_aiohttp_errors written out: a context manager per request costs a generator.
        try:
            async with session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.body,
                timeout=self._timeout_sync if long_read else self._timeout,
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
