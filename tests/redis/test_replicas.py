"""Replicas sharing a `RedisStore`: a callback accepted by one replica resolves the job on
the replica that awaits it; a replica that restarts re-attaches its jobs; Redis holds no
secret. Real redis-server, FakeProvider over loopback."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

pytest.importorskip("redis.asyncio")

import redis.asyncio as aioredis
from conftest import RedisServer
from support import wait_until

from flux_async import FluxClient, JobStatus, PiAPI, PollPolicy, ShortAPI, Webhooks
from flux_async.stores import RedisStore, StoreUnavailableError
from flux_async.testing import FakeProvider

API_KEY = "sk-flux-replica-test-3b6f0c2d9e"
POLL = PollPolicy(wait_first=0.05, wait_initial=0.05, wait_max=0.2, timeout=30)
FACTORIES: dict[str, Callable[[str], Any]] = {
    "shortapi": lambda url: ShortAPI(API_KEY, base_url=url),
    "piapi": lambda url: PiAPI(API_KEY, base_url=url),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=sorted(FACTORIES))
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def redis_dump(url: str) -> bytes:
    """Every key and every value in Redis, whatever its type, as one blob to search."""
    raw = aioredis.Redis.from_url(url)
    parts: list[bytes] = []
    try:
        async for key in raw.scan_iter("*"):
            parts.append(key)
            kind = (await raw.type(key)).decode()
            if kind == "string":
                parts.append(await raw.get(key) or b"")
            elif kind == "hash":
                for field, value in (await raw.hgetall(key)).items():
                    parts += [field, value]
            elif kind == "set":
                parts += list(await raw.smembers(key))
            elif kind == "zset":
                parts += list(await raw.zrange(key, 0, -1))
            elif kind == "list":
                parts += list(await raw.lrange(key, 0, -1))
            elif kind == "stream":
                for entry_id, fields in await raw.xrange(key):
                    parts.append(entry_id)
                    for field, value in fields.items():
                        parts += [field, value]
            else:
                raise AssertionError(f"unexpected key type {kind} for {key!r}")
    finally:
        await raw.aclose()
    return b"\n".join(parts)


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider(latency=(0.1, 0.4), seed=3, api_key=API_KEY) as server:
        yield server


async def test_a_callback_on_another_replica_resolves_the_job_where_it_is_awaited(
    redis_server: RedisServer, namespace: str, fake: FakeProvider, provider: str
) -> None:
    port = free_port()
    b_url = f"http://127.0.0.1:{port}/flux-webhooks"
    store_b = RedisStore(redis_server.url, namespace=namespace, replica="b")
    store_a = RedisStore(redis_server.url, namespace=namespace, replica="a")
    async with store_a, store_b:
        replica_b = FluxClient(
            FACTORIES[provider](fake.url),
            poll=POLL,
            store=store_b,
            webhooks=Webhooks(port=port, grace=60),
        )
        # A's callbacks go to B's receiver; A's safety-net poll is a minute away.
        replica_a = FluxClient(
            FACTORIES[provider](fake.url),
            poll=POLL,
            store=store_a,
            webhooks=Webhooks(public_url=b_url, serve=False, grace=60),
        )
        async with replica_b, replica_a:
            jobs = [await replica_a.submit(f"a red fox, take {i}") for i in range(12)]
            generations = await asyncio.wait_for(
                asyncio.gather(*(job.result() for job in jobs)), 20
            )
            assert [g.job_id for g in generations] == [job.id for job in jobs]
            # B counts a forward when its Lua call's reply reaches it, which may be after A
            # read the forwarded entry and resolved the job.
            await asyncio.wait_for(wait_until(lambda: replica_b._parts.replica.forwarded >= 12), 10)
            assert replica_a._parts.replica.delivered >= 12
            assert replica_b._parts.replica.delivered == 0
            # Each job was verified with one query (callbacks are hints by default): no
            # safety-net polling happened.
            assert all(fake.polls_per_job[job.id] <= 2 for job in jobs)
        for job in jobs:
            found = await store_a.find_job(provider, job.id or "")
            assert found is not None and found.status is JobStatus.SUCCEEDED
        assert await store_a.owned() == []
    assert set(fake.creates_per_prompt.values()) == {1}
    assert sum(fake.creates_per_prompt.values()) == 12
    # Nothing secret in Redis: the API key, the callback tokens, the PiAPI secrets.
    blob = await redis_dump(redis_server.url)
    assert API_KEY.encode() not in blob
    secrets_sent = []
    for job in fake.jobs.values():
        assert job.callback_url is not None
        token = job.callback_url.rstrip("/").rsplit("/", 1)[1]
        assert re.fullmatch(r"[A-Za-z0-9_\-]{43}", token)
        secrets_sent.append(token)
        if provider == "piapi":
            assert job.callback_secret
            secrets_sent.append(job.callback_secret)
    assert len(secrets_sent) == 12 * (2 if provider == "piapi" else 1)
    for secret in secrets_sent:
        assert secret.encode() not in blob
    assert b"flux-webhooks" not in blob  # no callback address either


async def test_a_forged_callback_on_another_replica_is_refused(
    redis_server: RedisServer, namespace: str, fake: FakeProvider
) -> None:
    store_a = RedisStore(redis_server.url, namespace=namespace, replica="a")
    store_b = RedisStore(redis_server.url, namespace=namespace, replica="b")
    async with store_a, store_b:
        replica_a = FluxClient(
            PiAPI(API_KEY, base_url=fake.url),
            poll=POLL,
            store=store_a,
            webhooks=Webhooks(public_url="http://127.0.0.1:9/x", serve=False, grace=60),
        )
        replica_b = FluxClient(
            PiAPI(API_KEY, base_url=fake.url),
            poll=POLL,
            store=store_b,
            webhooks=Webhooks(serve=False, public_url="http://x/y"),
        )
        async with replica_a, replica_b:
            job = await replica_a.submit("a red fox")
            fake_job = fake.jobs[job.id or ""]
            assert fake_job.callback_url is not None
            path = "/y" + fake_job.callback_url.split("/x", 1)[1]
            _, local_id, token = path.rsplit("/", 3)[1:]
            body = json.dumps(
                {
                    "timestamp": 1,
                    "data": {
                        "task_id": job.id,
                        "status": "completed",
                        "output": {"image_url": "https://evil.example/x.png"},
                    },
                }
            ).encode()
            good = {"x-webhook-secret": fake_job.callback_secret or ""}
            for forged in (path.replace(token, "A" * 43), path.replace(local_id, "0" * 16)):
                assert (await replica_b.handle_webhook("POST", forged, good, body)).status == 404
            for headers in ({}, {"x-webhook-secret": "wrong"}):
                answer = await replica_b.handle_webhook("POST", path, headers, body)
                assert answer.status == 401
            assert replica_b._parts.replica.forwarded == 0
            raw = aioredis.Redis.from_url(redis_server.url)
            assert await raw.xlen(f"{namespace}:inbox:a") == 0
            await raw.aclose()
            assert not job.done()
            # The genuine callback, once the job is done, goes through B and resolves on A.
            await asyncio.sleep(0.6)
            assert (await replica_b.handle_webhook("POST", path, good, body)).status == 200
            generation = await asyncio.wait_for(job.result(), 10)
            assert generation.job_id == job.id
            # A hint, verified by the owner with the provider: not the payload's image.
            assert "evil.example" not in generation.images[0].url
            assert replica_b._parts.replica.forwarded == 1
            # Delivered, then acknowledged and deleted: an inbox does not grow with its jobs.
            inbox = f"{namespace}:inbox:a"
            raw = aioredis.Redis.from_url(redis_server.url)
            try:
                for _ in range(200):
                    if not (await raw.xpending(inbox, "owner"))["pending"]:
                        break
                    await asyncio.sleep(0.01)
                assert (await raw.xpending(inbox, "owner"))["pending"] == 0
                assert (await raw.xinfo_stream(inbox))["entries-added"] == 1
                assert await raw.xlen(inbox) == 0
            finally:
                await raw.aclose()


async def test_a_restarted_replica_reattaches_the_jobs_it_owned(
    redis_server: RedisServer, namespace: str
) -> None:
    async with FakeProvider(latency=(1.0, 1.5), seed=4, api_key=API_KEY) as fake:
        async with RedisStore(redis_server.url, namespace=namespace, replica="web-1") as store:
            async with FluxClient(
                ShortAPI(API_KEY, base_url=fake.url), poll=POLL, store=store
            ) as client:
                jobs = [await client.submit(f"a lighthouse, take {i}") for i in range(6)]
                ids = sorted(job.id or "" for job in jobs)
            # Closed with its jobs running: abandoned, still open in Redis.
            assert len(await store.owned()) == 6
        async with RedisStore(redis_server.url, namespace=namespace, replica="web-1") as store:
            async with FluxClient(
                ShortAPI(API_KEY, base_url=fake.url), poll=POLL, store=store
            ) as client:
                assert len(client._parts.replica.reattached) == 6
                assert client.outstanding == 6
                again = [await client.attach(job_id) for job_id in ids]
                generations = await asyncio.wait_for(
                    asyncio.gather(*(job.result() for job in again)), 20
                )
                assert sorted(g.job_id for g in generations) == ids
            assert await store.owned() == []
            for job_id in ids:
                found = await store.find_job("shortapi", job_id)
                assert found is not None and found.status is JobStatus.SUCCEEDED
        assert set(fake.creates_per_prompt.values()) == {1}
        assert len(fake.creates_per_prompt) == 6


async def test_no_create_is_sent_when_redis_cannot_record_it(
    redis_server: RedisServer, namespace: str, fake: FakeProvider
) -> None:
    async with RedisStore(redis_server.url, namespace=namespace, retry_for=0.5) as store:
        async with FluxClient(
            ShortAPI(API_KEY, base_url=fake.url), poll=POLL, store=store
        ) as client:
            await client.generate("first")
            redis_server.kill()
            with pytest.raises(StoreUnavailableError, match="unavailable"):
                await client.generate("second")
            assert "second" not in fake.creates_per_prompt  # never sent: nothing to pay
            assert fake.create_attempts == 1
            redis_server.start()
            third = await client.generate("third")
            assert (found := await store.find_job("shortapi", third.job_id)) is not None
            assert found.status is JobStatus.SUCCEEDED
