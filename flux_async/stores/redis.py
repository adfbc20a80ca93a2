"""`RedisStore`: a job store in Redis, shared by the replicas of a web app and by workers.

Install the extra: ``pip install "flux-async[redis]"`` (redis-py's asyncio client).

What it gives beyond `SQLiteJournal`:

- **Many processes, many machines.** Every client opened with ``store=RedisStore(url)``
  records its jobs in one Redis. A callback that lands on *any* replica is checked against
  the job's token digest in Redis (and its PiAPI secret digest), decoded, and delivered to the
  replica that awaits the job through that replica's inbox stream; the owner applies it as
  its `Webhooks` say (verified with one query, or trusted). Delivery is at-least-once; a
  duplicate changes nothing because a terminal state is absorbing.
- **Restarts.** Give each replica a stable id (``RedisStore(url, replica="web-1")``, e.g.
  the pod name): a replica that restarts re-attaches the jobs it owned and had not seen end,
  by their provider id (polled once at once, then awaited), never created again. A create
  that was in flight when it stopped is recovered like a journal's (its callback adopts it
  within `Webhooks.orphan_window`, else it ends ``unknown``). Get a handle with
  ``await client.attach(job_id)``.

Writes. ``put_allocated`` (like ``begin_batch``, ``save_meta`` and ``flush``) returns once
Redis acknowledged the write; ``put_accepted``/``put_status``/``put_finished``/``put_files``
queue theirs. Everything queued during one event-loop tick goes to Redis in **one** atomic
Lua script call (one round trip, one transaction). The same script enforces the state rules
atomically: a status only moves forward, a terminal status is absorbing, whatever order the
writes arrive in and whichever process sends them.

Durability. Run Redis with ``appendonly yes``: an acknowledged write is then in the
append-only file before the reply is sent, so it survives the Redis process being killed or
restarted (add ``appendfsync always`` for a machine losing power). With replicas, pass
``wait_replicas=N``: a write holding an allocation is followed by ``WAIT N`` on the same
connection, and the create is not sent unless N replicas acknowledged it within
``wait_timeout``.

Connection loss is retried (redis-py's ``Retry`` with exponential backoff on
``ConnectionError``/``TimeoutError``, and queued writes for up to ``retry_for`` seconds,
safely: every write is idempotent). If Redis stays away, awaited calls raise
`StoreUnavailableError`; `put_allocated` raising means the job's create is **not** sent (it
ends ``failed`` with that error), so no job exists that the store does not know. Queued
events are kept and written with the next write that succeeds.

Nothing secret is stored: no API key, no callback token, no PiAPI webhook secret; only the
SHA-256 digests of tokens and secrets. Callback bodies are not stored either (a PiAPI body
echoes the secret): a forwarded callback carries the decoded update only.

Keys (``{ns}`` is ``namespace``, default ``flux``; each expires ``ttl`` after its last
write, default 7 days; standalone Redis or a primary, not Redis Cluster)::

    {ns}:schema                     string  the key layout's version ("1")
    {ns}:job:{local_id}             hash    one JobRecord: local_id, batch_id, index, attempt,
                                            fingerprint, provider, model, request (JSON),
                                            token_hash/secret_hash (hex SHA-256), job_id,
                                            status, rank, cost, refunded, images (JSON), seed,
                                            polls, files (JSON), error_kind, error_message,
                                            created_at, accepted_at, finished_at, owner
    {ns}:jobid:{provider}:{job_id}  string  -> local id
    {ns}:token:{hex sha256(token)}  string  -> local id
    {ns}:batch:{batch_id}           zset    local ids scored by index * 2**20 + attempt
    {ns}:batches                    zset    batch ids, oldest first ({ns}:batches:seq counts)
    {ns}:meta:{key}                 string  small values (learned latencies)
    {ns}:owner:{replica}            set     local ids of the replica's jobs not yet ended
    {ns}:inbox:{replica}            stream  callbacks for the replica's jobs (fields l: local
                                            id, j: provider job id, u: the update as JSON, or
                                            empty: "check the job"), consumer group "owner"

The shared limits and distributed batches (`flux_async.stores.redis_limits`, the worker) use
their own keys under the same namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from os import PathLike
from types import TracebackType
from typing import TYPE_CHECKING, Any

import msgspec
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .._callbacks import (
    BAD_BODY,
    NOT_FOUND,
    TOO_LARGE,
    WebhookResponse,
    digest,
    header_value,
    log_hostile,
    parse_callback_path,
    same_digest,
)
from .._config import Webhooks
from .._errors import FluxError, UnknownStatusError
from .._models import Image, JobStatus
from .._store import (
    JobRecord,
    JournalError,
    check_input,
    error_fields,
    files_of,
    require_non_terminal,
    require_terminal,
)
from ..providers._base import CallbackUpdate, Provider, Update

if TYPE_CHECKING:
    from .._callbacks import CallbackRouter
    from .._create import CreateLane

__all__ = ["RedisStore", "StoreUnavailableError"]

logger = logging.getLogger("flux_async.stores.redis")

SCHEMA = b"1"
"""The key layout this version writes (``{ns}:schema``)."""
DEFAULT_TTL = 7 * 24 * 3600.0
_SCORE_INDEX = 2**20
"""A batch zset scores a record ``index * 2**20 + attempt``."""
_NO_INDEX = 2**31
_CHUNK = 1000
"""Operations per script call (one tick may hold more; each call is atomic)."""
_INBOX_MAXLEN = 100_000
_GROUP = "owner"
_OK = WebhookResponse(200, b"ok\n")
_FINISHED = WebhookResponse(200, b"already finished\n")
_SECRET = WebhookResponse(401, b"missing or wrong webhook secret\n")
_UNAVAILABLE = WebhookResponse(503, b"job store unavailable; retry later\n")


class StoreUnavailableError(JournalError):
    """The job store (Redis) could not be reached, even after retrying.

    Raised by awaited store calls; when `JobStore.put_allocated` raises it the job's create is
    not sent (the job ends ``failed`` with this error), so no paid job goes unrecorded.

    Attributes:
        path: where the store is (``redis://host:port/db``, without credentials).
    """


_WRITE = """
local ns = ARGV[1]
local ttl = tonumber(ARGV[2])
local out = {}
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
    -- lid status images cost refunded seed polls error_kind error_message now: absorbing
    local rank = redis.call('HGET', key, 'rank')
    if rank and tonumber(rank) < 4 then
      redis.call('HSET', key, 'status', ARGV[b + 2], 'rank', '4', 'images', ARGV[b + 3],
                 'refunded', ARGV[b + 5], 'finished_at', ARGV[b + 10])
      if ARGV[b + 4] ~= '' then redis.call('HSET', key, 'cost', ARGV[b + 4]) end
      if ARGV[b + 6] ~= '' then redis.call('HSET', key, 'seed', ARGV[b + 6]) end
      if ARGV[b + 7] ~= '' then redis.call('HSET', key, 'polls', ARGV[b + 7]) end
      if ARGV[b + 8] ~= '' then
        redis.call('HSET', key, 'error_kind', ARGV[b + 8], 'error_message', ARGV[b + 9])
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
    redis.call('EXPIRE', z, ttl)
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

_encode = msgspec.json.encode
_decode_images = msgspec.json.Decoder(tuple[Image, ...]).decode
_decode_files = msgspec.json.Decoder(tuple[str, ...]).decode
_decode_request = msgspec.json.Decoder(dict[str, Any]).decode
_decode_update = msgspec.json.Decoder(Update).decode


class _Op:
    """One queued operation (``args`` empty: only a waiter for what was queued before)."""

    __slots__ = ("args", "waiter")

    def __init__(
        self, args: tuple[str | bytes, ...], waiter: asyncio.Future[int] | None = None
    ) -> None:
        self.args = args
        self.waiter = waiter


def _op(name: str, *args: str | bytes) -> tuple[str | bytes, ...]:
    return (name, str(len(args)), *args)


def _text(value: object) -> str:
    """A field value as Redis will hold it; ``None`` becomes '' (left out or ignored)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _where(url: str) -> str:
    """The URL without credentials, for messages and reprs."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        path = parts.path or ""
        return f"{parts.scheme}://{host}{port}{path}"
    except ValueError:
        return "redis://<unparsable url>"


class RedisStore:
    """A job store in Redis: many processes and machines, callbacks routed between replicas.

    Open it (``async with RedisStore(url) as store:``), then pass it to one client,
    ``FluxClient(provider, store=store)``, and/or as a batch's journal,
    ``generate_many(..., journal=store)``. See the module docstring for the key layout.

    Args:
        url: ``redis://[:password@]host:port/db`` (or ``rediss://``, ``unix://``). The
            password never appears in messages or reprs.
        namespace: prefix of every key.
        ttl: seconds each key lives after its last write.
        replica: this process's stable id among the replicas (e.g. the pod name); a
            replica restarting with the same id re-attaches the jobs it owned. Default: a
            random id (nothing to re-attach after a restart).
        retry_for: how long writes are retried while Redis is unreachable before awaited
            calls raise `StoreUnavailableError`.
        wait_replicas: Redis replicas that must acknowledge a write holding an allocation
            (``WAIT``) before the create is sent; 0: the primary's acknowledgement.
        wait_timeout: seconds ``WAIT`` may take.
        clock: wall-clock time for ``accepted_at``/``finished_at`` (``time.time``).
        client_options: more keyword arguments for ``redis.asyncio.Redis.from_url``.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "flux",
        ttl: float = DEFAULT_TTL,
        replica: str | None = None,
        retry_for: float = 30.0,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
        clock: Callable[[], float] = time.time,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ValueError(f"url must be a redis:// URL, got {type(url).__name__}")
        if not namespace or any(c in namespace for c in " \r\n"):
            raise ValueError(f"namespace must be a non-empty word, got {namespace!r}")
        if ttl < 1:
            raise ValueError(f"ttl must be at least 1 second, got {ttl!r}")
        if replica is not None and (not replica or len(replica) > 200 or ":" in replica):
            raise ValueError(f"replica must be a short id without ':', got {replica!r}")
        if wait_replicas < 0:
            raise ValueError(f"wait_replicas must be >= 0, got {wait_replicas!r}")
        self.url = url
        self.namespace = namespace
        self.ttl = int(ttl)
        self.replica = replica or uuid.uuid4().hex[:16]
        self.retry_for = retry_for
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self._clock = clock
        self._options = dict(client_options or {})
        self._where = _where(url)
        self._state = "unopened"
        self._redis: aioredis.Redis | None = None
        self._sha = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Op] = []
        self._retained: list[_Op] = []
        self._scheduled = False
        self._writing: asyncio.Task[None] | None = None
        self._writes = 0
        self._joined = False

    def __repr__(self) -> str:
        return (
            f"<RedisStore {self._where} ns={self.namespace!r} replica={self.replica!r} "
            f"{self._state}>"
        )

    @property
    def writes(self) -> int:
        """Round trips that wrote queued operations so far (each holds a tick's writes)."""
        return self._writes

    def key(self, *parts: str) -> str:
        """This store's key for ``parts`` (``key("job", local_id)`` -> ``flux:job:...``)."""
        return ":".join((self.namespace, *parts))

    @property
    def redis(self) -> aioredis.Redis:
        """The redis-py client (open stores only)."""
        if self._redis is None:
            raise JournalError(f"the store {self._where} is {self._state}", path=self._where)
        return self._redis

    async def __aenter__(self) -> RedisStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # Lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, load the write script and check the key layout's version."""
        if self._state != "unopened":
            raise JournalError(f"the store {self._where} was already opened", path=self._where)
        self._state = "opening"
        self._loop = asyncio.get_running_loop()
        options: dict[str, Any] = {
            "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=6),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
            "socket_timeout": 10.0,
            "socket_connect_timeout": 2.0,
            "health_check_interval": 15,
        }
        options.update(self._options)
        self._redis = aioredis.Redis.from_url(self.url, **options)
        try:
            schema = await self._retrying(self._prepare)
        except BaseException:
            self._state = "closed"
            await self._redis.aclose()
            self._redis = None
            raise
        if schema is not None and schema != SCHEMA:
            self._state = "closed"
            await self._redis.aclose()
            self._redis = None
            raise JournalError(
                f"the keys under {self.namespace!r} at {self._where} were written by another "
                f"flux_async version (layout {schema!r}; this one writes {SCHEMA!r}): use "
                "another namespace or upgrade",
                path=self._where,
            )
        self._state = "open"

    async def _prepare(self) -> bytes | None:
        redis = self.redis
        self._sha = await redis.script_load(_WRITE)
        await redis.set(self.key("schema"), SCHEMA, nx=True)
        schema = await redis.get(self.key("schema"))
        return schema if isinstance(schema, bytes) or schema is None else schema.encode()

    async def aclose(self) -> None:
        """Write what is queued, then disconnect (idempotent)."""
        if self._state != "open":
            self._state = "closed"
            return
        try:
            await self.flush()
        finally:
            self._state = "closed"
            if self._writing is not None:
                with contextlib.suppress(BaseException):
                    await self._writing
            if self._redis is not None:
                await self._redis.aclose()
                self._redis = None

    # Writes ----------------------------------------------------------------------------

    async def begin_batch(self, batch_id: str) -> bool:
        """Record a batch; return whether Redis already held it (a resume)."""
        return bool(await self._wait(_op("batch", batch_id)))

    async def batches(self) -> list[str]:
        """Return the ids of the batches held, oldest first."""
        await self.flush()
        held = await self._read(self.redis.zrange, self.key("batches"), 0, -1)
        return [value.decode() for value in held]

    async def put_allocated(self, record: JobRecord) -> None:
        """Store a new job's record; Redis acknowledged it (and ``WAIT`` replicas) on return.

        Raises:
            StoreUnavailableError: Redis could not be reached within ``retry_for``.
            JournalError: the local id is already in the store.
        """
        owner = self.replica
        status = record.status
        fields: dict[str, str | bytes] = {
            "local_id": record.local_id,
            "attempt": str(record.attempt),
            "fingerprint": record.fingerprint,
            "provider": record.provider,
            "model": record.model,
            "request": _encode(record.request),
            "status": status.value,
            "rank": str(status.rank),
            "refunded": "1" if record.refunded else "0",
            "images": _encode(record.images),
            "polls": str(record.polls),
            "files": _encode(record.files),
            "created_at": repr(float(record.created_at)),
            "owner": owner,
        }
        optional = {
            "batch_id": record.batch_id,
            "index": record.index,
            "token_hash": record.token_hash.hex() if record.token_hash is not None else None,
            "secret_hash": record.secret_hash.hex() if record.secret_hash is not None else None,
            "job_id": record.job_id,
            "cost": record.cost,
            "seed": record.seed,
            "error_kind": record.error_kind,
            "error_message": record.error_message,
            "accepted_at": record.accepted_at,
            "finished_at": record.finished_at,
        }
        for name, value in optional.items():
            if value is not None:
                fields[name] = _text(value)
        index = record.index if record.index is not None else _NO_INDEX
        pairs = [item for pair in fields.items() for item in pair]
        args = _op(
            "alloc",
            record.local_id,
            record.fingerprint,
            fields["created_at"],
            _text(fields.get("token_hash")),
            record.provider,
            _text(record.job_id),
            _text(record.batch_id),
            str(index * _SCORE_INDEX + record.attempt),
            owner,
            "0" if status.is_terminal else "1",
            *pairs,
        )
        if not await self._wait(args):
            raise JournalError(
                f"local id {record.local_id} is already in the store {self._where}",
                path=self._where,
            )

    def put_accepted(self, local_id: str, job_id: str, cost: Decimal | None = None) -> None:
        """Queue: the provider accepted the job as ``job_id``."""
        self._queue(_Op(_op("accept", local_id, job_id, repr(self._clock()), _text(cost))))

    def put_status(self, local_id: str, status: JobStatus) -> None:
        """Queue: the job moved on to a non-terminal ``status`` (ignored unless progress)."""
        require_non_terminal(status)
        self._queue(_Op(_op("status", local_id, status.value, str(status.rank))))

    def put_finished(
        self,
        local_id: str,
        status: JobStatus,
        *,
        images: Sequence[Image] = (),
        cost: Decimal | None = None,
        refunded: bool = False,
        seed: int | None = None,
        polls: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Queue: the job ended with the terminal ``status`` (ignored if it already ended)."""
        require_terminal(status)
        kind, message = error_fields(error)
        self._queue(
            _Op(
                _op(
                    "finish",
                    local_id,
                    status.value,
                    _encode(tuple(images)),
                    _text(cost),
                    "1" if refunded else "0",
                    _text(seed),
                    _text(polls),
                    _text(kind),
                    _text(message),
                    repr(self._clock()),
                )
            )
        )

    def put_files(self, local_id: str, files: Iterable[str | PathLike[str]]) -> None:
        """Queue: the job's images were saved at ``files``."""
        self._queue(_Op(_op("files", local_id, _encode(files_of(files)))))

    def release(self, local_id: str) -> None:
        """Queue: this replica no longer awaits the job (it stays open in Redis)."""
        self._queue(_Op(_op("release", local_id, self.replica)))

    async def save_meta(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``; acknowledged when this returns."""
        await self._wait(_op("meta", key, bytes(value)))

    async def flush(self) -> None:
        """Return once every write queued so far is acknowledged by Redis.

        Raises:
            StoreUnavailableError: Redis could not be reached within ``retry_for`` (the
                queued events are kept and written with the next write).
        """
        self._require_open()
        if not self._pending and self._writing is None and not self._retained:
            return
        await self._wait(())

    # Reads -----------------------------------------------------------------------------

    async def find(self, local_id: str) -> JobRecord | None:
        """Return the record with this local id."""
        await self.flush()
        return await self._load(local_id)

    async def find_job(self, provider: str, job_id: str) -> JobRecord | None:
        """Return the record of the job ``provider`` knows as ``job_id``."""
        await self.flush()
        local_id = await self._read(self.redis.get, self.key("jobid", provider, job_id))
        return await self._load(local_id.decode()) if local_id is not None else None

    async def find_by_token_hash(self, token_hash: bytes) -> JobRecord | None:
        """Return the record whose callback token has this SHA-256 digest."""
        await self.flush()
        local_id = await self._read(self.redis.get, self.key("token", token_hash.hex()))
        return await self._load(local_id.decode()) if local_id is not None else None

    async def records(self, batch_id: str) -> list[JobRecord]:
        """Return a batch's records by input index, then attempt (superseded ones too)."""
        await self.flush()
        local_ids = await self._read(self.redis.zrange, self.key("batch", batch_id), 0, -1)
        return await self._load_many([value.decode() for value in local_ids])

    async def check_inputs(
        self, batch_id: str, index: int, fingerprint: str
    ) -> JobRecord | None:
        """Return the latest record of input ``index`` if it holds the same request.

        Raises:
            JournalMismatchError: the store holds another request at ``index``.
        """
        await self.flush()
        low = index * _SCORE_INDEX
        local_ids = await self._read(
            self.redis.zrangebyscore, self.key("batch", batch_id), low, low + _SCORE_INDEX - 1
        )
        held = await self._load_many([value.decode() for value in local_ids])
        prior = held[-1] if held else None
        try:
            return check_input(prior, batch_id, index, fingerprint)
        except JournalError as exc:
            exc.path = self._where
            raise

    async def load_meta(self, key: str) -> bytes | None:
        """Return the value saved under ``key``."""
        await self.flush()
        value: bytes | None = await self._read(self.redis.get, self.key("meta", key))
        return value

    async def owned(self, replica: str | None = None) -> list[str]:
        """Return the local ids of the jobs ``replica`` (default this one) owns, not ended."""
        await self.flush()
        held = await self._read(self.redis.smembers, self.key("owner", replica or self.replica))
        return sorted(value.decode() for value in held)

    async def _load(self, local_id: str) -> JobRecord | None:
        return _record(await self._read(self.redis.hgetall, self.key("job", local_id)))

    async def _load_many(self, local_ids: list[str]) -> list[JobRecord]:
        if not local_ids:
            return []

        async def fetch() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for local_id in local_ids:
                    pipe.hgetall(self.key("job", local_id))
                return list(await pipe.execute())

        found = [_record(fields) for fields in await self._retrying(fetch)]
        return [record for record in found if record is not None]

    # Replicas --------------------------------------------------------------------------

    async def join(
        self,
        provider: Provider,
        creates: CreateLane,
        router: CallbackRouter | None,
        webhooks: Webhooks | None,
    ) -> Replica:
        """Join a client to the replicas sharing this store (called by `FluxClient`).

        Re-attaches the jobs this replica owned and had not seen end, then (with webhooks)
        starts reading this replica's inbox. Returns the handle the client routes callbacks
        for other replicas' jobs through.
        """
        self._require_open()
        if self._joined:
            raise JournalError(
                f"RedisStore replica {self.replica!r} already serves a client; give each "
                "client its own store (its own replica id)",
                path=self._where,
            )
        self._joined = True
        replica = Replica(self, provider, creates, router, webhooks)
        try:
            await replica.start()
        except BaseException:
            self._joined = False
            await replica.aclose()
            raise
        return replica

    # Machinery -------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._state != "open":
            raise JournalError(f"the store {self._where} is {self._state}", path=self._where)

    def _queue(self, op: _Op) -> None:
        self._require_open()
        self._pending.append(op)
        if not self._scheduled and self._writing is None:
            self._scheduled = True
            assert self._loop is not None
            # Runs after every callback already ready: the whole tick's writes go together.
            self._loop.call_soon(self._start_write)

    async def _wait(self, args: tuple[str | bytes, ...]) -> int:
        self._require_open()
        assert self._loop is not None
        waiter: asyncio.Future[int] = self._loop.create_future()
        self._queue(_Op(args, waiter))
        return await waiter

    def _start_write(self) -> None:
        self._scheduled = False
        if self._writing is not None or not self._pending:
            return
        ops = self._retained + self._pending
        self._retained, self._pending = [], []
        assert self._loop is not None
        self._writing = self._loop.create_task(self._write(ops), name="flux_async redis write")

    async def _write(self, ops: list[_Op]) -> None:
        try:
            results = await self._execute(ops)
        except BaseException as exc:
            failure = exc if isinstance(exc, JournalError) else StoreUnavailableError(
                f"cannot write to the job store {self._where}: {type(exc).__name__}",
                path=self._where,
            )
            for op in ops:
                if op.waiter is not None and not op.waiter.done():
                    op.waiter.set_exception(failure)
                    # Retrieved or not, the caller was told; avoid "never retrieved" noise.
                    op.waiter.exception()
            # Events nobody awaits are kept for the next write: never dropped.
            self._retained = [op for op in ops if op.waiter is None] + self._retained
            if not isinstance(exc, Exception):
                raise
        else:
            for op, result in zip(ops, results, strict=True):
                if op.waiter is not None and not op.waiter.done():
                    op.waiter.set_result(result)
        finally:
            self._writing = None
            if self._pending and self._state == "open":
                self._start_write()

    async def _execute(self, ops: list[_Op]) -> list[int]:
        """Write ``ops`` (idempotently, retried); return each one's result (0 for waiters)."""
        writes = [op for op in ops if op.args]
        if not writes:
            return [0] * len(ops)
        wait = self.wait_replicas > 0 and any(op.args[0] == "alloc" for op in writes)
        chunks = [writes[start:start + _CHUNK] for start in range(0, len(writes), _CHUNK)]
        head = (self.namespace, str(self.ttl))

        async def send() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for chunk in chunks:
                    args = [item for op in chunk for item in op.args]
                    pipe.evalsha(self._sha, 0, *head, *args)
                if wait:
                    pipe.execute_command("WAIT", self.wait_replicas,
                                         int(self.wait_timeout * 1000))
                return list(await pipe.execute(raise_on_error=False))

        while True:
            replies = await self._retrying(send)
            if any(isinstance(reply, NoScriptError) for reply in replies):
                # Redis restarted (scripts are not persisted): load it again and resend;
                # every operation is idempotent.
                self._sha = await self._retrying(self.redis.script_load, _WRITE)
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
        self._writes += 1
        flat = iter([int(value) for reply in replies for value in reply])
        return [next(flat) if op.args else 0 for op in ops]

    async def _retrying(self, call: Callable[..., Any], *args: Any) -> Any:
        """Run ``call`` until it gets through or ``retry_for`` seconds passed."""
        deadline = time.monotonic() + self.retry_for
        delay = 0.05
        while True:
            try:
                return await call(*args)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if time.monotonic() + delay > deadline:
                    raise StoreUnavailableError(
                        f"the job store {self._where} is unavailable "
                        f"(retried for {self.retry_for:g}s): {type(exc).__name__}: {exc}",
                        path=self._where,
                    ) from exc
                logger.info("redis %s unavailable (%s); retrying in %.2fs", self._where,
                            type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _read(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return await self._retrying(call, *args)
        except ResponseError as exc:
            raise JournalError(f"cannot read the job store {self._where}: {exc}",
                               path=self._where) from exc


class Replica:
    """A client's membership among the replicas sharing a `RedisStore` (see `join`)."""

    def __init__(
        self,
        store: RedisStore,
        provider: Provider,
        creates: CreateLane,
        router: CallbackRouter | None,
        webhooks: Webhooks | None,
    ) -> None:
        self.store = store
        self.provider = provider
        self._creates = creates
        self._router = router
        self._max_body = webhooks.max_body_bytes if webhooks is not None else 256 * 1024
        self._task: asyncio.Task[None] | None = None
        self.reattached: list[str] = []
        """Local ids re-attached when the client opened (jobs this replica owned)."""
        self.forwarded = 0
        """Callbacks this replica accepted for other replicas' jobs."""
        self.delivered = 0
        """Callbacks from the inbox applied to this replica's jobs."""

    async def start(self) -> None:
        await self._reattach()
        if self._router is not None:
            self._task = asyncio.get_running_loop().create_task(
                self._consume(), name=f"flux_async redis inbox {self.store.replica}"
            )

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.store._joined = False

    # Restart: the jobs this replica owned ------------------------------------------------

    async def _reattach(self) -> None:
        store = self.store
        for local_id in await store.owned():
            record = await store.find(local_id)
            if record is None or record.status.is_terminal:
                store.release(local_id)
                continue
            if record.provider != self.provider.name:
                continue
            if record.job_id is not None:
                await self._creates.reattach(record, store)
            else:
                await self._creates.recover(
                    record,
                    store,
                    wait_callback=True,
                    evidence="the replica restarted while the job's create was in flight",
                )
            self.reattached.append(local_id)
        if self.reattached:
            logger.info("replica %s: re-attached %d open jobs", store.replica,
                        len(self.reattached))

    # Callbacks for other replicas' jobs --------------------------------------------------

    async def handle_webhook(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> WebhookResponse:
        """Route a callback the local router does not know to the job's owner.

        Same answers as `FluxClient.handle_webhook`, plus 503 when Redis is unreachable
        (the provider's retry, or the owner's safety-net poll, then finds the job).
        """
        try:
            return await self._route(path, headers, body)
        except StoreUnavailableError:
            return _UNAVAILABLE
        except Exception as exc:  # hostile input must never become a 500
            log_hostile("callback rejected: %s", type(exc).__name__)
            return NOT_FOUND

    async def _route(
        self, path: str, headers: Mapping[str, str], body: bytes
    ) -> WebhookResponse:
        parsed = parse_callback_path(path)
        if parsed is None:
            return NOT_FOUND
        provider_name, local_id, token = parsed
        if provider_name != self.provider.name:
            return NOT_FOUND
        store = self.store
        redis = store.redis
        held = await store._read(redis.get, store.key("token", digest(token).hex()))
        if held is None or held.decode() != local_id:
            return NOT_FOUND
        token_hash, secret_hash, owner, rank, job_id = await store._read(
            redis.hmget, store.key("job", local_id),
            ["token_hash", "secret_hash", "owner", "rank", "job_id"],
        )
        if token_hash is None or owner is None or rank is None:
            return NOT_FOUND
        if not same_digest(token, bytes.fromhex(token_hash.decode())):
            return NOT_FOUND
        if not isinstance(body, (bytes, bytearray)) or len(body) > self._max_body:
            return TOO_LARGE
        secret_header = self.provider.callback_secret_header
        if secret_header is not None:
            presented = header_value(headers, secret_header)
            stored = bytes.fromhex(secret_hash.decode()) if secret_hash is not None else None
            if presented is None or not same_digest(presented, stored):
                return _SECRET
        if int(rank) >= JobStatus.SUCCEEDED.rank:
            return _FINISHED
        update = b""
        callback_job_id = b""
        try:
            callback = self.provider.parse_callback(bytes(body))
        except UnknownStatusError:
            pass  # news all the same: the owner checks the job
        except (ValueError, msgspec.MsgspecError, FluxError, RecursionError) as exc:
            log_hostile("job %s: unreadable callback: %s", local_id, type(exc).__name__)
            return BAD_BODY
        else:
            if callback.job_id is not None and job_id is not None:
                if callback.job_id != job_id.decode():
                    return WebhookResponse(409, b"callback names another job\n")
            # The decoded update only: a body may echo the secret, and is not stored.
            update = _encode(callback.update)
            callback_job_id = (callback.job_id or "").encode()
        await store._read(
            redis.xadd,
            store.key("inbox", owner.decode()),
            {b"l": local_id.encode(), b"j": callback_job_id, b"u": update},
            "*",
            _INBOX_MAXLEN,
            True,
        )
        await store._read(redis.expire, store.key("inbox", owner.decode()), store.ttl)
        self.forwarded += 1
        return _OK if update else WebhookResponse(
            422, b"unrecognised status; the job will be checked\n"
        )

    # This replica's inbox ---------------------------------------------------------------

    async def _consume(self) -> None:
        store = self.store
        redis: Any = store.redis  # stream replies are loosely typed in redis-py
        inbox = store.key("inbox", store.replica)
        consumer = f"{store.replica}-{os.getpid()}"
        cursor = "0"  # first what was delivered to an earlier run and never acknowledged
        delay = 0.05
        while True:
            try:
                if cursor == "0":
                    with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
                        await redis.xgroup_create(inbox, _GROUP, id="0", mkstream=True)
                replies = await redis.xreadgroup(
                    _GROUP, consumer, {inbox: cursor}, count=500,
                    block=None if cursor == "0" else 1000,
                )
                entries = replies[0][1] if replies else []
                if cursor == "0":
                    # Pending entries of every earlier consumer of this replica too.
                    entries = await self._claim_stale(inbox, consumer) + list(entries)
                    if not entries:
                        cursor = ">"
                        continue
                ids = []
                for entry_id, fields in entries:
                    if fields:
                        self._deliver(fields)
                    ids.append(entry_id)
                if ids:
                    await redis.xack(inbox, _GROUP, *ids)
                    if cursor == "0":
                        cursor = ">"
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost the stream: recreate it
                    cursor = "0"
                    continue
                logger.warning("replica %s: inbox read failed: %s", store.replica, exc)
                await asyncio.sleep(1.0)
            except (RedisError, OSError) as exc:
                logger.info("replica %s: inbox unavailable (%s); retrying", store.replica,
                            type(exc).__name__)
                cursor = "0"
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _claim_stale(self, inbox: str, consumer: str) -> list[Any]:
        """Take over entries an earlier run of this replica read but never acknowledged."""
        redis: Any = self.store.redis
        claimed: list[Any] = []
        start = "0-0"
        while True:
            reply = await redis.xautoclaim(inbox, _GROUP, consumer, 0, start, count=500)
            start, entries = reply[0], reply[1]
            claimed.extend(entries)
            if start in (b"0-0", "0-0") or not entries:
                return claimed

    def _deliver(self, fields: Mapping[bytes, bytes]) -> None:
        router = self._router
        assert router is not None
        try:
            local_id = fields[b"l"].decode()
            job_id = fields.get(b"j", b"").decode() or None
            raw = fields.get(b"u", b"")
            callback = (
                CallbackUpdate(job_id=job_id, update=_decode_update(raw)) if raw else None
            )
        except (KeyError, ValueError, msgspec.MsgspecError) as exc:
            log_hostile("inbox entry unreadable: %s", type(exc).__name__)
            return
        if router.deliver(local_id, callback):
            self.delivered += 1


def _record(fields: Mapping[bytes, bytes] | None) -> JobRecord | None:
    if not fields:
        return None
    text = {key.decode(): value for key, value in fields.items()}

    def get(name: str) -> str | None:
        value = text.get(name)
        return value.decode() if value is not None else None

    def number(name: str) -> float | None:
        value = get(name)
        return float(value) if value is not None else None

    index, seed, cost = get("index"), get("seed"), get("cost")
    token_hash, secret_hash = get("token_hash"), get("secret_hash")
    return JobRecord(
        local_id=text["local_id"].decode(),
        batch_id=get("batch_id"),
        index=int(index) if index is not None else None,
        attempt=int(text["attempt"]),
        fingerprint=text["fingerprint"].decode(),
        provider=text["provider"].decode(),
        model=text["model"].decode(),
        request=_decode_request(text["request"]),
        token_hash=bytes.fromhex(token_hash) if token_hash is not None else None,
        secret_hash=bytes.fromhex(secret_hash) if secret_hash is not None else None,
        job_id=get("job_id"),
        status=JobStatus(text["status"].decode()),
        cost=Decimal(cost) if cost is not None else None,
        refunded=text.get("refunded") == b"1",
        images=_decode_images(text.get("images", b"[]")),
        seed=int(seed) if seed is not None else None,
        polls=int(text.get("polls", b"0")),
        files=_decode_files(text.get("files", b"[]")),
        error_kind=get("error_kind"),
        error_message=get("error_message"),
        created_at=float(text["created_at"]),
        accepted_at=number("accepted_at"),
        finished_at=number("finished_at"),
    )
