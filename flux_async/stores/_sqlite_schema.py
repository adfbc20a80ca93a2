"""The SQLite journal's file: its schema and the checks that open it, the statements the
journal writes with (and the order they go in within a transaction), and the codec between
a `JobRecord` and its row. `SQLiteJournal` (``stores/sqlite.py``) uses them; the batching
of writes into transactions is in ``stores/_sqlite_writer.py``."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import Any

import msgspec

from .._models import Image, JobStatus
from .._record import JobRecord
from .._store import _LOWER, JournalError

__all__ = [
    "ACCEPT",
    "APPLICATION_ID",
    "BATCH",
    "FILES",
    "FINISH",
    "FINISH_TIMED_OUT",
    "INSERT",
    "META",
    "ORDER",
    "SCHEMA_VERSION",
    "SELECT",
    "STATUS",
    "connect",
    "cost_text",
    "encode",
    "operational",
    "record_of",
    "row_of",
]

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of the journals this version writes."""
APPLICATION_ID = 0x464C5558
"""``PRAGMA application_id`` marking a file as a flux_async journal ("FLUX")."""
BUSY_TIMEOUT = 1.0
"""Seconds to wait for a journal held by another process before saying so."""

SCHEMA = f"""
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
INSERT = f"INSERT INTO jobs ({_COLUMNS}) VALUES ({', '.join('?' * 23)})"
SELECT = f"SELECT {_COLUMNS} FROM jobs"
ACCEPT = (
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
FINISH = _FINISH_SET + f"({_OPEN_STATUSES}, '{JobStatus.TIMED_OUT.value}')"
"""An end other than timed_out: also replaces a timed_out record (polled again on resume)."""
FINISH_TIMED_OUT = _FINISH_SET + f"({_OPEN_STATUSES})"
# One statement per target status: the record moves only from a lower-ranked status.
STATUS = {
    status: "UPDATE jobs SET status = ? WHERE local_id = ? AND status IN ("
    + ", ".join(f"'{lower.value}'" for lower in sorted(_LOWER[status], key=lambda s: s.rank))
    + ")"
    for status in JobStatus
    if not status.is_terminal and _LOWER[status]
}
FILES = "UPDATE jobs SET files = ? WHERE local_id = ?"
META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
BATCH = "INSERT OR IGNORE INTO batches (batch_id, created_at) VALUES (?, ?)"

# The order kinds of statement are written in within a transaction. For any one job the
# events come in this order (an acceptance reported after the job's end writes the same
# thing either way: every column it sets is kept if already set), so a transaction gives
# the same result as writing the events one by one as they came.
ORDER = {
    sql: position
    for position, sql in enumerate(
        [
            BATCH,
            INSERT,
            ACCEPT,
            *(STATUS[status] for status in sorted(STATUS, key=lambda s: s.rank)),
            FINISH_TIMED_OUT,
            FINISH,
            FILES,
            META,
        ]
    )
}

encode = msgspec.json.encode
_decode_images = msgspec.json.Decoder(tuple[Image, ...]).decode
_decode_files = msgspec.json.Decoder(tuple[str, ...]).decode
_decode_request = msgspec.json.Decoder(dict[str, Any]).decode


def connect(path: str) -> sqlite3.Connection:
    """Open the journal at ``path`` (on the writer thread): create its schema if the file
    is new, else check that this version can use it; take the file's lock.

    Raises:
        JournalError: not SQLite, corrupt, another program's database, a newer schema, or
            in use by another process.
    """
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open the journal {path}: {exc}", path=path) from exc
    try:
        _prepare(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection, path: str) -> None:
    try:
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.OperationalError as exc:
        raise operational(path, exc) from exc
    except sqlite3.DatabaseError as exc:
        raise JournalError(
            f"the journal {path} is not a readable SQLite file (corrupt, or not a journal): {exc}",
            path=path,
        ) from exc
    fresh = application_id == 0 and tables == 0
    if not fresh and application_id != APPLICATION_ID:
        raise JournalError(f"{path} is an SQLite database but not a flux_async journal", path=path)
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
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute("COMMIT")
        conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.OperationalError as exc:
        raise operational(path, exc) from exc
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"the journal {path} is corrupt: {exc}", path=path) from exc


def row_of(record: JobRecord) -> tuple[Any, ...]:
    """The row `INSERT` writes for ``record`` (the inverse of `record_of`)."""
    return (
        record.local_id,
        record.batch_id,
        record.index,
        record.attempt,
        record.fingerprint,
        record.provider,
        record.model,
        encode(record.request),
        record.token_hash,
        record.secret_hash,
        record.job_id,
        record.status.value,
        cost_text(record.cost),
        int(record.refunded),
        encode(record.images),
        record.seed,
        record.polls,
        encode(record.files),
        record.error_kind,
        record.error_message,
        record.created_at,
        record.accepted_at,
        record.finished_at,
    )


def operational(path: str, exc: sqlite3.OperationalError) -> JournalError:
    """The `JournalError` for an operational failure (a lock held elsewhere is named)."""
    if "locked" in str(exc) or "busy" in str(exc):
        return JournalError(
            f"the journal {path} is in use by another process (one run at a time)", path=path
        )
    return JournalError(f"cannot use the journal {path}: {exc}", path=path)


def cost_text(cost: Decimal | None) -> str | None:
    """A cost as the text the journal keeps (exact, unlike a float)."""
    return str(cost) if cost is not None else None


def record_of(row: tuple[Any, ...]) -> JobRecord:
    """The `JobRecord` of a row read with `SELECT`."""
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
