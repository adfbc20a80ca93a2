"""The job store seam: where a job's record lives beyond the registry in memory.

A `JobStore` keeps one `JobRecord` per job: what was asked (the request and its
fingerprint, the batch and input index), how to recognise the job again (local id, callback
token hash, provider job id) and what became of it (status, cost, images, saved files). A
batch run against a durable store can be killed at any moment and resumed without paying
twice: the record is durable **before** the create is sent (`JobStore.put_allocated`), so
every job that may exist at the provider is known after a crash.

Writes come in two kinds:

- ``put_allocated`` (and ``begin_batch``, ``save_meta``, ``flush``) are awaited and return
  once the write is durable;
- ``put_accepted``, ``put_status``, ``put_finished`` and ``put_files`` are plain calls that
  return at once (the registry calls them from synchronous code). A durable store groups
  them into few transactions (`SQLiteJournal`: acceptances at the end of their tick, ends
  and files within 20 ms, each with whatever else is pending; ``queued``/``running``
  progress, which a resume does not need, only by `JobStore.flush`). Losing the last
  events to a crash costs no money: a job whose acceptance was lost is recovered like a
  create in flight, one whose end was lost is polled again by its provider id.

Records hold no secret: no API key, no raw callback token, no PiAPI webhook secret; only
their SHA-256 digests.

The record itself (`JobRecord`, `fingerprint`) is in `_record.py`; it is importable from
here too. Stores: `MemoryStore` (the default, nothing survives the process), `SQLiteJournal`
(``flux_async.stores``, one machine). Errors::

    FluxError
    └── ConfigurationError (ValueError)
        └── JournalError                  the journal cannot be opened, read or written
            └── JournalMismatchError      an input differs from the one the journal recorded
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from os import PathLike, fspath
from types import TracebackType
from typing import Any, Protocol

import msgspec

from ._errors import ConfigurationError
from ._models import Image, JobStatus
from ._record import JobRecord, fingerprint

__all__ = [
    "JobRecord",
    "JobStore",
    "JournalError",
    "JournalMismatchError",
    "MemoryStore",
    "check_input",
    "fingerprint",
]


class JournalError(ConfigurationError):
    """A job journal cannot be opened, read or written (corrupt, newer schema, in use).

    Attributes:
        path: the journal's path, when the store is a file.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class JournalMismatchError(JournalError):
    """An input of a resumed batch is not the one the journal recorded at its index.

    Attributes:
        batch_id: the batch resumed.
        index: the input's position, from 0.
    """

    def __init__(self, message: str, *, batch_id: str, index: int, path: str | None = None) -> None:
        super().__init__(message, path=path)
        self.batch_id = batch_id
        self.index = index


def check_input(
    prior: JobRecord | None, batch_id: str, index: int, fingerprint: str
) -> JobRecord | None:
    """Return ``prior`` if it recorded the same input; raise if it recorded another one.

    Raises:
        JournalMismatchError: ``prior`` holds a different request at ``index``.
    """
    if prior is not None and prior.fingerprint != fingerprint:
        raise JournalMismatchError(
            f"input {index} of batch {batch_id!r} differs from the one the journal recorded "
            f"(fingerprint {fingerprint[:12]} != {prior.fingerprint[:12]}); run it as a new "
            "batch, or give the same inputs to resume",
            batch_id=batch_id,
            index=index,
        )
    return prior


