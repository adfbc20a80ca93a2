"""The same user code against all three providers, over loopback against FakeProvider."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from flux_async import (
    AIMLAPI,
    FluxClient,
    JobCancelledError,
    JobStatus,
    JobTimeoutError,
    JobUnknownError,
    PiAPI,
    PollPolicy,
    Provider,
    RetryPolicy,
    ShortAPI,
    ValidationError,
)
from flux_async.testing import FakeProvider, Faults

pytestmark = pytest.mark.anyio

PROVIDERS: dict[str, Callable[[str], Provider]] = {
    "shortapi": lambda url: ShortAPI("test-key", base_url=url),
    "piapi": lambda url: PiAPI("test-key", base_url=url),
    "aimlapi": lambda url: AIMLAPI("test-key", base_url=url),
}
FAST_POLL = PollPolicy(wait_first=0.05, wait_initial=0.02, wait_max=0.1, timeout=10)
FAST_RETRY = RetryPolicy(attempts=40, wait_initial=0.01, wait_max=0.05)


@pytest.fixture(params=sorted(PROVIDERS))
def provider_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider(latency=(0.02, 0.06), seed=11) as server:
        yield server


def client_for(name: str, fake: FakeProvider, **kwargs: object) -> FluxClient:
    kwargs.setdefault("poll", FAST_POLL)
    kwargs.setdefault("retry", FAST_RETRY)
    return FluxClient(PROVIDERS[name](fake.url), seed=0, **kwargs)  # type: ignore[arg-type]


async def test_text_to_image(provider_name: str, fake: FakeProvider) -> None:
    async with client_for(provider_name, fake) as client:
        generation = await client.generate("a red fox", aspect_ratio="16:9")
    assert generation.provider == provider_name
    assert generation.images and all(i.url for i in generation.images)
    assert fake.creates_per_prompt["a red fox"] == 1


async def test_image_to_image(provider_name: str, fake: FakeProvider) -> None:
    async with client_for(provider_name, fake) as client:
        generation = await client.generate("a bear", image_url="https://example.com/bear.jpg")
    assert generation.images
    job = next(j for j in fake.jobs.values() if j.prompt == "a bear")
    assert "https://example.com/bear.jpg" in str(job.params)


async def test_several_images(provider_name: str, fake: FakeProvider) -> None:
    model = {"piapi": "schnell"}.get(provider_name)  # PiAPI batches only on schnell
    async with client_for(provider_name, fake) as client:
        generation = await client.generate("twins", num_images=2, model=model)
    assert len(generation.images) == 2


@pytest.mark.parametrize(
    "params", [{"num_images": 99}, {"aspect_ratio": "7:3"}, {"image_url": "ftp://x/y"}]
)
async def test_validation_before_any_request(
    provider_name: str, fake: FakeProvider, params: dict[str, object]
) -> None:
    async with client_for(provider_name, fake) as client:
        with pytest.raises(ValidationError) as info:
            await client.generate("p", **params)
    assert info.value.provider == provider_name
    assert fake.create_attempts == 0


async def test_429_storm(provider_name: str) -> None:
    faults = Faults(rate_limit_first_creates=15, retry_after=0)
    async with FakeProvider(latency=0.02, faults=faults, seed=4) as fake:
        async with client_for(provider_name, fake) as client:
            prompts = [f"storm {i}" for i in range(8)]
            await asyncio.gather(*(client.generate(p) for p in prompts))
    assert [fake.creates_per_prompt[p] for p in prompts] == [1] * 8
    assert fake.create_attempts == 8 + 15


async def test_accepted_then_dropped(provider_name: str, fake: FakeProvider) -> None:
    async with client_for(provider_name, fake) as client:
        with pytest.raises(JobUnknownError):
            await client.generate("[fault:drop] once")
        await asyncio.sleep(0.2)
    assert fake.creates_per_prompt["[fault:drop] once"] == 1
    assert fake.create_attempts == 1


async def test_never_finishing_job_times_out(provider_name: str, fake: FakeProvider) -> None:
    poll = PollPolicy(wait_first=0.02, wait_initial=0.02, wait_max=0.05, timeout=0.4)
    async with client_for(provider_name, fake, poll=poll) as client:
        job = await client.submit("[fault:never-finish] forever")
        with pytest.raises(JobTimeoutError):
            await job
        polls = sum(fake.polls_per_job.values())
        await asyncio.sleep(0.3)
        assert sum(fake.polls_per_job.values()) == polls
    assert job.status is JobStatus.TIMED_OUT


async def test_close_with_jobs_in_flight(provider_name: str, fake: FakeProvider) -> None:
    before = asyncio.all_tasks()
    async with client_for(provider_name, fake) as client:
        jobs = [await client.submit(f"[fault:never-finish] {i}") for i in range(3)]
        await asyncio.sleep(0.1)
    assert all(job.status is JobStatus.CANCELLED for job in jobs)
    for job in jobs:
        with pytest.raises(JobCancelledError):
            await job
    await asyncio.sleep(0)
    leftover = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert not [t for t in leftover if "flux_async/_" in t.get_coro().cr_code.co_filename]
