"""Distributed batches on Redis: enqueue inputs, run workers anywhere, collect one outcome each.

::

    batch_id = await enqueue("redis://host", ["a red fox", {"prompt": "a cat", "num_images": 2}])
    # on any number of machines:
    await run_worker("redis://host", ShortAPI(), download_to="out/")
    # and wherever the results are wanted:
    async for record in collect("redis://host", batch_id):
        print(record["index"], record["status"], record["files"])

Every input is an entry of one Redis Stream read through a consumer group. A worker takes an
entry, records the input as ``sending`` **before** its create goes out, records the provider's
job id once accepted, and writes the outcome, marks the input ``done`` and acknowledges the
entry in one transaction. A worker that dies (``kill -9``) leaves its entries pending; once
they were idle for ``min_idle`` seconds another worker claims them (``XAUTOCLAIM``) and reads
the input's record:

- no record: the create was never sent: it is sent now;
- a provider job id: the job is re-attached (polled by its id, its images saved); nothing is
  created again;
- ``sending`` without a job id: the create may have reached the provider and nothing can tell
  (the journal issue's recovery): the input ends ``unknown``, never re-created;
- ``done``: the outcome is already written: the entry is only acknowledged.

A live worker keeps its entries fresh (``XCLAIM`` to itself) and its heartbeat key alive, so
its slow jobs are never claimed from under it. With `SharedLimits` the worker's requests take
their turns from a `RedisLimiter` shared by every worker of the account, and each job holds a
job-in-flight lease.

Keys (``{ns}`` is the namespace, default ``flux``)::

    {ns}:queue                    stream of inputs: batch, index, input (JSON); group "workers"
    {ns}:batch:{id}:meta          hash: total (set once every input is enqueued), created_at
    {ns}:batch:{id}:jobs          hash: input index -> {"state", "worker", "job_id"} (JSON)
    {ns}:batch:{id}:outcomes      stream of outcome records (JSON), one per input
    {ns}:worker:{name}            a live worker's heartbeat (PX expiry)

Nothing secret is written: inputs, provider job ids, image URLs and file paths only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from ._client import FluxClient
from ._config import Timeouts
from ._errors import (
    AuthenticationError,
    BadRequestError,
    DownloadError,
    FluxError,
    JobCancelledError,
    JobTimeoutError,
    JobUnknownError,
    RequestError,
    ValidationError,
)
from ._models import Generation, JobStatus
from ._transport import Transport
from .stores.redis_limits import RedisLimiter, SharedLimits

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .providers._base import Provider

__all__ = [
    "GROUP",
    "WorkerStats",
    "batch_info",
    "batch_keys",
    "collect",
    "enqueue",
    "run_worker",
]

logger = logging.getLogger("flux_async")

GROUP = "workers"
"""The consumer group every worker reads the queue through."""

#: Seconds a full worker waits after an input finished before taking more, so that one
#: read takes the inputs of every slot freed meanwhile.
REFILL_DELAY = 0.01


#: KEYS = the queue, the batch's meta hash; ARGV = batch id, index of the first input,
#: the total ("" until the last chunk), then the inputs (JSON). Queues a chunk of inputs and
#: records how many are queued, all or nothing (a re-run goes on after the last chunk).
_ENQUEUE = """
local first = tonumber(ARGV[2])
for i = 4, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'batch', ARGV[1], 'index', first + i - 4, 'input', ARGV[i])
end
redis.call('HSET', KEYS[2], 'enqueued', first + #ARGV - 3)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], 'total', ARGV[3]) end
return #ARGV - 3
"""

#: KEYS[i] = a batch's jobs hash; ARGV[2i-1], ARGV[2i] = an input index, this worker's record.
#: For each input: takes its record if it has none (returns ""), else returns the record held.
_TAKE = """
local held = {}
for i = 1, #KEYS do
  local record = redis.call('HGET', KEYS[i], ARGV[2 * i - 1])
  if record then
    held[i] = record
  else
    redis.call('HSET', KEYS[i], ARGV[2 * i - 1], ARGV[2 * i])
    held[i] = ''
  end
end
return held
"""

#: ARGV[1] = the group; KEYS[3i-2..3i] = a batch's jobs hash, its outcomes stream, the queue;
#: ARGV[4i-2..4i+1] = input index, outcome record, "done" record, entry id. For each input:
#: writes the outcome, marks the input done and acknowledges its entry, all or nothing.
_FINISH = """
for i = 1, #KEYS / 3 do
  local a = 4 * i - 2
  redis.call('XADD', KEYS[3 * i - 1], '*', 'record', ARGV[a + 1])
  redis.call('HSET', KEYS[3 * i - 2], ARGV[a], ARGV[a + 2])
  redis.call('XACK', KEYS[3 * i], ARGV[1], ARGV[a + 3])
end
return #KEYS / 3
"""


class _Batched:
    """The Redis writes of one event-loop tick, sent together in one pipeline.

    Hundreds of inputs in flight each write a few times; every tick's writes of a kind go
    as one command (one Lua script, or one HSET per batch), so a worker's Redis cost
    grows with its ticks, not with its inputs. Not a transaction: each script is atomic on
    its own, which is what must happen together.
    """

    def __init__(self, redis: Redis, queue: str) -> None:
        self._redis = redis
        self._queue = queue
        self._takes: list[tuple[str, str, str, asyncio.Future[str | None]]] = []
        self._accepts: list[tuple[str, str, str, asyncio.Future[None]]] = []
        self._finishes: list[tuple[str, str, str, str, str, str, asyncio.Future[None]]] = []
        self._scheduled = False
        self._flushing: set[asyncio.Task[None]] = set()

    def _future(self) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush_soon)
        return loop.create_future()

    def take(self, jobs: str, index: str, record: str) -> asyncio.Future[str | None]:
        """Take an input's record (None) or get the one held (`_TAKE`)."""
        future: asyncio.Future[str | None] = self._future()
        self._takes.append((jobs, index, record, future))
        return future

    def accept(self, jobs: str, index: str, record: str) -> asyncio.Future[None]:
        """Write an input's record (its job was accepted)."""
        future: asyncio.Future[None] = self._future()
        self._accepts.append((jobs, index, record, future))
        return future

    def finish(
        self, jobs: str, outcomes: str, index: str, outcome: str, done: str, entry_id: str
    ) -> asyncio.Future[None]:
        """Write an input's outcome, mark it done, acknowledge its entry (`_FINISH`)."""
        future: asyncio.Future[None] = self._future()
        self._finishes.append((jobs, outcomes, index, outcome, done, entry_id, future))
        return future

    def _flush_soon(self) -> None:
        self._scheduled = False
        task = asyncio.get_running_loop().create_task(self._flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush(self) -> None:
        takes, self._takes = self._takes, []
        accepts, self._accepts = self._accepts, []
        finishes, self._finishes = self._finishes, []
        pipe = self._redis.pipeline(transaction=False)
        if takes:
            keys = [jobs for jobs, _, _, _ in takes]
            args = [value for _, index, record, _ in takes for value in (index, record)]
            pipe.eval(_TAKE, len(keys), *keys, *args)
        by_batch: dict[str, dict[str, str]] = {}
        for jobs, index, record, _ in accepts:
            by_batch.setdefault(jobs, {})[index] = record
        for jobs, mapping in by_batch.items():
            pipe.hset(jobs, mapping=mapping)  # type: ignore[arg-type]
        if finishes:
            keys = [key for item in finishes for key in (item[0], item[1], self._queue)]
            args = [GROUP, *(value for item in finishes for value in item[2:6])]
            pipe.eval(_FINISH, len(keys), *keys, *args)
        futures = [item[-1] for group in (takes, accepts, finishes) for item in group]
        try:
            results = await pipe.execute()
        except BaseException as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError())
            if not isinstance(exc, Exception):
                raise
            return
        if takes:
            for (_, _, _, future), held in zip(takes, results[0], strict=True):
                if not future.done():
                    future.set_result(held or None)
        for future in futures[len(takes) :]:
            if not future.done():
                future.set_result(None)


def batch_keys(namespace: str, batch_id: str) -> dict[str, str]:
    """Return the Redis keys of one batch (see the module docstring)."""
    base = f"{namespace}:batch:{batch_id}"
    return {"meta": f"{base}:meta", "jobs": f"{base}:jobs", "outcomes": f"{base}:outcomes"}


def _connect(redis: str | Redis) -> tuple[Redis, bool]:
    if isinstance(redis, str):
        from redis.asyncio import Redis as _Redis

        return _Redis.from_url(redis), True
    return redis, False


async def enqueue(
    redis: str | Redis,
    inputs: Iterable[Any] | AsyncIterable[Any],
    *,
    batch_id: str | None = None,
    namespace: str = "flux",
    chunk: int = 1000,
    fingerprint: str | None = None,
) -> str:
    """Put a batch's inputs on the queue; return the batch id.

    Each input is a prompt string or a JSON-serialisable mapping with ``"prompt"`` (the
    parameters of `FluxClient.submit`). Enqueuing again under the same batch id never queues
    an input twice: a batch enqueued whole is left as it is (collect it again instead), and
    one whose enqueuing was interrupted goes on after the last input queued (each chunk of
    inputs is queued together with that count, in one transaction). Workers create at most
    one job per input of a batch in any case.

    Args:
        fingerprint: what identifies these inputs (e.g. a digest of them); stored with the
            batch, and a batch id that holds another one is refused.

    Raises:
        ValidationError: an input is neither a prompt nor a mapping, or the batch id already
            holds other inputs (``fingerprint``).
    """
    client, owned = _connect(redis)
    batch_id = batch_id or uuid.uuid4().hex[:16]
    keys = batch_keys(namespace, batch_id)
    try:
        held = await batch_info(client, batch_id, namespace=namespace)
        if held is not None:
            _check_fingerprint(batch_id, held.get("fingerprint"), fingerprint)
            if "total" in held:
                return batch_id
        start: dict[Any, Any] = {"created_at": repr(time.time())}
        if fingerprint is not None:
            start["fingerprint"] = fingerprint
        if held is None:
            await client.hset(keys["meta"], mapping=start)
        queued = int(held.get("enqueued", 0)) if held is not None else 0
        queue = f"{namespace}:queue"
        with contextlib.suppress(Exception):  # BUSYGROUP: the group exists
            await client.xgroup_create(queue, GROUP, id="0", mkstream=True)
        index = 0
        first = queued
        args: list[Any] = []
        async for item in _items(inputs):
            if not isinstance(item, (str, Mapping)):
                raise ValidationError(
                    f"a distributed batch input must be a prompt or a mapping, got "
                    f"{type(item).__name__}",
                    field="request",
                )
            if index >= queued:
                args.append(json.dumps(item, default=str))
            index += 1
            if len(args) >= chunk:
                await client.eval(_ENQUEUE, 2, queue, keys["meta"], batch_id, first, "", *args)
                first, args = index, []
        await client.eval(_ENQUEUE, 2, queue, keys["meta"], batch_id, first, index, *args)
        return batch_id
    finally:
        if owned:
            await client.aclose()


def _check_fingerprint(batch_id: str, held: str | None, given: str | None) -> None:
    if given is not None and held is not None and held != given:
        raise ValidationError(
            f"batch {batch_id} already holds other inputs (another file or other lines): "
            "give the same inputs, or another batch id",
            field="batch_id",
        )


async def batch_info(
    redis: str | Redis, batch_id: str, *, namespace: str = "flux"
) -> dict[str, str] | None:
    """Return what Redis holds about a batch (None when it holds nothing).

    Keys: ``created_at``, ``enqueued`` (inputs queued so far), ``total`` (set once every
    input is queued), ``fingerprint`` (when `enqueue` was given one).
    """
    client, owned = _connect(redis)
    try:
        raw = await client.hgetall(batch_keys(namespace, batch_id)["meta"])
    finally:
        if owned:
            await client.aclose()
    if not raw:
        return None
    return {
        (key.decode() if isinstance(key, bytes) else str(key)): (
            value.decode() if isinstance(value, bytes) else str(value)
        )
        for key, value in raw.items()
    }


async def _items(inputs: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(inputs, AsyncIterable):
        async for item in inputs:
            yield item
    else:
        for item in inputs:
            yield item


async def collect(
    redis: str | Redis,
    batch_id: str,
    *,
    namespace: str = "flux",
    block: float = 1.0,
) -> AsyncIterator[dict[str, Any]]:
    """Yield one outcome record per input of the batch as workers finish them.

    Ends once every input has one. A record: ``index``, ``status`` (a `JobStatus` value,
    ``rejected`` or ``download_failed``), ``job_id``, ``image_urls``, ``files``, ``cost``,
    ``error``, ``worker`` and ``recovered`` (taken over from a worker that died).
    """
    client, owned = _connect(redis)
    keys = batch_keys(namespace, batch_id)
    seen: set[int] = set()
    last = "0-0"
    total: int | None = None
    try:
        while total is None or len(seen) < total:
            answer: Any = await client.xread(
                {keys["outcomes"]: last}, count=1000, block=int(block * 1000)
            )
            for _stream, entries in answer or ():
                for entry_id, fields in entries:
                    last = entry_id
                    record = json.loads(fields[b"record"])
                    if record["index"] in seen:
                        continue  # never written twice; read defensively all the same
                    seen.add(record["index"])
                    yield record
            if total is None:
                held = await client.hget(keys["meta"], "total")
                total = int(held) if held is not None else None
    finally:
        if owned:
            await client.aclose()


class WorkerStats:
    """What a worker did: inputs finished, and how many were taken over from dead workers.

    ``working`` is how many inputs it holds right now (read it while the worker runs).
    """

    def __init__(self) -> None:
        self.working = 0
        self.finished = 0
        self.created = 0
        self.claimed = 0
        self.reattached = 0
        self.unknown = 0
        self.acknowledged_only = 0

    def __repr__(self) -> str:
        return (
            f"<WorkerStats finished={self.finished} created={self.created} "
            f"claimed={self.claimed} reattached={self.reattached} unknown={self.unknown}>"
        )


async def run_worker(
    redis: str | Redis,
    provider: Provider,
    *,
    namespace: str = "flux",
    name: str | None = None,
    concurrency: int = 64,
    download_to: str | os.PathLike[str] | None = None,
    shared_limits: SharedLimits | None = None,
    min_idle: float = 30.0,
    exit_when_idle: float | None = None,
    stop: asyncio.Event | None = None,
    client_options: Mapping[str, Any] | None = None,
    stats: WorkerStats | None = None,
) -> WorkerStats:
    """Process queued inputs until ``stop`` is set (or the queue stayed empty).

    Cancelling it stops at once: the inputs in hand are left pending, and another worker
    claims them once they were idle for ``min_idle`` (their jobs re-attached by provider
    id; a create that was on the wire ends ``unknown``, never sent again).

    Args:
        redis: a Redis URL or a ``redis.asyncio.Redis`` client (not closed here).
        provider: the provider (and account) the jobs are created with.
        name: this worker's consumer name (default ``host-pid``); unique per live worker.
        concurrency: inputs worked on at once.
        download_to: save each job's images here as ``{batch}-{index:06d}-...``.
        shared_limits: the account's limits, shared through Redis with every worker.
        min_idle: seconds an entry of a silent worker waits before another claims it.
        exit_when_idle: return once nothing was queued or pending for this many seconds.
        stop: set it to stop taking inputs; the ones begun are finished first.
        client_options: keyword arguments for `FluxClient` (``poll``, ``retry``, ...).
        stats: count into this `WorkerStats` (to read it while the worker runs, or after
            it was cancelled); the one returned.
    """
    worker = _Worker(
        redis,
        provider,
        namespace=namespace,
        name=name or f"{socket.gethostname()}-{os.getpid()}",
        concurrency=concurrency,
        download_to=download_to,
        shared_limits=shared_limits,
        min_idle=min_idle,
        exit_when_idle=exit_when_idle,
        stop=stop or asyncio.Event(),
        client_options=dict(client_options or {}),
        stats=stats or WorkerStats(),
    )
    return await worker.run()


class _Worker:
    def __init__(
        self,
        redis: str | Redis,
        provider: Provider,
        *,
        namespace: str,
        name: str,
        concurrency: int,
        download_to: str | os.PathLike[str] | None,
        shared_limits: SharedLimits | None,
        min_idle: float,
        exit_when_idle: float | None,
        stop: asyncio.Event,
        client_options: dict[str, Any],
        stats: WorkerStats,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
        self.redis, self._owns_redis = _connect(redis)
        self.provider = provider
        self.namespace = namespace
        self.name = name
        self.concurrency = concurrency
        self.download_to = download_to
        self.shared_limits = shared_limits
        self.min_idle = min_idle
        self.exit_when_idle = exit_when_idle
        self.stop = stop
        self.client_options = client_options
        self.queue = f"{namespace}:queue"
        self.heartbeat_key = f"{namespace}:worker:{name}"
        self.stats = stats
        self.limiter: RedisLimiter | None = None
        self._working: dict[str, asyncio.Task[None]] = {}
        self._slot_freed = asyncio.Event()
        self._leases: set[str] = set()
        self._batched = _Batched(self.redis, self.queue)
        self._client: FluxClient | None = None
        self._transport: Transport | None = None

    async def run(self) -> WorkerStats:
        try:
            await self._run()
        finally:
            if self._owns_redis:
                await self.redis.aclose()
        return self.stats

    async def _run(self) -> None:
        with contextlib.suppress(Exception):  # BUSYGROUP: the group exists
            await self.redis.xgroup_create(self.queue, GROUP, id="0", mkstream=True)
        middlewares = ()
        if self.shared_limits is not None:
            self.limiter = RedisLimiter(
                self.redis, self.provider, self.shared_limits, namespace=self.namespace
            )
            middlewares = (self.limiter.middleware(),)  # type: ignore[assignment]
        limits = self.client_options.get("limits") or self.provider.default_limits
        # As many connections as the client would open itself: more only cost CPU.
        connections = limits.max_connections or max(8, self.concurrency)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, limit_per_host=0, ttl_dns_cache=300),
            cookie_jar=aiohttp.DummyCookieJar(),
            middlewares=middlewares,
        )
        try:
            self._transport = Transport(
                limits=limits,
                timeouts=self.client_options.get("timeouts") or Timeouts(),
                session=session,
            )
            async with FluxClient(self.provider, session=session, **self.client_options) as client:
                self._client = client
                await self._beat()
                heartbeat = asyncio.get_running_loop().create_task(self._heartbeat())
                try:
                    await self._loop()
                finally:
                    heartbeat.cancel()
                    working = list(self._working.values())
                    for task in working:
                        task.cancel()
                    await asyncio.gather(heartbeat, *working, return_exceptions=True)
        finally:
            await session.close()
            with contextlib.suppress(Exception):
                await self.redis.delete(self.heartbeat_key)

    # -- the loop -------------------------------------------------------------------------

    async def _loop(self) -> None:
        next_claim = 0.0
        idle_since: float | None = None
        while not self.stop.is_set():
            free = self.concurrency - len(self._working)
            if free <= 0:
                # Waiting on an event, not on every task in hand (asyncio.wait would add and
                # remove a callback on each of them for every input finished); then a moment
                # more, so that one XREADGROUP refills several slots.
                self._slot_freed.clear()
                await self._slot_freed.wait()
                await asyncio.sleep(REFILL_DELAY)
                continue
            got = 0
            now = time.monotonic()
            if now >= next_claim:
                got += await self._claim_stale(free)
                next_claim = now + max(0.2, self.min_idle / 4)
                free = self.concurrency - len(self._working)
            if free > 0:
                answer: Any = await self.redis.xreadgroup(
                    GROUP, self.name, {self.queue: ">"}, count=free, block=200
                )
                for _stream, entries in answer or ():
                    for entry_id, fields in entries:
                        self._start(entry_id.decode(), fields, claimed=False)
                        got += 1
            if self.exit_when_idle is None:
                continue
            if got or self._working:
                idle_since = None
                continue
            pending = await self.redis.xpending(self.queue, GROUP)
            if pending["pending"]:
                idle_since = None
                continue
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= self.exit_when_idle:
                return
        if self._working:
            await asyncio.wait(list(self._working.values()))

    async def _claim_stale(self, count: int) -> int:
        """Take over entries that a silent worker left idle for ``min_idle``."""
        got = 0
        start = "0-0"
        while got < count:
            answer = await self.redis.xautoclaim(
                self.queue,
                GROUP,
                self.name,
                int(self.min_idle * 1000),
                start_id=start,
                count=count - got,
            )
            start = answer[0].decode() if isinstance(answer[0], bytes) else str(answer[0])
            for entry_id, fields in answer[1]:
                if fields is None:
                    continue
                entry = entry_id.decode()
                if entry in self._working:
                    continue
                self.stats.claimed += 1
                self._start(entry, fields, claimed=True)
                got += 1
            if start == "0-0":
                break
        return got

    def _start(self, entry_id: str, fields: Mapping[bytes, bytes], *, claimed: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._process(entry_id, fields))
        self._working[entry_id] = task
        self.stats.working = len(self._working)
        task.add_done_callback(lambda _: self._forget(entry_id))
        task.add_done_callback(_log_crash)

    def _forget(self, entry_id: str) -> None:
        self._working.pop(entry_id, None)
        self.stats.working = len(self._working)
        self._slot_freed.set()

    async def _beat(self) -> None:
        ttl = int(self.min_idle * 1000 * 2 / 3)
        await self.redis.set(self.heartbeat_key, "1", px=max(ttl, 100))
        if self._working:
            # Reset the idle time of our entries so nobody claims them from under us.
            await self.redis.xclaim(
                self.queue, GROUP, self.name, 0, list(self._working), justid=True
            )
        if self.limiter is not None and self._leases:
            await self.limiter.renew(self._leases)

    async def _heartbeat(self) -> None:
        interval = self.min_idle / 3
        if self.shared_limits is not None:
            interval = min(interval, self.shared_limits.lease_ttl / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._beat()
            except Exception as exc:  # Redis away for a moment: try again next beat
                logger.warning("worker %s: heartbeat failed: %s", self.name, exc)

    # -- one input ------------------------------------------------------------------------

    async def _process(self, entry_id: str, fields: Mapping[bytes, bytes]) -> None:
        batch = fields[b"batch"].decode()
        index = int(fields[b"index"])
        item = json.loads(fields[b"input"])
        keys = batch_keys(self.namespace, batch)
        mine = json.dumps({"state": "sending", "worker": self.name})
        # The record is ours now, or the one a worker wrote before (this input was claimed
        # from it), in one atomic step.
        raw = await self._batched.take(keys["jobs"], str(index), mine)
        prior = None if raw is None else json.loads(raw)
        if prior is not None:
            owner = prior.get("worker")
            if prior.get("state") == "done":
                await self.redis.xack(self.queue, GROUP, entry_id)
                self.stats.acknowledged_only += 1
                return
            if owner != self.name and await self.redis.exists(f"{self.namespace}:worker:{owner}"):
                # Its worker lives (it was only slow to renew): it writes the outcome.
                return
            await self.redis.hset(
                keys["jobs"], str(index), json.dumps({**prior, "worker": self.name})
            )
        lease = None
        if self.limiter is not None:
            lease = await self.limiter.lease()
            self._leases.add(lease)
        try:
            if prior is None:
                record = await self._create(batch, index, item, keys)
            elif prior.get("job_id"):
                self.stats.reattached += 1
                record = await self._reattach(batch, index, item, prior["job_id"])
            else:
                self.stats.unknown += 1
                record = _record(
                    index,
                    "unknown",
                    error=f"worker {owner} stopped while this input's create was in flight: the "
                    "provider may have created the job; it was not sent again, to avoid "
                    "paying twice",
                )
        finally:
            if lease is not None:
                self._leases.discard(lease)
                with contextlib.suppress(Exception):
                    await self.limiter.release(lease)  # type: ignore[union-attr]
        record["worker"] = self.name
        record["recovered"] = prior is not None
        done = json.dumps({"state": "done", "worker": self.name, "job_id": record["job_id"]})
        outcome = json.dumps(record)
        await self._batched.finish(
            keys["jobs"], keys["outcomes"], str(index), outcome, done, entry_id
        )
        self.stats.finished += 1

    async def _create(
        self, batch: str, index: int, item: Any, keys: dict[str, str]
    ) -> dict[str, Any]:
        client = self._client
        assert client is not None
        if isinstance(item, str):
            prompt, params = item, {}
        elif isinstance(item, dict) and isinstance(item.get("prompt"), str):
            params = dict(item)
            prompt = params.pop("prompt")
        else:
            return _record(index, "rejected", error="an input must be a prompt or have 'prompt'")
        try:
            job = await client.submit(prompt, **params)
        except ValidationError as exc:
            return _record(index, "rejected", error=str(exc))
        except FluxError as exc:
            return _record(index, _status_of(exc), error=str(exc))
        finally:
            self.stats.created += 1
        job_id = job.id
        # Not awaited: losing it to a crash costs no money (the input then ends unknown).
        accepted = json.dumps({"state": "accepted", "worker": self.name, "job_id": job_id})
        self._batched.accept(keys["jobs"], str(index), accepted).add_done_callback(_consume)
        try:
            generation = await job.result()
        except FluxError as exc:
            return _record(index, job.status.value, job_id=job_id, cost=job.cost, error=str(exc))
        return await self._save(batch, index, generation)

    async def _reattach(self, batch: str, index: int, item: Any, job_id: str) -> dict[str, Any]:
        """Follow a job another worker created, by its provider id, to its end."""
        provider, transport = self.provider, self._transport
        assert transport is not None
        model = item.get("model", "") if isinstance(item, dict) else ""
        wait = min(0.5, provider.typical_latency / 4)
        deadline = time.monotonic() + float(
            getattr(self.client_options.get("poll"), "timeout", 600.0)
        )
        while True:
            try:
                response = await transport.send(
                    provider.build_query(job_id), provider=provider.name
                )
                update = provider.parse_query(response)
            except (BadRequestError, AuthenticationError) as exc:
                # Retrying cannot help (e.g. a provider that does not know this job id).
                return _record(
                    index,
                    "unknown",
                    job_id=job_id,
                    error=f"job {job_id} could not be followed: {exc}",
                )
            except RequestError as exc:
                if time.monotonic() > deadline:
                    return _record(index, "timed_out", job_id=job_id, error=str(exc))
                await asyncio.sleep(wait)
                wait = min(wait * 2, 5.0)
                continue
            if update.status.is_terminal:
                break
            if time.monotonic() > deadline:
                return _record(
                    index,
                    "timed_out",
                    job_id=job_id,
                    error=f"job {job_id} did not finish before its deadline",
                )
            await asyncio.sleep(wait)
            wait = min(wait * 1.5, 5.0)
        if update.status is not JobStatus.SUCCEEDED:
            return _record(
                index,
                update.status.value,
                job_id=job_id,
                cost=update.cost,
                error=update.error or f"job {job_id} ended {update.status.value}",
            )
        generation = Generation(
            images=update.images,
            provider=provider.name,
            model=model,
            job_id=job_id,
            local_id=f"reattached-{job_id}",
            cost=update.cost,
            seed=update.seed,
        )
        return await self._save(batch, index, generation)

    async def _save(self, batch: str, index: int, generation: Generation) -> dict[str, Any]:
        files: tuple[Path, ...] = ()
        if self.download_to is not None:
            assert self._client is not None
            try:
                files = await self._client.download(
                    generation, self.download_to, prefix=f"{batch}-{index:06d}-"
                )
            except DownloadError as exc:
                return _record(index, "download_failed", generation=generation, error=str(exc))
        return _record(index, "succeeded", generation=generation, files=files)


def _status_of(error: BaseException) -> str:
    if isinstance(error, JobUnknownError):
        return JobStatus.UNKNOWN.value
    if isinstance(error, JobCancelledError):
        return JobStatus.CANCELLED.value
    if isinstance(error, JobTimeoutError):
        return JobStatus.TIMED_OUT.value
    return JobStatus.FAILED.value


def _record(
    index: int,
    status: str,
    *,
    job_id: str | None = None,
    generation: Generation | None = None,
    files: Iterable[Path] = (),
    cost: Decimal | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    if generation is not None:
        job_id = generation.job_id
        cost = generation.cost
    return {
        "index": index,
        "status": status,
        "job_id": job_id,
        "image_urls": [image.url for image in generation.images] if generation else [],
        "files": [str(path) for path in files],
        "cost": None if cost is None else format(cost, "f"),
        "error": error,
    }


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("a queued Redis write failed: %s", future.exception())


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("worker task failed: %r", task.exception())
