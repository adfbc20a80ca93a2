"""`CreateLane`: allocate a job, send its create, retry what provably did no work, wait for
an orphan to call home. It is the `JobLauncher` that `generate_many` runs on.

Its other halves live beside it: cancels in `_cancel.py` (`Cancelling`), jobs of an earlier
run (attach, re-attach, recovery, task history) in `_reattach.py` (`Reattaching`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

import msgspec

from ._callbacks import digest, new_secret
from ._cancel import Cancelling
from ._config import RetryPolicy, Webhooks
from ._errors import ClientStateError, Phase, RequestError
from ._events import EventBus
from ._job import Job
from ._lane import Lane, Tasks
from ._models import Generation, GenerationRequest, JobStatus
from ._poll import PollLane
from ._reattach import Reattaching, unknown_create
from ._record import JobRecord
from ._registry import Entry, Registry
from ._retry import CreateAction, decide_create_failure
from ._store import JobStore, JournalError
from .providers._base import Prepared, Provider

__all__ = ["CreateLane", "JournalContext"]

logger = logging.getLogger("flux_async")


class JournalContext(NamedTuple):
    """Where a batch job's record goes: the store, the batch, the input index, the attempt."""

    store: JobStore
    batch_id: str | None
    input_index: int | None
    attempt: int = 1
    fingerprint: str | None = None
    """The input's fingerprint when it differs from the request's own (an uploaded image)."""


Download = Callable[[Generation, "str | os.PathLike[str]", str], Awaitable[tuple[Path, ...]]]


