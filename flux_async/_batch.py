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
    AsyncIterator,
    Coroutine,
    Iterable,
    Mapping,
)
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from ._config import Limits
from ._create import JournalContext
from ._errors import (
    BudgetExceededError,
    ConfigurationError,
    FluxError,
    JobError,
    ValidationError,
)
from ._images import Uploader, resolve_image_input
from ._models import (
    Generation,
    GenerationRequest,
    JobStatus,
    Outcome,
    OutcomeStatus,
    build_request,
    outcome_status,
)
from ._poll import latency_key, load_latency, save_latency
from ._record import JobRecord
from ._record import fingerprint as job_fingerprint
from ._registry import Entry
from ._resume import BatchJournal, Plan, open_journal, resumed_outcome
from ._store import JobStore, JournalMismatchError
from .providers._base import HistoryTask, Prepared, Provider

__all__ = [
    "BatchInput",
    "JobLauncher",
    "JournalOptions",
    "check_batch_arguments",
    "generate_many",
]

logger = logging.getLogger("flux_async")

BatchInput = str | Mapping[str, Any] | GenerationRequest

_DONE = object()
_LIMITS = Limits()
_SAVE_LATENCY_EVERY = 5.0
"""Seconds between saves of the learned latencies into a batch's journal (so a batch
resumed after a crash starts warm too), besides the save at the end."""


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


