"""The SQLite journal's own behaviour (``flux_async.stores.sqlite`` and its
``_sqlite_schema``/``_sqlite_writer``): the file refused or adopted at open, writes grouped
into few transactions, progress held until a flush, and every allocation reported
surviving SIGKILL (a real writer process, killed, and the file reopened). The expectations
every store meets are in ``test_store.py``."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
from support import wait_until
from test_store import record

from flux_async import GenerationRequest, JobStatus
from flux_async.stores import (
    JobRecord,
    JournalError,
    SQLiteJournal,
    fingerprint,
)

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


@pytest.mark.slow  # a writer subprocess killed with SIGKILL
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