class JobStore(Protocol):
    """Where job records live beyond the process: memory, a SQLite journal, Redis.

    Awaited writes return once durable; the ``put_*`` calls that are not coroutines queue
    their write and return at once (a failure to write them surfaces at the next awaited
    call). A record's status only moves forward (`JobStatus.rank`) and a terminal status is
    absorbing, whatever order the writes come in, with one exception: ``timed_out`` (a
    local deadline, not the job's end at the provider) gives way to a later end other than
    ``timed_out``, so a job a resume polled again to its end is recorded as it ended.
    Writes for an unknown local id are ignored.
    """

    async def open(self) -> None:
        """Open the store (create, check or migrate it)."""

    async def aclose(self) -> None:
        """Write what is queued and close the store (idempotent)."""

    async def begin_batch(self, batch_id: str) -> bool:
        """Record a batch durably; return whether the store already held it (a resume)."""

    async def batches(self) -> list[str]:
        """Return the ids of the batches held, oldest first."""

    async def put_allocated(self, record: JobRecord) -> None:
        """Store a new job's record; it is durable when this returns.

        Raises:
            JournalError: the record could not be written (then the create must not be
                sent), or an earlier queued write failed.
        """

    def put_accepted(self, local_id: str, job_id: str, cost: Decimal | None = None) -> None:
        """Queue: the provider accepted the job as ``job_id`` (status at least submitted)."""

    def put_status(self, local_id: str, status: JobStatus) -> None:
        """Queue: the job moved on to a non-terminal ``status``."""

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
        """Queue: the job ended with the terminal ``status`` (absorbing; a ``timed_out``
        record takes a later end other than ``timed_out``)."""

    def put_files(self, local_id: str, files: Iterable[str | PathLike[str]]) -> None:
        """Queue: the job's images were saved at ``files``."""

    async def flush(self) -> None:
        """Return once every write queued so far is written."""

    async def records(self, batch_id: str) -> list[JobRecord]:
        """Return a batch's records by input index, then attempt (superseded ones too)."""

    async def find(self, local_id: str) -> JobRecord | None:
        """Return the record with this local id."""

    async def find_job(self, provider: str, job_id: str) -> JobRecord | None:
        """Return the record of the job ``provider`` knows as ``job_id``."""

    async def find_by_token_hash(self, token_hash: bytes) -> JobRecord | None:
        """Return the record whose callback token has this SHA-256 digest."""

    async def check_inputs(self, batch_id: str, index: int, fingerprint: str) -> JobRecord | None:
        """Return the latest record of input ``index`` if it holds the same request.

        Raises:
            JournalMismatchError: the journal holds another request at ``index``.
        """

    async def save_meta(self, key: str, value: bytes) -> None:
        """Store a small value (e.g. learned latencies) under ``key``; written on return."""

    async def load_meta(self, key: str) -> bytes | None:
        """Return the value saved under ``key``."""


_LOWER: dict[JobStatus, frozenset[JobStatus]] = {
    status: frozenset(other for other in JobStatus if other.rank < status.rank)
    for status in JobStatus
}
"""For each status, the statuses a record may move on from to reach it."""


def error_fields(error: BaseException | None) -> tuple[str | None, str | None]:
    """Return the (kind, message) a record keeps of the error that ended a job."""
    if error is None:
        return None, None
    return type(error).__name__, str(error)


def files_of(files: Iterable[str | PathLike[str]]) -> tuple[str, ...]:
    """Return saved file paths as strings."""
    return tuple(fspath(path) for path in files)


def may_end(current: JobStatus, status: JobStatus) -> bool:
    """Whether a record at ``current`` takes the end ``status``: an open record does, and a
    ``timed_out`` one does for any other end (the job, polled again, ended after all)."""
    if not current.is_terminal:
        return True
    return current is JobStatus.TIMED_OUT and status is not JobStatus.TIMED_OUT


def require_non_terminal(status: JobStatus) -> None:
    """Refuse a terminal status where only progress is expected."""
    if status.is_terminal:
        raise ValueError(
            f"put_status takes a non-terminal status, not {status.value!r}: use put_finished"
        )


def require_terminal(status: JobStatus) -> None:
    """Refuse a non-terminal status where a job's end is expected."""
    if not status.is_terminal:
        raise ValueError(f"put_finished takes a terminal status, not {status.value!r}")


