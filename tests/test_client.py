"""FluxClient over real loopback HTTP against flux_async.testing.FakeProvider.

The scenarios run once per provider (the ``provider_name`` fixture); the tests named
``test_shortapi_*`` pin what only ShortAPI's wire format decides (model ids, prices, which
parameters it refuses). Unit tests of the pieces behind the client: test_lane.py,
test_poll.py, test_events.py, test_callbacks.py; closing with creates in flight:
test_client_close.py; batches: test_batch.py.
"""

from __future__ import annotations

import asyncio
import gc
import time
from decimal import Decimal

import aiohttp
import anyio
import pytest
from aiohttp import web
from support import FAST_RETRY, ServeApp, client_for, tasks_from, wait_until

from flux_async import (
    ClientStateError,
    Event,
    FluxClient,
    Job,
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
    Timeouts,
    UnknownStatusError,
    ValidationError,
)
from flux_async.testing import FakeProvider, Faults
from flux_async.testing._piapi import FAILURE_ERROR as PIAPI_FAILURE
from flux_async.testing._shortapi import FAILURE_MESSAGE as SHORTAPI_FAILURE

pytestmark = pytest.mark.anyio

# No jitter: a job still scheduled is polled at least every wait_max (0.05 s).
STEADY_POLL = PollPolicy(
    wait_first=0.02, wait_initial=0.02, wait_max=0.05, wait_jitter=False, timeout=0.4
)
# A short close grace where the grace is not the subject (test_client_close.py tests it).
QUICK_CLOSE = Timeouts(close_grace=0.1)


async def assert_no_more_polls(client: FluxClient, fake: FakeProvider, job: Job) -> None:
    """Check ``job`` is no longer polled, by events rather than by a stretch of wall time.

    Another job that never finishes is submitted and polled four times (0.13 s of
    STEADY_POLL's schedule); a job still scheduled at STEADY_POLL's 0.05 s cap would have
    been polled in that window too.
    """
    before = fake.polls_per_job[job.id or ""]
    probe = await client.submit("[fault:never-finish] probe")
    await wait_until(lambda: fake.polls_per_job[probe.id or ""] >= 4 or probe.done())
    assert fake.polls_per_job[probe.id or ""] >= 4
    assert fake.polls_per_job[job.id or ""] == before


# -- happy paths ------------------------------------------------------------------------------


async def test_text_to_image(provider_name: str, fake: FakeProvider) -> None:
    async with client_for(provider_name, fake) as client:
        generation = await client.generate("a red fox", aspect_ratio="16:9")
        assert client.outstanding == 0
    assert generation.provider == provider_name
    assert generation.images
    if provider_name != "aimlapi":  # AI/ML API may answer with data: URLs instead
        assert all(i.url.startswith(fake.url + "/files/") for i in generation.images)
    (job,) = [j for j in fake.jobs.values() if j.prompt == "a red fox"]
    assert job.model in generation.model
    if provider_name != "aimlapi":  # AI/ML API has no job id on the wire
        assert generation.job_id == job.id
    assert fake.creates_per_prompt["a red fox"] == 1


async def test_shortapi_model_price_and_images(fake: FakeProvider) -> None:
    async with client_for("shortapi", fake) as client:
        generation = await client.generate("a red fox", aspect_ratio="16:9", num_images=2)
    assert generation.model == "shortapi/flux-1.0/text-to-image"
    assert fake.jobs[generation.job_id].model == "shortapi/flux-1.0/text-to-image"
    assert len(generation.images) == 2
    assert generation.cost == Decimal("0.02")


async def test_image_to_image(provider_name: str, fake: FakeProvider) -> None:
    async with client_for(provider_name, fake) as client:
        generation = await client.generate("a bear", image_url="https://example.com/bear.jpg")
    assert generation.images
    job = next(j for j in fake.jobs.values() if j.prompt == "a bear")
    assert "https://example.com/bear.jpg" in str(job.params)


