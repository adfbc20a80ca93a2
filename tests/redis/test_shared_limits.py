"""Shared limits in a real Redis: GCRA turns, the 429 pause and job leases, across clients
and across worker processes (`flux_async.stores.redis_limits`)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator

import pytest

redis_asyncio = pytest.importorskip("redis.asyncio")

from flux_async import ShortAPI  # noqa: E402
from flux_async.stores.redis_limits import RedisLimiter, SharedLimits, account_id  # noqa: E402
from flux_async.testing import FakeProvider, Faults  # noqa: E402
from flux_async.workers import collect, enqueue  # noqa: E402

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")

API_KEY = "sk-test-limits-0123456789"


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


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[object]:
    client = redis_asyncio.Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


def _provider() -> ShortAPI:
    return ShortAPI(api_key=API_KEY, base_url="http://127.0.0.1:9")


async def test_creates_of_several_clients_share_one_rate(redis_url: str, redis: object) -> None:
    """Four limiters on four connections (as four processes would be) get 41 turns of a
    20/s rate no faster than 20/s together, and evenly: the k-th turn never comes before
    k/20 s (a turn seen late, on a loaded machine, only makes this easier to meet; a burst
    ahead of the pace breaks it)."""
    limits = SharedLimits(creates_per_second=20)
    clients = [redis_asyncio.Redis.from_url(redis_url) for _ in range(4)]
    limiters = [RedisLimiter(client, _provider(), limits) for client in clients]
    times: list[float] = []

    async def take(limiter: RedisLimiter, turns: int) -> None:
        for _ in range(turns):
            await limiter.acquire_create()
            times.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(take(limiter, 10 + (i == 0)) for i, limiter in enumerate(limiters)))
    elapsed = time.monotonic() - started
    for client in clients:
        await client.aclose()
    assert elapsed >= 40 / 20 * 0.97
    times.sort()
    early = [k for k, seen in enumerate(times) if seen - started < k / 20 * 0.97 - 0.005]
    assert early == []  # sleeps may end early by a tick, not by a turn


async def test_a_429_pause_is_seen_by_every_client(redis_url: str, redis: object) -> None:
    other = redis_asyncio.Redis.from_url(redis_url)
    a = RedisLimiter(redis, _provider(), SharedLimits())  # type: ignore[arg-type]
    b = RedisLimiter(other, _provider(), SharedLimits())
    assert await a.pause_shared(0.6) == pytest.approx(0.6, abs=0.01)
    assert await b.pause_shared(0.1) > 0.5  # a shorter pause never shortens a longer one
    started = time.monotonic()
    await b.acquire_create()
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    await b.acquire_poll()  # polls do not wait for the create pause
    assert time.monotonic() - started < 0.1
    assert await b.pause_left() == 0
    await other.aclose()


async def test_job_leases_cap_jobs_in_flight_and_expire(redis: object) -> None:
    limits = SharedLimits(max_jobs_in_flight=2, lease_ttl=0.4)
    limiter = RedisLimiter(redis, _provider(), limits)  # type: ignore[arg-type]
    first = await limiter.lease()
    second = await limiter.lease()
    assert not await limiter.try_lease("third")
    assert await limiter.in_flight() == 2
    await limiter.release(first)
    assert await limiter.try_lease("third")
    # "second" is never renewed (its worker died): its slot comes back after lease_ttl.
    await asyncio.sleep(0.25)
    assert await limiter.renew(["third"]) == 1
    started = time.monotonic()
    fourth = await limiter.lease()
    assert 0.05 < time.monotonic() - started < 0.6
    assert fourth not in (second, "third")
    assert await limiter.in_flight() == 2


async def test_keys_name_the_account_by_digest_only(redis: object) -> None:
    limiter = RedisLimiter(
        redis,
        _provider(),
        SharedLimits(requests_per_second=5, max_jobs_in_flight=1),  # type: ignore[arg-type]
    )
    await limiter.acquire_create()
    await limiter.pause_shared(1)
    await limiter.lease()
    names = [key.decode() for key in await redis.keys("*")]  # type: ignore[attr-defined]
    assert len(names) == 3
    assert all(account_id(_provider()) in name for name in names)
    dump = json.dumps(names)
    for key in names:
        dump += repr(await redis.dump(key))  # type: ignore[attr-defined]
    assert API_KEY not in dump
    assert account_id(_provider()) != account_id(ShortAPI(api_key="another-key"))


async def test_middleware_shares_a_429_pause(redis: object) -> None:
    """A 429 answered to one session pauses the creates of a session in another client."""
    import aiohttp

    async with FakeProvider(faults=Faults(rate_limit_first_creates=1, retry_after=1)) as fake:
        provider = ShortAPI(api_key=API_KEY, base_url=fake.url)
        a = RedisLimiter(redis, provider, SharedLimits())  # type: ignore[arg-type]
        b = RedisLimiter(redis, provider, SharedLimits())  # type: ignore[arg-type]
        request = provider.build_create(
            provider.prepare(_request(provider, "x")), callback_url=None, webhook_secret=None
        )
        async with aiohttp.ClientSession(middlewares=(a.middleware(),)) as session:
            async with session.post(
                request.url, data=request.body, headers=request.headers
            ) as response:
                assert response.status == 429
        assert await b.pause_left() > 0.8
        started = time.monotonic()
        async with aiohttp.ClientSession(middlewares=(b.middleware(),)) as session:
            async with session.post(
                request.url, data=request.body, headers=request.headers
            ) as response:
                assert response.status == 200
        assert time.monotonic() - started > 0.8


def _request(provider: ShortAPI, prompt: str) -> object:
    from flux_async._models import build_request

    return build_request(provider.name, prompt, {})


# -- four worker processes against a hidden rate limit -------------------------------------

#: The fake's hidden limit (requests per second per API key, all routes) and the shared
#: limit the workers are given: the same number.
RATE = 40
#: Prompts of the four-worker run: 160 jobs of about 0.3 s need at least 320 requests, about
#: 8 s at 40/s; four unshared workers of concurrency 16 would send well over 100/s.
PROMPTS = 160

WORKER_SCRIPT = """
import asyncio, json, sys
from flux_async import ShortAPI, PollPolicy
from flux_async.workers import run_worker
from flux_async.stores.redis_limits import SharedLimits
opts = json.loads(sys.argv[1])
provider = ShortAPI(api_key=opts["key"], base_url=opts["fake"])
limits = SharedLimits(**opts["limits"]) if opts.get("limits") else None
stats = asyncio.run(run_worker(
    opts["redis"], provider, name=opts["name"], concurrency=opts["concurrency"],
    download_to=opts.get("out"), shared_limits=limits, min_idle=opts["min_idle"],
    exit_when_idle=opts["idle"],
    client_options={"poll": PollPolicy.fixed(opts["poll"], timeout=60)},
))
print(json.dumps({"finished": stats.finished, "reattached": stats.reattached,
                  "unknown": stats.unknown, "claimed": stats.claimed}), flush=True)
