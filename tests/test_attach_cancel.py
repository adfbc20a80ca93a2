"""FluxClient.attach by provider id, and Job.cancel on each provider (remote where PiAPI
documents it, else local, saying the provider may still charge)."""

from __future__ import annotations

import time

import pytest
from support import client_for, wait_until

from flux_async import (
    ConfigurationError,
    JobCancelledError,
    JobStatus,
    Timeouts,
    ValidationError,
)
from flux_async.testing import FakeProvider

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("name", ["shortapi", "piapi"])
async def test_attach_by_id_from_another_client(name: str) -> None:
    async with FakeProvider(latency=0.4, seed=2) as fake:
        async with client_for(name, fake, timeouts=Timeouts(close_grace=0.0)) as first:
            job = await first.submit("attach me")
            job_id = job.id
        assert job_id is not None and job.status is JobStatus.CANCELLED  # abandoned locally
        async with client_for(name, fake) as second:
            attached = await second.attach(job_id, model="m")
            assert attached.id == job_id
            again = await second.attach(job_id)
            assert again.local_id == attached.local_id  # one job, one entry
            generation = await attached.result(timeout=10)
        assert generation.job_id == job_id and generation.images
        assert generation.model == "m"
        assert fake.creates_per_prompt["attach me"] == 1


async def test_attach_refuses_aimlapi_and_bad_ids(fake: FakeProvider) -> None:
    async with client_for("aimlapi", fake) as client:
        with pytest.raises(ConfigurationError, match="synchronously"):
            await client.attach("abc")
    async with client_for("shortapi", fake) as client:
        for bad in ("", "  ", None, 5):
            with pytest.raises(ValidationError):
                await client.attach(bad)  # type: ignore[arg-type]


async def test_piapi_pending_job_is_cancelled_remotely() -> None:
    async with FakeProvider(latency=6.0, seed=1) as fake:
        async with client_for("piapi", fake) as client:
            job = await client.submit("cancel me while pending")
            result = await job.cancel()
            assert result.remote and result.ended
            assert result.status is JobStatus.CANCELLED
            assert job.id in result.detail
            with pytest.raises(JobCancelledError):
                await job
            assert fake.cancels == 1
            assert fake.jobs[job.id].outcome == "cancelled"
            again = await job.cancel()
            assert not again.ended and "already ended" in again.detail


async def test_piapi_running_job_is_ended_locally_saying_it_may_be_charged() -> None:
    # Queued for the first 30% of its latency: running after 0.6 s, for 1.4 s.
    async with FakeProvider(latency=2.0, seed=1) as fake:
        async with client_for("piapi", fake) as client:
            job = await client.submit("cancel me while running")
            await wait_until(lambda: _running(fake, job.id))
            result = await job.cancel()
            assert result.ended and not result.remote
            assert "may still finish and charge" in result.detail
            assert "refused" in result.detail
            assert job.status is JobStatus.CANCELLED
            assert fake.requests["piapi.cancel"] == 1 and fake.cancels == 0


def _running(fake: FakeProvider, job_id: str) -> bool:
    return fake.jobs[job_id].phase(time.monotonic()) == "running"


@pytest.mark.parametrize("running", [False, True])
async def test_shortapi_has_no_remote_cancel(running: bool) -> None:
    async with FakeProvider(latency=2.0, seed=1) as fake:
        async with client_for("shortapi", fake) as client:
            job = await client.submit("shortapi cancel")
            if running:
                await wait_until(lambda: _running(fake, job.id))
            result = await job.cancel()
            assert result.ended and not result.remote
            assert "may still finish and charge" in result.detail
            assert "documents no cancel" in result.detail
            with pytest.raises(JobCancelledError):
                await job
            assert fake.cancels == 0


async def test_aimlapi_job_in_flight_ends_locally() -> None:
    async with FakeProvider(latency=3.0, seed=1) as fake:
        async with client_for("aimlapi", fake) as client:
            job = await client.submit("aimlapi cancel")  # returns once sent
            await wait_until(lambda: fake.jobs != {})
            result = await job.cancel()
            assert result.ended and not result.remote
            assert "may still create and charge" in result.detail
            assert job.status is JobStatus.CANCELLED


async def test_cancel_of_a_finished_job_changes_nothing(fake: FakeProvider) -> None:
    async with client_for("piapi", fake) as client:
        job = await client.submit("done already")
        await job
        result = await job.cancel()
        assert not result.ended and result.status is JobStatus.SUCCEEDED
        assert fake.requests["piapi.cancel"] == 0
