"""The aiohttp side of provider callbacks: body reading, routes, app and bundled receiver.

This is the only webhook module that imports ``aiohttp.web``; what a callback *means* is
decided by the sans-IO `CallbackRouter` in `_callbacks` (re-exported here for older
imports). Three ways to mount:

- the bundled standalone receiver (`WebhookReceiver`), started and closed with the client;
- `FluxClient.webhook_app()`, an aiohttp sub-application for ``app.add_subapp(prefix, ...)``,
  or `FluxClient.webhook_routes()` for ``app.add_routes(...)``;
- ``await client.handle_webhook(method, path, headers, body)`` from any other framework.

Hostile traffic is expected on a public port. Bodies are read with a size limit and a time
limit; a body that cannot be read or decompressed is a 400, never a 500; tokens are kept out
of every log line; and what aiohttp itself would log at ERROR about malformed requests goes
to a rate-limited DEBUG logger instead.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ._callbacks import (
    BAD_BODY,
    NOT_FOUND,
    READ_TIMEOUT,
    TOO_LARGE,
    CallbackRouter,
    Handler,
    RateLimit,
    WebhookResponse,
    digest,
    header_value,
    log_hostile,
    new_secret,
    parse_callback_path,
    redact,
    same_digest,
)
from ._config import Webhooks

__all__ = [
    "NOT_FOUND",
    "TOO_LARGE",
    "CallbackRouter",
    "WebhookAccessLogger",
    "WebhookReceiver",
    "WebhookResponse",
    "digest",
    "header_value",
    "make_app",
    "make_routes",
    "new_secret",
    "parse_callback_path",
    "redact",
    "same_digest",
    "webhook_server_logger",
]

logger = logging.getLogger("flux_async.webhooks")
ACCESS_LOGGER = "flux_async.webhooks.access"


class _QuietServerLogger(logging.Logger):
    """aiohttp's server logger for a public callback port: DEBUG only, rate-limited.

    aiohttp logs every malformed request (bad request line, bad header, undecodable body)
    with an ERROR traceback on ``aiohttp.server``; on a port the internet can reach that is
    a flood an attacker controls. This logger turns each such record into one DEBUG line
    naming the exception type only (its message may quote the request line, token and
    all), at most ``burst`` per minute, and counts the rest.
    """

    def __init__(self, name: str = "flux_async.webhooks.server") -> None:
        super().__init__(name)
        self.parent = logging.getLogger("flux_async.webhooks")
        self._limit = RateLimit()

    def _log(  # type: ignore[override]
        self, level: int, msg: object, args: Any, exc_info: Any = None, **kwargs: Any
    ) -> None:
        if not super().isEnabledFor(logging.DEBUG):
            return
        allowed, dropped = self._limit.allow()
        if not allowed:
            return
        kind = ""
        if exc_info:
            if isinstance(exc_info, BaseException):
                error: BaseException | None = exc_info
            else:
                info = exc_info if isinstance(exc_info, tuple) else sys.exc_info()
                error = info[1] if len(info) == 3 else None
            if error is not None:
                kind = f" ({type(error).__name__})"
        text = str(msg) if not args else _safe_format(msg, args)
        suffix = f"; {dropped} similar lines suppressed" if dropped else ""
        super()._log(logging.DEBUG, "%s%s%s", (text, kind, suffix), stacklevel=2)

    def isEnabledFor(self, level: int) -> bool:
        return super().isEnabledFor(logging.DEBUG)


def _safe_format(msg: object, args: Any) -> str:
    try:
        return str(str(msg) % args)
    except Exception:
        return str(msg)


def webhook_server_logger() -> logging.Logger:
    """A logger for ``web.AppRunner(app, logger=...)`` that turns aiohttp's ERROR records
    about malformed requests into rate-limited DEBUG lines on ``flux_async.webhooks.server``.
    """
    return _QuietServerLogger()


class WebhookAccessLogger(AbstractAccessLogger):
    """An aiohttp access logger that never writes a callback token.

    Lines carry the client address, method, redacted path (every token-like run hidden, the
    query string dropped), status and time. Answers below 400 are logged at INFO; refused
    requests (hostile or mistaken) at DEBUG, at most 20 a minute. Use it for your own app:
    ``web.AppRunner(app, access_log_class=WebhookAccessLogger)``.
    """

    _limits: ClassVar[dict[str, RateLimit]] = {}
    """One limit per logger name: aiohttp makes an access logger per connection."""

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._limit = self._limits.setdefault(logger.name, RateLimit())

    @property
    def enabled(self) -> bool:
        """Whether any line would be written (INFO is the loudest this logger writes);
        when not, aiohttp skips timing and logging each request."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        try:
            status = response.status
            if status < 400:
                level = logging.INFO
            else:
                allowed, _ = self._limit.allow()
                if not allowed:
                    return
                level = logging.DEBUG
            self.logger.log(
                level,
                '%s "%s %s" %s %.4fs',
                request.remote,
                redact(request.method)[:16],
                redact(request.path),
                status,
                time,
            )
        except Exception:  # a log line must never break a response
            pass