"""


def spawn_worker(options: dict[str, object]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, json.dumps(options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_four_workers_stay_within_the_accounts_rate(redis_url: str, redis: object) -> None:
    """Four worker processes share one 40 requests/s limit: the fake, which answers 429
    beyond 40/s, sees at most ~40/s in every 2-second window, and refuses (almost) nothing."""
    async with FakeProvider(
        latency=(0.2, 0.4), seed=3, faults=Faults(rate_limit=RATE), api_key=API_KEY
    ) as fake:
        batch = await enqueue(redis_url, [f"prompt {i}" for i in range(PROMPTS)])
        options = {
            "redis": redis_url,
            "fake": fake.url,
            "key": API_KEY,
            "concurrency": 16,
            "min_idle": 10.0,
            "idle": 1.0,
            "poll": 0.2,
            "limits": {"requests_per_second": RATE},
        }
        workers = [spawn_worker({**options, "name": f"w{i}"}) for i in range(4)]
        samples: list[tuple[float, int]] = []

        def keyed() -> int:
            return fake.requests["shortapi.create"] + fake.requests["shortapi.query"]

        async def sample() -> None:
            while True:
                samples.append((time.monotonic(), keyed()))
                await asyncio.sleep(0.25)

        sampler = asyncio.get_running_loop().create_task(sample())
        records = [record async for record in collect(redis_url, batch)]
        sampler.cancel()
        samples.append((time.monotonic(), keyed()))
        for worker in workers:
            _out, err = await asyncio.to_thread(worker.communicate, timeout=30)
            assert worker.returncode == 0, err
        assert sorted(record["index"] for record in records) == list(range(PROMPTS))
        assert all(record["status"] == "succeeded" for record in records)
        assert max(fake.creates_per_prompt.values()) == 1
        rates = []
        for i, (start, count) in enumerate(samples):
            for end, later in samples[i + 1 :]:
                if end - start >= 2.0:
                    rates.append((later - count) / (end - start))
                    break
        assert rates, samples
        # Sampled by this process's event loop, which also runs the fake: on a loaded
        # machine a late sample shortens a window. Unshared limits would be 4x the rate;
        # the fake's own count of refusals below is the exact check.
        assert max(rates) <= RATE * 1.25, rates
        # The workers were pressing: they used most of the allowance.
        total = samples[-1][1] / (samples[-1][0] - samples[0][0])
        assert max(rates) >= RATE * 0.6, (rates, total)
        assert fake.rate_limited <= 2
