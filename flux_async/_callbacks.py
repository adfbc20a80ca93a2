"""Provider callbacks, sans-IO: tokens, path parsing, redaction and the router.

`CallbackRouter` decides what a callback request means: which job, whether it is
authentic, and what it may change. It takes bytes and answers a `WebhookResponse`; it
never touches the network. The aiohttp server pieces live in `_webhooks` (the only module
of this pair that imports ``aiohttp.web``).

A callback is a hint by default: a terminal one triggers one authenticated query and the
final state comes from that answer. With ``Webhooks(trust_payload=True)`` the payload is
taken as the answer, because the sender proved it knows the job's 256-bit URL token (and,
for PiAPI, its header secret), but only when every image URL in it is an http(s) URL on a
host the provider is known to serve results from; otherwise the job is verified as usual.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import re
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

import msgspec

from ._config import Webhooks
from ._errors import ConfigurationError, FluxError, UnknownStatusError
from ._registry import Entry, Registry
from .providers._base import CallbackUpdate, Provider, Update

__all__ = [
    "BAD_BODY",
    "NOT_FOUND",
    "READ_TIMEOUT",
    "RESULT_HOSTS",
    "TOO_LARGE",
    "CallbackRouter",
    "Handler",
    "RateLimit",
    "WebhookResponse",
    "check_webhooks",
    "digest",
    "header_value",
    "log_hostile",
    "new_secret",
    "parse_callback_path",
    "redact",
    "result_hosts",
    "same_digest",
    "trusted_image_url",
]

logger = logging.getLogger("flux_async.webhooks")


class RateLimit:
    """Allow ``burst`` events per ``window`` seconds; count the ones refused."""

    def __init__(self, burst: int = 20, window: float = 60.0) -> None:
        self._burst = burst
        self._window = window
        self._start = -window
        self._used = 0
        self.dropped = 0

    def allow(self) -> tuple[bool, int]:
        """Return whether to log now and how many were dropped since the last one logged."""
        now = time.monotonic()
        if now - self._start >= self._window:
            self._start, self._used = now, 0
        if self._used >= self._burst:
            self.dropped += 1
            return False, 0
        self._used += 1
        dropped, self.dropped = self.dropped, 0
        return True, dropped


_HOSTILE = RateLimit()


def log_hostile(message: str, *args: object) -> None:
    """Log a refused request at DEBUG, at most 20 lines a minute (an attacker sets the pace)."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    allowed, dropped = _HOSTILE.allow()
    if allowed:
        suffix = f" ({dropped} similar lines suppressed)" if dropped else ""
        logger.debug(message + suffix, *args)


class WebhookResponse(NamedTuple):
    """What to answer a callback: an HTTP status and a short plain-text body."""

    status: int
    body: bytes


Handler = Callable[[str, str, Mapping[str, str], bytes], Awaitable[WebhookResponse]]
"""``(method, path, headers, body) -> WebhookResponse``, e.g. `FluxClient.handle_webhook`."""

NOT_FOUND = WebhookResponse(404, b"not found\n")
TOO_LARGE = WebhookResponse(413, b"callback body too large\n")
BAD_BODY = WebhookResponse(400, b"unreadable callback body\n")
READ_TIMEOUT = WebhookResponse(408, b"callback body not received in time\n")
_BAD_CALLBACK = WebhookResponse(400, b"bad callback\n")
_METHOD = WebhookResponse(405, b"method not allowed\n")
_SECRET = WebhookResponse(401, b"missing or wrong webhook secret\n")
_FINISHED = WebhookResponse(200, b"already finished\n")
_OK = WebhookResponse(200, b"ok\n")

