"""`SQLiteJournal`: a job store in one SQLite file (stdlib ``sqlite3``), for one machine.

Every SQLite call runs on one dedicated writer thread, which owns the connection. The event
loop only appends writes to lists, one per kind of statement. Awaited writes (allocations,
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

import msgspec

from .._models import Image, JobStatus
from .._store import (
    _LOWER,
    JobRecord,
    JournalError,
    check_input,
    error_fields,
    files_of,
    require_non_terminal,
    require_terminal,
)

__all__ = ["EVENT_DELAY", "SQLiteJournal"]

_T = TypeVar("_T")

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of the journals this version writes."""
APPLICATION_ID = 0x464C5558
"""``PRAGMA application_id`` marking a file as a flux_async journal ("FLUX")."""
_BUSY_TIMEOUT = 1.0
"""Seconds to wait for a journal held by another process before saying so."""
EVENT_DELAY = 0.02
"""Seconds an event (a job's end, its saved files) may wait for others to share its
transaction when no other write is pending."""

_SCHEMA = f"""
CREATE TABLE batches (
    batch_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
CREATE TABLE jobs (
    local_id TEXT PRIMARY KEY,
    batch_id TEXT,
    input_index INTEGER,
    attempt INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    request BLOB NOT NULL,
    token_hash BLOB,
    secret_hash BLOB,
    job_id TEXT,
    status TEXT NOT NULL,
    cost TEXT,
    refunded INTEGER NOT NULL,
    images BLOB NOT NULL,
    seed INTEGER,
    polls INTEGER NOT NULL,
    files BLOB NOT NULL,
    error_kind TEXT,
    error_message TEXT,
    created_at REAL NOT NULL,
    accepted_at REAL,
    finished_at REAL
);
CREATE INDEX jobs_by_input ON jobs (batch_id, input_index, attempt);
CREATE INDEX jobs_by_job_id ON jobs (provider, job_id);
CREATE INDEX jobs_by_token ON jobs (token_hash);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
"""

_COLUMNS = (
    "local_id, batch_id, input_index, attempt, fingerprint, provider, model, request, "
    "token_hash, secret_hash, job_id, status, cost, refunded, images, seed, polls, files, "
    "error_kind, error_message, created_at, accepted_at, finished_at"
)
_INSERT = f"INSERT INTO jobs ({_COLUMNS}) VALUES ({', '.join('?' * 23)})"
_SELECT = f"SELECT {_COLUMNS} FROM jobs"
_ACCEPT = (
    "UPDATE jobs SET job_id = COALESCE(job_id, ?), accepted_at = COALESCE(accepted_at, ?), "
    "cost = COALESCE(cost, ?), "
    "status = CASE status WHEN 'allocated' THEN 'submitted' ELSE status END "
    "WHERE local_id = ?"
)
_OPEN_STATUSES = ", ".join(f"'{status.value}'" for status in JobStatus if not status.is_terminal)
_FINISH_SET = (
    "UPDATE jobs SET status = ?, images = ?, cost = COALESCE(?, cost), refunded = ?, "
    "seed = COALESCE(?, seed), polls = COALESCE(?, polls), error_kind = ?, error_message = ?, "
    "finished_at = ? WHERE local_id = ? AND status IN "
)
_FINISH = _FINISH_SET + f"({_OPEN_STATUSES}, '{JobStatus.TIMED_OUT.value}')"
"""An end other than timed_out: also replaces a timed_out record (polled again on resume)."""
_FINISH_TIMED_OUT = _FINISH_SET + f"({_OPEN_STATUSES})"
# One statement per target status: the record moves only from a lower-ranked status.
_STATUS = {
    status: "UPDATE jobs SET status = ? WHERE local_id = ? AND status IN ("
    + ", ".join(f"'{lower.value}'" for lower in sorted(_LOWER[status], key=lambda s: s.rank))
    + ")"
    for status in JobStatus
    if not status.is_terminal and _LOWER[status]
}
_FILES = "UPDATE jobs SET files = ? WHERE local_id = ?"
_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
_BATCH = "INSERT OR IGNORE INTO batches (batch_id, created_at) VALUES (?, ?)"

