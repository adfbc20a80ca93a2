"""Job stores: the in-memory store and the SQLite journal, against the same expectations.

The journal tests use real SQLite files in ``tmp_path``; the crash test kills a real writer
process with SIGKILL and reopens what it left.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support import wait_until

from flux_async import GenerationRequest, Image, JobStatus
from flux_async._errors import ConfigurationError, JobFailedError
from flux_async.stores import (
    JobRecord,
    JobStore,
    JournalError,
    JournalMismatchError,
    MemoryStore,
    SQLiteJournal,
    fingerprint,
)

NOW = 1_700_000_000.5


def clock() -> float:
    return NOW


def record(local_id: str = "L1", index: int = 0, **changes: Any) -> JobRecord:
    request = changes.pop("request", GenerationRequest(prompt=f"a red fox {index}"))
    base = JobRecord.allocate(
        request,
        local_id=local_id,
        provider="shortapi",
        model="flux-dev",
        created_at=NOW - 10,
        batch_id="B",
        index=index,
        token_hash=hashlib.sha256(f"token-{local_id}".encode()).digest(),
    )
    return msgspec.structs.replace(base, **changes)


StoreFactory = Callable[[], JobStore]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Return a factory of stores over the same data (a reopened journal, the same dict)."""
    if request.param == "memory":
        memory = MemoryStore(clock=clock)
        return lambda: memory
    return lambda: SQLiteJournal(tmp_path / "run.sqlite", clock=clock)


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[JobStore]:
    opened = make_store()
    await opened.open()
    yield opened
    await opened.aclose()


async def reopened(make_store: StoreFactory, current: JobStore) -> JobStore:
    """Close ``current`` and open the data again, as a resumed run would."""
    await current.aclose()
    again = make_store()
    await again.open()
    return again


# Round trips -------------------------------------------------------------------------------


async def test_every_field_round_trips(make_store: StoreFactory) -> None:
    full = record(
        "L1",
        index=7,
        attempt=2,
        request=GenerationRequest(
            prompt="a red fox",
            aspect_ratio="16:9",
            seed=5,
            guidance=3.5,
            extra={"b": [1, 2], "a": {"nested": True}},
        ),
        secret_hash=hashlib.sha256(b"secret").digest(),
        job_id="job-1",
        status=JobStatus.FAILED,
        cost=Decimal("0.0125"),
        refunded=True,
        images=(Image(url="https://x/1.png", width=1024, height=768, content_type="image/png"),),
        seed=42,
        polls=3,
        files=("/out/000007-0.png",),
        error_kind="JobFailedError",
        error_message="nsfw",
        accepted_at=NOW - 5,
        finished_at=NOW - 1,
    )
    store = make_store()
    await store.open()
    await store.begin_batch("B")
    await store.put_allocated(full)
    store = await reopened(make_store, store)
    try:
        assert await store.find("L1") == full
        assert await store.records("B") == [full]
        assert (await store.records("B"))[0].generation_request() == GenerationRequest(
            prompt="a red fox",
            aspect_ratio="16:9",
            seed=5,
            guidance=3.5,
            extra={"b": [1, 2], "a": {"nested": True}},
        )
    finally:
        await store.aclose()


async def test_a_job_life_round_trips(make_store: StoreFactory) -> None:
    store = make_store()
    await store.open()
    allocated = record("L1")
    await store.put_allocated(allocated)
    store.put_accepted("L1", "job-1", Decimal("0.01"))
    store.put_status("L1", JobStatus.QUEUED)
    store.put_status("L1", JobStatus.RUNNING)
    images = [Image(url="https://x/1.png", width=512, height=512)]
    store.put_finished("L1", JobStatus.SUCCEEDED, images=images, seed=9, polls=4)
    store.put_files("L1", [Path("/out/000000-0.png")])
    store = await reopened(make_store, store)
    try:
        found = await store.find("L1")
        assert found == msgspec.structs.replace(
            allocated,
            job_id="job-1",
            status=JobStatus.SUCCEEDED,
            cost=Decimal("0.01"),
            images=tuple(images),
            seed=9,
            polls=4,
            files=("/out/000000-0.png",),
            accepted_at=NOW,
            finished_at=NOW,
        )
        assert found is not None
        generation = found.generation()
        assert generation is not None
        assert (generation.job_id, generation.images, generation.cost, generation.seed) == (
            "job-1",
            tuple(images),
            Decimal("0.01"),
            9,
        )
        snapshot = found.snapshot()
        assert (snapshot.status, snapshot.id, snapshot.polls, snapshot.created_at) == (
            JobStatus.SUCCEEDED,
            "job-1",
            4,
            NOW - 10,
        )
    finally:
        await store.aclose()


