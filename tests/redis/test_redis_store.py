"""`RedisStore` against a real redis-server: the `JobStore` expectations of
``tests/test_store.py`` (the same test functions, run here against Redis), one round trip
per tick, expiry, the state rules between processes, a restart of Redis, and Redis away."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

pytest.importorskip("redis.asyncio")

import redis.asyncio as aioredis
from conftest import RedisServer
from test_store import (  # noqa: F401  (collected here, against Redis)
    StoreFactory,
    clock,
    record,
    test_a_duplicate_local_id_is_refused_without_losing_the_others,
    test_a_job_life_round_trips,
    test_accepted_after_the_end_keeps_the_id_and_the_end,
    test_check_inputs,
    test_every_field_round_trips,
    test_failure_keeps_the_error_kind_and_message,
    test_lookups,
    test_meta_round_trips,
    test_status_only_moves_forward_and_terminal_is_absorbing,
    test_writes_for_an_unknown_local_id_are_ignored,
    test_wrong_kind_of_status_is_refused,
)

from flux_async import Image, JobStatus, JobTimeoutError
from flux_async._store import JobStore, JournalError, MemoryStore
from flux_async.stores import RedisStore, StoreUnavailableError


@pytest.fixture
def make_store(redis_server: RedisServer, namespace: str) -> StoreFactory:
    """Stores over the same keys (a reopened store sees what the last one wrote)."""
    return lambda: RedisStore(redis_server.url, namespace=namespace, clock=clock)


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[JobStore]:
    opened = make_store()
    await opened.open()
    yield opened
    await opened.aclose()


async def test_one_round_trip_per_tick(redis_server: RedisServer, namespace: str) -> None:
    async with RedisStore(redis_server.url, namespace=namespace) as store:
        before = store.writes
        await asyncio.gather(*(store.put_allocated(record(f"L{i}", i)) for i in range(300)))
        assert store.writes == before + 1
        for i in range(300):
            store.put_accepted(f"L{i}", f"job-{i}")
            store.put_status(f"L{i}", JobStatus.RUNNING)
            store.put_finished(f"L{i}", JobStatus.SUCCEEDED)
        await store.flush()
        assert store.writes == before + 2
        await store.flush()  # nothing queued: no round trip
        assert store.writes == before + 2
        assert {r.status for r in await store.records("B")} == {JobStatus.SUCCEEDED}
        assert await store.owned() == []  # ended jobs leave the owner's set


async def test_state_rules_hold_between_processes(
    redis_server: RedisServer, namespace: str
) -> None:
    # Two stores (two processes' worth of connections) write one job in any order.
    async with (
        RedisStore(redis_server.url, namespace=namespace, replica="a") as a,
        RedisStore(redis_server.url, namespace=namespace, replica="b") as b,
    ):
        await a.put_allocated(record("L1"))
        assert await a.owned() == ["L1"] and await b.owned("a") == ["L1"]
        b.put_accepted("L1", "job-1", Decimal("0.5"))
        b.put_finished("L1", JobStatus.SUCCEEDED, seed=3)
        await b.flush()
        a.put_status("L1", JobStatus.RUNNING)  # late
        a.put_finished("L1", JobStatus.FAILED, error=RuntimeError("late"))
        a.put_accepted("L1", "job-2", Decimal("9"))
        await a.flush()
        found = await b.find("L1")
        assert found is not None
        assert (found.status, found.job_id, found.cost, found.seed, found.error_kind) == (
            JobStatus.SUCCEEDED,
            "job-1",
            Decimal("0.5"),
            3,
            None,
        )
        assert await a.owned() == []


async def test_keys_are_namespaced_and_expire(redis_server: RedisServer, namespace: str) -> None:
    async with RedisStore(redis_server.url, namespace=namespace, ttl=600) as store:
        await store.begin_batch("B")
        await store.put_allocated(record("L1"))
        store.put_accepted("L1", "job-1")
        await store.save_meta("latency:x", b"\x00")
        raw = aioredis.Redis.from_url(redis_server.url)
        try:
            keys = sorted(key.decode() for key in await raw.keys("*"))
            assert all(key.startswith(f"{namespace}:") for key in keys), keys
            token = hashlib.sha256(b"token-L1").hexdigest()
            assert set(keys) == {
                f"{namespace}:{name}"
                for name in (
                    "schema",
                    "job:L1",
                    "jobid:shortapi:job-1",
                    f"token:{token}",
                    "batch:B",
                    "batches",
                    "batches:seen",
                    "batches:seq",
                    "meta:latency:x",
                    f"owner:{store.replica}",
                )
            }
            for key in keys:
                if key != f"{namespace}:schema":
                    assert 0 < await raw.ttl(key) <= 600, key
        finally:
            await raw.aclose()


async def test_batches_whose_records_expired_leave_the_list(
    redis_server: RedisServer, namespace: str
) -> None:
    """The list of batches does not grow forever: a batch unwritten for ``ttl`` (its record
    set expired) leaves it when another batch begins; a batch written since stays."""
    async with RedisStore(redis_server.url, namespace=namespace, ttl=600) as store:
        for batch in ("old", "written", "begun"):
            await store.begin_batch(batch)
        await store.put_allocated(record("L1", batch_id="written"))
        raw = aioredis.Redis.from_url(redis_server.url)
        try:
            # As if "old" had last been written 601 s ago: its records are gone.
            now = (await raw.time())[0]
            await raw.zadd(f"{namespace}:batches:seen", {"old": now - 601})
            await raw.delete(f"{namespace}:batch:old")
            await store.begin_batch("new")
            assert await store.batches() == ["written", "begun", "new"]
            assert await raw.zcard(f"{namespace}:batches:seen") == 3
            assert 0 < await raw.ttl(f"{namespace}:batches:seen") <= 600
        finally:
            await raw.aclose()


async def test_another_layout_is_refused(redis_server: RedisServer, namespace: str) -> None:
    raw = aioredis.Redis.from_url(redis_server.url)
    await raw.set(f"{namespace}:schema", b"99")
    await raw.aclose()
    with pytest.raises(JournalError, match="another flux_async version"):
        await RedisStore(redis_server.url, namespace=namespace).open()


async def test_a_timed_out_record_takes_a_later_end_like_the_other_stores(
    store: JobStore,
) -> None:
    """A job that timed out and, polled again on a resume, ended after all: the record takes
    that end (`may_end`), field for field as `MemoryStore` does; another timed_out, or any end
    after that, changes nothing."""
    memory = MemoryStore(clock=clock)
    for each in (store, memory):
        await each.put_allocated(record("L1"))
        each.put_accepted("L1", "job-1", Decimal("0.5"))
        each.put_finished("L1", JobStatus.TIMED_OUT, polls=4, error=JobTimeoutError("late"))
        each.put_finished("L1", JobStatus.TIMED_OUT, polls=9, error=JobTimeoutError("again"))
        await each.flush()
        timed_out = await each.find("L1")
        assert timed_out is not None
        assert (timed_out.status, timed_out.polls, timed_out.error_message) == (
            JobStatus.TIMED_OUT,
            4,
            "late",
        )
        each.put_finished(
            "L1", JobStatus.SUCCEEDED, images=[Image(url="https://x/1.png")], seed=7, polls=6
        )
        each.put_finished("L1", JobStatus.FAILED, error=RuntimeError("late"))  # absorbing
        await each.flush()
    found, expected = await store.find("L1"), await memory.find("L1")
    assert found is not None and expected is not None
    assert (found.status, found.images, found.seed, found.polls, found.error_kind) == (
        JobStatus.SUCCEEDED,
        (Image(url="https://x/1.png"),),
        7,
        6,
        None,
    )
    assert found == expected


@pytest.mark.slow  # kills the redis-server process and starts another
async def test_acknowledged_writes_survive_a_redis_kill_and_queued_ones_wait_for_it(
    redis_server: RedisServer, namespace: str
) -> None:
    async with RedisStore(redis_server.url, namespace=namespace, retry_for=20) as store:
        await asyncio.gather(*(store.put_allocated(record(f"L{i}", i)) for i in range(50)))
        redis_server.kill()  # SIGKILL: no shutdown, only the append-only file remains
        for i in range(50):
            store.put_accepted(f"L{i}", f"job-{i}")  # queued while Redis is away
        late = asyncio.ensure_future(store.put_allocated(record("L50", 50)))
        await asyncio.sleep(0.5)
        assert not late.done()  # retried, not failed, not dropped
        redis_server.start()  # same port, same append-only file
        await asyncio.wait_for(late, 15)
        held = await store.records("B")
        assert [r.local_id for r in held] == [f"L{i}" for i in range(51)]
        assert all(r.job_id == f"job-{r.index}" for r in held[:50])


async def test_redis_away_is_a_clear_error_and_the_next_write_catches_up(
    redis_server: RedisServer, namespace: str
) -> None:
    url = redis_server.url.replace("redis://", "redis://:hunter2-password@")
    async with RedisStore(redis_server.url, namespace=namespace, retry_for=0.6) as store:
        await store.put_allocated(record("L1"))
        redis_server.kill()
        store.put_status("L1", JobStatus.RUNNING)
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="unavailable") as caught:
            await store.put_allocated(record("L2", 1))
        assert time.monotonic() - started < 5
        assert isinstance(caught.value, JournalError)  # a create is then never sent
        redis_server.start()
        await store.put_allocated(record("L3", 2))  # the kept event goes along
        assert (found := await store.find("L1")) is not None
        assert found.status is JobStatus.RUNNING
        assert await store.find("L2") is None
    store = RedisStore(url, namespace=namespace)
    assert "hunter2" not in repr(store)
    redis_server.kill()
    with pytest.raises(StoreUnavailableError) as caught:
        await RedisStore(url, namespace=namespace, retry_for=0.3).open()
    assert "hunter2" not in str(caught.value) and "hunter2" not in repr(caught.value)
