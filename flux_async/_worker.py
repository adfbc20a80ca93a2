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
entry in one transaction (`_worker_input`: what happens to one input, and how an input taken
over from a dead worker is settled). A worker that dies (``kill -9``) leaves its entries
pending; once they were idle for ``min_idle`` seconds another worker claims them
(``XAUTOCLAIM``).

A live worker keeps its entries fresh (``XCLAIM`` to itself) and its heartbeat key alive, so
its slow jobs are never claimed from under it. With `SharedLimits` the worker's requests take
their turns from a `RedisLimiter` shared by every worker of the account, and each job holds a
job-in-flight lease.

This module is the worker loop (`run_worker`); the queue, its keys and `enqueue`/`collect`
are in `_batch_queue`. The public names are in `flux_async.workers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp

from ._batch_queue import GROUP, Batched, connect
from ._client import FluxClient
from ._config import Timeouts
from ._transport import Transport
from ._worker_input import InputRunner, WorkerStats
from .stores.redis_limits import RedisLimiter, SharedLimits

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .providers._base import Provider

__all__ = ["run_worker"]

logger = logging.getLogger("flux_async")


#: Seconds a full worker waits after an input finished before taking more, so that one
#: read takes the inputs of every slot freed meanwhile.
REFILL_DELAY = 0.01


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
        self.redis, self._owns_redis = connect(redis)
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
        self._batched = Batched(self.redis, self.queue)
        self._inputs: InputRunner | None = None

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
            transport = Transport(
                limits=limits,
                timeouts=self.client_options.get("timeouts") or Timeouts(),
                session=session,
            )
            async with FluxClient(self.provider, session=session, **self.client_options) as client:
                self._inputs = InputRunner(
                    redis=self.redis,
                    namespace=self.namespace,
                    name=self.name,
                    provider=self.provider,
                    client=client,
                    transport=transport,
                    batched=self._batched,
                    stats=self.stats,
                    limiter=self.limiter,
                    leases=self._leases,
                    poll_timeout=float(getattr(self.client_options.get("poll"), "timeout", 600.0)),
                    download_to=self.download_to,
                )
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

    # -- taking inputs -------------------------------------------------------------------------

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
        assert self._inputs is not None
        task = asyncio.get_running_loop().create_task(self._inputs.process(entry_id, fields))
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


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("worker task failed: %r", task.exception())
