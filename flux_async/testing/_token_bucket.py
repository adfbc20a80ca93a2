"""The fake's rate limit per API key (`Faults.rate_limit`): a token bucket. Written apart
from the client's own (``flux_async._retry.TokenBucket``) on purpose: the fake models the
provider, not the client."""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """Refill ``rate`` tokens per second up to ``capacity``; a request takes one."""

    __slots__ = ("_capacity", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, capacity: float) -> None:
        self._rate = rate
        self._capacity = max(1.0, capacity)
        self._tokens = self._capacity
        self._updated: float | None = None

    def take(self, now: float) -> float | None:
        """Take a token at a monotonic time; return None, or the seconds until one is free."""
        if self._updated is not None:
            elapsed = max(0.0, now - self._updated)
            self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / self._rate
