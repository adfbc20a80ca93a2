"""How `RedisStore` writes: one Lua script applies a list of operations atomically, and a
`WriteQueue` sends everything queued during one event-loop tick in one script call.

The script enforces the state rules whatever order the writes arrive in and whichever process
sends them: a status only moves forward, a terminal status is absorbing (but a ``timed_out``
record takes a later end: `REPLACES`). Every operation is idempotent, so a write is safely
sent again after a lost connection or a Redis restart (which drops loaded scripts:
``NOSCRIPT`` reloads it and resends).

An operation on the wire is ``name, count, arg...`` (`op`); the script's ARGV is the namespace,
the TTL, then the operations one after the other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from .._models import JobStatus
from .._store import JournalError, may_end
from ._redis_conn import StoreUnavailableError

SCORE_INDEX = 2**20
"""A batch zset scores a record ``index * 2**20 + attempt``."""
NO_INDEX = 2**31
CHUNK = 1000
"""Operations per script call (one tick may hold more; each call is atomic)."""
REPLACES: dict[JobStatus, tuple[str, ...]] = {
    end: tuple(held.value for held in JobStatus if held.is_terminal and may_end(held, end))
    for end in JobStatus
    if end.is_terminal
}
"""The ended statuses each end replaces (`may_end`, the rule of every store: a ``timed_out``
record takes a later end other than ``timed_out``)."""

WRITE = """
local ns = ARGV[1]
local ttl = tonumber(ARGV[2])
local out = {}
local now = nil
local function clock()  -- the server's clock, in seconds: read once per call
  if not now then now = tonumber(redis.call('TIME')[1]) end
  return now
