"""Jobs of an earlier run or another process: `Reattaching`, the half of `CreateLane` that
attaches a job by its provider id, re-attaches a recorded job on resume, settles a recorded
create whose answer was lost, and reads the provider's task history."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import anyio

from ._config import Webhooks
from ._errors import ConfigurationError, JobUnknownError, ValidationError
from ._lane import Lane, Tasks
from ._models import JobStatus
from ._poll import PollLane
from ._record import JobRecord
from ._registry import Entry, Registry
from ._store import JobStore
from .providers._base import HistoryTask, Provider

__all__ = ["Reattaching", "unknown_create"]

logger = logging.getLogger("flux_async")

_HISTORY_PAGES = 50
"""At most this many pages (of 100 tasks) of a provider's task history are read per resume."""


def unknown_create(local_id: str, provider: str, evidence: str) -> JobUnknownError:
    """The error of a job whose create may or may not have reached ``provider``."""
    return JobUnknownError(
        f"job {local_id}: the create may or may not have reached "
        f"{provider} ({evidence}); it was not resent, to avoid paying twice",
        provider=provider,
        evidence=evidence,
    )


class Reattaching:
    """`CreateLane`'s attach, re-attach and recovery (a mixin: the state is the lane's, see
    `CreateLane`)."""

    provider: Provider
    store: JobStore | None
    callback_base: str | None
    _lane: Lane
    _registry: Registry
    _poll: PollLane
    _tasks: Tasks
    _webhooks: Webhooks | None
    _closing: bool

    if TYPE_CHECKING:

        async def _take_slot(self) -> None:
            """Wait for a job slot; refuse once the client is closing."""

        def cancel(self, entry: Entry, why: str) -> bool:
            """End the job ``cancelled`` locally."""

    def _check_attachable(self) -> None:
        if self.provider.synchronous:
            raise ConfigurationError(
                f"{self.provider.name} answers each create with its images (synchronously): "
                "it has no job to attach to by id",
                provider=self.provider.name,
            )

    async def attach(self, job_id: str, *, model: str | None = None) -> Entry:
        """Track a job the provider knows as ``job_id`` (see `FluxClient.attach`)."""
        self._check_attachable()
        if not isinstance(job_id, str) or not job_id.strip():
            raise ValidationError(
                f"{self.provider.name}: attach takes a provider job id (a non-empty string), "
                f"got {job_id!r}",
                provider=self.provider.name,
                field="job_id",
                value=job_id,
            )
        held = self._registry.by_job_id(self.provider.name, job_id)
        if held is not None:
            return held
        record = None
        if self.store is not None:
            record = await self.store.find_job(self.provider.name, job_id)
        if record is not None and not record.status.is_terminal:
            return await self.reattach(record, self.store)
        await self._take_slot()
        entry = self._registry.allocate(
            self.provider.name, model or (record.model if record is not None else "")
        )
        entry.owner = self
        self._registry.accept(entry, job_id)
        self._poll.track(entry, first_wait=0.0, callbacks=False)
        return entry

    async def reattach(self, record: JobRecord, store: JobStore | None) -> Entry:
        """Track again a recorded job the provider accepted (a resume): same local id and
        callback token, polled (or awaited by callback) to its end.

        A synchronous provider's job (AI/ML API) has nothing to poll: its images came with
        the create's answer, and the last run stopped before recording them. It ends
        ``unknown`` (`JobUnknownError`); nothing is sent, and only ``resubmit_unknown``
        creates it again.
        """
        assert record.job_id is not None
        held = self._registry.get(record.local_id)
        if held is not None:
            return held
        await self._take_slot()
        entry = self._restore(record, store)
        self._registry.accept(entry, record.job_id, record.cost)
        if self.provider.synchronous:
            name = self.provider.name
            evidence = (
                f"the last run stopped after {name} answered the create as {record.job_id}, "
                f"before its images were recorded; {name} answers synchronously, so they "
                "cannot be fetched again"
            )
            unknown = JobUnknownError(
                f"job {entry.local_id}: {evidence}; it was not resent, to avoid paying twice "
                "(resubmit_unknown sends it again)",
                provider=name,
                evidence=evidence,
            )
            self._registry.finish(entry, JobStatus.UNKNOWN, unknown)
            return entry
        if record.status.rank > entry.status.rank and not record.status.is_terminal:
            self._registry.advance(entry, record.status)
        # Poll once soon: a callback sent while no process listened is lost.
        self._poll.track(
            entry,
            first_wait=0.0,
            callbacks=self.callback_base is not None and record.token_hash is not None,
        )
        return entry

    async def recover(
        self,
        record: JobRecord,
        store: JobStore | None,
        *,
        wait_callback: bool,
        evidence: str,
    ) -> Entry:
        """Settle a recorded create whose answer never arrived (a resume).

        With callbacks on (and ``wait_callback``), the job gets `Webhooks.orphan_window`
        seconds to call its persisted address, which adopts it; otherwise, or without a
        callback, it ends ``unknown`` with ``evidence``. Nothing is sent.
        """
        await self._take_slot()
        entry = self._restore(record, store)
        window = self._webhooks.orphan_window if self._webhooks is not None else 0.0
        if (
            wait_callback
            and self.callback_base is not None
            and record.token_hash is not None
            and window > 0
        ):
            self._tasks.spawn(self._await_recovered(entry, window, evidence))
        else:
            self._unknown(entry, evidence)
        return entry

    def _restore(self, record: JobRecord, store: JobStore | None) -> Entry:
        entry = self._registry.allocate(
            record.provider,
            record.model,
            request=record.generation_request(),
            token_hash=record.token_hash,
            secret_hash=record.secret_hash,
            local_id=record.local_id,
        )
        entry.owner = self
        entry.store = store
        entry.polls = record.polls
        return entry

    async def _wait_call_home(self, entry: Entry, window: float, lost: str) -> bool:
        """Give an orphan (a job whose create's answer was lost) up to ``window`` seconds to
        call its callback address; return whether that settled it: it ended meanwhile, or
        it called home and is now polled (``lost`` says how it was orphaned, for the log)."""
        if entry.job_id is None and not entry.status.is_terminal:
            entry.accepted = asyncio.get_running_loop().create_future()
            with anyio.move_on_after(window):
                await entry.accepted
        if entry.status.is_terminal:
            return True
        if entry.job_id is not None:
            logger.info(
                "job %s: %s; it called home as %s: adopted", entry.local_id, lost, entry.job_id
            )
            self._poll.track(entry)
            return True
        return False

    async def _await_recovered(self, entry: Entry, window: float, evidence: str) -> None:
        lost = "its create was in flight when the last run stopped"
        if await self._wait_call_home(entry, window, lost):
            return
        if self._closing:
            entry.store = None  # still recoverable by the next resume
            self.cancel(entry, "the client closed")
            return
        self._unknown(entry, f"{evidence}; no callback came within {window:g}s")

    def _unknown(self, entry: Entry, evidence: str) -> None:
        unknown = unknown_create(entry.local_id, self.provider.name, evidence)
        self._registry.finish(entry, JobStatus.UNKNOWN, unknown)

    async def history(self, start: float, end: float) -> list[HistoryTask]:
        """Return the provider's tasks created between ``start`` and ``end`` (unix seconds),
        newest first; empty when the provider documents no task history.

        Raises:
            RequestError: a page could not be read.
        """
        provider = self.provider
        tasks: list[HistoryTask] = []
        for page in range(1, _HISTORY_PAGES + 1):
            request = provider.build_history(
                start_time=int(start), end_time=int(end) + 1, page=page, page_size=100
            )
            if request is None:
                return []
            found, total = provider.parse_history(await self._lane.send(request))
            tasks.extend(found)
            if not found or page * 100 >= total:
                break
        return tasks
