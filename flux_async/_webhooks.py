"""Receiving provider callbacks: tokens, path parsing, and the aiohttp receiver.

The decisions (which job, whether to believe it, what changes) are the client's
(`FluxClient.handle_webhook`); this module authenticates nothing by itself beyond the
constant-time token and secret comparisons, and carries bytes in and out of aiohttp.

Three ways to mount:

- the bundled standalone receiver (`WebhookReceiver`), started and stopped with the client;
- `FluxClient.webhook_app()`, an aiohttp sub-application for ``app.add_subapp(prefix, ...)``,
  or `FluxClient.webhook_routes()` for ``app.add_routes(...)``;
- ``await client.handle_webhook(method, path, headers, body)`` from any other framework.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ._config import Webhooks

__all__ = [
    "WebhookReceiver",
    "WebhookResponse",
    "digest",
    "header_value",
    "make_app",
    "make_routes",
    "new_secret",
    "parse_callback_path",
    "same_digest",
]

logger = logging.getLogger("flux_async.webhooks")


class WebhookResponse(NamedTuple):
    """What to answer a callback: an HTTP status and a short plain-text body."""

    status: int
    body: bytes


Handler = Callable[[str, str, Mapping[str, str], bytes], Awaitable[WebhookResponse]]

NOT_FOUND = WebhookResponse(404, b"not found\n")
TOO_LARGE = WebhookResponse(413, b"callback body too large\n")


def new_secret() -> tuple[str, bytes]:
    """Return a fresh 256-bit URL-safe secret and the digest to store instead of it."""
    value = secrets.token_urlsafe(32)
    return value, digest(value)


def digest(value: str) -> bytes:
    """Hash a secret for storage and comparison (any string; invalid Unicode included)."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def same_digest(candidate: str, stored: bytes | None) -> bool:
    """Compare a presented secret with a stored digest in constant time, on bytes."""
    if stored is None:
        return False
    return hmac.compare_digest(digest(candidate), stored)


def parse_callback_path(path: str) -> tuple[str, str, str] | None:
    """Split ``.../{provider}/{local_id}/{token}`` into its three parts, or ``None``.

    Only the last three segments matter: whatever prefix routed the request here was
    already matched by the framework.
    """
    if not isinstance(path, str) or len(path) > 2048:
        return None
    path = path.split("?", 1)[0]
    parts = [part for part in path.split("/") if part]
    if len(parts) < 3:
        return None
    provider, local_id, token = parts[-3:]
    if not (0 < len(local_id) <= 64 and 0 < len(token) <= 128):
        return None
    return provider, local_id, token


def header_value(headers: Mapping[Any, Any], name: str) -> str | None:
    """Return header ``name`` (case-insensitive) from any mapping, or ``None``.

    Tolerates hostile input: non-string keys and values are ignored.
    """
    try:
        value = headers.get(name)
    except Exception:  # an exotic mapping; fall back to a scan
        value = None
    if isinstance(value, str):
        return value
    try:
        items = list(headers.items())
    except Exception:
        return None
    wanted = name.lower()
    for key, candidate in items:
        if isinstance(key, str) and key.lower() == wanted and isinstance(candidate, str):
            return candidate
    return None


def redact(path: str) -> str:
    """Hide the token of a callback path (for logs)."""
    parsed = parse_callback_path(path)
    if parsed is None:
        return "/<unrecognised path>"
    provider, local_id, _ = parsed
    return f".../{provider}/{local_id}/<token>"


class _RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp access log lines without tokens: method, redacted path, status, time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.4fs',
            request.remote,
            request.method,
            redact(request.path),
            response.status,
            time,
        )


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _aiohttp_handler(handler: Handler, config: Webhooks) -> Callable[..., Awaitable[Any]]:
    async def receive(request: web.Request) -> web.Response:
        body = await _read_limited(request, config.max_body_bytes)
        if body is None:
            answer = TOO_LARGE
        else:
            answer = await handler(request.method, request.path, request.headers, body)
        return web.Response(status=answer.status, body=answer.body, content_type="text/plain")

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
        app = web.Application(client_max_size=self._config.max_body_bytes)
        app.add_routes(make_routes(self._handler, self._config, self._config.prefix))
        runner = web.AppRunner(
            app,
            access_log_class=_RedactingAccessLogger,
            access_log=logging.getLogger("flux_async.webhooks.access"),
            shutdown_timeout=1.0,
        )
        await runner.setup()
        site = web.TCPSite(runner, self._config.host, self._config.port)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        if ":" in host:
            host = f"[{host}]"
        self.url = f"http://{host}:{port}{self._config.prefix}"
        return self.url

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