async def test_shortapi_image_to_image_model_and_price(fake: FakeProvider) -> None:
    async with client_for("shortapi", fake) as client:
        job = await client.submit(
            "a bear", image_url="https://example.com/bear.jpg", model="schnell"
        )
        assert job.id is not None and job.status is JobStatus.SUBMITTED
        assert job.cost == Decimal("0.002")
        generation = await job
    assert generation.model == "shortapi/flux-1.0/image-to-image"
    assert fake.jobs[job.id].model == "shortapi/flux-1.0/image-to-image"
    assert job.status is JobStatus.SUCCEEDED and job.snapshot().polls >= 1


async def test_several_images(provider_name: str, fake: FakeProvider) -> None:
    model = {"piapi": "schnell"}.get(provider_name)  # PiAPI batches only on schnell
    async with client_for(provider_name, fake) as client:
        generation = await client.generate("twins", num_images=2, model=model)
    assert len(generation.images) == 2


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params", [{"num_images": 99}, {"aspect_ratio": "7:3"}, {"image_url": "ftp://x/y"}]
)
async def test_validation_errors_send_nothing(
    provider_name: str, fake: FakeProvider, params: dict[str, object]
) -> None:
    async with client_for(provider_name, fake) as client:
        with pytest.raises(ValidationError) as info:
            await client.submit("p", **params)
        assert client.outstanding == 0
    assert info.value.provider == provider_name
    assert next(iter(params)) in str(info.value)
    assert fake.create_attempts == 0 and sum(fake.requests.values()) == 0


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
async def test_shortapi_validation_errors_send_nothing(
    fake: FakeProvider, params: dict[str, object]
) -> None:
    async with client_for("shortapi", fake) as client:
        with pytest.raises(ValidationError) as info:
            await client.submit("p", **params)
        assert client.outstanding == 0
    assert next(iter(params)) in str(info.value)
    assert fake.create_attempts == 0 and sum(fake.requests.values()) == 0


async def test_empty_prompt_sends_nothing(provider_name: str, fake: FakeProvider) -> None:
    async with client_for(provider_name, fake) as client:
        with pytest.raises(ValidationError, match="prompt"):
            await client.generate("")
    assert fake.create_attempts == 0


# -- faults -----------------------------------------------------------------------------------


async def test_429_storm_every_job_created_once(provider_name: str) -> None:
    # The first 10 creates are refused: the 8 first creates (they go out together) and two
    # retries. A longer storm only adds seconds: each one slows the discovered create pace.
    jobs, storm = 8, 10
    faults = Faults(rate_limit_first_creates=storm, retry_after=0)
    async with FakeProvider(latency=0.02, faults=faults, seed=4) as fake:
        async with client_for(provider_name, fake) as client:
            prompts = [f"storm {i}" for i in range(jobs)]
            generations = await asyncio.gather(*(client.generate(p) for p in prompts))
    assert len(generations) == jobs
    assert [fake.creates_per_prompt[p] for p in prompts] == [1] * jobs
    assert fake.create_attempts == jobs + storm


async def test_429_pauses_creates_for_the_whole_provider() -> None:
    """Retry-After holds back every create, not just the one that got the 429."""
    limited = asyncio.Event()
    limited_at: list[float] = []

    def on_event(event: Event) -> None:
        if event.kind == "rate_limited":
            limited_at.append(time.monotonic())
            limited.set()

    async with FakeProvider(latency=0.02, faults=Faults(retry_after=1), seed=3) as fake:
        async with client_for("shortapi", fake) as client:
            client.subscribe(on_event)
            first = asyncio.ensure_future(client.submit("[fault:429] first"))
            await limited.wait()  # the first create was answered 429, Retry-After: 1
            assert fake.create_attempts == 1
            second = await client.submit("second")
            await first
    assert fake.creates_per_prompt["[fault:429] first"] == 1
    assert fake.creates_per_prompt["second"] == 1
    # A lower bound (load can only make the gap longer): the second create was sent only
    # when the pause ended, though it was submitted while the first one waited.
    assert fake.jobs[second.id or ""].created_at - limited_at[0] >= 0.9


