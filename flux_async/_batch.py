"""`FluxClient.generate_many`: thousands of inputs, lazily, one outcome each.

The input is consumed one item at a time, and only ``concurrency`` jobs are outstanding at
once, so memory does not grow with the input's length. Every input yields exactly one
`Outcome`, failures included; leaving the loop early cancels what is outstanding.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
)
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from ._batch_inputs import (
    BatchInput,
    JournalOptions,
    Taken,
    items_of,
    read_recorded,
    take_up,
)
from ._budget import Budget
from ._config import Limits
from ._create import JournalContext
from ._errors import BudgetExceededError, FluxError, JobError
from ._images import Uploader
from ._job import outcome_of, when_finished
from ._journal_latency import load_journal_latency, poll_lane_of, save_journal_latency
from ._models import (
    Generation,
    GenerationRequest,
    JobStatus,
    Outcome,
    OutcomeStatus,
    outcome_status,
)
from ._record import JobRecord
from ._record import fingerprint as job_fingerprint
from ._registry import Entry
from ._resume import BatchJournal, Plan, finished_outcome, open_journal
from ._store import JobStore
from .providers._base import HistoryTask, Prepared, Provider

__all__ = ["JobLauncher", "generate_many"]

logger = logging.getLogger("flux_async")

_DONE = object()
_LIMITS = Limits()
_SAVE_LATENCY_EVERY = 5.0
"""Seconds between saves of the learned latencies into a batch's journal (so a batch
resumed after a crash starts warm too), besides the save at the end."""


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class JobLauncher(Protocol):
    """What a batch needs from the client: start jobs, wait for them, cancel, download."""

    @property
    def provider(self) -> Provider: ...

    async def begin(
        self,
        request: GenerationRequest,
        prepared: Prepared,
        journal: JournalContext | None = None,
    ) -> Entry:
        """Allocate a job (waiting for a slot) and start its create; return at once."""

    async def reattach(self, record: JobRecord, store: JobStore | None) -> Entry:
        """Track again a recorded job the provider accepted."""

    async def recover(
        self, record: JobRecord, store: JobStore | None, *, wait_callback: bool, evidence: str
    ) -> Entry:
        """Settle a recorded create whose answer was never recorded."""

    async def history(self, start: float, end: float) -> list[HistoryTask]:
        """Return the provider's tasks created in the window (empty: no history)."""

    async def result(self, entry: Entry) -> Generation:
        """Wait for the job to end; return its generation or raise its error."""

    def cancel(self, entry: Entry, why: str) -> bool:
        """End the job ``cancelled``; return whether it was still open."""

    async def download(
        self, generation: Generation, directory: str | os.PathLike[str], *, prefix: str = ""
    ) -> tuple[Path, ...]:
        """Save the generation's images into ``directory``."""


