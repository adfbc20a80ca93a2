"""Closing a client with creates in flight: a short grace, then cancel; no paid job loses
its provider id. Over loopback HTTP against the fake provider, behind a proxy that holds
create answers back (the job exists at the fake before its answer comes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from flux_async import (
    ClientStateError,
    ConfigurationError,
    FluxClient,
    JobCancelledError,
    JobStatus,
    Limits,
    PollPolicy,
    ShortAPI,
    Timeouts,
)
from flux_async.testing import FakeProvider

pytestmark = pytest.mark.anyio


class SlowCreates:
    """A proxy to the fake that forwards a create at once but answers it only later.

    ``delay=None``: never answers (until the test ends).
    """

    def __init__(self, target: str, delay: float | None) -> None:
        self.target = target
        self.delay = delay
        self.release = asyncio.Event()
        self.url = ""

    async def __aenter__(self) -> SlowCreates:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release.set()
        await self._runner.cleanup()
        await self._session.close()

    async def _handle(self, request: web.Request) -> web.Response:
        headers = {
            key: value
            for key, value in request.headers.items()
            if key.lower() in ("authorization", "content-type")
        }
        async with self._session.request(
            request.method,
            self.target + request.path_qs,
            headers=headers,
            data=await request.read(),
        ) as answer:
            body, status = await answer.read(), answer.status
            content_type = answer.content_type
        if request.method == "POST":
            if self.delay is None:
                await self.release.wait()
            else:
                await asyncio.sleep(self.delay)
        return web.Response(status=status, body=body, content_type=content_type)


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    # Jobs take far longer than the test: whatever is open at close is cancelled.
    async with FakeProvider(latency=600.0, seed=3) as server:
        yield server


async def _until(condition: object, what: str) -> None:
    for _ in range(2000):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


async def test_close_waits_for_creates_in_flight_and_names_every_paid_job(
    fake: FakeProvider,
) -> None:
    async with SlowCreates(fake.url, delay=0.3) as proxy:
        client = FluxClient(
            ShortAPI("test-key", base_url=proxy.url),
            limits=Limits(max_jobs_in_flight=22, max_connections=64),
            poll=PollPolicy(wait_first=60, timeout=600),
            timeouts=Timeouts(close_grace=10.0),
            seed=0,
        )
        async with client:
            submits = [asyncio.ensure_future(client.submit(f"prompt {n}")) for n in range(30)]
            # 22 creates are at the fake, their answers held back; 8 wait for a job slot.
            await _until(lambda: len(fake.jobs) == 22, "22 jobs created at the fake")
        results = await asyncio.gather(*submits, return_exceptions=True)
    jobs = [result for result in results if not isinstance(result, BaseException)]
    refused = [result for result in results if isinstance(result, BaseException)]
    # Every create that reached the fake got its answer within the grace ...
    assert sorted(job.id for job in jobs if job.id) == sorted(fake.jobs)
    # ... and the ones never sent were refused, not sent after close.
    assert len(refused) == 8 and all(isinstance(exc, ClientStateError) for exc in refused)
    assert len(fake.jobs) == 22
    for job in jobs:
        assert job.status is JobStatus.CANCELLED
        with pytest.raises(JobCancelledError) as info:
            await job
        assert info.value.job is not None and info.value.job.id == job.id
        assert f"provider job id {job.id}" in str(info.value)


async def test_close_grace_is_bounded_when_creates_never_answer(fake: FakeProvider) -> None:
    async with SlowCreates(fake.url, delay=None) as proxy:
        client = FluxClient(
            ShortAPI("test-key", base_url=proxy.url),
            poll=PollPolicy(wait_first=60, timeout=600),
            timeouts=Timeouts(close_grace=0.2),
            seed=0,
        )
        await client.__aenter__()
        submits = [asyncio.ensure_future(client.submit(f"prompt {n}")) for n in range(5)]
        await _until(lambda: len(fake.jobs) == 5, "5 jobs created at the fake")
        # Without the bound, close would wait for the read timeout (60 s) of each create.
        await asyncio.wait_for(client.aclose(), 30)
        results = await asyncio.gather(*submits, return_exceptions=True)
    assert len(results) == 5
    for error in results:
        assert isinstance(error, JobCancelledError)
        assert "while its create request was in flight" in str(error)
        assert "may have created it" in str(error)
        assert error.job is not None and error.job.status is JobStatus.CANCELLED


async def test_close_grace_zero_cancels_at_once_and_is_validated() -> None:
    assert Timeouts(close_grace=0).close_grace == 0
    for bad in (-1.0, float("inf"), True, "5"):
        with pytest.raises(ConfigurationError, match=r"Timeouts\.close_grace"):
            Timeouts(close_grace=bad)  # type: ignore[arg-type]


async def test_creates_waiting_for_a_connection_at_close_are_not_sent(
    fake: FakeProvider,
) -> None:
    async with SlowCreates(fake.url, delay=0.3) as proxy:
        client = FluxClient(
            ShortAPI("test-key", base_url=proxy.url),
            limits=Limits(max_jobs_in_flight=10, max_connections=2),
            poll=PollPolicy(wait_first=60, timeout=600),
            timeouts=Timeouts(close_grace=10.0),
            seed=0,
        )
        async with client:
            submits = [asyncio.ensure_future(client.submit(f"prompt {n}")) for n in range(6)]
            # 2 creates hold the 2 connections (their answers held back); 4 wait for one.
            await _until(lambda: len(fake.jobs) == 2, "2 jobs created at the fake")
            await asyncio.sleep(0.05)
            assert len(fake.jobs) == 2
        results = await asyncio.gather(*submits, return_exceptions=True)
    # The close let the 2 creates on the wire be answered, and sent none of the others
    # (before, each took a freed connection during the close grace and created a job).
    assert len(fake.jobs) == 2
    assert not [result for result in results if isinstance(result, BaseException)]
    jobs = [result for result in results if not isinstance(result, BaseException)]
    assert sorted(job.id for job in jobs if job.id) == sorted(fake.jobs)
    unsent = [job for job in jobs if job.id is None]
    assert len(unsent) == 4
    for job in unsent:
        assert job.status is JobStatus.CANCELLED
        with pytest.raises(JobCancelledError) as info:
            await job
        assert info.value.job is not None and info.value.job.id is None
