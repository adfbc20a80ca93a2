"""`Job`: waiting on a job's result, with and without a timeout, over loopback."""

from __future__ import annotations

import asyncio

import pytest
from support import FAST_POLL, client_for

from flux_async import JobStatus
from flux_async._job import Job, when_finished
from flux_async._registry import Registry
from flux_async.testing import FakeProvider

pytestmark = pytest.mark.anyio


async def test_a_result_timeout_leaves_the_job_and_its_other_waiters_alone() -> None:
    async with FakeProvider(latency=0.6, seed=3) as fake:
        async with client_for("shortapi", fake, poll=FAST_POLL) as client:
            job = await client.submit("slow enough")
            patient = asyncio.ensure_future(job.result())
            with pytest.raises(TimeoutError):
                await job.result(timeout=0.05)
            assert not job.done()
            assert job.status is not JobStatus.CANCELLED
            generation = await asyncio.wait_for(patient, 10)
            assert generation.images
            assert (await job.result(timeout=0.01)) == generation  # ended: no wait at all


async def test_a_cancelled_waiter_does_not_cancel_the_job() -> None:
    async with FakeProvider(latency=0.4, seed=4) as fake:
        async with client_for("shortapi", fake, poll=FAST_POLL) as client:
            job = await client.submit("keep going")
            waiter = asyncio.ensure_future(job.result())
            await asyncio.sleep(0.05)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            generation = await asyncio.wait_for(job.result(), 10)
            assert job.status is JobStatus.SUCCEEDED
            assert generation.images


# -- when_finished: how generate_many takes each job's outcome, without a task per job ---------


async def test_when_finished_calls_back_once_the_job_ends() -> None:
    registry = Registry(clock=lambda: 0.0)
    entry = registry.allocate("shortapi", "m")
    calls: list[JobStatus] = []
    when_finished(entry, lambda: calls.append(entry.status))
    registry.advance(entry, JobStatus.RUNNING)
    await asyncio.sleep(0)
    assert calls == []  # progress is not the end
    registry.advance(entry, JobStatus.SUCCEEDED)
    assert calls == []  # from the event loop, not inside the registry's update
    await asyncio.sleep(0)
    assert calls == [JobStatus.SUCCEEDED]
    await asyncio.sleep(0)
    assert calls == [JobStatus.SUCCEEDED]  # once


async def test_when_finished_on_an_ended_job_calls_back_soon() -> None:
    registry = Registry(clock=lambda: 0.0)
    entry = registry.allocate("shortapi", "m")
    registry.advance(entry, JobStatus.FAILED)
    calls: list[str] = []
    when_finished(entry, lambda: calls.append("ended"))
    assert calls == []
    await asyncio.sleep(0)
    assert calls == ["ended"]


async def test_when_finished_shares_the_waiter_of_job_result() -> None:
    registry = Registry(clock=lambda: 0.0)
    entry = registry.allocate("shortapi", "m")
    registry.accept(entry, "j1")
    calls: list[str] = []
    when_finished(entry, lambda: calls.append("ended"))
    waiter = asyncio.ensure_future(Job(entry).result())
    await asyncio.sleep(0)
    waiter.cancel()  # one waiter given up: the job and the callback go on
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0)
    assert calls == []
    registry.advance(entry, JobStatus.SUCCEEDED)
    result = await asyncio.wait_for(Job(entry).result(), 1)
    assert result.job_id == "j1"
    assert calls == ["ended"]


async def test_when_finished_outlives_a_waiter_cancelled_by_someone_else() -> None:
    registry = Registry(clock=lambda: 0.0)
    entry = registry.allocate("shortapi", "m")
    entry.waiter = asyncio.get_running_loop().create_future()
    entry.waiter.cancel()  # e.g. awaited directly by a task that was then cancelled
    calls: list[JobStatus] = []
    when_finished(entry, lambda: calls.append(entry.status))
    await asyncio.sleep(0)
    assert calls == []  # a cancelled waiter is not the end of the job
    assert entry.waiter is not None
    entry.waiter.cancel()  # and again, after the callback was registered on it
    await asyncio.sleep(0)
    assert calls == []
    registry.advance(entry, JobStatus.CANCELLED)
    await asyncio.sleep(0)
    assert calls == [JobStatus.CANCELLED]