async def generate_many(
    client: JobLauncher,
    requests: Iterable[BatchInput] | AsyncIterable[BatchInput],
    *,
    concurrency: int,
    budget: Decimal | None,
    download_to: str | os.PathLike[str] | None,
    price_per_job: Decimal | None = None,
    uploader: Uploader | None = None,
    limits: Limits = _LIMITS,
    journal: JournalOptions | None = None,
) -> AsyncGenerator[Outcome, None]:
    """Yield one `Outcome` per input, in the order the jobs finish.

    With ``journal``, every job is recorded before its create is sent, and a batch the
    journal already holds is resumed (see `flux_async._resume`).
    """
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=concurrency)
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    entries: dict[int, Entry] = {}
    journaled: set[Entry] = set()
    money = Budget(budget, price_per_job) if budget is not None else None
    lane = poll_lane_of(client)  # learns latencies, kept in the journal
    # Opened here, in the first step of the loop: a journal that cannot be used is an
    # error before anything is sent.
    store: JobStore | None = None
    owned = False
    book: BatchJournal | None = None
    if journal is not None:
        store, owned = await open_journal(journal.journal)
        book = BatchJournal(
            store,
            provider=client.provider.name,
            batch_id=journal.batch_id,
            new_batch=journal.new_batch,
            resubmit_unknown=journal.resubmit_unknown,
            repoll_timed_out=journal.repoll_timed_out,
        )
        try:
            await book.open()
            await load_journal_latency(lane, client.provider.name, store)
        except BaseException:
            if owned:
                await store.aclose()
            raise

    async def finish(outcome: Outcome) -> None:
        await queue.put(outcome)

    async def launch(
        index: int,
        request: GenerationRequest,
        prepared: Any,
        plan: Plan | None,
        fingerprint: str | None,
    ) -> Entry:
        if plan is None or plan.kind == "new":
            context = None
            if book is not None:
                attempt = plan.attempt if plan is not None else 1
                context = book.context(index, attempt)._replace(fingerprint=fingerprint)
            entry = await client.begin(request, prepared, context)
        elif plan.kind == "attach":
            assert book is not None and plan.record is not None
            entry = await client.reattach(plan.record, book.store)
        else:
            assert book is not None and plan.record is not None
            entry = await client.recover(
                plan.record,
                book.store,
                wait_callback=plan.wait_callback,
                evidence=plan.evidence + book.history_note,
            )
        entries[index] = entry
        if book is not None:
            journaled.add(entry)
        return entry

    async def run_one(
        index: int,
        item: Any,
        request: GenerationRequest,
        prepared: Any,
        estimate: Decimal | None,
        started: float,
        plan: Plan | None = None,
        fingerprint: str | None = None,
    ) -> None:
        entry: Entry | None = None
        generation: Generation | None = None
        error: BaseException | None = None
        files: tuple[Any, ...] = ()
        resumed = plan is not None and plan.kind != "new"
        try:
            entry = await launch(index, request, prepared, plan, fingerprint)
            try:
                generation = await client.result(entry)
            except JobError:
                if not (
                    book is not None
                    and book.resubmit_unknown
                    and plan is not None
                    and plan.kind in ("recover", "attach")
                    and plan.record is not None
                    and entry.status is JobStatus.UNKNOWN
                ):
                    raise
                # Asked for explicitly: this may pay for the job a second time.
                logger.warning(
                    "input %d: its earlier create may have reached %s; sending it again "
                    "(resubmit_unknown)",
                    index,
                    client.provider.name,
                )
                journaled.discard(entry)
                retry = Plan(kind="new", attempt=plan.record.attempt + 1)
                entry = await launch(index, request, prepared, retry, fingerprint)
                resumed = False
                generation = await client.result(entry)
            if download_to is not None:
                files = await client.download(generation, download_to, prefix=f"{index:06d}-")
                if book is not None:
                    book.store.put_files(entry.local_id, files)
        except FluxError as exc:
            error = exc
        except BaseException:
            slots.release()
            raise
        finally:
            entries.pop(index, None)
            if entry is not None:
                journaled.discard(entry)
            if money is not None and not resumed:
                money.settle(estimate, entry)
        job = entry.snapshot() if entry is not None else None
        status = outcome_status(job.status if job is not None else JobStatus.FAILED)
        try:
            await finish(
                Outcome(
                    index=index,
                    request=item,
                    status=status,
                    generation=generation,
                    error=error,
                    job=job,
                    cost=job.cost if job is not None else None,
                    files=files,
                    started_at=started,
                    finished_at=time.monotonic(),
                    resumed=resumed,
                )
            )
        finally:
            # The slot is freed only once the outcome is queued: a slow consumer slows
            # submissions down instead of piling up finished jobs.
            slots.release()

    async def run_finished(index: int, item: Any, record: JobRecord, started: float) -> None:
        # A job that ended in an earlier run: its outcome comes from the journal.
        assert book is not None
        save: Callable[[Generation], Awaitable[tuple[Path, ...]]] | None = None
        if download_to is not None:
            directory = download_to

            def save(generation: Generation) -> Awaitable[tuple[Path, ...]]:
                return client.download(generation, directory, prefix=f"{index:06d}-")

        try:
            outcome = await finished_outcome(
                index, item, record, book.store, started=started, save=save
            )
            await finish(outcome)
        finally:
            slots.release()

    async def start_one(
        index: int,
        item: Any,
        request: GenerationRequest,
        prepared: Any,
        estimate: Decimal | None,
        started: float,
        plan: Plan | None,
        fingerprint: str | None,
    ) -> None:
        # `run_one` for the usual job (new, nothing to download) without a task of its
        # own: launched here, its outcome queued by `ended` when the job ends.
        try:
            entry = await launch(index, request, prepared, plan, fingerprint)
        except FluxError as exc:
            if money is not None:
                money.settle(estimate, None)
            try:
                await finish(
                    Outcome(
                        index=index,
                        request=item,
                        status=outcome_status(JobStatus.FAILED),
                        error=exc,
                        started_at=started,
                        finished_at=time.monotonic(),
                    )
                )
            finally:
                slots.release()
            return
        except BaseException:
            slots.release()
            raise
        when_finished(entry, partial(ended, index, item, entry, estimate, started))

    def ended(
        index: int, item: Any, entry: Entry, estimate: Decimal | None, started: float
    ) -> None:
        try:
            entries.pop(index, None)
            journaled.discard(entry)
            if money is not None:
                money.settle(estimate, entry)
            # Left (closing): nobody reads outcomes any more.
            outcome = None if closing else _job_outcome(index, item, entry, started)
        except BaseException:
            slots.release()  # as in `run_one`: whatever happens, the slot is given back
            raise
        if outcome is not None and queue.full():
            spawn(queue_later(outcome))  # a slow consumer: the slot stays taken until room
            return
        if outcome is not None:
            queue.put_nowait(outcome)
        slots.release()

    async def queue_later(outcome: Outcome) -> None:
        try:
            await finish(outcome)
        finally:
            slots.release()

    def spawn(coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    stop: BudgetExceededError | None = None
    closing = False

    async def take(index: int, item: Any, taken: Taken | None = None) -> None:
        nonlocal stop
        started = time.monotonic()
        if taken is None:
            taken = await take_up(client.provider, item, uploader, limits)
        if taken.rejected is not None:
            await finish(_outcome(index, item, "rejected", taken.rejected, started))
            return
        plan = taken.plan
        if plan is None and book is not None:
            plan = book.plan(index, taken.original, taken.prepared)
        if plan is not None and plan.kind == "finished":
            assert plan.record is not None
            await slots.acquire()
            spawn(run_finished(index, item, plan.record, started))
            return
        request, prepared = taken.request, taken.prepared
        assert request is not None and prepared is not None
        fingerprint = None
        if book is not None and taken.original is not None and taken.original is not request:
            fingerprint = job_fingerprint(taken.original, client.provider.name, prepared.model)
        fresh = plan is None or plan.kind == "new"
        if fresh and stop is not None:
            await finish(_outcome(index, item, "skipped", stop, started))
            return
        await slots.acquire()
        estimate: Decimal | None = None
        if money is not None and fresh:
            admitted, estimate = await money.admit(client.provider, prepared)
            if not admitted:
                slots.release()
                stop = BudgetExceededError(
                    f"budget of {money.limit} reached ({money.committed} committed; "
                    f"the next job would cost about {estimate}): not submitted",
                    provider=client.provider.name,
                )
                await finish(_outcome(index, item, "skipped", stop, started))
                return
        if download_to is None and (plan is None or plan.kind == "new"):
            await start_one(index, item, request, prepared, estimate, started, plan, fingerprint)
        else:
            spawn(run_one(index, item, request, prepared, estimate, started, plan, fingerprint))

    async def produce() -> None:
        try:
            source = items_of(requests).__aiter__()
            index = -1
            if book is not None and book.resumed:
                # Every input the journal holds a record of is read (and checked) before
                # anything is sent: another input is an error that costs nothing.
                ahead = await read_recorded(source, book, client.provider, uploader, limits)
                index = len(ahead) - 1
                await book.search_history(
                    client, [taken.plan for _, taken in ahead if taken.plan is not None]
                )
                for position, (item, taken) in enumerate(ahead):
                    await take(position, item, taken)
                ahead.clear()
            while True:
                try:
                    item = await source.__anext__()
                except StopAsyncIteration:
                    break
                index += 1
                await take(index, item)
            for _ in range(concurrency):
                # Every job holds a slot until its outcome is queued (`ended` has no task).
                await slots.acquire()
            while tasks:
                await asyncio.wait(list(tasks))
        except Exception as exc:  # the caller's iterable failed: hand it over to re-raise
            await queue.put(_Failed(exc))
        else:
            await queue.put(_DONE)
        # Cancelled: nobody reads the queue any more, so nothing more is put into it.

    producer = asyncio.get_running_loop().create_task(produce())
    next_save = time.monotonic() + _SAVE_LATENCY_EVERY
    try:
        while True:
            outcome = queue.get_nowait() if queue.qsize() else await queue.get()
            if outcome is _DONE:
                break
            if isinstance(outcome, _Failed):
                raise outcome.error
            yield outcome
            if store is not None and time.monotonic() >= next_save:
                await save_journal_latency(lane, client.provider.name, store)
                next_save = time.monotonic() + _SAVE_LATENCY_EVERY
        await producer
    finally:
        closing = True
        if not producer.done():
            producer.cancel()
        for entry in list(entries.values()):
            client.cancel(entry, "the batch loop was left before the job finished")
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(producer, *tasks, return_exceptions=True)
        if store is not None:
            # Jobs of this batch still open (their creates settle in the client's tasks)
            # stop writing to a journal about to close; it keeps their last live state.
            for entry in journaled:
                entry.store = None
            await save_journal_latency(lane, client.provider.name, store)
            if owned:
                await store.aclose()
            else:
                await store.flush()


def _job_outcome(index: int, item: Any, entry: Entry, started: float) -> Outcome:
    """The outcome of a job that ended (`run_one`'s, for a job with nothing to download)."""
    generation: Generation | None = None
    error: FluxError | None = None
    try:
        generation = outcome_of(entry)
    except FluxError as exc:
        error = exc
    job = entry.snapshot()
    return Outcome(
        index=index,
        request=item,
        status=outcome_status(job.status),
        generation=generation,
        error=error,
        job=job,
        cost=job.cost,
        started_at=started,
        finished_at=time.monotonic(),
    )


def _outcome(
    index: int, item: Any, status: OutcomeStatus, error: BaseException, started: float
) -> Outcome:
    return Outcome(
        index=index,
        request=item,
        status=status,
        error=error,
        started_at=started,
        finished_at=time.monotonic(),
    )
