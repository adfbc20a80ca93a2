"""`CreateLane`: allocate a job, send its create, retry what provably did no work, wait for
an orphan to call home, cancel. It is the `JobLauncher` that `generate_many` runs on."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from ._callbacks import new_secret
from ._config import RetryPolicy, Webhooks
from ._errors import ClientStateError, JobCancelledError, JobUnknownError, Phase, RequestError
from ._events import EventBus
from ._job import Job
from ._lane import Lane, Tasks
from ._models import Generation, GenerationRequest, JobStatus
from ._poll import PollLane
from ._registry import Entry, Registry
from ._retry import CreateAction, decide_create_failure
from .providers._base import Prepared, Provider

__all__ = ["CreateLane"]

logger = logging.getLogger("flux_async")

Download = Callable[[Generation, "str | os.PathLike[str]", str], Awaitable[tuple[Path, ...]]]


class CreateLane:
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
        self.callback_base: str | None = None
        """Where callbacks reach this client (``None``: no callbacks); set once it listens."""
        poll_lane.on_timed_out.append(self._abandon)

    @property
    def in_flight(self) -> int:
        """Creates not yet settled."""
        return len(self._creates)

    # -- the JobLauncher protocol ---------------------------------------------------------

    async def begin(self, request: GenerationRequest, prepared: Prepared) -> Entry:
        """Allocate a job (waiting for a job slot) and start its create; return at once.

        The entry, with its local id and callback token, exists before the create is sent.
        """
        slots = self._lane.job_slots
        await slots.acquire()
        if not self._is_open() or self._closing:
            slots.release()
            raise ClientStateError("the client is closed", provider=self.provider.name)
        provider = self.provider
        callback_url = webhook_secret = None
        token_hash = secret_hash = None
        local_id = self._registry.new_local_id()
        if self.callback_base is not None:
            token, token_hash = new_secret()
            callback_url = f"{self.callback_base}/{provider.name}/{local_id}/{token}"
            if provider.callback_secret_header is not None:
                webhook_secret, secret_hash = new_secret()
        entry = self._registry.allocate(
            provider.name,
            prepared.model,
            request=request,
            token_hash=token_hash,
            secret_hash=secret_hash,
            local_id=local_id,
        )
        task = self._tasks.spawn(self._create(entry, prepared, callback_url, webhook_secret))
        self._creates[local_id] = task
        task.add_done_callback(lambda _: self._settled(local_id))
        if provider.synchronous:
            # The answer to a synchronous create is the image itself: the job counts as
            # submitted once sent, and its deadline runs from now.
            self._registry.advance(entry, JobStatus.SUBMITTED)
            self._poll.watch_deadline(entry)
        return entry

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

    def cancel(self, entry: Entry, why: str) -> bool:
        """End a job ``cancelled`` locally (providers offer no cancel for these jobs).

        A create still in flight is abandoned too. The error names the provider's job id when
        it is known. Returns whether the job was still open.
        """
        local_id = entry.local_id
        if entry.job_id is not None:
            where = f" (provider job id {entry.job_id})"
        elif local_id in self._sent:
            where = " while its create request was in flight (the provider may have created it)"
        elif entry.status is JobStatus.ALLOCATED:
            where = " before the provider accepted its create (nothing was charged)"
        else:
            where = ""
        error = JobCancelledError(
            f"job {local_id} cancelled: {why}{where}", provider=self.provider.name
        )
        if not self._registry.finish(entry, JobStatus.CANCELLED, error):
            return False
        self._abandon(entry)
        return True

    # -- closing ------------------------------------------------------------------------------

    async def aclose(self, grace: float) -> None:
        """Let creates already sent settle for up to ``grace`` seconds, then cancel every job
        still open. No create is sent or resent once this started."""
        self._closing = True
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
            self._sent.add(entry.local_id)
            try:
                response = await lane.send(request, long_read=provider.synchronous)
                accepted = provider.parse_create(response)
            except RequestError as error:
                if entry.status.is_terminal:
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
            self._poll.track(entry)
            return

    async def _await_orphan(self, entry: Entry, error: RequestError) -> None:
        """Give an ambiguous create's job the chance to call home before it ends unknown."""
        assert self._webhooks is not None
        window = self._webhooks.orphan_window
        if entry.job_id is None and not entry.status.is_terminal:
            entry.accepted = asyncio.get_running_loop().create_future()
            with anyio.move_on_after(window):
                await entry.accepted
        if entry.status.is_terminal:
            return
        if entry.job_id is not None:
            logger.info(
                "job %s: its create's answer was lost, but it called home as %s: adopted",
                entry.local_id,
                entry.job_id,
            )
            self._poll.track(entry)
            return
        self._fail(entry, error, waited=None if self._closing else window)

    def _fail(self, entry: Entry, error: RequestError, *, waited: float | None = None) -> None:
        if error.phase is not Phase.AMBIGUOUS:
            self._registry.finish(entry, JobStatus.FAILED, error)
            return
        evidence = str(error)
        if waited is not None:
            evidence += f"; no callback came within {waited:g}s"
        unknown = JobUnknownError(
            f"job {entry.local_id}: the create may or may not have reached "
            f"{self.provider.name} ({evidence}); it was not resent, to avoid paying twice",
            provider=self.provider.name,
            evidence=evidence,
        )
        unknown.__cause__ = error
        if self._registry.finish(entry, JobStatus.UNKNOWN, unknown):
            logger.warning("%s", unknown)