async def test_accepted_then_dropped_create_ends_unknown_and_is_not_resent(
    provider_name: str, fake: FakeProvider
) -> None:
    async with client_for(provider_name, fake) as client:
        with pytest.raises(JobUnknownError) as info:
            await client.generate("[fault:drop] paid once")
        # Nothing is left to resend it later: the client holds no job any more.
        assert client.outstanding == 0
    assert fake.create_attempts == 1
    assert fake.creates_per_prompt["[fault:drop] paid once"] == 1
    assert fake.lost_responses == 1
    error = info.value
    assert error.job is not None and error.job.status is JobStatus.UNKNOWN
    assert error.evidence and "disconnect" in error.evidence.lower()


async def test_connection_reset_on_create_is_ambiguous_too(
    provider_name: str, fake: FakeProvider
) -> None:
    async with client_for(provider_name, fake) as client:
        with pytest.raises(JobUnknownError):
            await client.generate("[fault:reset] once")
        assert client.outstanding == 0
    assert fake.create_attempts == 1


async def test_refused_creates_are_retried_then_fail_without_a_job() -> None:
    retry = RetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.02)
    async with FakeProvider(latency=0.02, faults=Faults(retry_after=0), seed=1) as fake:
        async with client_for("shortapi", fake, retry=retry) as client:
            with pytest.raises(ProviderUnavailableError) as info:
                await client.submit("[fault:5xx] always busy")
    assert info.value.status == 503
    assert fake.create_attempts == 3
    assert fake.creates_per_prompt["[fault:5xx] always busy"] == 0


async def test_never_finishing_job_times_out_and_is_not_polled_again(
    provider_name: str, fake: FakeProvider
) -> None:
    async with client_for(provider_name, fake, poll=STEADY_POLL, timeouts=QUICK_CLOSE) as client:
        job = await client.submit("[fault:never-finish] slow")
        with pytest.raises(JobTimeoutError) as info:
            await job.result(timeout=5)
        assert job.status is JobStatus.TIMED_OUT
        assert info.value.job is not None and info.value.job.id == job.id
        assert client.outstanding == 0
        if provider_name != "aimlapi":  # AI/ML API answers the create itself, no polls
            assert fake.polls_per_job[job.id or ""] >= 2
            await assert_no_more_polls(client, fake, job)


async def test_unknown_status_is_a_typed_error_not_an_endless_poll() -> None:
    # Seed 1 makes the fake answer -1 or "weird"; its third "unknown" value, 7, is a failure
    # to the adapter (any number >= 3 is, providers.md 1.4).
    async with FakeProvider(latency=(0.02, 0.06), seed=1) as fake:
        async with client_for("shortapi", fake, poll=STEADY_POLL) as client:
            job = await client.submit("[fault:unknown-status] odd")
            with pytest.raises(UnknownStatusError) as info:
                await job.result(timeout=5)
            assert job.status is JobStatus.FAILED
            assert client.outstanding == 0
            await assert_no_more_polls(client, fake, job)
    assert info.value.payload["data"]["status"] not in (0, 1, 2)


@pytest.mark.parametrize("provider_name", ["piapi", "shortapi"])  # AI/ML API fails the create
async def test_failed_job_carries_the_reason(provider_name: str, fake: FakeProvider) -> None:
    async with client_for(provider_name, fake) as client:
        with pytest.raises(JobFailedError) as info:
            await client.generate("[fault:fail] doomed")
    error = info.value
    assert error.job is not None and error.job.id in fake.jobs
    expected = {
        "shortapi": {SHORTAPI_FAILURE},
        "piapi": {PIAPI_FAILURE["raw_message"], PIAPI_FAILURE["message"]},
    }[provider_name]
    assert error.reason is not None
    assert any(message in error.reason for message in expected), error.reason


async def test_query_faults_are_retried() -> None:
    async with FakeProvider(
        latency=0.03, faults=Faults(query_5xx=0.4, query_reset=0.2, retry_after=0), seed=5
    ) as flaky:
        async with client_for("shortapi", flaky) as client:
            generations = await asyncio.gather(*(client.generate(f"q{i}") for i in range(8)))
    assert len(generations) == 8
    assert sum(flaky.creates_per_prompt.values()) == 8
    assert sum(flaky.polls_per_job.values()) > 8  # some queries failed and were asked again


