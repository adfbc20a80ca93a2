"""The Redis side of a distributed batch: its keys, the queue, and the scripts workers write
through. `enqueue` puts a batch's inputs on the queue, `batch_info` tells what Redis holds
about a batch, `collect` yields its outcomes; `Batched` is how a worker writes (the worker
loop itself is in `_worker.py`, one input's work in `_worker_input.py`).

Keys (``{ns}`` is the namespace, default ``flux``)::

    {ns}:queue                    stream of inputs: batch, index, input (JSON); group "workers";
                                  an entry is deleted once acknowledged (its input is done)
    {ns}:batch:{id}:meta          hash: total (set once every input is enqueued), created_at
    {ns}:batch:{id}:jobs          hash: input index -> {"state", "worker", "job_id"} (JSON)
    {ns}:batch:{id}:outcomes      stream of outcome records (JSON), one per input
    {ns}:worker:{name}            a live worker's heartbeat (PX expiry)

A batch's three keys expire `BATCH_TTL` (7 days) after it is done: its total is known and
every input has its outcome. Collect it before; a batch never done does not expire.

Nothing secret is written: inputs, provider job ids, image URLs and file paths only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._batch_inputs import items_of
from ._errors import ValidationError

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["GROUP", "Batched", "batch_info", "batch_keys", "collect", "connect", "enqueue"]

GROUP = "workers"
"""The consumer group every worker reads the queue through."""
BATCH_TTL = 7 * 24 * 3600
"""Seconds a finished batch's keys live (as `RedisStore`'s records): collect it before."""

#: Once a batch has its total and as many outcomes: its keys (meta, jobs, outcomes) expire.
_EXPIRE_DONE = """
local function expire_done(meta, jobs, outcomes, ttl)
  local total = redis.call('HGET', meta, 'total')
  if total and redis.call('XLEN', outcomes) >= tonumber(total) then
    redis.call('EXPIRE', meta, ttl)
    redis.call('EXPIRE', jobs, ttl)
    redis.call('EXPIRE', outcomes, ttl)
  end
end
"""

#: KEYS = the queue, the batch's meta hash, jobs hash, outcomes stream; ARGV = batch id, index
#: of the first input, the total ("" until the last chunk), the TTL, then the inputs (JSON).
#: Queues a chunk of inputs and records how many are queued, all or nothing (a re-run goes on
#: after the last chunk).
_ENQUEUE = (
    _EXPIRE_DONE
    + """
local first = tonumber(ARGV[2])
for i = 5, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'batch', ARGV[1], 'index', first + i - 5, 'input', ARGV[i])
end
redis.call('HSET', KEYS[2], 'enqueued', first + #ARGV - 4)
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], 'total', ARGV[3])
  expire_done(KEYS[2], KEYS[3], KEYS[4], ARGV[4])  -- every input may be done already
end
return #ARGV - 4
"""
)

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

#: ARGV[1] = the group, ARGV[2] = the TTL; KEYS[4i-3..4i] = a batch's jobs hash, its outcomes
#: stream, the queue, its meta hash; ARGV[4i-1..4i+2] = input index, outcome record, "done"
#: record, entry id. For each input: writes the outcome, marks the input done, acknowledges
#: and deletes its entry, all or nothing; a batch that is then done expires.
_FINISH = (
    _EXPIRE_DONE
    + """
for i = 1, #KEYS / 4 do
  local k, a = 4 * i - 3, 4 * i - 1
  redis.call('XADD', KEYS[k + 1], '*', 'record', ARGV[a + 1])
  redis.call('HSET', KEYS[k], ARGV[a], ARGV[a + 2])
  redis.call('XACK', KEYS[k + 2], ARGV[1], ARGV[a + 3])
  redis.call('XDEL', KEYS[k + 2], ARGV[a + 3])
  expire_done(KEYS[k + 3], KEYS[k], KEYS[k + 1], ARGV[2])
end
return #KEYS / 4
"""
)

#: KEYS[1] = the queue; ARGV = the group, entry ids. Acknowledges and deletes the entries.
_DROP = """
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
"""


class Batched:
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
        self._finishes: list[tuple[dict[str, str], str, str, str, str, asyncio.Future[None]]] = []
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
        self, keys: dict[str, str], index: str, outcome: str, done: str, entry_id: str
    ) -> asyncio.Future[None]:
        """Write an input's outcome, mark it done, acknowledge and delete its entry; the
        batch's keys (`batch_keys`) expire once it is done (`_FINISH`)."""
        future: asyncio.Future[None] = self._future()
        self._finishes.append((keys, index, outcome, done, entry_id, future))
        return future

    async def drop(self, entry_id: str) -> None:
        """Acknowledge and delete an entry whose input is already done (not batched: rare)."""
        await self._redis.eval(_DROP, 1, self._queue, GROUP, entry_id)

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
            keys = [
                key
                for item in finishes
                for key in (item[0]["jobs"], item[0]["outcomes"], self._queue, item[0]["meta"])
            ]
            args = [GROUP, str(BATCH_TTL), *(value for item in finishes for value in item[1:5])]
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


def connect(redis: str | Redis) -> tuple[Redis, bool]:
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
    client, owned = connect(redis)
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
        keys4 = (queue, keys["meta"], keys["jobs"], keys["outcomes"])
        index = 0
        first = queued
        args: list[Any] = []
        async for item in items_of(inputs):
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
                await client.eval(_ENQUEUE, 4, *keys4, batch_id, first, "", BATCH_TTL, *args)
                first, args = index, []
        await client.eval(_ENQUEUE, 4, *keys4, batch_id, first, index, BATCH_TTL, *args)
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
    client, owned = connect(redis)
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
    client, owned = connect(redis)
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
