"""The queue of a distributed batch (`flux_async._batch_queue`): `enqueue` goes on after an
interruption and never queues an input twice, and a finished batch leaves nothing behind but
keys that expire."""

from __future__ import annotations

import collections
import json
from collections.abc import AsyncIterator

import pytest

redis_asyncio = pytest.importorskip("redis.asyncio")

from conftest import RedisServer  # noqa: E402

from flux_async import PollPolicy, ShortAPI, ValidationError  # noqa: E402
from flux_async._batch_queue import BATCH_TTL, GROUP, batch_keys  # noqa: E402
from flux_async.testing import FakeProvider  # noqa: E402
from flux_async.workers import batch_info, collect, enqueue, run_worker  # noqa: E402

API_KEY = "sk-test-queue-0123456789"


async def test_enqueue_again_goes_on_and_never_queues_an_input_twice(
    redis_server: RedisServer,
) -> None:
    """An enqueue interrupted after its first chunk, run again, queues the rest only; a batch
    id holding other inputs (another fingerprint) is refused."""
    redis_url = redis_server.url
    namespace = "resume-enqueue"
    prompts = [f"a kite, take {i}" for i in range(25)]

    async def broken() -> AsyncIterator[str]:
        for prompt in prompts[:15]:
            yield prompt
        raise OSError("the input file went away")

    with pytest.raises(OSError):
        await enqueue(
            redis_url, broken(), batch_id="b1", namespace=namespace, chunk=10, fingerprint="f1"
        )
    info = await batch_info(redis_url, "b1", namespace=namespace)
    assert info is not None and info["enqueued"] == "10" and "total" not in info
    await enqueue(
        redis_url, prompts, batch_id="b1", namespace=namespace, chunk=10, fingerprint="f1"
    )
    await enqueue(redis_url, prompts, batch_id="b1", namespace=namespace, fingerprint="f1")
    info = await batch_info(redis_url, "b1", namespace=namespace)
    assert info is not None and info["enqueued"] == info["total"] == "25"
    redis = redis_asyncio.Redis.from_url(redis_url)
    entries = await redis.xrange(f"{namespace}:queue")
    await redis.aclose()
    assert [int(fields[b"index"]) for _, fields in entries] == list(range(25))
    assert [json.loads(fields[b"input"]) for _, fields in entries] == prompts
    with pytest.raises(ValidationError, match="already holds other inputs"):
        await enqueue(redis_url, prompts, batch_id="b1", namespace=namespace, fingerprint="f2")


@pytest.mark.timeout(60)
async def test_a_finished_batch_expires_and_its_queue_entries_are_deleted(
    redis_server: RedisServer,
) -> None:
    """Redis stays bounded over many batches: once every input of a batch has its outcome
    and the total is known, the batch's keys carry a TTL; an acknowledged queue entry is
    deleted, also one only acknowledged because its input was already done."""
    redis_url = redis_server.url
    namespace = "expiry"
    queue = f"{namespace}:queue"
    prompts = [f"a comet, take {i}" for i in range(12)]

    async def interrupted() -> AsyncIterator[str]:
        for prompt in prompts:
            yield prompt
        raise OSError("the input file went away")

    # b1: every input queued (two full chunks), but the total never written.
    with pytest.raises(OSError):
        await enqueue(redis_url, interrupted(), batch_id="b1", namespace=namespace, chunk=6)
    await enqueue(redis_url, prompts[:5], batch_id="b2", namespace=namespace)
    redis = redis_asyncio.Redis.from_url(redis_url)
    provider = ShortAPI(API_KEY)
    options = {"poll": PollPolicy.fixed(0.05, timeout=30)}
    try:
        async with FakeProvider(latency=(0.02, 0.05), seed=3, api_key=API_KEY) as fake:
            provider = ShortAPI(API_KEY, base_url=fake.url)
            stats = await run_worker(
                redis_url,
                provider,
                namespace=namespace,
                exit_when_idle=0.3,
                client_options=options,
            )
            assert stats.finished == 17
            b1, b2 = batch_keys(namespace, "b1"), batch_keys(namespace, "b2")
            for key in b2.values():
                assert 0 < await redis.ttl(key) <= BATCH_TTL, key
            for key in b1.values():  # every outcome is there, but the total is unknown
                assert await redis.ttl(key) == -1, key
            # The enqueue goes on: nothing left to queue, then the total: the batch is done.
            await enqueue(redis_url, prompts, batch_id="b1", namespace=namespace)
            for key in b1.values():
                assert 0 < await redis.ttl(key) <= BATCH_TTL, key
            assert await redis.xlen(queue) == 0
            assert (await redis.xpending(queue, GROUP))["pending"] == 0
            assert (await redis.xinfo_stream(queue))["entries-added"] == 17

            # An entry of an input already done (queued twice by hand) is only acknowledged,
            # and deleted all the same.
            await redis.xadd(queue, {"batch": "b2", "index": 0, "input": '"a comet, take 0"'})
            again = await run_worker(
                redis_url,
                provider,
                namespace=namespace,
                exit_when_idle=0.3,
                client_options=options,
            )
            assert (again.acknowledged_only, again.created) == (1, 0)
            assert await redis.xlen(queue) == 0
            records = [record async for record in collect(redis_url, "b1", namespace=namespace)]
            assert sorted(record["index"] for record in records) == list(range(12))
            assert fake.creates_per_prompt == collections.Counter(prompts[:5] + prompts)
    finally:
        await redis.aclose()
