"""The connection under `RedisStore`: opening it, retrying calls while Redis is away, and the
error raised once it stayed away (`StoreUnavailableError`).

URLs are shown without credentials (`where`): the password never reaches a message or a repr.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .._store import JournalError

logger = logging.getLogger("flux_async.stores.redis")


class StoreUnavailableError(JournalError):
    """The job store (Redis) could not be reached, even after retrying.

    Raised by awaited store calls; when `JobStore.put_allocated` raises it the job's create is
    not sent (the job ends ``failed`` with this error), so no paid job goes unrecorded.

    Attributes:
        path: where the store is (``redis://host:port/db``, without credentials).
    """


def where(url: str) -> str:
    """The URL without credentials, for messages and reprs."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        path = parts.path or ""
        return f"{parts.scheme}://{host}{port}{path}"
    except ValueError:
        return "redis://<unparsable url>"


def connect(url: str, options: Mapping[str, Any]) -> aioredis.Redis:
    """A redis-py client that retries connection errors itself (``options`` override)."""
    settings: dict[str, Any] = {
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=6),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "socket_timeout": 10.0,
        "socket_connect_timeout": 2.0,
        "health_check_interval": 15,
    }
    settings.update(options)
    return aioredis.Redis.from_url(url, **settings)


async def retrying(call: Callable[..., Any], *args: Any, retry_for: float, shown: str) -> Any:
    """Run ``call`` until it gets through or ``retry_for`` seconds passed.

    Raises:
        StoreUnavailableError: Redis stayed unreachable (``shown`` names it).
    """
    deadline = time.monotonic() + retry_for
    delay = 0.05
    while True:
        try:
            return await call(*args)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            if time.monotonic() + delay > deadline:
                raise StoreUnavailableError(
                    f"the job store {shown} is unavailable "
                    f"(retried for {retry_for:g}s): {type(exc).__name__}: {exc}",
                    path=shown,
                ) from exc
            logger.info(
                "redis %s unavailable (%s); retrying in %.2fs", shown, type(exc).__name__, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def read(call: Callable[..., Any], *args: Any, retry_for: float, shown: str) -> Any:
    """`retrying` for a read: a refusal (``ResponseError``) becomes a `JournalError`."""
    try:
        return await retrying(call, *args, retry_for=retry_for, shown=shown)
    except ResponseError as exc:
        raise JournalError(f"cannot read the job store {shown}: {exc}", path=shown) from exc
