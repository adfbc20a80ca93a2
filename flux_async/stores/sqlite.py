"""`SQLiteJournal`: a job store in one SQLite file (stdlib ``sqlite3``), for one machine.

Every SQLite call runs on one dedicated writer thread, which owns the connection (the file's
schema, its checks and the row codec are in ``_sqlite_schema.py``; the grouping of writes
into transactions, `GroupWriter`, in ``_sqlite_writer.py``). The event loop only appends
writes to lists, one per kind of statement. Awaited writes (allocations,
batches, meta) and acceptances (a provider id not yet on disk is a job a crash could lose)
go at the end of the tick they were made in; other events (ends, saved files) wait up to
`EVENT_DELAY` seconds for company, or go with the next write, whichever comes first.
Everything pending then is written in **one** transaction, each kind with one
``executemany``; whatever is queued while a transaction is being written goes in the next
one. That grouping is what keeps a 10,000-job batch cheap (about two thousand
transactions, not one per event); the thread keeps the loop responsive while a durable
commit waits for the disk.

Progress that a resume does not need (``queued``, ``running``) is held in memory, not
written as it happens: a resume polls every accepted job again anyway. It is written by
`flush`, before every read, and at close, so the file shows it once the run is over.

Durability. The journal is in WAL mode with ``synchronous=NORMAL``: a committed transaction
is in the operating system's hands when the commit returns, so it survives the process being
killed (``kill -9``, a crash), but the last ones may be lost if the machine loses power. That
is enough for acceptances and outcomes (losing one costs no money: the job is recovered like
a create in flight, or polled again by its provider id). A transaction that holds an
allocation is committed with ``synchronous=FULL`` instead, which syncs the WAL to disk before
the commit returns: the record of a job must survive anything before its paid create is
sent. Allocations queued together share that one sync.

The file holds one process at a time (``locking_mode=EXCLUSIVE``): two runs resuming one
journal at once could each pay for the same input.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from .._models import Image, JobStatus
from .._record import JobRecord
from .._store import (
    JournalError,
    check_input,
    error_fields,
    files_of,
    require_non_terminal,
    require_terminal,
)
from ._sqlite_schema import (
    ACCEPT,
    BATCH,
    FILES,
    FINISH,
    FINISH_TIMED_OUT,
    INSERT,
    META,
    SELECT,
    STATUS,
    connect,
    cost_text,
    encode,
    record_of,
    row_of,
)
from ._sqlite_writer import EVENT_DELAY, GroupWriter

__all__ = ["EVENT_DELAY", "SQLiteJournal"]

_T = TypeVar("_T")


class SQLiteJournal:
    """A job store in a SQLite file: survives the process, one machine, one process at once.

    Use it as an async context manager, or call `open` and `aclose`::

        async with SQLiteJournal("run.sqlite") as journal:
            ...

    Args:
        path: the journal file; created (with its schema) if missing or empty.
        clock: wall-clock time for ``accepted_at``/``finished_at`` (``time.time``).

    Raises (from `open`):
        JournalError: the file is not SQLite, is corrupt, is another program's database,
            was written by a newer version of flux_async, or is open in another process.
    """

    def __init__(
        self, path: str | PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._state = "unopened"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # used on the writer thread only
        self._writer: GroupWriter | None = None  # once open
        self._statuses: dict[str, JobStatus] = {}  # progress held back (see module doc)

    def __repr__(self) -> str:
        return f"<SQLiteJournal {str(self.path)!r} {self._state}>"

    @property
    def transactions(self) -> int:
        """Write transactions committed so far (each holds every write of one tick or more)."""
        return self._writer.transactions if self._writer is not None else 0

    @property
    def durable_transactions(self) -> int:
        """Of those, the ones synced to disk before returning (they held an allocation)."""
        return self._writer.durable_transactions if self._writer is not None else 0

    async def __aenter__(self) -> SQLiteJournal:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # Lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the journal: create it, or check that this version can use it."""
        if self._state != "unopened":
            raise JournalError(f"the journal {self.path} was already opened", path=self._name)
        self._state = "opening"
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flux-journal")
        try:
            await self._loop.run_in_executor(self._executor, self._open_sync)
        except BaseException:
            self._state = "closed"
            self._executor.shutdown(wait=False)
            raise
        assert self._conn is not None
        self._writer = GroupWriter(self._loop, self._executor, self._conn, self._name)
        self._state = "open"

    async def aclose(self) -> None:
        """Write what is queued, then close the file (idempotent)."""
        if self._state != "open":
            self._state = "closed"
            return
        try:
            await self.flush()
        finally:
            self._state = "closed"
            assert self._loop is not None and self._executor is not None
            try:
                await self._loop.run_in_executor(self._executor, self._close_sync)
            finally:
                self._executor.shutdown(wait=True)

    @property
    def _name(self) -> str:
        return str(self.path)

    def _open_sync(self) -> None:
        if self.path.is_dir():
            raise JournalError(f"the journal {self._name} is a directory", path=self._name)
        self._conn = connect(self._name)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # Writes ----------------------------------------------------------------------------

    async def begin_batch(self, batch_id: str) -> bool:
        """Record a batch durably; return whether the journal already held it (a resume)."""
        held = await self._read(self._batch_held, batch_id)
        if not held:
            await self._open_writer().wait(BATCH, (batch_id, self._clock()), durable=True)
        return held

    async def batches(self) -> list[str]:
        """Return the ids of the batches held, oldest first."""
        return await self._read(self._batches_sync)

    async def put_allocated(self, record: JobRecord) -> None:
        """Store a new job's record; it is on disk (synced) when this returns."""
        await self._open_writer().wait(INSERT, row_of(record), durable=True)

    def put_accepted(self, local_id: str, job_id: str, cost: Decimal | None = None) -> None:
        """Queue: the provider accepted the job as ``job_id``."""
        # Prompt: until it is written, a crash leaves the job to be recovered as a create in
        # flight (with ShortAPI and no callbacks: unknown).
        self._open_writer().queue(
            ACCEPT, (job_id, self._clock(), cost_text(cost), local_id), prompt=True
        )

    def put_status(self, local_id: str, status: JobStatus) -> None:
        """Note that the job moved on to a non-terminal ``status``.

        Held in memory and written by the next `flush` (each read and `aclose` flush): a
        resume needs only the acceptance, which `put_accepted` writes.
        """
        require_non_terminal(status)
        self._require_open()
        held = self._statuses.get(local_id)
        if (held is None or status.rank > held.rank) and status in STATUS:
            self._statuses[local_id] = status

    def put_finished(
        self,
        local_id: str,
        status: JobStatus,
        *,
        images: Sequence[Image] = (),
        cost: Decimal | None = None,
        refunded: bool = False,
        seed: int | None = None,
        polls: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Queue: the job ended with the terminal ``status`` (ignored if it already ended)."""
        require_terminal(status)
        kind, message = error_fields(error)
        writer = self._open_writer()
        self._statuses.pop(local_id, None)  # superseded by the end
        writer.queue(
            FINISH_TIMED_OUT if status is JobStatus.TIMED_OUT else FINISH,
            (
                status.value,
                encode(images) if images else b"[]",
                cost_text(cost),
                int(refunded),
                seed,
                polls,
                kind,
                message,
                self._clock(),
                local_id,
            ),
        )

    def put_files(self, local_id: str, files: Iterable[str | PathLike[str]]) -> None:
        """Queue: the job's images were saved at ``files``."""
        self._open_writer().queue(FILES, (encode(files_of(files)), local_id))

    async def save_meta(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``; written when this returns."""
        await self._open_writer().wait(META, (key, bytes(value)))

    async def flush(self) -> None:
        """Return once every write queued so far (and the progress held) is committed."""
        writer = self._open_writer()
        if writer.failure is None:
            # The progress held in memory (see `put_status`).
            for local_id, status in self._statuses.items():
                writer.add(STATUS[status], (status.value, local_id))
            self._statuses.clear()
        await writer.flush()

    # Reads -----------------------------------------------------------------------------

    async def records(self, batch_id: str) -> list[JobRecord]:
        """Return a batch's records by input index, then attempt (superseded ones too)."""
        return await self._read(
            self._select, " WHERE batch_id = ? ORDER BY input_index, attempt", (batch_id,)
        )

    async def find(self, local_id: str) -> JobRecord | None:
        """Return the record with this local id."""
        return _first(await self._read(self._select, " WHERE local_id = ?", (local_id,)))

    async def find_job(self, provider: str, job_id: str) -> JobRecord | None:
        """Return the record of the job ``provider`` knows as ``job_id``."""
        return _first(
            await self._read(
                self._select, " WHERE provider = ? AND job_id = ? LIMIT 1", (provider, job_id)
            )
        )

    async def find_by_token_hash(self, token_hash: bytes) -> JobRecord | None:
        """Return the record whose callback token has this SHA-256 digest."""
        return _first(
            await self._read(self._select, " WHERE token_hash = ? LIMIT 1", (token_hash,))
        )

    async def check_inputs(self, batch_id: str, index: int, fingerprint: str) -> JobRecord | None:
        """Return the latest record of input ``index`` if it holds the same request.

        Raises:
            JournalMismatchError: the journal holds another request at ``index``.
        """
        prior = _first(
            await self._read(
                self._select,
                " WHERE batch_id = ? AND input_index = ? ORDER BY attempt DESC LIMIT 1",
                (batch_id, index),
            )
        )
        try:
            return check_input(prior, batch_id, index, fingerprint)
        except JournalError as exc:
            exc.path = self._name
            raise

    async def load_meta(self, key: str) -> bytes | None:
        """Return the value saved under ``key``."""
        return await self._read(self._meta_sync, key)

    # Machinery -------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._state != "open":
            raise JournalError(f"the journal {self.path} is {self._state}", path=self._name)

    def _open_writer(self) -> GroupWriter:
        self._require_open()
        assert self._writer is not None
        return self._writer

    async def _read(self, function: Callable[..., _T], *args: Any) -> _T:
        await self.flush()  # reads see every write queued before them
        assert self._loop is not None and self._executor is not None
        try:
            return await self._loop.run_in_executor(self._executor, function, *args)
        except sqlite3.Error as exc:
            raise JournalError(
                f"cannot read the journal {self.path}: {exc}", path=self._name
            ) from exc

    def _select(self, where: str, params: tuple[Any, ...]) -> list[JobRecord]:
        assert self._conn is not None
        return [record_of(row) for row in self._conn.execute(SELECT + where, params)]

    def _batch_held(self, batch_id: str) -> bool:
        assert self._conn is not None
        row = self._conn.execute("SELECT 1 FROM batches WHERE batch_id = ?", (batch_id,))
        return row.fetchone() is not None

    def _batches_sync(self) -> list[str]:
        assert self._conn is not None
        return [row[0] for row in self._conn.execute("SELECT batch_id FROM batches ORDER BY rowid")]

    def _meta_sync(self, key: str) -> bytes | None:
        assert self._conn is not None
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row is not None else None


def _first(records: list[JobRecord]) -> JobRecord | None:
    return records[0] if records else None
