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
atomically: a status only moves forward, a terminal status is absorbing (but a ``timed_out``
record takes a later end, as in every store), whatever order the writes arrive in and
whichever process sends them.

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
    {ns}:batches                    zset    batch ids, oldest first ({ns}:batches:seq counts);
                                            a batch unwritten for ``ttl`` leaves it
    {ns}:batches:seen               zset    batch ids by their last write (server clock, s)
    {ns}:meta:{key}                 string  small values (learned latencies)
    {ns}:owner:{replica}            set     local ids of the replica's jobs not yet ended
    {ns}:inbox:{replica}            stream  callbacks for the replica's jobs (fields l: local
                                            id, j: provider job id, u: the update as JSON, or
                                            empty: "check the job"), consumer group
                                            "owner"; an entry is deleted once applied

The shared limits and distributed batches (`flux_async.stores.redis_limits`, the worker) use
their own keys under the same namespace.

Inside: `_redis_writes` (the write script, one write per tick), `_redis_records` (the record
as a hash, the reads), `_redis_replica` (re-attach, forwarded callbacks, the inbox) and
`_redis_conn` (connecting, retrying, `StoreUnavailableError`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from os import PathLike
from types import TracebackType
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from .._config import Webhooks
from .._models import Image, JobStatus
from .._store import (
    JobRecord,
    JournalError,
    error_fields,
    files_of,
    require_non_terminal,
    require_terminal,
)
from ..providers._base import Provider
from . import _redis_conn
from ._redis_conn import StoreUnavailableError, connect, where
from ._redis_records import RecordReads, alloc_op, encode
from ._redis_replica import Replica
from ._redis_writes import REPLACES, Op, WriteQueue, op, text

if TYPE_CHECKING:
    from .._callbacks import CallbackRouter
    from .._create import CreateLane

__all__ = ["RedisStore", "StoreUnavailableError"]

StoreUnavailableError.__module__ = __name__  # its public home

SCHEMA = b"1"
"""The key layout this version writes (``{ns}:schema``)."""
DEFAULT_TTL = 7 * 24 * 3600.0


class RedisStore(RecordReads):
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
        self._where = where(url)
        self._state = "unopened"
        self._redis: aioredis.Redis | None = None
        self._writer = WriteQueue(
            namespace=namespace,
            ttl=self.ttl,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
            shown=self._where,
            retrying=self._retrying,
        )
        self._joined = False

    def __repr__(self) -> str:
        return (
            f"<RedisStore {self._where} ns={self.namespace!r} replica={self.replica!r} "
            f"{self._state}>"
        )

    @property
    def writes(self) -> int:
        """Round trips that wrote queued operations so far (each holds a tick's writes)."""
        return self._writer.writes

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
        self._redis = connect(self.url, self._options)
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
        self._writer.open = True

    async def _prepare(self) -> bytes | None:
        redis = self.redis
        await self._writer.load(redis)
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
            self._writer.open = False
            await self._writer.settle()
            if self._redis is not None:
                await self._redis.aclose()
                self._redis = None

    # Writes ----------------------------------------------------------------------------

    async def begin_batch(self, batch_id: str) -> bool:
        """Record a batch; return whether Redis already held it (a resume)."""
        return bool(await self._wait(op("batch", batch_id)))

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
        if not await self._wait(alloc_op(record, self.replica)):
            raise JournalError(
                f"local id {record.local_id} is already in the store {self._where}",
                path=self._where,
            )

    def put_accepted(self, local_id: str, job_id: str, cost: Decimal | None = None) -> None:
        """Queue: the provider accepted the job as ``job_id``."""
        self._queue(Op(op("accept", local_id, job_id, repr(self._clock()), text(cost))))

    def put_status(self, local_id: str, status: JobStatus) -> None:
        """Queue: the job moved on to a non-terminal ``status`` (ignored unless progress)."""
        require_non_terminal(status)
        self._queue(Op(op("status", local_id, status.value, str(status.rank))))

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
        """Queue: the job ended with the terminal ``status`` (ignored if it already ended,
        unless `may_end`: a ``timed_out`` record takes a later end other than ``timed_out``)."""
        require_terminal(status)
        kind, message = error_fields(error)
        self._queue(
            Op(
                op(
                    "finish",
                    local_id,
                    status.value,
                    encode(tuple(images)),
                    text(cost),
                    "1" if refunded else "0",
                    text(seed),
                    text(polls),
                    text(kind),
                    text(message),
                    repr(self._clock()),
                    *REPLACES[status],
                )
            )
        )

    def put_files(self, local_id: str, files: Iterable[str | PathLike[str]]) -> None:
        """Queue: the job's images were saved at ``files``."""
        self._queue(Op(op("files", local_id, encode(files_of(files)))))

    def release(self, local_id: str) -> None:
        """Queue: this replica no longer awaits the job (it stays open in Redis)."""
        self._queue(Op(op("release", local_id, self.replica)))

    async def save_meta(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``; acknowledged when this returns."""
        await self._wait(op("meta", key, bytes(value)))

    async def flush(self) -> None:
        """Return once every write queued so far is acknowledged by Redis.

        Raises:
            StoreUnavailableError: Redis could not be reached within ``retry_for`` (the
                queued events are kept and written with the next write).
        """
        self._require_open()
        if self._writer.idle:
            return
        await self._wait(())

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

    def _queue(self, item: Op) -> None:
        self._require_open()
        self._writer.queue(item)

    async def _wait(self, args: tuple[str | bytes, ...]) -> int:
        self._require_open()
        return await self._writer.wait(args)

    async def _retrying(self, call: Callable[..., Any], *args: Any) -> Any:
        """Run ``call`` until it gets through or ``retry_for`` seconds passed."""
        return await _redis_conn.retrying(call, *args, retry_for=self.retry_for, shown=self._where)

    async def _read(self, call: Callable[..., Any], *args: Any) -> Any:
        return await _redis_conn.read(call, *args, retry_for=self.retry_for, shown=self._where)
