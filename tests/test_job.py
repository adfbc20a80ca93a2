"""`Job`: waiting on a job's result, with and without a timeout, over loopback."""

from __future__ import annotations

import asyncio

import pytest
from support import FAST_POLL, client_for

from flux_async import JobStatus
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