RESULT_HOSTS: dict[str, tuple[str, ...] | None] = {
    # providers.md 3.x: "Example host: https://img.theapi.app/temp/<uuid>.png". PiAPI can
    # also write results to the user's own storage; those need Webhooks.result_hosts.
    "piapi": ("img.theapi.app",),
    # ShortAPI documents no result host (providers.md 1.4/1.6: URLs only, TTL unknown):
    # unknown, so any http(s) URL is accepted unless Webhooks.result_hosts names them.
    "shortapi": None,
}
"""Where each provider is known to serve result images; ``None``: not known."""


def new_secret() -> tuple[str, bytes]:
    """Return a fresh 256-bit URL-safe secret and the digest to store instead of it."""
    value = secrets.token_urlsafe(32)
    return value, digest(value)


def digest(value: str) -> bytes:
    """Hash a secret for storage and comparison (any string; invalid Unicode included)."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def same_digest(candidate: str, stored: bytes | None) -> bool:
    """Compare a presented secret with a stored digest in constant time, on bytes."""
    if stored is None or not isinstance(candidate, str):
        return False
    return hmac.compare_digest(digest(candidate), stored)


def parse_callback_path(path: str) -> tuple[str, str, str] | None:
    """Split ``.../{provider}/{local_id}/{token}`` into its three parts, or ``None``.

    Only the last three segments matter: whatever prefix routed the request here was
    already matched by the framework.
    """
    if not isinstance(path, str) or len(path) > 2048:
        return None
    if "?" in path:
        path = path.split("?", 1)[0]
    tail = path.rsplit("/", 3)
    if len(tail) == 4 and tail[1] and tail[2] and tail[3]:
        provider, local_id, token = tail[1:]  # the usual path: no empty segment at the end
    else:
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


# A callback token is 43 URL-safe base64 characters; local ids are 16 hex digits and are
# kept. Any run of 20 or more URL-safe characters (hex included) could be a token or part
# of one, wherever it sits in the path, and is hidden.
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9_\-]{20,}")
_MAX_SHOWN = 200


def redact(path: str) -> str:
    """Return ``path`` fit for a log line: token-like runs and the query string hidden.

    Every run of 20 or more URL-safe characters becomes ``<token>``, in any segment, so
    ``{callback_url}/x``, ``//{token}`` or ``{token}.png`` leak nothing; the query string
    is dropped whole; control characters are escaped and long paths cut.
    """
    if not isinstance(path, str):
        return "<not a path>"
    path, sep, _query = path.partition("?")
    shown = _TOKEN_LIKE.sub("<token>", path[: _MAX_SHOWN * 4])
    if len(shown) > _MAX_SHOWN:
        shown = shown[:_MAX_SHOWN] + "..."
    shown = shown.encode("unicode_escape", "backslashreplace").decode("ascii")
    return shown + ("?<query>" if sep else "")


def result_hosts(provider: Provider, config: Webhooks) -> frozenset[str] | None:
    """The hosts a trusted payload's image URLs may name, or ``None`` for any http(s) host.

    `Webhooks.result_hosts` when given; else the provider's known result hosts plus its
    API host (a `FakeProvider` serves images from its own address); ``None`` when the
    provider's hosts are unknown (`RESULT_HOSTS`).
    """
    if config.result_hosts is not None:
        return frozenset(host.lower() for host in config.result_hosts)
    known = RESULT_HOSTS.get(provider.name)
    if known is None:
        return None
    api_host = urllib.parse.urlsplit(provider.base_url).hostname or ""
    return frozenset({*known, api_host.lower()} - {""})


# The usual shape of an image URL, read without urlsplit (one callback each): http(s), a
# plain host (no user, no brackets, no characters urlsplit would drop), an optional port,
# then the path. Anything else takes the general path.
_PLAIN_URL = re.compile(r"(?i)https?://([a-z0-9.-]+)(?::[0-9]{1,5})?(?:[/?#]|$)")


def trusted_image_url(url: object, hosts: frozenset[str] | None) -> bool:
    """Whether an image URL from a callback payload may be used without verification.

    Only ``http``/``https`` URLs with a host; when ``hosts`` is given, the host must be
    one of them or a subdomain of an entry written with a leading dot (``.example.com``).
    """
    if not isinstance(url, str) or len(url) > 4096:
        return False
    plain = _PLAIN_URL.match(url)
    if plain is not None:
        host = plain.group(1).lower()
    else:
        try:
            parts = urllib.parse.urlsplit(url)
            found = parts.hostname
        except ValueError:
            return False
        if parts.scheme.lower() not in ("http", "https") or not found or parts.username:
            return False
        host = found.lower()
    if hosts is None:
        return True
    if host in hosts:
        return True
    return any(entry.startswith(".") and host.endswith(entry) for entry in hosts)


def check_webhooks(provider: Provider, webhooks: Webhooks) -> None:
    """Refuse a webhook configuration the provider cannot honour (`ConfigurationError`)."""
    if not provider.supports_callbacks:
        raise ConfigurationError(
            f"{type(provider).__name__} answers synchronously and sends no callbacks; "
            "drop webhooks=",
            provider=provider.name,
        )
    if not webhooks.serve and webhooks.public_url is None:
        raise ConfigurationError(
            "Webhooks(serve=False) needs public_url: the address where you mount the routes",
            provider=provider.name,
        )


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
        self._hosts = result_hosts(provider, config)
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
            log_hostile("callback rejected: %s", type(exc).__name__)
            return _BAD_CALLBACK

    def _handle(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> WebhookResponse:
        if method != "POST" and (not isinstance(method, str) or method.upper() != "POST"):
            return _METHOD
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
                return _FINISHED
            return NOT_FOUND
        if not same_digest(token, entry.token_hash):
            return NOT_FOUND
        if not isinstance(body, (bytes, bytearray)) or len(body) > self._config.max_body_bytes:
            return TOO_LARGE
        secret_header = self._provider.callback_secret_header
        if secret_header is not None:
            presented = header_value(headers, secret_header)
            if presented is None or not same_digest(presented, entry.secret_hash):
                return _SECRET
        if entry.status.is_terminal:
            return _FINISHED
        try:
            callback = self._provider.parse_callback(bytes(body))
        except UnknownStatusError:
            # An undocumented status is refused, but it is still news: ask the provider.
            self._verify(entry)
            return WebhookResponse(422, b"unrecognised status; the job will be checked\n")
        except (ValueError, msgspec.MsgspecError, FluxError, RecursionError) as exc:
            log_hostile("job %s: unreadable callback: %s", entry.local_id, type(exc).__name__)
            return BAD_BODY
        return self._take(entry, callback)

    def deliver(self, local_id: str, callback: CallbackUpdate | None) -> bool:
        """Apply a callback another replica authenticated (token, secret) and decoded.

        ``None`` stands for an undocumented status: the job is checked with the provider.
        Returns whether this client holds the job (a finished one included).
        """
        entry = self._registry.get(local_id)
        if entry is None:
            return False
        if entry.status.is_terminal:
            return True
        if callback is None:
            self._verify(entry)
        else:
            self._take(entry, callback)
        return True

    def _take(self, entry: Entry, callback: CallbackUpdate) -> WebhookResponse:
        """Apply an authentic, decoded callback to its job (the end of `handle`)."""
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
        elif self._config.trust_payload and entry.job_id and self._trusted(entry, update):
            self._apply(entry, update)
        else:
            self._verify(entry)  # a hint: the final state comes from the provider
        return _OK

    def _trusted(self, entry: Entry, update: Update) -> bool:
        """Whether a terminal payload's image URLs may be used as they are."""
        for image in update.images:
            if not trusted_image_url(image.url, self._hosts):
                # A valid token with a foreign host: a leaked token or a new CDN. Either
                # way the provider's own answer decides (one query).
                logger.info(
                    "job %s: callback image host not among the trusted result hosts; "
                    "verifying with the provider",
                    entry.local_id,
                )
                return False
        return True