class MemoryStore:
    """The default store: records in a dict, nothing survives the process.

    Writes apply at once; there is nothing to flush.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._records: dict[str, JobRecord] = {}
        self._by_job: dict[tuple[str, str], str] = {}
        self._by_token: dict[bytes, str] = {}
        self._by_input: dict[tuple[str, int], list[str]] = {}
        self._batches: dict[str, None] = {}
        self._meta: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"<MemoryStore {len(self._records)} records>"

    async def __aenter__(self) -> MemoryStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Nothing to open."""

    async def aclose(self) -> None:
        """Nothing to close; the records stay readable."""

    async def begin_batch(self, batch_id: str) -> bool:
        """Record a batch; return whether it was already held."""
        held = batch_id in self._batches
        self._batches[batch_id] = None
        return held

    async def batches(self) -> list[str]:
        """Return the ids of the batches held, oldest first."""
        return list(self._batches)

    async def put_allocated(self, record: JobRecord) -> None:
        """Store a new job's record."""
        if record.local_id in self._records:
            raise JournalError(f"local id {record.local_id} is already in the store")
        self._records[record.local_id] = record
        if record.token_hash is not None:
            self._by_token[record.token_hash] = record.local_id
        if record.job_id is not None:
            self._by_job[(record.provider, record.job_id)] = record.local_id
        if record.batch_id is not None and record.index is not None:
            self._by_input.setdefault((record.batch_id, record.index), []).append(record.local_id)

    def put_accepted(self, local_id: str, job_id: str, cost: Decimal | None = None) -> None:
        """Record the provider's id (kept even if the job already ended)."""
        record = self._records.get(local_id)
        if record is None:
            return
        changes: dict[str, Any] = {}
        if record.job_id is None:
            changes["job_id"] = job_id
            changes["accepted_at"] = self._clock()
            self._by_job[(record.provider, job_id)] = local_id
        if record.cost is None and cost is not None:
            changes["cost"] = cost
        if record.status is JobStatus.ALLOCATED:
            changes["status"] = JobStatus.SUBMITTED
        if changes:
            self._records[local_id] = msgspec.structs.replace(record, **changes)

    def put_status(self, local_id: str, status: JobStatus) -> None:
        """Move the record on to ``status`` if that is progress."""
        require_non_terminal(status)
        record = self._records.get(local_id)
        if record is not None and record.status in _LOWER[status]:
            self._records[local_id] = msgspec.structs.replace(record, status=status)

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
        """End the record with ``status`` unless it already ended (`may_end`)."""
        require_terminal(status)
        record = self._records.get(local_id)
        if record is None or not may_end(record.status, status):
            return
        kind, message = error_fields(error)
        self._records[local_id] = msgspec.structs.replace(
            record,
            status=status,
            images=tuple(images),
            cost=cost if cost is not None else record.cost,
            refunded=refunded,
            seed=seed if seed is not None else record.seed,
            polls=polls if polls is not None else record.polls,
            error_kind=kind,
            error_message=message,
            finished_at=self._clock(),
        )

    def put_files(self, local_id: str, files: Iterable[str | PathLike[str]]) -> None:
        """Record where the job's images were saved."""
        record = self._records.get(local_id)
        if record is not None:
            self._records[local_id] = msgspec.structs.replace(record, files=files_of(files))

    async def flush(self) -> None:
        """Nothing is queued."""

    async def records(self, batch_id: str) -> list[JobRecord]:
        """Return a batch's records by input index, then attempt."""
        found = [record for record in self._records.values() if record.batch_id == batch_id]
        found.sort(key=lambda record: (record.index is None, record.index or 0, record.attempt))
        return found

    async def find(self, local_id: str) -> JobRecord | None:
        """Return the record with this local id."""
        return self._records.get(local_id)

    async def find_job(self, provider: str, job_id: str) -> JobRecord | None:
        """Return the record of the job ``provider`` knows as ``job_id``."""
        local_id = self._by_job.get((provider, job_id))
        return self._records.get(local_id) if local_id is not None else None

    async def find_by_token_hash(self, token_hash: bytes) -> JobRecord | None:
        """Return the record whose callback token has this digest."""
        local_id = self._by_token.get(token_hash)
        return self._records.get(local_id) if local_id is not None else None

    async def check_inputs(self, batch_id: str, index: int, fingerprint: str) -> JobRecord | None:
        """Return the latest record of input ``index`` if it holds the same request."""
        held = [self._records[local_id] for local_id in self._by_input.get((batch_id, index), ())]
        prior = max(held, key=lambda record: record.attempt, default=None)
        return check_input(prior, batch_id, index, fingerprint)

    async def save_meta(self, key: str, value: bytes) -> None:
        """Keep ``value`` under ``key``."""
        self._meta[key] = bytes(value)

    async def load_meta(self, key: str) -> bytes | None:
        """Return the value kept under ``key``."""
        return self._meta.get(key)
