"""Check the fake's slowness and limits: rate_limit, create_delay and latency distributions."""

from __future__ import annotations

import asyncio
import math
import os
import random
import re
import signal
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from flux_async.testing import FakeProvider, Faults, Latency
from flux_async.testing.__main__ import build_parser, faults_from, latency_from

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
KEY = "test-key"
SA_CREATE = "/api/v1/job/create"
SA_BODY: dict[str, Any] = {
    "model": "shortapi/flux-1.0/text-to-image",
    "args": {"prompt": "a red fox", "aspect_ratio": "1:1"},
}


def bearer(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def sa_create(
    http: aiohttp.ClientSession, fake: FakeProvider, *, key: str = KEY, prompt: str = "a fox"
) -> tuple[int, dict[str, str], Any]:
    body = {**SA_BODY, "args": {**SA_BODY["args"], "prompt": prompt}}
    async with http.post(f"{fake.url}{SA_CREATE}", json=body, headers=bearer(key)) as r:
        return r.status, dict(r.headers), await r.json()


# -- rate_limit ----------------------------------------------------------------------------


async def test_rate_limit_refuses_a_burst_beyond_the_bucket(http: aiohttp.ClientSession) -> None:
    rate = 10
    async with FakeProvider(latency=0, faults=Faults(rate_limit=rate)) as fake:
        answers = await asyncio.gather(
            *(sa_create(http, fake, prompt=f"p{i}") for i in range(3 * rate))
        )
        accepted = [a for a in answers if a[0] == 200]
        refused = [a for a in answers if a[0] == 429]
        assert len(accepted) + len(refused) == 3 * rate
        assert refused, "a burst of 3N requests must meet the limit"
        # The bucket holds N (one second's worth) and refills at N/s while the burst runs.
        assert 1 <= len(accepted) <= rate + rate
        assert len(fake.jobs) == len(accepted)  # a refused create makes no job
        for _, headers, body in refused:
            assert int(headers["Retry-After"]) >= 1
            assert body["code"] == 429  # the provider's own envelope
        assert fake.rejected_429 == fake.rate_limited == len(refused)
        assert fake.create_attempts == 3 * rate
        async with http.get(f"{fake.url}/_fake/stats?detail=0") as r:
            stats = await r.json()
        assert stats["rejected_429"] == stats["rate_limited"] == len(refused)


async def test_rate_limit_is_per_key_and_covers_queries(http: aiohttp.ClientSession) -> None:
    faults = Faults(rate_limit=1, rate_limit_burst=2)
    async with FakeProvider(latency=0, faults=faults) as fake:
        first = await sa_create(http, fake, prompt="one")
        assert first[0] == 200
        job_id = first[2]["data"]["job_id"]
        query = f"{fake.url}/api/v1/job/query"
        async with http.get(query, params={"id": job_id}, headers=bearer()) as r:
            assert r.status == 200  # the bucket's second token
        async with http.get(query, params={"id": job_id}, headers=bearer()) as r:
            assert r.status == 429  # queries count against the same account
        assert (await sa_create(http, fake, prompt="two"))[0] == 429
        # Another key is another account with a full bucket.
        assert (await sa_create(http, fake, key="other-key", prompt="three"))[0] == 200
        # Image downloads carry no key and are not limited.
        async with http.get(f"{fake.url}/files/{job_id}-0.png") as r:
            assert r.status == 200
        assert fake.rate_limited == 2


async def test_rate_limit_applies_to_piapi_and_aimlapi(http: aiohttp.ClientSession) -> None:
    faults = Faults(rate_limit=1, rate_limit_burst=1)
    async with FakeProvider(latency=0, faults=faults) as fake:
        body = {"model": "Qubico/flux1-dev", "task_type": "txt2img", "input": {"prompt": "x"}}
        statuses = []
        for _ in range(2):
            async with http.post(
                f"{fake.url}/api/v1/task", json=body, headers={"X-API-Key": "pi-key"}
            ) as r:
                statuses.append(r.status)
        aiml = {"model": "flux/schnell", "prompt": "x"}
        for _ in range(2):
            async with http.post(
                f"{fake.url}/v1/images/generations", json=aiml, headers=bearer("aiml-key")
            ) as r:
                statuses.append(r.status)
        # One bucket per key: each provider's key gets one request through, then 429.
        assert statuses[:2] == [200, 429]
        assert statuses[2] in (200, 201) and statuses[3] == 429  # §2.3: 200 or 201
        assert fake.rate_limited == 2


def test_rate_limit_options_are_checked() -> None:
    with pytest.raises(ValueError, match="rate_limit"):
        Faults(rate_limit=-1)
    with pytest.raises(ValueError, match="rate_limit_burst"):
        Faults(rate_limit=5, rate_limit_burst=0.5)


# -- create_delay ----------------------------------------------------------------------------


async def test_create_delay_makes_the_job_before_answering(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(latency=0.01, faults=Faults(create_delay=30)) as fake:
        task = asyncio.ensure_future(sa_create(http, fake))
        for _ in range(500):
            if fake.jobs:
                break
            await anyio.sleep(0.01)
        assert len(fake.jobs) == 1
        assert not task.done()  # the answer is still held...
        assert fake.held_creates == 1
        assert fake.creates_per_prompt["a fox"] == 1  # ...but the job is made and counted
        async with http.get(f"{fake.url}/_fake/stats?detail=0") as r:
            assert (await r.json())["held_creates"] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_create_delay_answer_names_the_job(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(latency=0, faults=Faults(create_delay=(0.05, 0.1))) as fake:
        status, _, body = await sa_create(http, fake)
        assert status == 200
        (job_id,) = fake.jobs
        assert body["data"]["job_id"] == job_id
        assert fake.held_creates == 0


async def test_abandoned_held_create_keeps_its_job(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(latency=0, faults=Faults(create_delay=30)) as fake:
        timeout = aiohttp.ClientTimeout(total=0.2)
        body = SA_BODY
        with pytest.raises(asyncio.TimeoutError):
            async with http.post(
                f"{fake.url}{SA_CREATE}", json=body, headers=bearer(), timeout=timeout
            ) as r:
                await r.read()
        for _ in range(500):
            if fake.abandoned_responses:
                break
            await anyio.sleep(0.01)
        assert fake.abandoned_responses == 1
        assert len(fake.jobs) == 1 and fake.held_creates == 0


async def test_create_delay_is_cut_short_by_close(http: aiohttp.ClientSession) -> None:
    fake = FakeProvider(latency=0, faults=Faults(create_delay=60))
    await fake.start()
    task = asyncio.ensure_future(sa_create(http, fake))
    for _ in range(500):
        if fake.held_creates:
            break
        await anyio.sleep(0.01)
    with anyio.fail_after(5):
        await fake.aclose()
        with pytest.raises(aiohttp.ClientError):
            await task


# -- latency distributions --------------------------------------------------------------------


def draws(latency: Latency, count: int, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [latency.draw(rng, index) for index in range(count)]


def test_latency_distributions_are_seeded_and_shaped() -> None:
    normal = Latency.normal(1.0, 0.1)
    assert draws(normal, 50) == draws(normal, 50)
    assert draws(normal, 50) != draws(normal, 50, seed=8)
    assert abs(statistics.mean(draws(normal, 2000)) - 1.0) < 0.02
    lognormal = draws(Latency.lognormal(0.5, 1.0), 4000)
    assert abs(statistics.median(lognormal) - 0.5) < 0.05
    assert max(lognormal) > 5 * 0.5  # a long tail
    assert min(draws(Latency.normal(0.01, 1.0), 500)) == 0.0  # negative draws become 0
    shifted = draws(Latency.shift(0.1, (5, 6), after_jobs=3), 6)
    assert shifted[:3] == [0.1, 0.1, 0.1] and all(5 <= x <= 6 for x in shifted[3:])
    assert draws(Latency.custom(lambda rng: 0.25), 2) == [0.25, 0.25]


def test_latency_rejects_bad_parameters() -> None:
    builders: list[Callable[[], Latency]] = [
        lambda: Latency.fixed(-1),
        lambda: Latency.uniform(2, 1),
        lambda: Latency.normal(1, -0.1),
        lambda: Latency.lognormal(0, 1),
        lambda: Latency.shift(1, 2, after_jobs=-1),
    ]
    for build in builders:
        with pytest.raises(ValueError):
            build()
    with pytest.raises(ValueError):
        FakeProvider(latency=(1.0, 2.0, 3.0))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        FakeProvider(latency="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Faults(create_delay=(2, 1))


async def test_fake_slows_down_after_n_jobs(http: aiohttp.ClientSession) -> None:
    latency = Latency.shift(Latency.normal(0.05, 0.01), Latency.lognormal(10, 0.5), after_jobs=3)
    async with FakeProvider(latency=latency, seed=4) as fake:
        for index in range(5):
            assert (await sa_create(http, fake, prompt=f"p{index}"))[0] == 200
        taken = [(job.ready_at or math.inf) - job.created_at for job in fake.jobs.values()]
        assert all(x < 1 for x in taken[:3]) and all(x > 1 for x in taken[3:])
    async with FakeProvider(latency=latency, seed=4) as again:
        for index in range(5):
            await sa_create(http, again, prompt=f"p{index}")
        assert [(j.ready_at or 0) - j.created_at for j in again.jobs.values()] == pytest.approx(
            taken, abs=1e-3
        )


# -- command line ----------------------------------------------------------------------------


def test_command_line_builds_the_options() -> None:
    args = build_parser().parse_args(
        [
            "--latency",
            "lognormal:0.3,0.8",
            "--latency-after",
            "500=normal:2,0.5",
            "--create-delay",
            "0.2,0.5",
            "--rate-limit",
            "50",
            "--rate-limit-burst",
            "10",
            "--image-max-side",
            "64",
        ]
    )
    latency = latency_from(args)
    assert latency == Latency.shift(
        Latency.lognormal(0.3, 0.8), Latency.normal(2, 0.5), after_jobs=500
    )
    faults = faults_from(args)
    assert faults.create_delay == Latency.uniform(0.2, 0.5)
    assert (faults.rate_limit, faults.rate_limit_burst) == (50, 10)
    assert args.image_max_side == 64
    defaults = build_parser().parse_args([])
    assert latency_from(defaults) == Latency.uniform(0.02, 0.08)  # fast demos by default
    assert faults_from(defaults).rate_limit == 0


@pytest.mark.parametrize(
    "argv", [["--latency", "gamma:1,2"], ["--latency-after", "x=1"], ["--rate-limit", "-1"]]
)
def test_command_line_rejects_bad_options(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    assert "error" in capsys.readouterr().err


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--latency",
        "--latency-after",
        "--create-delay",
        "--rate-limit",
        "--rate-limit-burst",
        "--image-max-side",
        "lognormal:MEDIAN,SIGMA",
    ):
        assert flag in text


@pytest.mark.slow
@pytest.mark.timeout(30)
async def test_standalone_server_rate_limit(http: aiohttp.ClientSession) -> None:
    command = [
        sys.executable,
        "-m",
        "flux_async.testing",
        "--latency",
        "normal:0.01,0.002",
        "--rate-limit",
        "0.5",
        "--rate-limit-burst",
        "2",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    async with await anyio.open_process(command, env=env) as process:
        assert process.stdout is not None
        with anyio.fail_after(20):
            first_line = b""
            async for chunk in process.stdout:
                first_line += chunk
                if b"\n" in first_line:
                    break
        url = first_line.decode().splitlines()[0]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        statuses = []
        for _ in range(4):
            async with http.post(f"{url}{SA_CREATE}", json=SA_BODY, headers=bearer()) as r:
                statuses.append(r.status)
        assert statuses == [200, 200, 429, 429]
        async with http.get(f"{url}/_fake/stats?detail=0") as r:
            stats = await r.json()
        assert stats["rejected_429"] == stats["rate_limited"] == 2
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            assert await process.wait() == 0
