"""FluxClient + ShortAPI over real loopback HTTP against flux_async.testing.FakeProvider."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import anyio
import pytest

from flux_async import (
    ClientStateError,
    FluxClient,
    JobCancelledError,
    JobFailedError,
    JobStatus,
    JobTimeoutError,
    JobUnknownError,
    Limits,
    PollPolicy,
    ProviderUnavailableError,
    RetryPolicy,
    ShortAPI,
    UnknownStatusError,
    ValidationError,
)
from flux_async.testing import FakeProvider, Faults

pytestmark = pytest.mark.anyio

FAST_POLL = PollPolicy(wait_first=0.05, wait_initial=0.02, wait_max=0.1, timeout=10)
FAST_RETRY = RetryPolicy(wait_initial=0.01, wait_max=0.05)


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider(latency=(0.02, 0.06), seed=1) as server:
        yield server


def client_for(fake: FakeProvider, **kwargs: object) -> FluxClient:
    kwargs.setdefault("poll", FAST_POLL)
    kwargs.setdefault("retry", FAST_RETRY)
    return FluxClient(ShortAPI("test-key", base_url=fake.url), seed=0, **kwargs)  # type: ignore[arg-type]


async def test_text_to_image_happy_path(fake: FakeProvider) -> None:
    async with client_for(fake) as client:
        generation = await client.generate("a red fox", aspect_ratio="16:9", num_images=2)
    assert generation.provider == "shortapi"
    assert generation.model == "shortapi/flux-1.0/text-to-image"
    assert len(generation.images) == 2
    assert all(image.url.startswith(fake.url + "/files/") for image in generation.images)
    assert generation.cost == Decimal("0.02")
    assert generation.job_id in fake.jobs
    assert fake.creates_per_prompt["a red fox"] == 1
    job = fake.jobs[generation.job_id]
    assert job.model == "shortapi/flux-1.0/text-to-image"


async def test_image_to_image_happy_path(fake: FakeProvider) -> None:
    async with client_for(fake) as client:
        job = await client.submit("a bear", image_url="https://example.com/bear.jpg",
                                  model="schnell")
        assert job.id is not None and job.status is JobStatus.SUBMITTED
        assert job.cost == Decimal("0.002")
        generation = await job
    assert generation.model == "shortapi/flux-1.0/image-to-image"
    assert fake.jobs[job.id].model == "shortapi/flux-1.0/image-to-image"
    assert job.status is JobStatus.SUCCEEDED and job.snapshot().polls >= 1


@pytest.mark.parametrize(
    "params",
    [
        {"num_images": 3},
        {"aspect_ratio": "5:4"},
        {"model": "turbo"},
        {"image_url": "file:///etc/passwd"},
        {"seed": 3},
        {"num_images": "2"},  # wrong type
        {"colour": "red"},  # unknown parameter
    ],
)
async def test_validation_errors_send_nothing(fake: FakeProvider, params: dict[str, object]
                                              ) -> None:
    async with client_for(fake) as client:
        with pytest.raises(ValidationError) as info:
            await client.submit("p", **params)
        assert client.outstanding == 0
    assert next(iter(params)) in str(info.value)
    assert fake.create_attempts == 0 and sum(fake.requests.values()) == 0


async def test_empty_prompt_sends_nothing(fake: FakeProvider) -> None:
    async with client_for(fake) as client:
        with pytest.raises(ValidationError, match="prompt"):
            await client.generate("")
    assert fake.create_attempts == 0


async def test_429_storm_every_job_created_once() -> None:
    faults = Faults(rate_limit_first_creates=25, retry_after=0)
    async with FakeProvider(latency=0.02, faults=faults, seed=2) as fake:
        async with client_for(fake, retry=RetryPolicy(attempts=40, wait_initial=0.01,
                                                      wait_max=0.05)) as client:
            prompts = [f"storm {i}" for i in range(10)]
            generations = await asyncio.gather(*(client.generate(p) for p in prompts))
    assert len(generations) == 10
    assert all(fake.creates_per_prompt[p] == 1 for p in prompts)
    assert fake.create_attempts == 10 + 25


async def test_429_pauses_creates_for_the_whole_provider() -> None:
    async with FakeProvider(latency=0.02, faults=Faults(retry_after=1), seed=3) as fake:
        async with client_for(fake) as client:
            first = asyncio.ensure_future(client.submit("[fault:429] first"))
            await asyncio.sleep(0.2)  # the first create is sent and answered 429
            assert fake.create_attempts == 1
            second = asyncio.ensure_future(client.submit("second"))
            await asyncio.sleep(0.4)
            # Retry-After: 1 holds every create back, not just the one that got the 429.
            assert fake.create_attempts == 1
            await asyncio.gather(first, second)
    assert fake.creates_per_prompt["[fault:429] first"] == 1
    assert fake.creates_per_prompt["second"] == 1


async def test_accepted_then_dropped_create_ends_unknown_and_is_not_resent(
    fake: FakeProvider,
) -> None:
    async with client_for(fake) as client:
        with pytest.raises(JobUnknownError) as info:
            await client.submit("[fault:drop] paid once")
        await asyncio.sleep(0.2)  # nothing is resent later either
    assert fake.create_attempts == 1
    assert fake.creates_per_prompt["[fault:drop] paid once"] == 1
    assert fake.lost_responses == 1
    error = info.value
    assert error.job is not None and error.job.status is JobStatus.UNKNOWN
    assert error.evidence and "disconnect" in error.evidence.lower()


async def test_connection_reset_on_create_is_ambiguous_too(fake: FakeProvider) -> None:
    async with client_for(fake) as client:
        with pytest.raises(JobUnknownError):
            await client.submit("[fault:reset] once")
    assert fake.create_attempts == 1


async def test_refused_creates_are_retried_then_fail_without_a_job(fake: FakeProvider) -> None:
    retry = RetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.02)
    async with client_for(fake, retry=retry) as client:
        with pytest.raises(ProviderUnavailableError) as info:
            await client.submit("[fault:5xx] always busy")
    assert info.value.status == 503
    assert fake.create_attempts == 3
    assert fake.creates_per_prompt["[fault:5xx] always busy"] == 0


async def test_never_finishing_job_times_out_and_is_not_polled_again(
    fake: FakeProvider,
) -> None:
    policy = PollPolicy(wait_first=0.02, wait_initial=0.02, wait_max=0.05, timeout=0.4)
    async with client_for(fake, poll=policy) as client:
        job = await client.submit("[fault:never-finish] slow")
        with pytest.raises(JobTimeoutError) as info:
            await job.result(timeout=5)
        assert job.status is JobStatus.TIMED_OUT
        assert info.value.job is not None and info.value.job.id == job.id
        polls = fake.polls_per_job[job.id or ""]
        assert polls >= 2
        await asyncio.sleep(0.3)
        assert fake.polls_per_job[job.id or ""] == polls


async def test_unknown_status_is_a_typed_error_not_an_endless_poll(fake: FakeProvider) -> None:
    async with client_for(fake) as client:
        job = await client.submit("[fault:unknown-status] odd")
        with pytest.raises(UnknownStatusError) as info:
            await job.result(timeout=5)
        assert job.status is JobStatus.FAILED
        polls = fake.polls_per_job[job.id or ""]
        await asyncio.sleep(0.3)
        assert fake.polls_per_job[job.id or ""] == polls
    assert info.value.payload["data"]["status"] not in (0, 1, 2)


async def test_failed_job_carries_the_reason(fake: FakeProvider) -> None:
    async with client_for(fake) as client:
        with pytest.raises(JobFailedError) as info:
            await client.generate("[fault:fail] doomed")
    assert info.value.job is not None and info.value.job.id in fake.jobs


async def test_query_faults_are_retried(fake: FakeProvider) -> None:
    async with FakeProvider(latency=0.03, faults=Faults(query_5xx=0.4, query_reset=0.2),
                            seed=5) as flaky:
        async with client_for(flaky) as client:
            generations = await asyncio.gather(*(client.generate(f"q{i}") for i in range(8)))
    assert len(generations) == 8
    assert sum(flaky.creates_per_prompt.values()) == 8


async def test_result_timeout_leaves_the_job_running(fake: FakeProvider) -> None:
    async with FakeProvider(latency=0.3) as slow:
        async with client_for(slow) as client:
            job = await client.submit("patience")
            with pytest.raises(TimeoutError):
                await job.result(timeout=0.01)
            assert not job.done()
            generation = await job.result(timeout=5)
    assert generation.images


async def test_close_with_jobs_in_flight_cancels_them_cleanly(fake: FakeProvider) -> None:
    before = asyncio.all_tasks()
    client = client_for(fake)
    async with client:
        jobs = [await client.submit(f"[fault:never-finish] {i}") for i in range(5)]
        pending = asyncio.ensure_future(client.submit("[fault:never-finish] in create"))
        await asyncio.sleep(0)
        waiter = asyncio.ensure_future(jobs[0].result())
        await asyncio.sleep(0.1)
    assert all(job.status is JobStatus.CANCELLED for job in jobs)
    with pytest.raises(JobCancelledError):
        await waiter
    submitted = await pending
    assert submitted.status is JobStatus.CANCELLED
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()
    await client.aclose()  # idempotent
    with pytest.raises(ClientStateError):
        await client.submit("after close")
    with pytest.raises(ClientStateError):
        async with client:
            pass
    gc.collect()


async def test_client_must_be_opened(fake: FakeProvider) -> None:
    client = client_for(fake)
    with pytest.raises(ClientStateError, match="async with"):
        await client.submit("p")
    await client.aclose()


async def test_a_session_passed_in_is_not_closed(fake: FakeProvider) -> None:
    async with aiohttp.ClientSession() as session:
        async with client_for(fake, session=session) as client:
            await client.generate("shared session")
        assert not session.closed


async def test_in_flight_cap_bounds_outstanding_jobs(fake: FakeProvider) -> None:
    async with client_for(fake, limits=Limits(max_jobs_in_flight=3)) as client:
        peak = 0

        async def one(i: int) -> None:
            nonlocal peak
            job = await client.submit(f"cap {i}")
            peak = max(peak, client.outstanding)
            await job

        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(one, i)
    assert peak <= 3
    assert sum(fake.creates_per_prompt.values()) == 12


async def test_close_while_a_create_is_in_flight() -> None:
    """A create with no answer yet ends cancelled at close, saying it may exist."""
    from aiohttp import web

    arrived = asyncio.Event()

    async def create(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_post("/api/v1/job/create", create)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    before = asyncio.all_tasks()
    try:
        client = FluxClient(ShortAPI("k", base_url=f"http://127.0.0.1:{port}"))
        async with client:
            pending = asyncio.ensure_future(client.submit("stuck"))
            await arrived.wait()
        with pytest.raises(JobCancelledError, match="may have created it"):
            await pending
        await asyncio.sleep(0)
        # The stuck server handler is still running; no task of the client's is.
        leftover = asyncio.all_tasks() - before - {asyncio.current_task()}
        assert not [t for t in leftover if "aiohttp/web" not in t.get_coro().cr_code.co_filename]
    finally:
        await runner.cleanup()