async def test_result_timeout_leaves_the_job_running() -> None:
    async with FakeProvider(latency=0.3) as slow:
        async with client_for("shortapi", slow) as client:
            job = await client.submit("patience")
            with pytest.raises(TimeoutError):
                await job.result(timeout=0.01)
            assert not job.done()
            generation = await job.result(timeout=5)
    assert generation.images


# -- lifecycle --------------------------------------------------------------------------------


async def test_close_with_jobs_in_flight_cancels_them_cleanly(
    provider_name: str, fake: FakeProvider
) -> None:
    before = asyncio.all_tasks()
    client = client_for(provider_name, fake, timeouts=QUICK_CLOSE)
    async with client:
        jobs = [await client.submit(f"[fault:never-finish] {i}") for i in range(3)]
        pending = asyncio.ensure_future(client.submit("[fault:never-finish] in create"))
        await asyncio.sleep(0)
        waiter = asyncio.ensure_future(jobs[0].result())
        await asyncio.sleep(0.05)
    assert all(job.status is JobStatus.CANCELLED for job in jobs)
    for job in jobs:
        with pytest.raises(JobCancelledError):
            await job
    with pytest.raises(JobCancelledError):
        await waiter
    submitted = await pending
    assert submitted.status is JobStatus.CANCELLED
    await asyncio.sleep(0)
    assert tasks_from(besides=before) == []
    # Nothing else either, but the fake's server handlers, which end on their own.
    leftover = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert leftover - set(tasks_from(web, prefix="web")) == set()
    await client.aclose()  # idempotent
    with pytest.raises(ClientStateError):
        await client.submit("after close")
    with pytest.raises(ClientStateError):
        async with client:
            pass
    gc.collect()


async def test_client_must_be_opened(fake: FakeProvider) -> None:
    client = client_for("shortapi", fake)
    with pytest.raises(ClientStateError, match="async with"):
        await client.submit("p")
    await client.aclose()


async def test_a_session_passed_in_is_not_closed(fake: FakeProvider) -> None:
    async with aiohttp.ClientSession() as session:
        async with client_for("shortapi", fake, session=session) as client:
            await client.generate("shared session")
        assert not session.closed


async def test_in_flight_cap_bounds_outstanding_jobs(fake: FakeProvider) -> None:
    async with client_for("shortapi", fake, limits=Limits(max_jobs_in_flight=3)) as client:
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


async def test_creates_per_second_paces_creates_end_to_end() -> None:
    """Limits.creates_per_second over HTTP: the creates' arrival times at the fake."""
    async with FakeProvider(latency=0.01, seed=6) as fake:
        limits = Limits(creates_per_second=20)
        async with client_for("shortapi", fake, limits=limits) as client:
            generations = await asyncio.gather(*(client.generate(f"paced {i}") for i in range(30)))
    assert len(generations) == 30
    created = sorted(job.created_at for job in fake.jobs.values())
    # One second's burst (20) may go at once; the other 10 follow at 20 a second, so the
    # last create comes at least ~0.5 s after the first (a lower bound: load only adds).
    assert created[-1] - created[0] >= 0.45
    assert max(fake.creates_per_prompt.values()) == 1


async def test_close_while_a_create_is_in_flight(serve_app: ServeApp) -> None:
    """A create with no answer yet ends cancelled at close, saying it may exist."""
    arrived = asyncio.Event()

    async def create(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_post("/api/v1/job/create", create)
    url = await serve_app(app)
    before = asyncio.all_tasks()
    async with FluxClient(
        ShortAPI("k", base_url=url), timeouts=QUICK_CLOSE, retry=FAST_RETRY
    ) as client:
        pending = asyncio.ensure_future(client.submit("stuck"))
        await arrived.wait()
    with pytest.raises(JobCancelledError, match="may have created it"):
        await pending
    await asyncio.sleep(0)
    # The stuck server handler is still running; no task of the client's is.
    leftover = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert leftover - set(tasks_from(web, prefix="web")) == set()
