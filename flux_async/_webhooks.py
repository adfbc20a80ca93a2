"""Receiving provider callbacks: tokens, the framework-neutral router, the aiohttp receiver.

`CallbackRouter` decides what a callback request means: which job, whether it is
authentic, and what it may change (it never sets a final state from an unverified payload;
it asks the client to verify). The aiohttp pieces only carry bytes in and out.

Three ways to mount:

- the bundled standalone receiver (`WebhookReceiver`), started and stopped with the client;
- `FluxClient.webhook_app()`, an aiohttp sub-application for ``app.add_subapp(prefix, ...)``,
  or `FluxClient.webhook_routes()` for ``app.add_routes(...)``;
- ``await client.handle_webhook(method, path, headers, body)`` from any other framework.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

import msgspec
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ._config import Webhooks
from ._errors import FluxError, UnknownStatusError
from ._registry import Entry, Registry
from .providers._base import Provider, Update

__all__ = [
    "CallbackRouter",
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


class CallbackRouter:
    """Turn callback requests into registry changes, safely and exactly once.

    Args:
        provider: the client's provider (decodes bodies, names the secret header).
        registry: the client's jobs.
        config: the webhook policy.
        apply: applies a trusted update to a job (the client's own path for poll answers).
        verify: asks the provider for a job's state with one authenticated query.
    """

    def __init__(
        self,
        *,
        provider: Provider,
        registry: Registry,
        config: Webhooks,
        apply: Callable[[Entry, Update], None],
        verify: Callable[[Entry], None],
    ) -> None:
        self._provider = provider
        self._registry = registry
        self._config = config
        self._apply = apply
        self._verify = verify
        # Finished jobs' token digests, so late callbacks get 200 rather than 404.
        self._finished: collections.OrderedDict[str, bytes] = collections.OrderedDict()

    def remember_finished(self, entry: Entry) -> None:
        """Keep a finished job's token digest (bounded) to answer its late callbacks."""
        if entry.token_hash is None:
            return
        self._finished[entry.local_id] = entry.token_hash
        if len(self._finished) > self._config.remember_finished:
            self._finished.popitem(last=False)

    def handle(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> WebhookResponse:
        """Answer one callback request; never raises (see `FluxClient.handle_webhook`)."""
        try:
            return self._handle(method, path, headers, body)
        except Exception as exc:  # hostile input must never become a 500
            logger.debug("callback rejected: %s: %s", type(exc).__name__, exc)
            return WebhookResponse(400, b"bad callback\n")

    def _handle(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> WebhookResponse:
        if not isinstance(method, str) or method.upper() != "POST":
            return WebhookResponse(405, b"method not allowed\n")
        parsed = parse_callback_path(path)
        if parsed is None:
            return NOT_FOUND
        provider_name, local_id, token = parsed
        if provider_name != self._provider.name:
            return NOT_FOUND
        entry = self._registry.get(local_id)
        if entry is None:
            remembered = self._finished.get(local_id)
            if remembered is not None and same_digest(token, remembered):
                return WebhookResponse(200, b"already finished\n")
            return NOT_FOUND
        if not same_digest(token, entry.token_hash):
            return NOT_FOUND
        if not isinstance(body, (bytes, bytearray)) or len(body) > self._config.max_body_bytes:
            return TOO_LARGE
        secret_header = self._provider.callback_secret_header
        if secret_header is not None:
            presented = header_value(headers, secret_header)
            if presented is None or not same_digest(presented, entry.secret_hash):
                return WebhookResponse(401, b"missing or wrong webhook secret\n")
        if entry.status.is_terminal:
            return WebhookResponse(200, b"already finished\n")
        try:
            callback = self._provider.parse_callback(bytes(body))
        except UnknownStatusError:
            # An undocumented status is refused, but it is still news: ask the provider.
            self._verify(entry)
            return WebhookResponse(422, b"unrecognised status; the job will be checked\n")
        except (ValueError, msgspec.MsgspecError, FluxError) as exc:
            logger.debug("job %s: unreadable callback: %s", entry.local_id, exc)
            return WebhookResponse(400, b"unreadable callback body\n")
        if callback.job_id is not None and entry.job_id is not None:
            if callback.job_id != entry.job_id:
                return WebhookResponse(409, b"callback names another job\n")
        if callback.job_id is not None and entry.job_id is None:
            # Early (before the create's answer) or orphaned (the answer was lost): the
            # token proves this is the job we asked for.
            self._registry.accept(entry, callback.job_id)
        update = callback.update
        if not update.status.is_terminal:
            self._registry.advance(entry, update.status)  # progress only: no images
        elif self._config.trust_payload and secret_header is not None and entry.job_id:
            self._apply(entry, update)
        else:
            self._verify(entry)  # a hint: the final state comes from the provider
        return WebhookResponse(200, b"ok\n")


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