async def test_failure_keeps_the_error_kind_and_message(store: JobStore) -> None:
    await store.put_allocated(record("L1"))
    store.put_accepted("L1", "job-1")
    store.put_finished(
        "L1",
        JobStatus.FAILED,
        refunded=True,
        cost=Decimal(0),
        error=JobFailedError("job L1 failed: nsfw", provider="shortapi"),
    )
    found = await store.find("L1")
    assert found is not None
    assert (found.status, found.refunded, found.cost) == (JobStatus.FAILED, True, Decimal(0))
    assert (found.error_kind, found.error_message) == ("JobFailedError", "job L1 failed: nsfw")
    assert found.generation() is None
    assert found.snapshot().error == "job L1 failed: nsfw"


# State rules -------------------------------------------------------------------------------


async def test_status_only_moves_forward_and_terminal_is_absorbing(store: JobStore) -> None:
    await store.put_allocated(record("L1"))
    store.put_status("L1", JobStatus.RUNNING)
    store.put_status("L1", JobStatus.QUEUED)  # late, out of order
    assert (found := await store.find("L1")) is not None and found.status is JobStatus.RUNNING
    store.put_finished("L1", JobStatus.SUCCEEDED, images=[Image(url="https://x/1.png")])
    store.put_finished("L1", JobStatus.FAILED, error=RuntimeError("late"))
    store.put_status("L1", JobStatus.RUNNING)
    found = await store.find("L1")
    assert found is not None
    assert found.status is JobStatus.SUCCEEDED
    assert found.images == (Image(url="https://x/1.png"),)
    assert found.error_kind is None


async def test_accepted_after_the_end_keeps_the_id_and_the_end(store: JobStore) -> None:
    # A callback can finish a job before the create's answer records its id.
    await store.put_allocated(record("L1"))
    store.put_finished("L1", JobStatus.SUCCEEDED, cost=Decimal("0.02"))
    store.put_accepted("L1", "job-1", Decimal("0.05"))
    store.put_accepted("L1", "job-other")  # a duplicate answer changes nothing
    found = await store.find("L1")
    assert found is not None
    assert (found.status, found.job_id, found.cost) == (
        JobStatus.SUCCEEDED,
        "job-1",
        Decimal("0.02"),
    )
    assert await store.find_job("shortapi", "job-1") == found
    assert await store.find_job("shortapi", "job-other") is None


async def test_writes_for_an_unknown_local_id_are_ignored(store: JobStore) -> None:
    store.put_accepted("nope", "job-1")
    store.put_status("nope", JobStatus.RUNNING)
    store.put_finished("nope", JobStatus.FAILED)
    store.put_files("nope", ["/x"])
    await store.flush()
    assert await store.find("nope") is None
    assert await store.find_job("shortapi", "job-1") is None


async def test_wrong_kind_of_status_is_refused(store: JobStore) -> None:
    with pytest.raises(ValueError, match="put_finished"):
        store.put_status("L1", JobStatus.SUCCEEDED)
    with pytest.raises(ValueError, match="terminal"):
        store.put_finished("L1", JobStatus.RUNNING)


async def test_a_duplicate_local_id_is_refused_without_losing_the_others(
    store: JobStore,
) -> None:
    await store.put_allocated(record("L1"))
    results = await asyncio.gather(
        store.put_allocated(record("L2", index=1)),
        store.put_allocated(record("L1", index=5)),
        store.put_allocated(record("L3", index=2)),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], JournalError)
    assert [r.local_id for r in await store.records("B")] == ["L1", "L2", "L3"]
    assert (found := await store.find("L1")) is not None and found.index == 0


# Lookups -----------------------------------------------------------------------------------


async def test_lookups(store: JobStore) -> None:
    assert await store.begin_batch("B") is False
    assert await store.begin_batch("B") is True
    assert await store.begin_batch("A") is False
    assert await store.batches() == ["B", "A"]
    for local_id, index, attempt in [("L3", 2, 1), ("L1", 0, 1), ("L2", 1, 1), ("L4", 1, 2)]:
        await store.put_allocated(record(local_id, index=index, attempt=attempt))
    await store.put_allocated(record("other", batch_id="A"))
    store.put_accepted("L2", "job-2")
    assert [(r.index, r.attempt) for r in await store.records("B")] == [
        (0, 1),
        (1, 1),
        (1, 2),
        (2, 1),
    ]
    assert [r.local_id for r in await store.records("A")] == ["other"]
    assert await store.records("missing") == []
    assert (found := await store.find_job("shortapi", "job-2")) is not None
    assert found.local_id == "L2"
    assert await store.find_job("piapi", "job-2") is None
    token = hashlib.sha256(b"token-L3").digest()
    assert (found := await store.find_by_token_hash(token)) is not None
    assert found.local_id == "L3"
    assert await store.find_by_token_hash(hashlib.sha256(b"forged").digest()) is None
    assert await store.find("missing") is None


