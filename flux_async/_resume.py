"""Resuming a journaled batch: what each input's record says to do, and recovering creates
whose answer was lost.

A batch run with a journal (`FluxClient.generate_many(..., journal=...)`) records every job
before its create is sent. Run again over the same input, each input is settled from its
latest record:

- ``finished``: the job ended (succeeded, failed, cancelled by the user): its
  `Outcome` is rebuilt from the record (``resumed=True``) and nothing is sent; missing image
  files are downloaded again.
- ``attach``: the provider accepted the job (its id is recorded) and it had not ended, or
  the run stopped before it did, or it ended ``timed_out`` (a local deadline: the job is
  paid for and may have finished since): it is polled (or awaited by callback) to its end,
  with a fresh deadline. A synchronous provider's job (AI/ML API) has nothing to poll: it
  ends ``unknown`` (its images were never recorded).
- ``recover``: the create was sent (or may have been) and its answer never recorded: the
  job is looked up in the provider's task history where it has one (PiAPI), awaited on its
  persisted callback address when webhooks are on, and otherwise ends ``unknown`` with the
  evidence. It is created again only with ``resubmit_unknown=True``.
- ``new``: no record, or a record of a create provably never sent: sent as usual.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from os import PathLike, fspath
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec

from . import _errors
from ._create import JournalContext
from ._errors import FluxError, JobError, JobFailedError, RequestError
from ._history_match import HISTORY_SKEW, match_tasks
from ._models import Generation, JobStatus, Outcome
from ._record import JobRecord, fingerprint
from ._store import JobStore, JournalError, JournalMismatchError
from .providers._base import HistoryTask, Prepared, Provider
from .stores.sqlite import SQLiteJournal

__all__ = ["BatchJournal", "Plan", "finished_outcome", "open_journal", "resumed_outcome"]

logger = logging.getLogger("flux_async")

PlanKind = Literal["new", "finished", "attach", "recover"]


class _Lookup(Protocol):
    @property
    def provider(self) -> Provider: ...

    async def history(self, start: float, end: float) -> list[HistoryTask]: ...


class Plan(msgspec.Struct, kw_only=True):
    """What a resumed batch does with one input."""

    kind: PlanKind
    record: JobRecord | None = None
    attempt: int = 1
    """The attempt number of a create sent for this input (``new``)."""
    evidence: str = ""
    """For ``recover``: what is known about the lost create."""
    wait_callback: bool = False
    """For ``recover``: the create was in flight, so its callback may still come."""


async def open_journal(journal: str | PathLike[str] | JobStore) -> tuple[JobStore, bool]:
    """Return (the store, whether the caller owns it and must close it)."""
    if isinstance(journal, (str, PathLike)):
        path = Path(fspath(journal))
        if path.parent and not path.parent.exists():
            raise JournalError(
                f"the journal's directory {path.parent} does not exist", path=str(path)
            )
        store = SQLiteJournal(path)
        await store.open()
        return store, True
    for name in ("put_allocated", "put_finished", "records", "begin_batch"):
        if not callable(getattr(journal, name, None)):
            raise JournalError(
                f"journal must be a path or a JobStore (SQLiteJournal, MemoryStore, ...), "
                f"got {type(journal).__name__}"
            )
    return journal, False


class BatchJournal:
    """One batch's view of its journal: the records of an earlier run and the plan for
    each input.

    Args:
        store: the journal (opened).
        provider: the client's provider name.
        batch_id: the batch to run or resume (default: the journal's latest batch, or a
            new one when it holds none).
        new_batch: start a new batch in the journal even if it holds one.
        resubmit_unknown: create again inputs whose create may have reached the provider
            (possibly paying twice).
        repoll_timed_out: re-attach accepted jobs an earlier run gave up on (``timed_out``)
            instead of yielding them as they ended.
    """

    def __init__(
        self,
        store: JobStore,
        *,
        provider: str,
        batch_id: str | None,
        new_batch: bool,
        resubmit_unknown: bool,
        repoll_timed_out: bool = True,
    ) -> None:
        self.store = store
        self.repoll_timed_out = repoll_timed_out
        self.provider = provider
        self.batch_id = batch_id or ""
        self._requested_id = batch_id
        self.new_batch = new_batch
        self.resubmit_unknown = resubmit_unknown
        self.resumed = False
        self._latest: dict[int, JobRecord] = {}
        self._claimed: set[str] = set()
        self.recovered: dict[str, str] = {}
        """local id -> provider job id found in the provider's task history."""
        self.history_note = ""

    @property
    def last_index(self) -> int:
        """The largest input index recorded (-1: none)."""
        return max(self._latest, default=-1)

    async def open(self) -> None:
        """Choose the batch, record it, and read its records."""
        held = await self.store.batches()
        batch_id = self._requested_id
        if batch_id is None:
            if held and not self.new_batch:
                batch_id = held[-1]
            else:
                batch_id = f"batch-{len(held) + 1}-{int(time.time())}"
        elif self.new_batch and batch_id in held:
            raise JournalError(
                f"new_batch=True but the journal already holds a batch {batch_id!r}: "
                "give another batch_id"
            )
        self.batch_id = batch_id
        self.resumed = await self.store.begin_batch(batch_id)
        if not self.resumed:
            return
        for record in await self.store.records(batch_id):
            if record.job_id is not None:
                self._claimed.add(record.job_id)
            if record.index is None:
                continue
            if record.provider != self.provider:
                raise JournalMismatchError(
                    f"input {record.index} of batch {batch_id!r} was sent to "
                    f"{record.provider}, not {self.provider}: resume it with the same "
                    "provider, or run it as a new batch",
                    batch_id=batch_id,
                    index=record.index,
                    path=_path_of(self.store),
                )
            prior = self._latest.get(record.index)
            if prior is None or record.attempt >= prior.attempt:
                self._latest[record.index] = record

    def context(self, index: int, attempt: int = 1) -> JournalContext:
        """Where the record of input ``index``'s create goes."""
        return JournalContext(self.store, self.batch_id, index, attempt)

    def plan(self, index: int, request: Any, prepared: Prepared | None) -> Plan:
        """Decide what to do with input ``index`` (``prepared`` is ``None`` if it is invalid).

        Raises:
            JournalMismatchError: the journal holds another request at ``index``.
        """
        record = self._latest.get(index)
        if record is None:
            return Plan(kind="new")
        if prepared is None or record.fingerprint != fingerprint(
            request, self.provider, prepared.model
        ):
            raise JournalMismatchError(
                f"input {index} of batch {self.batch_id!r} differs from the one the journal "
                f"{_path_of(self.store) or ''} recorded"
                + (" (it is not a valid request any more)" if prepared is None else "")
                + ": give the same inputs to resume, or start a new batch "
                "(new_batch=True, --new-batch)",
                batch_id=self.batch_id,
                index=index,
                path=_path_of(self.store),
            )
        status = record.status
        if record.job_id is not None:
            if status is JobStatus.TIMED_OUT and self.repoll_timed_out:
                # Timed out here, not at the provider: the job was accepted (and is paid
                # for) and may have finished since. Polled again by its id.
                return Plan(kind="attach", record=record)
            if status is JobStatus.UNKNOWN:
                # A synchronous provider's job whose images were never recorded: attached
                # again it ends unknown again, or is sent again with resubmit_unknown.
                return Plan(kind="attach", record=record)
            if status.is_terminal:
                return Plan(kind="finished", record=record)
            return Plan(kind="attach", record=record)
        if status is JobStatus.CANCELLED or (
            status is JobStatus.FAILED and record.error_kind == "JournalError"
        ):
            # Recorded as ended before its create was sent: nothing exists at the provider.
            return Plan(kind="new", record=record, attempt=record.attempt + 1)
        if status is JobStatus.UNKNOWN:
            return Plan(
                kind="recover",
                record=record,
                evidence=record.error_message or "the create's answer was lost",
            )
        if status.is_terminal:  # refused, or timed out before any answer
            return Plan(kind="finished", record=record)
        return Plan(
            kind="recover",
            record=record,
            evidence="the last run stopped while this create was in flight",
            wait_callback=True,
        )

    async def search_history(self, lane: _Lookup, plans: list[Plan]) -> None:
        """Look the lost creates of ``plans`` up in the provider's task history (PiAPI).

        A task is ours when its webhook endpoint names the record's local id, or when its
        model and input are the record's and no other record claims it (records with the
        same input are interchangeable: they are paired in creation order). What is found
        is recorded as accepted, so the plan becomes ``attach``.
        """
        lost = [plan for plan in plans if plan.kind == "recover" and plan.record is not None]
        if not lost:
            return
        records = [plan.record for plan in lost if plan.record is not None]
        start = min(record.created_at for record in records) - HISTORY_SKEW
        try:
            tasks = await lane.history(start, time.time() + HISTORY_SKEW)
        except (RequestError, FluxError) as exc:
            self.history_note = f"; the task history could not be read ({exc})"
            logger.warning("%s: task history unreadable: %s", self.provider, exc)
            return
        if not tasks and lane.provider.build_history(start_time=0, end_time=0) is None:
            return
        self.history_note = f"; not found in {self.provider}'s task history"
        unclaimed = [task for task in tasks if task.job_id not in self._claimed]
        found = match_tasks(unclaimed, records, lane.provider, self.provider)
        for plan in lost:
            assert plan.record is not None
            job_id = found.get(plan.record.local_id)
            if job_id is None:
                continue
            logger.info(
                "job %s: its create's answer was lost; found in %s's task history as %s",
                plan.record.local_id,
                self.provider,
                job_id,
            )
            self.store.put_accepted(plan.record.local_id, job_id)
            plan.record = msgspec.structs.replace(
                plan.record, job_id=job_id, status=JobStatus.SUBMITTED
            )
            plan.kind = "attach"
            self._claimed.add(job_id)
            self.recovered[plan.record.local_id] = job_id


