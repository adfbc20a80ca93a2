"""The command's connection to Redis (``--redis URL``): opened, checked, shown without secrets.

redis-py is the optional extra ``flux-async[redis]``: it is imported only here, when a
command is given ``--redis``. Every failure to reach Redis becomes one line.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from .common import UsageError, one_line

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisLost", "check_url", "open_redis", "redis_errors", "shown_url"]

#: Seconds to wait for Redis to accept a connection before saying it cannot be reached.
CONNECT_TIMEOUT = 5.0
_SCHEMES = ("redis", "rediss", "unix")


class RedisLost(Exception):
    """Redis went away while the command ran (after it was first reached)."""


def shown_url(url: str) -> str:
    """Return ``url`` with its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_url(url: str) -> None:
    """Check that ``url`` is a Redis URL (and that redis-py is installed).

    Raises:
        UsageError: it is not, or the ``redis`` extra is missing.
    """
    scheme = urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise UsageError(
            f"--redis {shown_url(url)!r} is not a Redis URL: expected redis://HOST:PORT/DB, "
            "rediss://... (TLS) or unix:///path/to/socket"
        )
    try:
        import redis.asyncio  # noqa: F401
    except ImportError:
        raise UsageError(
            "--redis needs redis-py, which is not installed: pip install 'flux-async[redis]'"
        ) from None


def redis_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of redis-py that mean Redis cannot be used (connection, auth...)."""
    from redis.exceptions import RedisError

    return (RedisError,)


@contextlib.asynccontextmanager
async def open_redis(url: str) -> AsyncIterator[Redis]:
    """Connect to Redis and check it answers; close the connection at the end.

    Raises:
        UsageError: the URL is not usable, or Redis cannot be reached (nothing was sent).
    """
    check_url(url)
    from redis.asyncio import Redis

    try:
        client = Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT)
    except ValueError as exc:
        raise UsageError(f"--redis {shown_url(url)!r}: {one_line(exc)}") from None
    try:
        try:
            await client.ping()
        except redis_errors() as exc:
            raise UsageError(
                f"cannot reach Redis at {shown_url(url)}: {one_line(exc) or type(exc).__name__}"
            ) from None
        yield client
    finally:
        with contextlib.suppress(*redis_errors(), OSError):
            await client.aclose()
