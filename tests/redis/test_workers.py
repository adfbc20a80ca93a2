"""Distributed batches: worker processes on one Redis Stream, one of them killed with
``kill -9`` mid-run (`flux_async._worker`, `_worker_input`)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

redis_asyncio = pytest.importorskip("redis.asyncio")

from flux_async._batch_queue import batch_keys  # noqa: E402
from flux_async.testing import FakeProvider  # noqa: E402
from flux_async.workers import collect, enqueue  # noqa: E402

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")

API_KEY = "sk-test-workers-0123456789"
#: Prompts of the kill -9 run, as the issue asks: about 45 s on 2 shared cores with the fake
#: in the test's own process (1,000 took about 20 s).
PROMPTS = 5_000
#: How long a dead worker's entries wait before another worker claims them.
MIN_IDLE = 3.0

WORKER_SCRIPT = """
import asyncio, json, sys
from flux_async import ShortAPI, PollPolicy
from flux_async.workers import run_worker
opts = json.loads(sys.argv[1])
provider = ShortAPI(api_key=opts["key"], base_url=opts["fake"])
stats = asyncio.run(run_worker(
    opts["redis"], provider, name=opts["name"], concurrency=opts["concurrency"],
    download_to=opts["out"], min_idle=opts["min_idle"], exit_when_idle=opts["idle"],
    client_options={"poll": PollPolicy.fixed(opts["poll"], timeout=60)},
))
print(json.dumps({"finished": stats.finished, "created": stats.created,
                  "reattached": stats.reattached, "unknown": stats.unknown,
                  "claimed": stats.claimed}), flush=True)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A real redis-server on a free loopback port, no persistence, for this module."""
    assert REDIS_SERVER is not None
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="flux-redis-")
    server = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def spawn_worker(options: dict[str, object]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, json.dumps(options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_three_workers_one_killed_every_input_one_outcome(
    redis_url: str, tmp_path: Path
) -> None:
    """Three workers share a batch; one is killed with SIGKILL while it has jobs in flight.
    Its entries are claimed by the others: jobs it had created are re-attached by their
    provider id, never created again; every input gets exactly one outcome; the images of
    every succeeded input are on disk."""
    redis = redis_asyncio.Redis.from_url(redis_url)
    await redis.flushdb()
    async with FakeProvider(latency=(0.3, 0.8), seed=5, api_key=API_KEY) as fake:
        prompts = [f"a lighthouse, take {i}" for i in range(PROMPTS)]
        batch = await enqueue(redis_url, prompts)
        options = {
            "redis": redis_url,
            "fake": fake.url,
            "key": API_KEY,
            "concurrency": 48,
            "min_idle": MIN_IDLE,
            "idle": 2 * MIN_IDLE,
            "poll": 0.25,
            "out": str(tmp_path),
        }
        workers = [spawn_worker({**options, "name": f"worker-{i}"}) for i in range(3)]
        victim = workers[0]
        keys = batch_keys("flux", batch)

        async def victim_busy() -> bool:
            # The victim has accepted jobs in flight (recorded, outcome not yet written).
            records = await redis.hvals(keys["jobs"])
            return (
                sum(
                    1
                    for raw in records
                    if (r := json.loads(raw))["worker"] == "worker-0" and r["state"] == "accepted"
                )
                >= 10
            )

        deadline = time.monotonic() + 60
        while not (await redis.xlen(keys["outcomes"]) >= PROMPTS // 5 and await victim_busy()):
            assert time.monotonic() < deadline, "the victim never had jobs in flight"
            await asyncio.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.communicate()

        records = [record async for record in collect(redis_url, batch)]
        stats = []
        for worker in workers[1:]:
            out, err = await asyncio.to_thread(worker.communicate, timeout=60)
            assert worker.returncode == 0, err
            stats.append(json.loads(out.strip().splitlines()[-1]))

        # Exactly one outcome per input, in the stream itself (not only after collect's
        # de-duplication), and nothing left pending.
        raw = await redis.xrange(keys["outcomes"])
        indexes = collections.Counter(json.loads(fields[b"record"])["index"] for _, fields in raw)
        assert sorted(indexes) == list(range(PROMPTS))
        assert max(indexes.values()) == 1
        assert (await redis.xpending("flux:queue", "workers"))["pending"] == 0

        # At most one create per prompt, whoever sent it.
        assert max(fake.creates_per_prompt.values()) == 1
        assert set(fake.creates_per_prompt) <= set(prompts)

        # The victim's work was taken over: some jobs re-attached by provider id.
        recovered = [record for record in records if record["recovered"]]
        assert sum(s["reattached"] for s in stats) >= 1
        assert recovered
        assert all(record["worker"] != "worker-0" for record in recovered)

        by_status = collections.Counter(record["status"] for record in records)
        # Only an input whose create was on the wire at the kill may end unknown.
        assert by_status["succeeded"] + by_status["unknown"] == PROMPTS, by_status
        assert by_status["unknown"] <= options["concurrency"]  # type: ignore[operator]
        for record in records:
            if record["status"] == "succeeded":
                assert record["files"], record
                for file in record["files"]:
                    path = Path(file)
                    assert path.parent == tmp_path
                    assert path.read_bytes().startswith(b"\x89PNG")
                assert fake.jobs[record["job_id"]].prompt == prompts[record["index"]]
            else:
                assert record["recovered"]
                assert fake.creates_per_prompt[prompts[record["index"]]] <= 1
    await redis.aclose()


@pytest.mark.timeout(60)
async def test_the_readme_python_form(redis_url: str, tmp_path: Path) -> None:
    """README "A batch over several workers (Redis)": the Python calls as written there,
    from `flux_async.workers`, with only the provider and the idle wait made quick; and a
    journaled `generate_many` in Redis (`journal=RedisStore(...)`)."""
    from flux_async import FluxClient, PollPolicy, ShortAPI
    from flux_async.stores import RedisStore
    from flux_async.workers import collect, enqueue, run_worker

    redis = redis_asyncio.Redis.from_url(redis_url)
    await redis.flushdb()
    await redis.aclose()
    images = tmp_path / "images"
    async with FakeProvider(latency=(0.02, 0.1), seed=2, api_key=API_KEY) as fake:
        url = redis_url
        batch_id = await enqueue(url, ["a red fox", {"prompt": "a cat", "aspect_ratio": "16:9"}])
        stats = await run_worker(
            redis_url,
            ShortAPI(API_KEY, base_url=fake.url),
            download_to=images,
            exit_when_idle=0.5,
            client_options={"poll": PollPolicy.fixed(0.05, timeout=30)},
        )
        records = [record async for record in collect(redis_url, batch_id)]
        assert stats.finished == stats.created == 2
        assert sorted(record["index"] for record in records) == [0, 1]
        for record in records:
            assert record["status"] == "succeeded", record["error"]
            assert fake.jobs[record["job_id"]].prompt == ["a red fox", "a cat"][record["index"]]
            assert [Path(file).parent for file in record["files"]] == [images]
        cat = next(record for record in records if record["index"] == 1)
        assert fake.jobs[cat["job_id"]].params["aspect_ratio"] == "16:9"
        # Enqueuing the same batch again queues nothing (it is complete).
        assert await enqueue(redis_url, ["a red fox", "a cat"], batch_id=batch_id) == batch_id
        assert fake.creates_per_prompt == {"a red fox": 1, "a cat": 1}

        prompts = ["a lighthouse", "a harbour"]
        provider = ShortAPI(API_KEY, base_url=fake.url)
        for _ in range(2):  # the second run finds every input done in Redis: nothing sent
            async with (
                RedisStore(redis_url) as store,
                FluxClient(provider, poll=PollPolicy.fixed(0.05, timeout=30)) as client,
            ):
                outcomes = [o async for o in client.generate_many(prompts, journal=store)]
            assert [o.status for o in outcomes] == ["succeeded", "succeeded"]
        assert fake.creates_per_prompt["a lighthouse"] == fake.creates_per_prompt["a harbour"] == 1
