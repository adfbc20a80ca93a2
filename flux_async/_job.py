"""`Job`: the public handle on one submitted job, and `outcome_of` a finished entry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from decimal import Decimal
from functools import partial
from typing import Any

import anyio
import msgspec

from ._errors import JobFailedError
from ._models import Generation, JobSnapshot, JobStatus
from ._registry import Entry

__all__ = ["CancelResult", "Job", "outcome_of", "when_finished"]


class CancelResult(msgspec.Struct, frozen=True, kw_only=True):
    """What `Job.cancel` did.

    ``remote`` is true when the provider confirmed the cancel (nothing more is charged);
    otherwise the job was only ended here and ``detail`` says whether the provider may
    still finish and charge it.
    """

    ended: bool
    """This call ended the job (it had not already ended)."""
    remote: bool
    """The provider cancelled the job itself."""
    status: JobStatus
    """The job's `JobStatus` after the call (``cancelled``, or how it had already ended)."""
    detail: str
    """One sentence on what happened, naming the job."""


class Job:
    """A handle on one submitted job: its ids, its state, and its result.

    ``await job`` (or ``await job.result(timeout=...)``) returns the `Generation` or raises
    the error that ended the job.
    """

    __slots__ = ("_entry",)

    def __init__(self, entry: Entry) -> None:
        self._entry = entry

    def __repr__(self) -> str:
        entry = self._entry
        return (
            f"<Job {entry.local_id} {entry.provider} {entry.status.value}"
            f"{f' id={entry.job_id}' if entry.job_id else ''}>"
        )

    @property
    def local_id(self) -> str:
        """The client's own id for the job (also in its callback address)."""
        return self._entry.local_id

    @property
    def id(self) -> str | None:
        """The provider's id for the job, once it accepted it."""
        return self._entry.job_id

    @property
    def status(self) -> JobStatus:
        """The job's status now."""
        return self._entry.status

    @property
    def cost(self) -> Decimal | None:
        """What the provider charged, in its unit, when it said (``0`` once refunded)."""
        return self._entry.cost

    def done(self) -> bool:
        """Whether the job has reached a terminal state."""
        return self._entry.status.is_terminal

    def snapshot(self) -> JobSnapshot:
        """Return an immutable view of the job now."""
        return self._entry.snapshot()

    # The public API takes a timeout (as asyncio.Future.result-like handles do); it is
    # implemented with anyio.fail_after.
    async def result(self, timeout: float | None = None) -> Generation:  # noqa: ASYNC109
        """Wait for the job to end and return its `Generation`.

        Args:
            timeout: seconds to wait; on expiry `TimeoutError` is raised and the job goes on
                (its own deadline is `PollPolicy.timeout`).

        Raises:
            JobError: the job ended failed, timed out, cancelled or unknown.
            ProviderError: the provider's answer about the job could not be used (e.g.
                `UnknownStatusError`, carrying the raw payload); the job ended ``failed``.
        """
        entry = self._entry
        if not entry.status.is_terminal:
            if entry.waiter is None:
                entry.waiter = asyncio.get_running_loop().create_future()
            # shield: one waiter cancelled (by its timeout, or its caller) must not cancel
            # the others. No cancel scope without a timeout: generate_many waits on every job.
            if timeout is None:
                await asyncio.shield(entry.waiter)
            else:
                with anyio.fail_after(timeout):
                    await asyncio.shield(entry.waiter)
        return outcome_of(entry)

    async def cancel(self) -> CancelResult:
        """Cancel the job: at the provider where it documents a cancel, else locally.

        PiAPI cancels a task that is still pending (``DELETE /api/v1/task/{id}``); then
        ``remote`` is true and nothing is charged. A running PiAPI task, and every ShortAPI
        job, cannot be cancelled remotely: the job ends ``cancelled`` here and the result
        says the provider may still finish and charge it. A job that already ended is left
        as it was. Waiters of `result` get `JobCancelledError`.
        """
        owner = self._entry.owner
        if owner is None:
            status = self._entry.status
            return CancelResult(
                ended=False,
                remote=False,
                status=status,
                detail=f"job {self._entry.local_id} has no client to cancel it "
                f"(it is {status.value})",
            )
        result: CancelResult = await owner.cancel_job(self._entry)
        return result

    def __await__(self) -> Generator[Any, None, Generation]:
        return self.result().__await__()


def when_finished(entry: Entry, callback: Callable[[], None]) -> None:
    """Call ``callback()`` from the event loop once the job has ended (soon if it has).

    What `Job.result` waits for, without a task or a shield per job: `generate_many` takes
    each job's outcome this way.
    """
    loop = asyncio.get_running_loop()
    if entry.status.is_terminal:
        loop.call_soon(callback)
        return
    waiter = entry.waiter
    if waiter is None or waiter.done():  # done but not ended: a waiter someone cancelled
        waiter = entry.waiter = loop.create_future()
    waiter.add_done_callback(partial(_woken, entry, callback))


def _woken(entry: Entry, callback: Callable[[], None], _waiter: object) -> None:
    if entry.status.is_terminal:
        callback()
    else:  # the waiter was cancelled, the job goes on
        when_finished(entry, callback)


def outcome_of(entry: Entry) -> Generation:
    """Return the `Generation` of a finished entry, or raise the error that ended it."""
    if entry.status is JobStatus.SUCCEEDED:
        return Generation(
            images=entry.images,
            provider=entry.provider,
            model=entry.model,
            job_id=entry.job_id or "",
            local_id=entry.local_id,
            cost=entry.cost,
            seed=entry.seed,
        )
    if entry.error is not None:
        raise entry.error
    raise JobFailedError(  # pragma: no cover - every terminal path records an error
        f"job {entry.local_id} ended {entry.status.value}",
        provider=entry.provider,
        job=entry.snapshot(),
    )