async def _read_body(request: web.Request, config: Webhooks) -> bytes | WebhookResponse:
    """Read a callback body within `Webhooks.max_body_bytes` and `Webhooks.read_timeout`.

    Returns the bytes, or the answer to give: 413 (too large), 408 (too slow, or shorter
    than its Content-Length), 400 (unreadable: bad chunking, undecodable compression).
    """
    limit = config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return TOO_LARGE
    content = request.content
    if content.is_eof() and content.exception() is None:
        # The usual small callback: the whole body arrived with the headers. Take it
        # without a timeout handle and an iterator per request.
        body = content.read_nowait()
        return TOO_LARGE if len(body) > limit else body

    async def read() -> bytes | WebhookResponse:
        chunks = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                return TOO_LARGE
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(config.read_timeout):  # no extra task per callback
                return await read()
        else:  # pragma: no cover - Python 3.10
            return await asyncio.wait_for(read(), config.read_timeout)
    except asyncio.TimeoutError:
        log_hostile("callback body not received within %gs", config.read_timeout)
        answer = READ_TIMEOUT
    except Exception as exc:  # aiohttp's payload and decompression errors, and the like
        log_hostile("unreadable callback body: %s", type(exc).__name__)
        answer = BAD_BODY
    # Nothing more is read from this request: mark its body finished so aiohttp closes
    # the connection after the answer instead of "lingering" on it (which would wait for
    # bytes that never come, or re-raise the payload error and log it at ERROR).
    try:
        request.content.feed_eof()
    except Exception:  # pragma: no cover - a stream that refuses is closed anyway
        pass
    return answer


def _aiohttp_handler(handler: Handler, config: Webhooks) -> Callable[..., Awaitable[Any]]:
    limit = config.max_body_bytes

    async def receive(request: web.Request) -> web.Response:
        content = request.content
        length = request.content_length
        body: bytes | WebhookResponse
        if content.is_eof() and content.exception() is None and (length is None or length <= limit):
            # The usual small callback, whole with its headers: `_read_body`'s first case
            # without a coroutine of its own.
            body = content.read_nowait()
            if len(body) > limit:
                body = TOO_LARGE
        else:
            body = await _read_body(request, config)
        if isinstance(body, WebhookResponse):
            answer = body
        else:
            try:
                answer = await handler(request.method, request.path, request.headers, body)
            except Exception as exc:  # handlers promise not to raise; a 500 is still wrong
                log_hostile("callback handler failed: %s", type(exc).__name__)
                answer = WebhookResponse(400, b"bad callback\n")
        response = web.Response(status=answer.status, body=answer.body, content_type="text/plain")
        if answer.status in (400, 408, 413):
            response.force_close()  # the rest of the request cannot be trusted
        return response

    return receive


def make_routes(handler: Handler, config: Webhooks, prefix: str) -> list[web.RouteDef]:
    """Return the receiver's routes under ``prefix`` for ``app.add_routes(...)``."""
    receive = _aiohttp_handler(handler, config)
    return [web.route("*", prefix.rstrip("/") + "/{provider}/{local_id}/{token}", receive)]


def make_app(handler: Handler, config: Webhooks) -> web.Application:
    """Return an aiohttp application serving the callbacks at ``/{provider}/{id}/{token}``.

    Mount it with ``app.add_subapp(prefix, client.webhook_app())``.
    """
    app = web.Application(client_max_size=config.max_body_bytes)
    app.add_routes(make_routes(handler, config, ""))
    return app


class WebhookReceiver:
    """The bundled standalone receiver: an aiohttp server on ``host:port``."""

    def __init__(self, handler: Handler, config: Webhooks) -> None:
        self._handler = handler
        self._config = config
        self._runner: web.AppRunner | None = None
        self.url: str | None = None
        """``http://host:port{path_prefix}`` once started."""

    async def start(self) -> str:
        """Start listening; return the receiver's own base URL."""
        config = self._config
        app = web.Application(client_max_size=config.max_body_bytes)
        app.add_routes(make_routes(self._handler, config, config.prefix))
        runner = web.AppRunner(
            app,
            access_log_class=WebhookAccessLogger,
            access_log=logging.getLogger(ACCESS_LOGGER),
            logger=_QuietServerLogger(),
            handler_cancellation=True,  # a client that hangs up ends its handler
            lingering_time=min(config.read_timeout, 10.0),
            shutdown_timeout=1.0,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, config.host, config.port, backlog=config.backlog)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        if ":" in host:
            host = f"[{host}]"
        self.url = f"http://{host}:{port}{config.prefix}"
        return self.url

    async def aclose(self) -> None:
        """Stop listening (idempotent)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    stop = aclose
    """Alias of `aclose` (the older name)."""