class CreateLane(Cancelling, Reattaching):
    """Creates jobs for one provider and owns each create until it settled.

    Args:
        provider, lane, registry, poll_lane, events, tasks: the client's components.
        retry: when a create is resent.
        rng: jitter for the retry waits.
        webhooks: the callback configuration, if callbacks are on.
        download: saves a generation's images (the client's `download`).
        is_open: whether the client still takes new jobs.
    """

    def __init__(
        self,
        *,
        provider: Provider,
        lane: Lane,
        registry: Registry,
        poll_lane: PollLane,
        events: EventBus,
        tasks: Tasks,
        retry: RetryPolicy,
        rng: random.Random,
        webhooks: Webhooks | None,
        download: Download,
        is_open: Callable[[], bool],
    ) -> None:
        self.provider = provider
        self._lane = lane
        self._registry = registry
        self._poll = poll_lane
        self._events = events
        self._tasks = tasks
        self._retry = retry
        self._rng = rng
        self._webhooks = webhooks
        self._download = download
        self._is_open = is_open
        self._creates: dict[str, asyncio.Task[None]] = {}
        self._sent: set[str] = set()  # local ids whose create went out at least once
        self._closing = False
        self.store: JobStore | None = None
        """The client's job store: every job not in a journaled batch is recorded there."""
        self.callback_base: str | None = None
        """Where callbacks reach this client (``None``: no callbacks); set once it listens."""
        poll_lane.on_timed_out.append(self._abandon)

    @property
    def in_flight(self) -> int:
        """Creates not yet settled."""
        return len(self._creates)

    # -- the JobLauncher protocol ---------------------------------------------------------

    async def begin(
        self,
        request: GenerationRequest,
        prepared: Prepared,
        journal: JournalContext | None = None,
    ) -> Entry:
        """Allocate a job (waiting for a job slot) and start its create; return at once.

        The entry, with its local id and callback token, exists before the create is sent;
        with a job store (``journal``, else the client's), its record is durable before the
        create is sent.
        """
        await self._take_slot()
        provider = self.provider
        callback_url = webhook_secret = None
        token_hash = secret_hash = None
        registry = self._registry
        if self.callback_base is None:
            local_id = registry.new_local_id()
        else:
            # The local id (64 bits) and the callback token (256 bits) from one draw.
            drawn = os.urandom(40)
            local_id = drawn[:8].hex()
            if registry.get(local_id) is not None:  # pragma: no cover - 64 random bits
                local_id = registry.new_local_id()
            token = base64.urlsafe_b64encode(drawn[8:]).rstrip(b"=").decode("ascii")
            token_hash = digest(token)
            callback_url = f"{self.callback_base}/{provider.name}/{local_id}/{token}"
            if provider.callback_secret_header is not None:
                webhook_secret, secret_hash = new_secret()
        entry = registry.allocate(
            provider.name,
            prepared.model,
            request=request,
            token_hash=token_hash,
            secret_hash=secret_hash,
            local_id=local_id,
        )
        entry.owner = self
        record: JobRecord | None = None
        if journal is None and self.store is not None:
            journal = JournalContext(self.store, None, None)
        if journal is not None:
            entry.store = journal.store
            record = JobRecord.allocate(
                request,
                local_id=local_id,
                provider=provider.name,
                model=prepared.model,
                created_at=entry.created_at,
                batch_id=journal.batch_id,
                index=journal.input_index,
                attempt=journal.attempt,
                token_hash=token_hash,
                secret_hash=secret_hash,
            )
            if journal.fingerprint is not None:
                record = msgspec.structs.replace(record, fingerprint=journal.fingerprint)
        task = self._tasks.spawn(
            self._create(entry, prepared, callback_url, webhook_secret, record)
        )
        self._creates[local_id] = task
        task.add_done_callback(lambda _: self._settled(local_id))
        if provider.synchronous:
            # The answer to a synchronous create is the image itself: the job counts as
            # submitted once sent, and its deadline runs from now.
            self._registry.advance(entry, JobStatus.SUBMITTED)
            self._poll.watch_deadline(entry)
        return entry

    async def _take_slot(self) -> None:
        slots = self._lane.job_slots
        await slots.acquire()
        if not self._is_open() or self._closing:
            slots.release()
            raise ClientStateError("the client is closed", provider=self.provider.name)

    async def start(self, request: GenerationRequest, prepared: Prepared) -> Entry:
        """Allocate a job, send its create, and return once that settled.

        Cancelling the caller does not cancel the create: a request already on its way may
        create a paid job, so it runs to its end in a task of the client's and the job stays
        tracked.

        Raises:
            the error that ended the job before the provider accepted it.
        """
        entry = await self.begin(request, prepared)
        task = self._creates.get(entry.local_id)
        if task is not None and not self.provider.synchronous:
            # asyncio.wait, not shield: the caller's cancellation must not reach the create,
            # and the create's own cancellation (at close) must not surface as CancelledError.
            await asyncio.wait((task,))
        if entry.job_id is None and entry.status.is_terminal:
            assert entry.error is not None
            raise entry.error
        return entry

    async def result(self, entry: Entry) -> Generation:
        """Wait for a job to end; see `Job.result`."""
        return await Job(entry).result()

    async def download(
        self, generation: Generation, directory: str | os.PathLike[str], *, prefix: str = ""
    ) -> tuple[Path, ...]:
        """Save a generation's images (see `FluxClient.download`)."""
        return await self._download(generation, directory, prefix)

    # -- closing ------------------------------------------------------------------------------

    async def aclose(self, grace: float) -> None:
        """Let creates already sent settle for up to ``grace`` seconds, then cancel every job
        still open. No create is sent or resent once this started."""
        self._closing = True
        # A create not yet on the wire (waiting for an HTTP slot, or for its turn again) is
        # not sent any more: it fails NOT_SENT and its job is cancelled below, uncharged.
        self._lane.stop_creates()
        for entry in self._registry.entries():
            if entry.accepted is not None and not entry.accepted.done():
                # The receiver has stopped: an orphan cannot call home any more.
                entry.accepted.set_result(None)
        sent = [task for local_id, task in self._creates.items() if local_id in self._sent]
        if sent and grace > 0:
            await asyncio.wait(sent, timeout=grace)
        for entry in self._registry.entries():
            self.cancel(entry, "the client closed")

    # -- internals ----------------------------------------------------------------------------

    def _settled(self, local_id: str) -> None:
        self._creates.pop(local_id, None)
        self._sent.discard(local_id)

    def _abandon(self, entry: Entry) -> None:
        task = self._creates.pop(entry.local_id, None)
        self._sent.discard(entry.local_id)
        if task is not None:
            task.cancel()

    async def _create(
        self,
        entry: Entry,
        prepared: Prepared,
        callback_url: str | None,
        webhook_secret: str | None,
        record: JobRecord | None = None,
    ) -> None:
        provider, lane = self.provider, self._lane
        request = provider.build_create(
            prepared, callback_url=callback_url, webhook_secret=webhook_secret
        )
        attempt = 0
        while True:
            attempt += 1
            await lane.wait_for_create_turn()
            if entry.status.is_terminal or self._closing:
                return  # cancelled, or the client is closing: never sent (this time)
            if record is not None and entry.store is not None:
                # The record is durable before anything that may cost money is sent.
                try:
                    await entry.store.put_allocated(record)
                except JournalError as exc:
                    entry.store = None
                    self._registry.finish(entry, JobStatus.FAILED, exc)
                    return
                record = None
                if entry.status.is_terminal or self._closing:
                    return
            self._sent.add(entry.local_id)
            try:
                response = await lane.send(request, long_read=provider.synchronous)
                accepted = provider.parse_create(response)
            except RequestError as error:
                if entry.status.is_terminal:
                    return
                if self._closing and error.phase is Phase.NOT_SENT:
                    self._sent.discard(entry.local_id)  # never sent: the close cancels it
                    return
                decision = decide_create_failure(
                    error,
                    attempt=attempt,
                    policy=self._retry,
                    table=lane.retry_table,
                    rng=self._rng,
                    budget=lane.retry_budget,
                    callbacks=callback_url is not None,
                )
                if decision.pause is not None:
                    pause = lane.pause_creates(decision.pause)
                    self._events.emit("rate_limited", entry, f"creates paused for {pause:.2f}s")
                action = decision.action
                if action is CreateAction.RETRY:
                    if self._closing:
                        # Provably not acted on: the close cancels it as never charged.
                        self._sent.discard(entry.local_id)
                        return
                    assert decision.wait is not None
                    self._events.emit("retried", entry, str(error))
                    await asyncio.sleep(decision.wait)
                    continue
                if action is CreateAction.AWAIT_CALLBACK and not self._closing:
                    await self._await_orphan(entry, error)
                else:
                    self._fail(entry, error)
                return
            lane.retry_budget.record_success()
            self._registry.accept(entry, accepted.job_id, accepted.cost)
            if accepted.update is not None:
                self._registry.apply(entry, accepted.update)
            self._poll.track(entry, sent_at=response.sent_at)
            return

    async def _await_orphan(self, entry: Entry, error: RequestError) -> None:
        """Give an ambiguous create's job the chance to call home before it ends unknown."""
        assert self._webhooks is not None
        window = self._webhooks.orphan_window
        if await self._wait_call_home(entry, window, "its create's answer was lost"):
            return
        self._fail(entry, error, waited=None if self._closing else window)

    def _fail(self, entry: Entry, error: RequestError, *, waited: float | None = None) -> None:
        if self._closing and error.phase is Phase.AMBIGUOUS:
            entry.store = None  # the journal keeps it in flight: a resume recovers it
        if error.phase is not Phase.AMBIGUOUS:
            self._registry.finish(entry, JobStatus.FAILED, error)
            return
        evidence = str(error)
        if waited is not None:
            evidence += f"; no callback came within {waited:g}s"
        unknown = unknown_create(entry.local_id, self.provider.name, evidence)
        unknown.__cause__ = error
        if self._registry.finish(entry, JobStatus.UNKNOWN, unknown):
            logger.warning("%s", unknown)