# The order kinds of statement are written in within a transaction. For any one job the
# events come in this order (an acceptance reported after the job's end writes the same
# thing either way: every column it sets is kept if already set), so a transaction gives
# the same result as writing the events one by one as they came.
_ORDER = {
    sql: position
    for position, sql in enumerate(
        [
            _BATCH,
            _INSERT,
            _ACCEPT,
            *(_STATUS[status] for status in sorted(_STATUS, key=lambda s: s.rank)),
            _FINISH_TIMED_OUT,
            _FINISH,
            _FILES,
            _META,
        ]
    )
}

_encode = msgspec.json.encode
_decode_images = msgspec.json.Decoder(tuple[Image, ...]).decode
_decode_files = msgspec.json.Decoder(tuple[str, ...]).decode
_decode_request = msgspec.json.Decoder(dict[str, Any]).decode


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
        # Statement -> parameters queued, in the order they came.
        self._pending: dict[str, list[tuple[Any, ...]]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._insert_waiters: list[asyncio.Future[None]] = []  # one per _INSERT
        self._durable = False
        self._statuses: dict[str, JobStatus] = {}  # progress held back (see module doc)
        self._soon = False  # a write starts at the end of this tick
        self._prompt = False  # an acceptance is pending: it goes as soon as it can
        self._timer: asyncio.TimerHandle | None = None  # ... or when this fires
        self._writing = False
        self._failure: JournalError | None = None
        self._transactions = 0
        self._durable_transactions = 0

    def __repr__(self) -> str:
        return f"<SQLiteJournal {str(self.path)!r} {self._state}>"

    @property
    def transactions(self) -> int:
        """Write transactions committed so far (each holds every write of one tick or more)."""
        return self._transactions

    @property
    def durable_transactions(self) -> int:
        """Of those, the ones synced to disk before returning (they held an allocation)."""
        return self._durable_transactions

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
        path = self._name
        if self.path.is_dir():
            raise JournalError(f"the journal {path} is a directory", path=path)
        try:
            conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {path}: {exc}", path=path) from exc
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        path = self._name
        try:
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            application_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.OperationalError as exc:
            raise _operational(path, exc) from exc
        except sqlite3.DatabaseError as exc:
            raise JournalError(
                f"the journal {path} is not a readable SQLite file (corrupt, or not a journal): "
                f"{exc}",
                path=path,
            ) from exc
        fresh = application_id == 0 and tables == 0
        if not fresh and application_id != APPLICATION_ID:
            raise JournalError(
                f"{path} is an SQLite database but not a flux_async journal", path=path
            )
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"the journal {path} was written by a newer flux_async (schema {version}; this "
                f"version reads up to {SCHEMA_VERSION}): upgrade flux_async to resume it",
                path=path,
            )
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise JournalError(
                    f"the journal {path} cannot use WAL mode (got {mode!r}); put it on a local "
                    "file system",
                    path=path,
                )
            conn.execute("PRAGMA synchronous = NORMAL")
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise JournalError(
                    f"the journal {path} is corrupt: {'; '.join(problems[:3])}", path=path
                )
            # The first write takes the file's lock, kept until close (EXCLUSIVE mode).
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            if fresh:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute("COMMIT")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.OperationalError as exc:
            raise _operational(path, exc) from exc
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"the journal {path} is corrupt: {exc}", path=path) from exc

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # Writes ----------------------------------------------------------------------------

    async def begin_batch(self, batch_id: str) -> bool:
        """Record a batch durably; return whether the journal already held it (a resume)."""
        held = await self._read(self._batch_held, batch_id)
        if not held:
            await self._wait(_BATCH, (batch_id, self._clock()), durable=True)
        return held

    async def batches(self) -> list[str]:
        """Return the ids of the batches held, oldest first."""
        return await self._read(self._batches_sync)

    async def put_allocated(self, record: JobRecord) -> None:
        """Store a new job's record; it is on disk (synced) when this returns."""
        await self._wait(
            _INSERT,
            (
                record.local_id,
                record.batch_id,
                record.index,
                record.attempt,
                record.fingerprint,
                record.provider,
                record.model,
                _encode(record.request),
                record.token_hash,
                record.secret_hash,
                record.job_id,
                record.status.value,
                _cost(record.cost),
                int(record.refunded),
                _encode(record.images),
                record.seed,
                record.polls,
                _encode(record.files),
                record.error_kind,
                record.error_message,
                record.created_at,
                record.accepted_at,
                record.finished_at,
            ),
            durable=True,
        )

    def put_accepted(self, local_id: str, job_id: str, cost: Decimal | None = None) -> None:
        """Queue: the provider accepted the job as ``job_id``."""
        # Prompt: until it is written, a crash leaves the job to be recovered as a create in
        # flight (with ShortAPI and no callbacks: unknown).
        self._queue(_ACCEPT, (job_id, self._clock(), _cost(cost), local_id), prompt=True)

    def put_status(self, local_id: str, status: JobStatus) -> None:
        """Note that the job moved on to a non-terminal ``status``.

        Held in memory and written by the next `flush` (each read and `aclose` flush): a
        resume needs only the acceptance, which `put_accepted` writes.
        """
        require_non_terminal(status)
        self._require_open()
        held = self._statuses.get(local_id)
        if (held is None or status.rank > held.rank) and status in _STATUS:
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
        self._statuses.pop(local_id, None)  # superseded by the end
        self._queue(
            _FINISH_TIMED_OUT if status is JobStatus.TIMED_OUT else _FINISH,
            (
                status.value,
                _encode(images) if images else b"[]",
                _cost(cost),
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
        self._queue(_FILES, (_encode(files_of(files)), local_id))

    async def save_meta(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``; written when this returns."""
        await self._wait(_META, (key, bytes(value)))

    async def flush(self) -> None:
        """Return once every write queued so far (and the progress held) is committed."""
        self._require_open()
        self._release_statuses()
        if not self._pending and not self._writing:
            if self._failure is not None:
                raise self._failure
            return  # everything queued has been committed
        await self._wait(None, ())

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

    def _release_statuses(self) -> None:
        """Queue the progress held in memory (see `put_status`)."""
        if self._statuses and self._failure is None:
            for local_id, status in self._statuses.items():
                self._pending.setdefault(_STATUS[status], []).append((status.value, local_id))
            self._statuses.clear()

    def _queue(self, sql: str, params: tuple[Any, ...], *, prompt: bool = False) -> None:
        """Queue an event: written within `EVENT_DELAY` seconds, or with an earlier write;
        a ``prompt`` one at the end of this tick, like an awaited write."""
        self._require_open()
        if self._failure is not None:
            return  # already broken: the next awaited call raises
        self._pending.setdefault(sql, []).append(params)
        assert self._loop is not None
        if prompt:
            self._prompt = True
            if not (self._writing or self._soon):
                self._soon = True
                self._loop.call_soon(self._start_write)
        elif not (self._writing or self._soon or self._timer is not None):
            self._timer = self._loop.call_later(EVENT_DELAY, self._start_write)

    async def _wait(self, sql: str | None, params: tuple[Any, ...], durable: bool = False) -> None:
        """Queue a write (or nothing: ``sql`` None) and return once it is committed."""
        self._require_open()
        if self._failure is not None:
            raise self._failure
        assert self._loop is not None
        waiter: asyncio.Future[None] = self._loop.create_future()
        if sql is not None:
            self._pending.setdefault(sql, []).append(params)
            if sql == _INSERT:
                self._insert_waiters.append(waiter)
        self._waiters.append(waiter)
        self._durable = self._durable or durable
        if not (self._writing or self._soon):
            self._soon = True
            # Runs after every callback already ready: the whole tick's writes go together.
            self._loop.call_soon(self._start_write)
        await waiter

    def _start_write(self) -> None:
        self._soon = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writing or not (self._pending or self._waiters):
            return
        pending, self._pending = self._pending, {}
        waiters, self._waiters = self._waiters, []
        inserts, self._insert_waiters = self._insert_waiters, []
        durable, self._durable = self._durable, False
        self._prompt = False
        # Statements of every kind (missing from _ORDER: none) in their fixed order.
        ops = [(sql, pending[sql]) for sql in sorted(pending, key=_ORDER.__getitem__)]
        self._writing = True
        assert self._loop is not None and self._executor is not None
        future = self._loop.run_in_executor(self._executor, self._write_sync, ops, durable)
        future.add_done_callback(
            lambda done: self._written(done, bool(ops), durable, waiters, inserts)
        )

    def _written(
        self,
        done: asyncio.Future[list[int]],
        wrote: bool,
        durable: bool,
        waiters: list[asyncio.Future[None]],
        inserts: list[asyncio.Future[None]],
    ) -> None:
        self._writing = False
        error = done.exception()
        if error is not None:
            self._failure = JournalError(
                f"cannot write the journal {self.path}: {error}", path=self._name
            )
            self._failure.__cause__ = error
            waiting = waiters + self._waiters
            self._pending, self._waiters, self._insert_waiters = {}, [], []
            for waiter in waiting:
                if not waiter.done():
                    waiter.set_exception(self._failure)
            return
        if wrote:
            self._transactions += 1
            self._durable_transactions += durable
        for position in done.result():
            waiter = inserts[position]
            if not waiter.done():
                waiter.set_exception(
                    JournalError(
                        f"the journal {self.path} refused a record (duplicate local id?)",
                        path=self._name,
                    )
                )
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self._waiters or self._prompt:
            # Group commit: every awaited write (and acceptance) queued meanwhile goes next,
            # together with the events queued meanwhile.
            self._start_write()
        elif self._pending and self._timer is None:
            assert self._loop is not None
            self._timer = self._loop.call_later(EVENT_DELAY, self._start_write)

    def _write_sync(self, ops: list[tuple[str, list[tuple[Any, ...]]]], durable: bool) -> list[int]:
        """Write ``ops`` in one transaction; return the positions of the records refused."""
        conn = self._conn
        assert conn is not None
        if not ops:
            return []  # only waiters for what was written before: nothing to commit
        if durable:
            conn.execute("PRAGMA synchronous = FULL")
        try:
            conn.execute("BEGIN")
            try:
                for sql, rows in ops:
                    if len(rows) == 1:
                        conn.execute(sql, rows[0])
                    else:
                        conn.executemany(sql, rows)
            except sqlite3.IntegrityError:
                # One bad record must not take the others down: write them one by one.
                conn.execute("ROLLBACK")
                return self._write_each_sync(conn, ops)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return []
        finally:
            if durable:
                conn.execute("PRAGMA synchronous = NORMAL")

    @staticmethod
    def _write_each_sync(
        conn: sqlite3.Connection, ops: list[tuple[str, list[tuple[Any, ...]]]]
    ) -> list[int]:
        rejected: list[int] = []
        conn.execute("BEGIN")
        for sql, rows in ops:
            if sql != _INSERT:
                conn.executemany(sql, rows)
                continue
            for position, params in enumerate(rows):
                conn.execute("SAVEPOINT op")
                try:
                    conn.execute(sql, params)
                except sqlite3.IntegrityError:
                    conn.execute("ROLLBACK TO op")
                    rejected.append(position)
                conn.execute("RELEASE op")
        conn.execute("COMMIT")
        return rejected

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
        return [_record(row) for row in self._conn.execute(_SELECT + where, params)]

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


def _operational(path: str, exc: sqlite3.OperationalError) -> JournalError:
    if "locked" in str(exc) or "busy" in str(exc):
        return JournalError(
            f"the journal {path} is in use by another process (one run at a time)", path=path
        )
    return JournalError(f"cannot use the journal {path}: {exc}", path=path)


def _cost(cost: Decimal | None) -> str | None:
    return str(cost) if cost is not None else None


def _first(records: list[JobRecord]) -> JobRecord | None:
    return records[0] if records else None


def _record(row: tuple[Any, ...]) -> JobRecord:
    return JobRecord(
        local_id=row[0],
        batch_id=row[1],
        index=row[2],
        attempt=row[3],
        fingerprint=row[4],
        provider=row[5],
        model=row[6],
        request=_decode_request(row[7]),
        token_hash=row[8],
        secret_hash=row[9],
        job_id=row[10],
        status=JobStatus(row[11]),
        cost=Decimal(row[12]) if row[12] is not None else None,
        refunded=bool(row[13]),
        images=_decode_images(row[14]),
        seed=row[15],
        polls=row[16],
        files=_decode_files(row[17]),
        error_kind=row[18],
        error_message=row[19],
        created_at=row[20],
        accepted_at=row[21],
        finished_at=row[22],
    )
