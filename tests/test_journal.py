"""Journaled batches over loopback: records before sends, resume without re-paying,
another input or a corrupt journal refused before anything is sent."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from support import FAST_POLL, FAST_RETRY, client_for, wait_until

from flux_async import FluxClient, JobStatus, PiAPI, PollPolicy, ShortAPI, Timeouts
from flux_async._store import JournalError, JournalMismatchError, MemoryStore
from flux_async.stores.sqlite import SQLiteJournal
from flux_async.testing import FakeProvider, Faults, Latency

pytestmark = pytest.mark.anyio

PROMPTS = [f"journal prompt {i}" for i in range(12)]


async def run(client: FluxClient, prompts: list[str], **kwargs: object) -> list:  # type: ignore[type-arg]
    outcomes = [o async for o in client.generate_many(prompts, **kwargs)]  # type: ignore[arg-type]
    return sorted(outcomes, key=lambda o: o.index)


async def records_of(path: Path) -> list:  # type: ignore[type-arg]
    async with SQLiteJournal(path) as journal:
        (batch,) = await journal.batches()
        return await journal.records(batch)


async def test_every_job_is_recorded_and_a_rerun_sends_nothing(
    fake: FakeProvider, tmp_path: Path
) -> None:
    path = tmp_path / "run.sqlite"
    out = tmp_path / "out"
    async with client_for("shortapi", fake) as client:
        first = await run(client, PROMPTS, journal=path, download_to=out)
    assert [o.status for o in first] == ["succeeded"] * len(PROMPTS)
    assert not any(o.resumed for o in first)
    records = await records_of(path)
    assert [r.index for r in records] == list(range(len(PROMPTS)))
    assert all(r.status is JobStatus.SUCCEEDED and r.job_id for r in records)
    assert all(r.files and Path(r.files[0]).exists() for r in records)
    assert {r.job_id for r in records} == {o.generation.job_id for o in first}

    attempts = fake.create_attempts
    async with client_for("shortapi", fake) as client:
        again = await run(client, PROMPTS, journal=path, download_to=out)
    assert fake.create_attempts == attempts  # nothing was sent again
    assert all(o.resumed for o in again)
    for before, after in zip(first, again, strict=True):
        assert after.status == before.status
        assert after.generation == before.generation
        assert after.files == before.files
        assert after.job.id == before.job.id


async def test_another_input_is_an_error_naming_the_index_and_sends_nothing(
    fake: FakeProvider, tmp_path: Path
) -> None:
    path = tmp_path / "run.sqlite"
    async with client_for("shortapi", fake) as client:
        await run(client, PROMPTS, journal=path)
        attempts = fake.create_attempts
        changed = [*PROMPTS[:7], "a different prompt", *PROMPTS[8:], "one more"]
        with pytest.raises(JournalMismatchError) as caught:
            await run(client, changed, journal=path)
        assert caught.value.index == 7
        assert "7" in str(caught.value) and "new_batch" in str(caught.value)
        with pytest.raises(JournalMismatchError) as shorter:
            await run(client, PROMPTS[:5], journal=path)
        assert shorter.value.index == 5
        assert fake.create_attempts == attempts
        # Asked for: a new batch in the same journal.
        fresh = await run(client, changed, journal=path, new_batch=True)
        assert [o.status for o in fresh] == ["succeeded"] * len(changed)
        assert not any(o.resumed for o in fresh)


@pytest.mark.parametrize(
    "content", [b"not a database at all" * 100, b"SQLite format 3\0" + b"\xff" * 4000]
)
async def test_a_corrupt_journal_is_a_clear_error_before_anything_is_sent(
    fake: FakeProvider, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "run.sqlite"
    path.write_bytes(content)
    async with client_for("shortapi", fake) as client:
        with pytest.raises(JournalError) as caught:
            await run(client, PROMPTS, journal=path)
    assert str(path) in str(caught.value)
    assert fake.create_attempts == 0


async def test_jobs_left_by_an_early_exit_are_reattached_not_paid_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run.sqlite"
    out = tmp_path / "out"
    async with FakeProvider(latency=(0.3, 0.6), seed=3) as fake:
        async with client_for("piapi", fake) as client:
            got = []
            stream = client.generate_many(PROMPTS, journal=path, download_to=out)
            async with contextlib.aclosing(stream):
                async for outcome in stream:
                    got.append(outcome)
                    break
        live = [r for r in await records_of(path) if not r.status.is_terminal]
        assert live and all(r.job_id for r in live)  # abandoned, still recorded as live
        async with client_for("piapi", fake) as client:
            again = await run(client, PROMPTS, journal=path, download_to=out)
        assert [o.status for o in again] == ["succeeded"] * len(PROMPTS)
        assert all(o.resumed for o in again)
        assert max(fake.creates_per_prompt.values()) == 1
        assert all(f.exists() for o in again for f in o.files)


async def test_creates_in_flight_are_found_in_piapi_history_or_end_unknown(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run.sqlite"
    prompts = PROMPTS[:4]
    # The first run's creates are held past its end; the later runs' answer at once.
    held = Faults(create_delay=Latency.shift(30.0, 0.0, after_jobs=len(prompts)))
    async with FakeProvider(latency=0.05, faults=held, seed=5) as fake:
        client = client_for("piapi", fake, timeouts=Timeouts(close_grace=0.0))
        async with client:
            stream = client.generate_many(prompts, journal=path)
            task = asyncio.ensure_future(stream.__anext__())
            await wait_until(lambda: len(fake.jobs) >= len(prompts))
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await stream.aclose()
        assert all(r.status is JobStatus.ALLOCATED for r in await records_of(path))
        async with client_for("piapi", fake) as client:
            again = await run(client, prompts, journal=path)
        assert [o.status for o in again] == ["succeeded"] * len(prompts)
        assert all(o.resumed for o in again)
        assert fake.requests["piapi.history"] >= 1
        assert max(fake.creates_per_prompt.values()) == 1


async def test_unknown_creates_are_resent_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    prompts = PROMPTS[:3]
    # The first run's creates are held past its end; the later runs' answer at once.
    held = Faults(create_delay=Latency.shift(30.0, 0.0, after_jobs=len(prompts)))
    async with FakeProvider(latency=0.05, faults=held, seed=5) as fake:
        client = client_for("shortapi", fake, timeouts=Timeouts(close_grace=0.0))
        async with client:
            stream = client.generate_many(prompts, journal=path)
            task = asyncio.ensure_future(stream.__anext__())
            await wait_until(lambda: len(fake.jobs) >= len(prompts))
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await stream.aclose()
        async with client_for("shortapi", fake) as client:
            again = await run(client, prompts, journal=path)
        assert [o.status for o in again] == ["unknown"] * len(prompts)
        assert all("in flight" in str(o.error) for o in again)
        assert max(fake.creates_per_prompt.values()) == 1
        async with client_for("shortapi", fake) as client:
            third = await run(client, prompts, journal=path)
        assert [o.status for o in third] == ["unknown"] * len(prompts)
        assert max(fake.creates_per_prompt.values()) == 1
        async with client_for("shortapi", fake) as client:
            resent = await run(client, prompts, journal=path, resubmit_unknown=True)
        assert [o.status for o in resent] == ["succeeded"] * len(prompts)
        assert set(fake.creates_per_prompt.values()) == {2}  # asked for: paid twice


async def test_missing_files_are_downloaded_again_on_resume(
    fake: FakeProvider, tmp_path: Path
) -> None:
    path = tmp_path / "run.sqlite"
    out = tmp_path / "out"
    async with client_for("shortapi", fake) as client:
        first = await run(client, PROMPTS[:3], journal=path, download_to=out)
        for file in first[1].files:
            file.unlink()
        again = await run(client, PROMPTS[:3], journal=path, download_to=out)
    assert all(f.exists() for o in again for f in o.files)
    assert again[1].files == first[1].files


async def test_a_store_object_and_the_client_store(fake: FakeProvider) -> None:
    store = MemoryStore()
    async with client_for("shortapi", fake, store=store) as client:
        outcomes = await run(client, PROMPTS[:3], journal=store)
        (batch,) = await store.batches()
        assert len(await store.records(batch)) == 3
        job = await client.submit("outside any batch")
        await job
        record = await store.find(job.local_id)
        assert record is not None and record.status is JobStatus.SUCCEEDED
        assert record.job_id == job.id and record.batch_id is None
    assert all(o.ok for o in outcomes)


async def test_journal_arguments_need_a_journal(fake: FakeProvider) -> None:
    from flux_async import ConfigurationError

    async with FluxClient(
        ShortAPI("k", base_url=fake.url), poll=FAST_POLL, retry=FAST_RETRY
    ) as client:
        with pytest.raises(ConfigurationError, match="need a journal"):
            client.generate_many(PROMPTS, resubmit_unknown=True)
    assert PiAPI  # the PiAPI paths are covered above


async def test_jobs_that_timed_out_locally_are_polled_again_on_resume(
    tmp_path: Path,
) -> None:
    # Accepted (so paid for) but not finished within the client's deadline: a resume
    # re-attaches them by their provider id instead of yielding them as timed out.
    path = tmp_path / "run.sqlite"
    out = tmp_path / "out"
    prompts = PROMPTS[:4]
    impatient = PollPolicy(wait_first=0.02, wait_initial=0.02, wait_max=0.05, timeout=0.2)
    async with FakeProvider(latency=0.02, faults=Faults(never_finish=1.0), seed=7) as fake:
        async with client_for("shortapi", fake, poll=impatient) as client:
            first = await run(client, prompts, journal=path, download_to=out)
        assert [o.status for o in first] == ["timed_out"] * len(prompts)
        records = await records_of(path)
        assert all(r.status is JobStatus.TIMED_OUT and r.job_id for r in records)

        # Meanwhile the provider finished them after all.
        for job in fake.jobs.values():
            job.outcome = "succeeded"
            job.ready_at = time.monotonic()
            job.image_urls = (f"{fake.url}/files/{job.id}-0.png",)
        async with client_for("shortapi", fake) as client:
            again = await run(client, prompts, journal=path, download_to=out)
        assert [o.status for o in again] == ["succeeded"] * len(prompts)
        assert all(o.resumed for o in again)
        assert {o.job.id for o in again} == {r.job_id for r in records}
        assert all(f.exists() for o in again for f in o.files)
        assert max(fake.creates_per_prompt.values()) == 1  # polled, not paid again
        finished = await records_of(path)
        assert all(r.status is JobStatus.SUCCEEDED and r.files for r in finished)

        # Now they are over: a third run neither sends nor polls anything.
        queries = sum(fake.polls_per_job.values())
        async with client_for("shortapi", fake) as client:
            third = await run(client, prompts, journal=path, download_to=out)
        assert [o.status for o in third] == ["succeeded"] * len(prompts)
        assert sum(fake.polls_per_job.values()) == queries
        assert max(fake.creates_per_prompt.values()) == 1


async def test_a_job_timed_out_again_stays_resumable(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    impatient = PollPolicy(wait_first=0.02, wait_initial=0.02, wait_max=0.05, timeout=0.2)
    async with FakeProvider(latency=0.02, faults=Faults(never_finish=1.0), seed=8) as fake:
        for _ in range(2):
            async with client_for("shortapi", fake, poll=impatient) as client:
                outcomes = await run(client, PROMPTS[:2], journal=path)
            assert [o.status for o in outcomes] == ["timed_out"] * 2
            assert all(r.status is JobStatus.TIMED_OUT for r in await records_of(path))
        assert outcomes[0].resumed  # the second run polled them again
        assert max(fake.creates_per_prompt.values()) == 1


async def test_repoll_timed_out_false_yields_them_as_they_ended(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    impatient = PollPolicy(wait_first=0.02, wait_initial=0.02, wait_max=0.05, timeout=0.2)
    async with FakeProvider(latency=0.02, faults=Faults(never_finish=1.0), seed=9) as fake:
        async with client_for("shortapi", fake, poll=impatient) as client:
            first = await run(client, PROMPTS[:3], journal=path)
        assert [o.status for o in first] == ["timed_out"] * 3
        queries = sum(fake.polls_per_job.values())
        async with client_for("shortapi", fake) as client:
            again = [
                o
                async for o in client.generate_many(
                    PROMPTS[:3], journal=path, repoll_timed_out=False
                )
            ]
        assert [o.status for o in again] == ["timed_out"] * 3
        assert all(o.resumed for o in again)
        assert sum(fake.polls_per_job.values()) == queries  # not polled again
        assert max(fake.creates_per_prompt.values()) == 1