async def _items(requests: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(requests, AsyncIterable):
        async for item in requests:
            yield item
    else:
        for item in requests:
            yield item


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


def check_batch_arguments(
    concurrency: Any, budget: Any, price_per_job: Any, default_concurrency: int
) -> tuple[int, Decimal | None, Decimal | None]:
    """Validate `generate_many`'s arguments; return (concurrency, budget, price_per_job).

    Raises:
        ConfigurationError: naming the argument and what it accepts.
    """
    if concurrency is None:
        concurrency = default_concurrency
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    return concurrency, _money("budget", budget), _money("price_per_job", price_per_job)


def _money(name: str, value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(str(value))
    except ArithmeticError as exc:
        raise ConfigurationError(f"{name} must be a number, got {value!r}") from exc
    if not amount.is_finite() or amount < 0:
        raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")
    return amount


def _to_request(client: JobLauncher, item: Any) -> GenerationRequest:
    name = client.provider.name
    if isinstance(item, GenerationRequest):
        return item
    if isinstance(item, str):
        return build_request(name, item, {})
    if isinstance(item, Mapping):
        params = dict(item)
        if "prompt" not in params:
            raise ValidationError(
                f"{name}: a request mapping needs a 'prompt'", provider=name, field="prompt"
            )
        return build_request(name, params.pop("prompt"), params)
    raise ValidationError(
        f"{name}: each input must be a prompt string, a mapping with 'prompt', or a "
        f"GenerationRequest; got {type(item).__name__}",
        provider=name,
        field="request",
        value=item,
    )


class _Budget:
    """Money a batch has committed, kept at or under ``limit``.

    Committed money is what finished jobs were charged plus a price for every job still in
    flight; a job whose create was ambiguous counts as paid. A job's price is, in order: the
    provider's published price, the caller's ``price_per_job``, the dearest charge reported
    so far in this batch. Until one of them is known, jobs are admitted one at a time (so
    only a single job can exceed the budget, and only if it alone costs more than all of
    it); a price is never guessed as 0.
    """

    def __init__(self, limit: Decimal, price_per_job: Decimal | None) -> None:
        self.limit = limit
        self.price_per_job = price_per_job
        self.committed = Decimal(0)
        self.largest_seen: Decimal | None = None
        self.unpriced = 0  # jobs in flight admitted before any price was known
        self.settled = asyncio.Event()

    def price(self, provider: Any, prepared: Any) -> Decimal | None:
        published: Decimal | None = provider.estimate_cost(prepared)
        if published is not None:
            return published
        if self.price_per_job is not None:
            return self.price_per_job
        return self.largest_seen

    async def admit(self, provider: Any, prepared: Any) -> tuple[bool, Decimal | None]:
        """Wait until a job may go out; return (within budget, the price reserved for it)."""
        estimate = self.price(provider, prepared)
        while estimate is None and self.unpriced:
            # No price known yet: one job at a time until the first charge is reported.
            self.settled.clear()
            await self.settled.wait()
            estimate = self.price(provider, prepared)
        if estimate is None:
            self.unpriced += 1
            return True, None
        if self.committed + estimate > self.limit:
            return False, estimate
        self.committed += estimate
        return True, estimate

    def settle(self, estimate: Decimal | None, entry: Entry | None) -> None:
        """Replace a job's reserved price by what it really cost, once it ended."""
        if estimate is None:
            self.unpriced -= 1
        if entry is None or (entry.job_id is None and entry.status is JobStatus.FAILED):
            actual = Decimal(0)  # refused before any job existed: nothing was charged
        elif entry.refunded:
            actual = Decimal(0)
        elif entry.cost is not None:
            actual = entry.cost
            self.largest_seen = max(self.largest_seen or actual, actual)
        else:
            # The charge was never reported (ambiguous create, cancelled, timed out): assume
            # the job was paid for at its price, when one is known.
            actual = estimate if estimate is not None else (self.largest_seen or Decimal(0))
        self.committed += actual - (estimate or Decimal(0))
        self.settled.set()


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
    money = _Budget(budget, price_per_job) if budget is not None else None
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
            await _load_latency(client, store)
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
        # A job that ended in an earlier run: its outcome comes from the journal; its
        # images are saved again if the files are missing (and the URLs still serve them).
        files: tuple[Path, ...] | None = None
        error: BaseException | None = None
        try:
            generation = record.generation()
            if (
                download_to is not None
                and generation is not None
                and not (record.files and _all_exist(record.files))
            ):
                try:
                    files = await client.download(generation, download_to, prefix=f"{index:06d}-")
                except FluxError as exc:
                    error = exc
                else:
                    assert book is not None
                    book.store.put_files(record.local_id, files)
            await finish(
                resumed_outcome(index, item, record, started=started, files=files, error=error)
            )
        finally:
            slots.release()

    def spawn(coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    stop: BudgetExceededError | None = None

    async def take(index: int, item: Any, taken: _Taken | None = None) -> None:
        nonlocal stop
        started = time.monotonic()
        if taken is None:
            taken = await _take_up(client, item, uploader, limits)
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
        spawn(run_one(index, item, request, prepared, estimate, started, plan, fingerprint))

    async def produce() -> None:
        try:
            source = _items(requests).__aiter__()
            index = -1
            if book is not None and book.resumed:
                # Read (and check) every input the journal holds a record of before anything
                # is sent: another input is an error that costs nothing.
                ahead: list[tuple[Any, _Taken]] = []
                while index < book.last_index:
                    try:
                        item = await source.__anext__()
                    except StopAsyncIteration:
                        raise JournalMismatchError(
                            f"the journal holds inputs up to index {book.last_index} of batch "
                            f"{book.batch_id!r}, but this input has only {index + 1}: give "
                            "the same inputs to resume, or start a new batch",
                            batch_id=book.batch_id,
                            index=index + 1,
                        ) from None
                    index += 1
                    taken = await _take_up(client, item, uploader, limits)
                    taken.plan = book.plan(index, taken.original, taken.prepared)
                    ahead.append((item, taken))
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
            outcome = await queue.get()
            if outcome is _DONE:
                break
            if isinstance(outcome, _Failed):
                raise outcome.error
            yield outcome
            if store is not None and time.monotonic() >= next_save:
                await _save_latency(client, store)
                next_save = time.monotonic() + _SAVE_LATENCY_EVERY
        await producer
    finally:
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
            await _save_latency(client, store)
            if owned:
                await store.aclose()
            else:
                await store.flush()


def _poll_lane(client: JobLauncher) -> Any:
    """The poll lane that learns the client's latencies (``None``: a launcher without one)."""
    lane = getattr(client, "_poll", None)
    if callable(getattr(lane, "latency_state", None)) and callable(
        getattr(lane, "load_latency", None)
    ):
        return lane
    return None


async def _load_latency(client: JobLauncher, store: JobStore) -> None:
    """Start the client's latency models from the journal's, where it has learned nothing
    about a model yet (an estimate learned in this process is fresher)."""
    lane = _poll_lane(client)
    if lane is None or not callable(getattr(store, "load_meta", None)):
        return
    provider = client.provider.name
    prefix = latency_key(provider, "")
    try:
        saved = await load_latency(store, provider)
    except (FluxError, OSError) as exc:  # best effort: the batch runs cold
        logger.debug("could not read the learned latencies from the journal: %s", exc)
        return
    for key, data in saved.items():
        known = lane.estimate(key[len(prefix) :])
        if known is None or known.samples <= 0:
            lane.load_latency(key, data)


async def _save_latency(client: JobLauncher, store: JobStore) -> None:
    """Keep what the client learned about its latencies in the journal (best effort: a
    journal that cannot be written says so at its next awaited write)."""
    lane = _poll_lane(client)
    if lane is None or not callable(getattr(store, "save_meta", None)):
        return
    state: Mapping[str, bytes] = lane.latency_state()
    if not state:
        return
    try:
        await save_latency(store, state, client.provider.name)
    except (FluxError, OSError) as exc:
        logger.debug("could not save the learned latencies in the journal: %s", exc)


def _all_exist(files: tuple[str, ...]) -> bool:
    # A few stat calls per resumed input: cheap enough for the event loop.
    return all(os.path.exists(path) for path in files)


class JournalOptions(NamedTuple):
    """`generate_many`'s journal arguments."""

    journal: str | os.PathLike[str] | JobStore
    batch_id: str | None = None
    new_batch: bool = False
    resubmit_unknown: bool = False
    repoll_timed_out: bool = True
    """Poll again, by provider id, jobs an earlier run gave up on (``timed_out``)."""


class _Taken:
    """An input read and checked: its request (before and after image resolution), or why
    it was rejected, and its resume plan."""

    __slots__ = ("original", "plan", "prepared", "rejected", "request")

    def __init__(self) -> None:
        self.original: GenerationRequest | None = None
        self.request: GenerationRequest | None = None
        self.prepared: Prepared | None = None
        self.rejected: ValidationError | None = None
        self.plan: Plan | None = None


async def _take_up(
    client: JobLauncher, item: Any, uploader: Uploader | None, limits: Limits
) -> _Taken:
    taken = _Taken()
    try:
        taken.original = request = _to_request(client, item)
        taken.request = request = await resolve_image_input(
            request, client.provider, uploader, limits
        )
        taken.prepared = client.provider.prepare(request)
    except ValidationError as exc:
        taken.rejected = exc
        taken.prepared = None
    return taken


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