async def test_check_inputs(store: JobStore) -> None:
    first = record("L1", index=3)
    await store.put_allocated(first)
    assert await store.check_inputs("B", 3, first.fingerprint) == first
    assert await store.check_inputs("B", 4, first.fingerprint) is None
    assert await store.check_inputs("A", 3, first.fingerprint) is None
    resent = record("L2", index=3, attempt=2)
    await store.put_allocated(resent)
    assert await store.check_inputs("B", 3, first.fingerprint) == resent  # the latest attempt
    changed = fingerprint(GenerationRequest(prompt="a blue fox"), "shortapi", "flux-dev")
    with pytest.raises(JournalMismatchError, match=r"input 3 of batch 'B'") as caught:
        await store.check_inputs("B", 3, changed)
    assert (caught.value.index, caught.value.batch_id) == (3, "B")
    assert isinstance(caught.value, ConfigurationError)


async def test_meta_round_trips(make_store: StoreFactory) -> None:
    store = make_store()
    await store.open()
    assert await store.load_meta("latency") is None
    await store.save_meta("latency", b"\x00one")
    await store.save_meta("latency", b"\x00two")
    store = await reopened(make_store, store)
    try:
        assert await store.load_meta("latency") == b"\x00two"
    finally:
        await store.aclose()


# Fingerprints ------------------------------------------------------------------------------

BASE = GenerationRequest(prompt="a red fox", extra={"b": 1, "a": 2})


def test_fingerprint_is_stable() -> None:
    same = GenerationRequest(prompt="a red fox", extra={"a": 2, "b": 1})
    assert fingerprint(BASE, "shortapi", "flux-dev") == fingerprint(same, "shortapi", "flux-dev")
    assert fingerprint(GenerationRequest(prompt="x", guidance=3), "piapi", "m") == fingerprint(
        GenerationRequest(prompt="x", guidance=3.0), "piapi", "m"
    )
    # Pinned: journals written by one version must be readable by the next.
    assert fingerprint(GenerationRequest(prompt="a red fox"), "shortapi", "flux-dev") == (
        hashlib.sha256(
            b'{"model":"flux-dev","provider":"shortapi","request":{"prompt":"a red fox"}}'
        ).hexdigest()
    )


CHANGES: dict[str, Any] = {
    "prompt": "a red fox!",
    "image_url": "https://x/in.png",
    "aspect_ratio": "16:9",
    "width": 1024,
    "height": 768,
    "num_images": 2,
    "seed": 0,
    "steps": 28,
    "guidance": 3.5,
    "strength": 0.5,
    "model": "flux-dev",
    "extra": {"b": 1, "a": 3},
}


def test_every_request_field_is_in_the_changes() -> None:
    assert set(CHANGES) == set(GenerationRequest.__struct_fields__)


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_fingerprint_changes_with_every_field(field: str) -> None:
    changed = msgspec.structs.replace(BASE, **{field: CHANGES[field]})
    assert fingerprint(changed, "shortapi", "flux-dev") != fingerprint(BASE, "shortapi", "flux-dev")


def test_fingerprint_changes_with_provider_and_model() -> None:
    base = fingerprint(BASE, "shortapi", "flux-dev")
    assert fingerprint(BASE, "piapi", "flux-dev") != base
    assert fingerprint(BASE, "shortapi", "flux-schnell") != base


# The journal file --------------------------------------------------------------------------


async def test_a_journal_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    async with SQLiteJournal(path) as journal:
        await journal.put_allocated(record("L1"))
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 2")
    with pytest.raises(JournalError, match="newer flux_async") as caught:
        await SQLiteJournal(path).open()
    assert str(path) in str(caught.value)
    assert caught.value.path == str(path)


async def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    path.write_bytes(random.Random(1).randbytes(8192))
    with pytest.raises(JournalError, match="not a readable SQLite file") as caught:
        await SQLiteJournal(path).open()
    assert str(path) in str(caught.value)
    assert path.read_bytes() == random.Random(1).randbytes(8192)  # left as it was