end
local i = 3
local last = #ARGV
while i <= last do
  local op = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  local b = i + 1
  local r = 0
  local lid = ARGV[b + 1]
  local key = ns .. ':job:' .. lid
  if op == 'alloc' then
    -- lid fingerprint created_at token provider job_id batch score owner open, then pairs
    if redis.call('EXISTS', key) == 1 then
      local held = redis.call('HMGET', key, 'fingerprint', 'created_at')
      if held[1] == ARGV[b + 2] and held[2] == ARGV[b + 3] then r = 1 end  -- a retried write
    else
      local fields = {}
      for k = b + 11, b + n do fields[#fields + 1] = ARGV[k] end
      redis.call('HSET', key, unpack(fields))
      redis.call('EXPIRE', key, ttl)
      if ARGV[b + 4] ~= '' then
        redis.call('SET', ns .. ':token:' .. ARGV[b + 4], lid, 'EX', ttl)
      end
      if ARGV[b + 6] ~= '' then
        redis.call('SET', ns .. ':jobid:' .. ARGV[b + 5] .. ':' .. ARGV[b + 6], lid, 'EX', ttl)
      end
      if ARGV[b + 7] ~= '' then
        local z = ns .. ':batch:' .. ARGV[b + 7]
        redis.call('ZADD', z, ARGV[b + 8], lid)
        redis.call('EXPIRE', z, ttl)
        redis.call('ZADD', ns .. ':batches:seen', 'XX', clock(), ARGV[b + 7])
      end
      if ARGV[b + 9] ~= '' and ARGV[b + 10] == '1' then
        local o = ns .. ':owner:' .. ARGV[b + 9]
        redis.call('SADD', o, lid)
        redis.call('EXPIRE', o, ttl)
      end
      r = 1
    end
  elseif op == 'accept' then
    -- lid job_id now cost
    if redis.call('EXISTS', key) == 1 then
      local held = redis.call('HMGET', key, 'job_id', 'rank', 'provider', 'cost')
      if not held[1] then
        redis.call('HSET', key, 'job_id', ARGV[b + 2], 'accepted_at', ARGV[b + 3])
        redis.call('SET', ns .. ':jobid:' .. held[3] .. ':' .. ARGV[b + 2], lid, 'EX', ttl)
      end
      if not held[4] and ARGV[b + 4] ~= '' then redis.call('HSET', key, 'cost', ARGV[b + 4]) end
      if held[2] == '0' then redis.call('HSET', key, 'status', 'submitted', 'rank', '1') end
      redis.call('EXPIRE', key, ttl)
      r = 1
    end
  elseif op == 'status' then
    -- lid status rank: forward only
    local rank = redis.call('HGET', key, 'rank')
    if rank and tonumber(rank) < tonumber(ARGV[b + 3]) then
      redis.call('HSET', key, 'status', ARGV[b + 2], 'rank', ARGV[b + 3])
      redis.call('EXPIRE', key, ttl)
      r = 1
    end
  elseif op == 'finish' then
    -- lid status images cost refunded seed polls error_kind error_message now, then the
    -- ended statuses this end replaces (REPLACES); any other end is absorbing
    local held = redis.call('HMGET', key, 'rank', 'status')
    local takes = held[1] and tonumber(held[1]) < 4
    if held[1] and not takes then
      for k = b + 11, b + n do
        if ARGV[k] == held[2] then takes = true end
      end
    end
    if takes then
      redis.call('HSET', key, 'status', ARGV[b + 2], 'rank', '4', 'images', ARGV[b + 3],
                 'refunded', ARGV[b + 5], 'finished_at', ARGV[b + 10])
      if ARGV[b + 4] ~= '' then redis.call('HSET', key, 'cost', ARGV[b + 4]) end
      if ARGV[b + 6] ~= '' then redis.call('HSET', key, 'seed', ARGV[b + 6]) end
      if ARGV[b + 7] ~= '' then redis.call('HSET', key, 'polls', ARGV[b + 7]) end
      if ARGV[b + 8] ~= '' then
        redis.call('HSET', key, 'error_kind', ARGV[b + 8], 'error_message', ARGV[b + 9])
      else
        redis.call('HDEL', key, 'error_kind', 'error_message')
      end
      local owner = redis.call('HGET', key, 'owner')
      if owner then redis.call('SREM', ns .. ':owner:' .. owner, lid) end
      redis.call('EXPIRE', key, ttl)
      r = 1
    end
  elseif op == 'files' then
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'files', ARGV[b + 2])
      redis.call('EXPIRE', key, ttl)
      r = 1
    end
  elseif op == 'batch' then
    -- lid is the batch id here; returns 1 when it was already held
    local z = ns .. ':batches'
    if redis.call('ZSCORE', z, lid) then
      r = 1
    else
      redis.call('ZADD', z, redis.call('INCR', ns .. ':batches:seq'), lid)
    end
    -- batches:seen scores each batch by its last write: one unwritten for ttl has no
    -- records left (its zset expired), so it leaves the list
    local seen = ns .. ':batches:seen'
    redis.call('ZADD', seen, clock(), lid)
    local gone = redis.call('ZRANGEBYSCORE', seen, '-inf', clock() - ttl, 'LIMIT', 0, 100)
    if #gone > 0 then
      redis.call('ZREM', z, unpack(gone))
      redis.call('ZREM', seen, unpack(gone))
    end
    redis.call('EXPIRE', z, ttl)
    redis.call('EXPIRE', seen, ttl)
    redis.call('EXPIRE', ns .. ':batches:seq', ttl)
  elseif op == 'meta' then
    redis.call('SET', ns .. ':meta:' .. lid, ARGV[b + 2], 'EX', ttl)
    r = 1
  elseif op == 'release' then
    -- lid owner: the job is no longer awaited by this replica
    redis.call('SREM', ns .. ':owner:' .. ARGV[b + 2], lid)
    r = 1
  else
    return redis.error_reply('unknown operation ' .. op)
  end
  out[#out + 1] = r
  i = b + n + 1
end
return out
"""


class Op:
    """One queued operation (``args`` empty: only a waiter for what was queued before)."""

    __slots__ = ("args", "waiter")

    def __init__(
        self, args: tuple[str | bytes, ...], waiter: asyncio.Future[int] | None = None
    ) -> None:
        self.args = args
        self.waiter = waiter


def op(name: str, *args: str | bytes) -> tuple[str | bytes, ...]:
    """One operation's arguments as the script reads them."""
    return (name, str(len(args)), *args)


def text(value: object) -> str:
    """A field value as Redis will hold it; ``None`` becomes '' (left out or ignored)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


class WriteQueue:
    """The operations queued during one tick, written together (one round trip per tick).

    Awaited writes (`wait`) get their operation's result; queued ones (`queue`) are kept
    when a write fails and go with the next write that succeeds: never dropped.

    Args:
        namespace, ttl: the script's first two arguments.
        wait_replicas, wait_timeout: ``WAIT`` after a write holding an allocation.
        shown: the store's URL without credentials (messages).
        retrying: runs a Redis call, retried while Redis is away (`_redis_conn.retrying`).
    """

    def __init__(
        self,
        *,
        namespace: str,
        ttl: int,
        wait_replicas: int,
        wait_timeout: float,
        shown: str,
        retrying: Callable[..., Awaitable[Any]],
    ) -> None:
        self.namespace = namespace
        self.ttl = ttl
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self._where = shown
        self._retrying = retrying
        self.redis: aioredis.Redis | None = None
        self.open = False
        """Whether writes may start (the store is open)."""
        self.writes = 0
        """Round trips that wrote queued operations so far."""
        self._sha = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[Op] = []
        self._retained: list[Op] = []
        self._scheduled = False
        self._writing: asyncio.Task[None] | None = None

    async def load(self, redis: aioredis.Redis) -> None:
        """Load the script into ``redis`` (the queue writes through it from now on)."""
        self.redis = redis
        self._loop = asyncio.get_running_loop()
        self._sha = await redis.script_load(WRITE)

    @property
    def idle(self) -> bool:
        """Nothing queued, being written or kept from a failed write."""
        return not self._pending and self._writing is None and not self._retained

    async def settle(self) -> None:
        """Let the write in progress end (its failure is its waiters' business)."""
        if self._writing is not None:
            with contextlib.suppress(BaseException):
                await self._writing

    def queue(self, item: Op) -> None:
        """Queue ``item`` for the write that runs after this tick's callbacks."""
        self._pending.append(item)
        if not self._scheduled and self._writing is None:
            self._scheduled = True
            assert self._loop is not None
            # Runs after every callback already ready: the whole tick's writes go together.
            self._loop.call_soon(self._start_write)

    async def wait(self, args: tuple[str | bytes, ...]) -> int:
        """Queue ``args`` and return its result once Redis acknowledged it (and everything
        queued before it); ``()`` only waits."""
        assert self._loop is not None
        waiter: asyncio.Future[int] = self._loop.create_future()
        self.queue(Op(args, waiter))
        return await waiter

    def _start_write(self) -> None:
        self._scheduled = False
        if self._writing is not None or not self._pending:
            return
        ops = self._retained + self._pending
        self._retained, self._pending = [], []
        assert self._loop is not None
        self._writing = self._loop.create_task(self._write(ops), name="flux_async redis write")

    async def _write(self, ops: list[Op]) -> None:
        try:
            results = await self._execute(ops)
        except BaseException as exc:
            failure = (
                exc
                if isinstance(exc, JournalError)
                else StoreUnavailableError(
                    f"cannot write to the job store {self._where}: {type(exc).__name__}",
                    path=self._where,
                )
            )
            for item in ops:
                if item.waiter is not None and not item.waiter.done():
                    item.waiter.set_exception(failure)
                    # Retrieved or not, the caller was told; avoid "never retrieved" noise.
                    item.waiter.exception()
            # Events nobody awaits are kept for the next write: never dropped.
            self._retained = [item for item in ops if item.waiter is None] + self._retained
            if not isinstance(exc, Exception):
                raise
        else:
            for item, result in zip(ops, results, strict=True):
                if item.waiter is not None and not item.waiter.done():
                    item.waiter.set_result(result)
        finally:
            self._writing = None
            if self._pending and self.open:
                self._start_write()

    async def _execute(self, ops: list[Op]) -> list[int]:
        """Write ``ops`` (idempotently, retried); return each one's result (0 for waiters)."""
        writes = [item for item in ops if item.args]
        if not writes:
            return [0] * len(ops)
        wait = self.wait_replicas > 0 and any(item.args[0] == "alloc" for item in writes)
        chunks = [writes[start : start + CHUNK] for start in range(0, len(writes), CHUNK)]
        head = (self.namespace, str(self.ttl))

        redis = self.redis
        assert redis is not None

        async def send() -> list[Any]:
            async with redis.pipeline(transaction=False) as pipe:
                for chunk in chunks:
                    args = [arg for item in chunk for arg in item.args]
                    pipe.evalsha(self._sha, 0, *head, *args)
                if wait:
                    pipe.execute_command("WAIT", self.wait_replicas, int(self.wait_timeout * 1000))
                return list(await pipe.execute(raise_on_error=False))

        while True:
            replies = await self._retrying(send)
            if any(isinstance(reply, NoScriptError) for reply in replies):
                # Redis restarted (scripts are not persisted): load it again and resend;
                # every operation is idempotent.
                self._sha = await self._retrying(redis.script_load, WRITE)
                continue
            break
        for reply in replies:
            if isinstance(reply, Exception):
                raise JournalError(
                    f"the job store {self._where} refused a write: {reply}", path=self._where
                )
        if wait:
            acked = int(replies.pop())
            if acked < self.wait_replicas:
                raise StoreUnavailableError(
                    f"only {acked} of {self.wait_replicas} Redis replicas acknowledged a job's "
                    f"record within {self.wait_timeout:g}s ({self._where}); its create was "
                    "not sent",
                    path=self._where,
                )
        self.writes += 1
        flat = iter([int(value) for reply in replies for value in reply])
        return [next(flat) if item.args else 0 for item in ops]
