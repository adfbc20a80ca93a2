"""Limits shared by every process that uses one provider account, kept in Redis.

N worker processes with one API key must together stay under the provider's limits, not N
times them. `RedisLimiter` keeps, per account, in atomic Lua scripts run by the Redis server
(on the server's clock, so machines need not agree on the time):

- request rates as GCRA schedules (the generic cell rate algorithm: one "theoretical arrival
  time" per rate): every request takes the next turn of the aggregate ``requests_per_second``
  and of its kind's rate (``creates_per_second``, ``polls_per_second``), all in one script,
  so the slowest rate decides when it goes out and every rate counts it at that time;
- the 429 pause: a key whose value is the end of the pause, with a matching ``PX`` expiry;
  any process that receives a 429 extends it (never shortens it), and every create waits it
  out before taking its turn;
- jobs in flight as leases in a sorted set scored by their expiry: a process renews its
  leases while it lives, so a process killed with ``kill -9`` gives its slots back when its
  leases expire (``lease_ttl``), never by anyone's goodwill.

Keys (``{ns}`` is the namespace, default ``flux``; the braces are a Redis Cluster hash tag so
one account's keys live in one slot)::

    {ns}:limits:{<provider>:<account>}:rate:requests   GCRA arrival time (ms, server clock)
    {ns}:limits:{<provider>:<account>}:rate:create     GCRA arrival time of creates
    {ns}:limits:{<provider>:<account>}:rate:poll       GCRA arrival time of polls
    {ns}:limits:{<provider>:<account>}:pause           end of the 429 pause (ms), PX expiry
    {ns}:limits:{<provider>:<account>}:inflight        sorted set: lease id -> expiry (ms)

``<account>`` is the first 16 hex digits of a SHA-256 over the provider's name, address and
API key: the key itself never reaches Redis.

`RedisLimiter.middleware` applies the rates and the pause to an `aiohttp.ClientSession`
(pass it to ``FluxClient(session=...)``): a ``POST`` is a create, anything else a poll, and
a 429 answer extends the shared pause by its ``Retry-After``. `LocalLimiter` is the same
interface in one process (today's create pacing and pause); it, `SharedLimits` and
`account_id` are defined in `_limits` and importable from here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import aiohttp

from .._http import parse_retry_after
from ._limits import Limiter, LocalLimiter, SharedLimits, account_id

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ..providers._base import Provider

__all__ = [
    "Limiter",
    "LocalLimiter",
    "RedisLimiter",
    "SharedLimits",
    "account_id",
]

logger = logging.getLogger("flux_async")

# KEYS[1] = pause key, KEYS[2..n] = GCRA keys. ARGV[1] = "1" to wait out the pause, then
# per GCRA key: emission interval (ms), tolerance (ms). Returns the wait in ms (a string:
# Lua numbers become integers on the way out).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local at = now
if ARGV[1] == '1' then
  local pause = tonumber(redis.call('GET', KEYS[1]) or '0')
  if pause > at then at = pause end
end
local tats = {}
for i = 2, #KEYS do
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  tats[i] = tat
  local allowed = tat - tonumber(ARGV[2 * i - 1])
  if allowed > at then at = allowed end
end
for i = 2, #KEYS do
  local tat = tats[i]
  if tat < at then tat = at end
  tat = tat + tonumber(ARGV[2 * i - 2])
  redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
end
return string.format('%.3f', at - now)
"""

# KEYS[1] = pause key; ARGV[1] = pause (ms). Extends, never shortens. Returns the ms left.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local until_ms = now + tonumber(ARGV[1])
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
if held > until_ms then until_ms = held end
redis.call('SET', KEYS[1], string.format('%.3f', until_ms), 'PX', math.ceil(until_ms - now) + 1)
return string.format('%.3f', until_ms - now)
"""

# KEYS[1] = pause key. Returns the ms left of the pause (0 when none).
_PAUSE_LEFT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
if held <= now then return '0' end
return string.format('%.3f', held - now)
"""