async def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(JournalError, match="not a flux_async journal") as caught:
        await SQLiteJournal(path).open()
    assert str(path) in str(caught.value)


async def test_a_damaged_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    async with SQLiteJournal(path) as journal:
        await asyncio.gather(*(journal.put_allocated(record(f"L{i}", i)) for i in range(300)))
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    for start in range(2 * page, len(data), page):  # every page's header, past the schema
        data[start : start + 16] = b"\xa5" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(JournalError, match="corrupt") as caught:
        await SQLiteJournal(path).open()
    assert str(path) in str(caught.value)


async def test_a_directory_or_missing_parent_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="is a directory"):
        await SQLiteJournal(tmp_path).open()
    with pytest.raises(JournalError, match="cannot open") as caught:
        await SQLiteJournal(tmp_path / "missing" / "run.sqlite").open()
    assert str(tmp_path / "missing") in str(caught.value)


async def test_a_journal_in_use_by_another_run_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    async with SQLiteJournal(path) as journal:
        await journal.put_allocated(record("L1"))
        with pytest.raises(JournalError, match="in use by another process"):
            await SQLiteJournal(path).open()
        assert await journal.find("L1") is not None  # the holder is unaffected
    async with SQLiteJournal(path) as journal:  # free again once closed
        assert await journal.find("L1") is not None


async def test_an_empty_file_becomes_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    path.touch()
    async with SQLiteJournal(path) as journal:
        await journal.put_allocated(record("L1"))
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_lifecycle_errors(tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "run.sqlite")
    with pytest.raises(JournalError, match="unopened"):
        journal.put_status("L1", JobStatus.RUNNING)
    await journal.open()
    await journal.aclose()
    await journal.aclose()  # idempotent
    with pytest.raises(JournalError, match="closed"):
        await journal.put_allocated(record("L1"))
    with pytest.raises(JournalError, match="already opened"):
        await journal.open()


# Batching ----------------------------------------------------------------------------------


async def test_writes_of_one_tick_share_one_transaction(tmp_path: Path) -> None:
    async with SQLiteJournal(tmp_path / "run.sqlite") as journal:
        before = journal.transactions, journal.durable_transactions
        # 200 allocations awaited together, in one tick: one synced transaction.
        await asyncio.gather(*(journal.put_allocated(record(f"L{i}", i)) for i in range(200)))
        assert (journal.transactions, journal.durable_transactions) == (
            before[0] + 1,
            before[1] + 1,
        )
        # 600 events in one tick: one transaction, not synced.
        for i in range(200):
            journal.put_accepted(f"L{i}", f"job-{i}")
            journal.put_status(f"L{i}", JobStatus.RUNNING)
            journal.put_finished(f"L{i}", JobStatus.SUCCEEDED)
        await journal.flush()
        assert (journal.transactions, journal.durable_transactions) == (
            before[0] + 2,
            before[1] + 1,
        )
        await journal.flush()  # nothing queued: no empty transaction
        assert journal.transactions == before[0] + 2
        assert {r.status for r in await journal.records("B")} == {JobStatus.SUCCEEDED}


async def test_writes_queued_while_writing_go_in_the_next_transaction(tmp_path: Path) -> None:
    async with SQLiteJournal(tmp_path / "run.sqlite") as journal:
        await journal.put_allocated(record("L0"))
        before = journal.transactions
        # Hold the writer thread, so the first write is still in progress for the next ticks.
        gate = threading.Event()
        assert journal._executor is not None
        journal._executor.submit(gate.wait, 10)
        first = asyncio.ensure_future(journal.put_allocated(record("L1", 1)))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # tick 1: its write is handed to the (busy) writer
        later = []
        for i in range(2, 7):  # ticks 2..6: queued meanwhile
            journal.put_accepted(f"L{i - 1}", f"job-{i - 1}")
            later.append(asyncio.ensure_future(journal.put_allocated(record(f"L{i}", i))))
            await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, *later)
        assert journal.transactions - before == 2
        await journal.flush()
        assert journal.transactions - before == 2  # the events went with the allocations
        assert (found := await journal.find("L5")) is not None
        assert (found.status, found.job_id) == (JobStatus.SUBMITTED, "job-5")