def _path_of(store: JobStore) -> str | None:
    path = getattr(store, "path", None)
    return str(path) if path is not None else None


def rebuild_error(record: JobRecord) -> BaseException | None:
    """The error that ended a recorded job, as its class (by name) with its message."""
    if record.error_kind is None and record.status is JobStatus.SUCCEEDED:
        return None
    message = record.error_message or f"job {record.local_id} ended {record.status.value}"
    kind = getattr(_errors, record.error_kind or "", None)
    error: BaseException
    try:
        if isinstance(kind, type) and issubclass(kind, FluxError):
            error = kind(message, provider=record.provider)
        else:
            raise TypeError
    except TypeError:
        error = JobFailedError(message, provider=record.provider)
    if isinstance(error, JobError):
        error.job = record.snapshot()
    return error


def resumed_outcome(
    index: int,
    item: Any,
    record: JobRecord,
    *,
    started: float,
    files: tuple[Path, ...] | None = None,
    error: BaseException | None = None,
) -> Outcome:
    """The `Outcome` of an input whose job ended in an earlier run, from its record."""
    generation = record.generation()
    return Outcome(
        index=index,
        request=item,
        status=record.status.value,
        generation=generation,
        error=error if error is not None else rebuild_error(record),
        job=record.snapshot(),
        cost=record.cost,
        files=files if files is not None else tuple(Path(path) for path in record.files),
        started_at=started,
        finished_at=time.monotonic(),
        resumed=True,
    )


async def finished_outcome(
    index: int,
    item: Any,
    record: JobRecord,
    store: JobStore,
    *,
    started: float,
    save: Callable[[Generation], Awaitable[tuple[Path, ...]]] | None,
) -> Outcome:
    """The `Outcome` of an input whose job ended in an earlier run. With ``save`` (the batch
    saves images), a succeeded job's images are saved again if their files are missing and
    the URLs still serve them; a failure to do so is the outcome's error."""
    files: tuple[Path, ...] | None = None
    error: BaseException | None = None
    generation = record.generation()
    if (
        save is not None
        and generation is not None
        and not (record.files and _all_exist(record.files))
    ):
        try:
            files = await save(generation)
        except FluxError as exc:
            error = exc
        else:
            store.put_files(record.local_id, files)
    return resumed_outcome(index, item, record, started=started, files=files, error=error)


def _all_exist(files: tuple[str, ...]) -> bool:
    # A few stat calls per resumed input: cheap enough for the event loop.
    return all(os.path.exists(path) for path in files)