# KEYS[1] = lease set; ARGV = lease id, limit, ttl (ms). Drops expired leases, then takes
# one if fewer than limit are held. Returns 1 (taken) or 0.
_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return 1
"""

# KEYS[1] = lease set; ARGV[1] = ttl (ms), ARGV[2..] = lease ids. Renews held leases only.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return renewed
"""


class RedisLimiter:
    """The `Limiter` shared by every process using one provider account (see the module).

    Args:
        redis: a ``redis.asyncio.Redis`` client (not closed here).
        provider: the provider whose account is limited (its key is only hashed).
        limits: the account's limits.
        namespace: the prefix of every key.
        account: the account's id in keys (default `account_id` of ``provider``).
    """

    def __init__(
        self,
        redis: Redis,
        provider: Provider,
        limits: SharedLimits,
        *,
        namespace: str = "flux",
        account: str | None = None,
    ) -> None:
        self.redis = redis
        self.limits = limits
        self.provider = provider.name
        base = f"{namespace}:limits:{{{provider.name}:{account or account_id(provider)}}}"
        self.keys = {
            "requests": f"{base}:rate:requests",
            "create": f"{base}:rate:create",
            "poll": f"{base}:rate:poll",
            "pause": f"{base}:pause",
            "inflight": f"{base}:inflight",
        }
        self._acquire = redis.register_script(_ACQUIRE)
        self._pause = redis.register_script(_PAUSE)
        self._pause_left = redis.register_script(_PAUSE_LEFT)
        self._lease = redis.register_script(_LEASE)
        self._renew = redis.register_script(_RENEW)
        burst = limits.burst

        def rate(key: str, per_second: float | None) -> list[tuple[str, float, float]]:
            if per_second is None:
                return []
            interval = 1000.0 / per_second
            return [(self.keys[key], interval, (burst - 1.0) * interval)]

        shared = rate("requests", limits.requests_per_second)
        self._create_rates = shared + rate("create", limits.creates_per_second)
        self._poll_rates = shared + rate("poll", limits.polls_per_second)
        self._paused_until = -math.inf
        self._background: set[asyncio.Task[Any]] = set()
        self.waited = 0.0
        """Seconds spent waiting for turns and pauses, summed over requests (for reports)."""

    def __repr__(self) -> str:
        return f"<RedisLimiter {self.provider} {self.limits}>"

    # -- rates and the pause ----------------------------------------------------------------

    async def _turn(self, rates: list[tuple[str, float, float]], *, pause: bool) -> float:
        keys = [self.keys["pause"], *(key for key, _, _ in rates)]
        args: list[Any] = ["1" if pause else "0"]
        for _, interval, tolerance in rates:
            args += [repr(interval), repr(tolerance)]
        wait_ms = float(await self._acquire(keys=keys, args=args))
        return max(0.0, wait_ms / 1000.0)

    async def acquire_create(self) -> None:
        """Wait out the shared pause, then this create's turn of the shared rates.

        A pause that began while this create waited for its turn is waited out too (the
        turn is given up: it only makes the rate more conservative).
        """
        while True:
            if not self._create_rates:
                left = await self.pause_left()
                if left <= 0:
                    return
                self.waited += left
                await asyncio.sleep(left)
                continue
            wait = await self._turn(self._create_rates, pause=True)
            if wait > 0:
                self.waited += wait
                await asyncio.sleep(wait)
            if await self.pause_left() <= 0:
                return

    async def acquire_poll(self) -> None:
        """Wait for this poll's turn of the shared rates."""
        if not self._poll_rates:
            return
        wait = await self._turn(self._poll_rates, pause=False)
        if wait > 0:
            self.waited += wait
            await asyncio.sleep(wait)

    async def pause_shared(self, seconds: float) -> float:
        """Hold every process's creates for ``seconds`` (a longer pause is kept); return
        the seconds the pause still runs."""
        left = float(await self._pause(keys=[self.keys["pause"]], args=[repr(seconds * 1000)]))
        left /= 1000.0
        self._paused_until = max(self._paused_until, time.monotonic() + left)
        return left

    async def pause_left(self) -> float:
        """Seconds left of the shared pause (0 when none)."""
        left = float(await self._pause_left(keys=[self.keys["pause"]])) / 1000.0
        if left > 0:
            self._paused_until = max(self._paused_until, time.monotonic() + left)
        return left

    def pause(self, seconds: float) -> float:
        """Start `pause_shared` in the background (for synchronous callers)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
        task = asyncio.get_running_loop().create_task(self.pause_shared(seconds))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return seconds

    def paused_until(self) -> float:
        """The end of the pause as last seen by this process (``time.monotonic``)."""
        return self._paused_until

    # -- jobs in flight ---------------------------------------------------------------------

    async def try_lease(self, lease: str) -> bool:
        """Take a job-in-flight slot as ``lease`` (renewing it if held); return whether
        one was free. Always true without ``max_jobs_in_flight``."""
        limit = self.limits.max_jobs_in_flight
        if limit is None:
            return True
        ttl = int(self.limits.lease_ttl * 1000)
        taken = await self._lease(keys=[self.keys["inflight"]], args=[lease, limit, ttl])
        return bool(int(taken))

    async def lease(self, lease: str | None = None, *, poll: float = 0.05) -> str:
        """Wait for a job-in-flight slot; return its lease id (renew it, then `release` it)."""
        lease = lease or uuid.uuid4().hex
        wait = poll
        while not await self.try_lease(lease):
            await asyncio.sleep(wait)
            wait = min(wait * 1.5, 1.0)
        return lease

    async def renew(self, leases: Iterable[str]) -> int:
        """Extend the leases still held by another ``lease_ttl``; return how many."""
        held = list(leases)
        if not held or self.limits.max_jobs_in_flight is None:
            return 0
        ttl = int(self.limits.lease_ttl * 1000)
        return int(await self._renew(keys=[self.keys["inflight"]], args=[ttl, *held]))

    async def release(self, lease: str) -> None:
        """Give a job-in-flight slot back."""
        if self.limits.max_jobs_in_flight is not None:
            await self.redis.zrem(self.keys["inflight"], lease)

    async def in_flight(self) -> int:
        """Leases held now (expired ones not counted)."""
        now_ms = int(time.time() * 1000)
        count = await self.redis.zcount(self.keys["inflight"], now_ms, "+inf")
        return int(count)

    # -- HTTP --------------------------------------------------------------------------------

    def middleware(self) -> Callable[..., Awaitable[aiohttp.ClientResponse]]:
        """Return an aiohttp client middleware that applies this limiter to every request.

        Use it as ``aiohttp.ClientSession(middlewares=(limiter.middleware(),))`` and pass
        the session to ``FluxClient(session=...)``. A Redis failure before a request is
        raised as `aiohttp.ConnectionTimeoutError` ("nothing was sent"), so a create is
        retried, never counted as possibly sent.
        """
        from redis.exceptions import RedisError

        async def limit(
            request: aiohttp.ClientRequest,
            handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
        ) -> aiohttp.ClientResponse:
            try:
                if request.method == "POST":
                    await self.acquire_create()
                else:
                    await self.acquire_poll()
            except RedisError as exc:
                raise aiohttp.ConnectionTimeoutError(
                    f"the shared limits in Redis could not be read ({type(exc).__name__}); "
                    "the request was not sent"
                ) from exc
            response = await handler(request)
            if response.status == 429:
                seconds = parse_retry_after(response.headers.get("Retry-After")) or 1.0
                try:
                    await self.pause_shared(seconds)
                except RedisError:
                    logger.warning("%s: could not share a 429 pause through Redis", self.provider)
            return response

        return limit