async def test_events_wait_briefly_for_company_and_progress_is_held(tmp_path: Path) -> None:
    async with SQLiteJournal(tmp_path / "run.sqlite") as journal:
        await asyncio.gather(*(journal.put_allocated(record(f"L{i}", i)) for i in range(3)))
        before = journal.transactions
        # An acceptance goes at the end of its tick (a provider id a crash would lose) ...
        journal.put_accepted("L0", "job-0")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        writer = journal._writer
        assert writer is not None
        assert writer.writing or journal.transactions == before + 1
        await wait_until(lambda: journal.transactions == before + 1)
        # ... ends wait for company: those of several ticks within EVENT_DELAY go together,
        # written unprompted.
        for i in range(3):
            journal.put_status(f"L{i}", JobStatus.RUNNING)
            journal.put_finished(f"L{i}", JobStatus.FAILED)
            await asyncio.sleep(0)
        assert not writer.writing and journal.transactions == before + 1
        await wait_until(lambda: journal.transactions > before + 1)
        assert journal.transactions == before + 2
        # Progress (queued, running) is not written as it happens ...
        journal.put_accepted("L1", "job-1")
        journal.put_status("L3", JobStatus.RUNNING)
        journal.put_status("L3", JobStatus.QUEUED)  # late: ignored
        assert journal._statuses == {"L3": JobStatus.RUNNING}
        await wait_until(lambda: journal.transactions > before + 2)
        assert journal._statuses == {"L3": JobStatus.RUNNING}
        # ... but by a flush (every read flushes).
        await journal.put_allocated(record("L3", 3))
        journal.put_accepted("L3", "job-3")
        journal.put_status("L3", JobStatus.RUNNING)
        found = {r.local_id: r.status for r in await journal.records("B")}
    assert found == {
        "L0": JobStatus.FAILED,
        "L1": JobStatus.FAILED,
        "L2": JobStatus.FAILED,
        "L3": JobStatus.RUNNING,
    }


async def test_progress_held_is_written_at_close(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    async with SQLiteJournal(path) as journal:
        await journal.put_allocated(record("L1"))
        journal.put_accepted("L1", "job-1")
        journal.put_status("L1", JobStatus.RUNNING)
    async with SQLiteJournal(path) as journal:
        found = await journal.find("L1")
    assert found is not None and found.status is JobStatus.RUNNING


# A crash -----------------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import asyncio, hashlib, sys
    from flux_async import GenerationRequest, JobStatus
    from flux_async.stores import JobRecord, SQLiteJournal

    async def allocate(journal, i):
        record = JobRecord.allocate(
            GenerationRequest(prompt=f"prompt {i}"), local_id=f"L{i}", provider="shortapi",
            model="flux-dev", created_at=0.0, batch_id="B", index=i,
            token_hash=hashlib.sha256(str(i).encode()).digest(),
        )
        await journal.put_allocated(record)
        print(f"allocated {i}", flush=True)
        journal.put_accepted(f"L{i}", f"job-{i}")  # batched events between allocations
        journal.put_status(f"L{i}", JobStatus.RUNNING)

    async def main():
        async with SQLiteJournal(sys.argv[1]) as journal:
            await journal.begin_batch("B")
            i = 0
            while True:
                # Eight creates in flight at once, as a batch with concurrency 8 would have.
                await asyncio.gather(*(allocate(journal, i + k) for k in range(8)))
                journal.put_finished(f"L{i}", JobStatus.SUCCEEDED)
                i += 8

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_every_allocation_reported_survives_sigkill(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "run.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert child.stdout is not None and child.stderr is not None
    target = rng.randint(1, 200)
    printed: list[str] = []
    try:
        while len(printed) < target:
            line = child.stdout.readline()
            if not line:
                raise AssertionError(f"the writer ended early: {child.stderr.read()!r}")
            printed.append(line.decode().strip())
        time.sleep(rng.random() * 0.05)  # somewhere in the middle of a write
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        rest, _ = child.communicate()
    assert child.returncode == -signal.SIGKILL
    printed += rest.decode().split("\n")
    allocated = {int(line.split()[1]) for line in printed if line.startswith("allocated ")}
    assert len(allocated) >= target
    held = asyncio.run(_reopen_records(path))
    assert allocated <= set(held)
    for index in allocated:
        assert held[index].fingerprint == fingerprint(
            GenerationRequest(prompt=f"prompt {index}"), "shortapi", "flux-dev"
        )
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def _reopen_records(path: Path) -> dict[int | None, JobRecord]:
    async with SQLiteJournal(path) as journal:  # opens cleanly after the kill
        assert await journal.batches() == ["B"]
        return {r.index: r for r in await journal.records("B")}
