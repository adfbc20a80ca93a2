"""Scale-out on a real Redis, with real processes: two replicas in two processes (jobs
submitted on A, callbacks sent to B, all resolved on A), and a batch that outlives a
Redis restart."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys

import pytest

pytest.importorskip("redis.asyncio")

from conftest import RedisServer

from flux_async import FluxClient, JobStatus, PollPolicy, ShortAPI, Webhooks
from flux_async.stores import RedisStore
from flux_async.testing import FakeProvider

API_KEY = "sk-flux-scale-out-5e1d7a"
JOBS = 40

REPLICA_A = """
import asyncio, json, sys
from flux_async import FluxClient, PollPolicy, ShortAPI, Webhooks
from flux_async.stores import RedisStore

opts = json.loads(sys.argv[1])

async def main():
    store = RedisStore(opts["redis"], namespace=opts["ns"], replica="replica-a")
    async with store:
        client = FluxClient(
            ShortAPI(opts["key"], base_url=opts["fake"]), store=store,
            # Callbacks go to replica B; the safety-net poll is a minute away.
            webhooks=Webhooks(public_url=opts["b"], serve=False, grace=60),
            poll=PollPolicy(wait_first=0.05, wait_initial=0.05, wait_max=0.2, timeout=60),
        )
        async with client:
            jobs = [await client.submit(f"a harbour at dawn, take {i}")
                    for i in range(opts["jobs"])]
            generations = await asyncio.wait_for(
                asyncio.gather(*(job.result() for job in jobs)), 25)
            print(json.dumps({
                "submitted": [job.id for job in jobs],
                "resolved": [g.job_id for g in generations],
                "images": [len(g.images) for g in generations],
                "delivered": client._parts.replica.delivered,
            }), flush=True)

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_two_replicas_in_two_processes(redis_server: RedisServer, namespace: str) -> None:
    port = free_port()
    b_url = f"http://127.0.0.1:{port}/flux-webhooks"
    async with FakeProvider(latency=(0.2, 0.6), seed=8, api_key=API_KEY) as fake:
        store_b = RedisStore(redis_server.url, namespace=namespace, replica="replica-b")
        async with (
            store_b,
            FluxClient(
                ShortAPI(API_KEY, base_url=fake.url),
                store=store_b,
                webhooks=Webhooks(port=port, grace=60),
            ) as replica_b,
        ):
            options = {
                "redis": redis_server.url,
                "ns": namespace,
                "key": API_KEY,
                "fake": fake.url,
                "b": b_url,
                "jobs": JOBS,
            }
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                REPLICA_A,
                json.dumps(options),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONWARNINGS": "error"},
            )
            out, err = await asyncio.wait_for(child.communicate(), 45)
            assert child.returncode == 0, err.decode()[-3000:]
            report = json.loads(out.decode().strip().splitlines()[-1])
            assert replica_b._parts.replica.forwarded >= JOBS
            assert replica_b.outstanding == 0  # B tracked none of them
    assert len(report["submitted"]) == JOBS
    assert report["resolved"] == report["submitted"]
    assert all(count >= 1 for count in report["images"])
    assert report["delivered"] >= JOBS
    # Resolved by the forwarded callbacks (one verifying query each), not by polling.
    assert all(fake.polls_per_job[job_id] <= 2 for job_id in report["submitted"])
    assert len(fake.creates_per_prompt) == JOBS
    assert set(fake.creates_per_prompt.values()) == {1}
    async with RedisStore(redis_server.url, namespace=namespace) as store:
        for job_id in report["submitted"]:
            found = await store.find_job("shortapi", job_id)
            assert found is not None and found.status is JobStatus.SUCCEEDED
        assert await store.owned("replica-a") == []


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_batch_outlives_a_redis_restart(redis_server: RedisServer, namespace: str) -> None:
    prompts = [f"a field of poppies, take {i}" for i in range(150)]
    async with FakeProvider(latency=(0.2, 0.6), seed=9, api_key=API_KEY) as fake:
        store = RedisStore(redis_server.url, namespace=namespace, retry_for=30)
        async with (
            store,
            FluxClient(
                ShortAPI(API_KEY, base_url=fake.url),
                poll=PollPolicy(wait_first=0.1, wait_initial=0.05, wait_max=0.2, timeout=60),
            ) as client,
        ):
            outcomes = []
            restarted = asyncio.Event()
            at_kill: list[int] = []
            twenty_done = asyncio.Event()

            async def restart_redis() -> None:
                await twenty_done.wait()
                at_kill.append(len(outcomes))
                redis_server.kill()  # SIGKILL, mid-batch: jobs in flight, creates queued
                await asyncio.sleep(1.0)
                await asyncio.to_thread(redis_server.start)
                restarted.set()

            restarter = asyncio.create_task(restart_redis())
            async for outcome in client.generate_many(prompts, journal=store, concurrency=30):
                outcomes.append(outcome)
                if len(outcomes) == 20:
                    twenty_done.set()
            await restarter
            assert restarted.is_set()
            assert at_kill[0] < len(prompts) - 30  # killed with most of the batch to go
            batches = await store.batches()
            assert len(batches) == 1
            records = await store.records(batches[0])
        assert sorted(o.index for o in outcomes) == list(range(len(prompts)))
        assert {o.status for o in outcomes} == {"succeeded"}, [
            (o.index, o.status, o.error) for o in outcomes if o.status != "succeeded"
        ]
        assert len(fake.creates_per_prompt) == len(prompts)
        assert set(fake.creates_per_prompt.values()) == {1}
        # Nothing lost in Redis either: one record per input, each with its outcome.
        assert [r.index for r in records] == list(range(len(prompts)))
        assert {r.status for r in records} == {JobStatus.SUCCEEDED}
        assert all(r.job_id is not None for r in records)
