"""What one provider account allows (`SharedLimits`) and the admission interface every
limiter has (`Limiter`): `LocalLimiter` in one process, `RedisLimiter`
(`flux_async.stores.redis_limits`) shared through Redis by every process of the account.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from .._errors import ConfigurationError
from .._retry import TokenBucket

if TYPE_CHECKING:
    from ..providers._base import Provider

__all__ = ["Limiter", "LocalLimiter", "SharedLimits", "account_id"]


def account_id(provider: Provider) -> str:
    """Return the id of ``provider``'s account in Redis keys: a digest, never the key."""
    secret = str(getattr(provider, "_api_key", ""))
    text = f"{provider.name}\0{provider.base_url}\0{secret}".encode()
    return hashlib.sha256(text).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class SharedLimits:
    """What one provider account allows, shared by every process using it.

    ``None`` means no limit of that kind. Rates are per second over all processes;
    ``burst`` is how many requests may go out back to back after a quiet spell (1: evenly
    spaced, which never exceeds the rate over any window). ``lease_ttl`` is how long a
    job-in-flight slot of a process that stopped renewing it (killed) stays taken.
    """

    requests_per_second: float | None = None
    creates_per_second: float | None = None
    polls_per_second: float | None = None
    max_jobs_in_flight: int | None = None
    burst: float = 1.0
    lease_ttl: float = 30.0

    def __post_init__(self) -> None:
        for name in ("requests_per_second", "creates_per_second", "polls_per_second"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigurationError(f"SharedLimits.{name} must be a number > 0, got {value!r}")
        jobs = self.max_jobs_in_flight
        if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
            raise ConfigurationError(
                f"SharedLimits.max_jobs_in_flight must be an integer >= 1, got {jobs!r}"
            )
        if not (isinstance(self.burst, (int, float)) and self.burst >= 1):
            raise ConfigurationError(f"SharedLimits.burst must be >= 1, got {self.burst!r}")
        if not (isinstance(self.lease_ttl, (int, float)) and self.lease_ttl > 0):
            raise ConfigurationError(
                f"SharedLimits.lease_ttl must be > 0 seconds, got {self.lease_ttl!r}"
            )


class Limiter(Protocol):
    """Admission for one provider account: create and poll turns, and the 429 pause."""

    async def acquire_create(self) -> None:
        """Wait out the 429 pause, then wait for this create's turn."""

    async def acquire_poll(self) -> None:
        """Wait for this poll's turn."""

    def pause(self, seconds: float) -> float:
        """Hold every create for ``seconds`` (a longer pause is kept); return it."""

    def paused_until(self) -> float:
        """The local clock time (``time.monotonic``) before which no create is sent."""


class LocalLimiter:
    """The `Limiter` of one process: token buckets and a pause in memory."""

    def __init__(
        self,
        *,
        creates_per_second: float | None = None,
        polls_per_second: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._creates = TokenBucket(creates_per_second) if creates_per_second else None
        self._polls = TokenBucket(polls_per_second) if polls_per_second else None
        self._clock = clock
        self._sleep = sleep
        self._paused_until = -math.inf

    async def acquire_create(self) -> None:
        """Wait out the pause, then take a turn of the create rate."""
        while (left := self._paused_until - self._clock()) > 0:
            await self._sleep(left)
        if self._creates is not None and (delay := self._creates.reserve(self._clock())) > 0:
            await self._sleep(delay)

    async def acquire_poll(self) -> None:
        """Take a turn of the poll rate."""
        if self._polls is not None and (delay := self._polls.reserve(self._clock())) > 0:
            await self._sleep(delay)

    def pause(self, seconds: float) -> float:
        """Hold creates for ``seconds`` unless a longer pause runs."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        return seconds

    def paused_until(self) -> float:
        """When the pause ends (``-inf``: none)."""
        return self._paused_until
