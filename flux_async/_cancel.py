"""Cancelling a job: `Cancelling`, the half of `CreateLane` that ends jobs on request.

A job is cancelled at the provider where it documents a cancel (`cancel_job`), else ended
locally (`cancel`): the error then says whether the provider may still run and charge it
(its create went out) or provably not (never sent).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import JobCancelledError, RequestError
from ._job import CancelResult
from ._lane import Lane
from ._models import JobStatus
from ._registry import Entry, Registry
from .providers._base import Provider

__all__ = ["Cancelling"]


class Cancelling:
    """`CreateLane`'s cancels (a mixin: the state is the lane's, see `CreateLane`)."""

    provider: Provider
    _lane: Lane
    _registry: Registry
    _sent: set[str]

    if TYPE_CHECKING:

        def _abandon(self, entry: Entry) -> None:
            """Forget the job's create (cancelling it if still running)."""

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
        if entry.status.is_terminal:
            return False
        if entry.job_id is not None or local_id in self._sent:
            # Abandoned, not ended: the provider may still run (and charge) the job, so its
            # record keeps its last live state and a resume re-attaches or recovers it.
            # Only a create provably never sent is recorded as cancelled.
            entry.store = None
        self._registry.finish(entry, JobStatus.CANCELLED, error)
        self._abandon(entry)
        return True

    async def cancel_job(self, entry: Entry) -> CancelResult:
        """Cancel a job at the provider where it documents a cancel, else end it locally.

        See `Job.cancel`.
        """
        provider = self.provider
        name = f"job {entry.local_id}" + (
            f" (provider id {entry.job_id})" if entry.job_id is not None else ""
        )
        if entry.status.is_terminal:
            return CancelResult(
                ended=False,
                remote=False,
                status=entry.status,
                detail=f"{name} had already ended {entry.status.value}; nothing was done",
            )
        refusal = ""
        request = provider.build_cancel(entry.job_id) if entry.job_id is not None else None
        if request is not None:
            try:
                update = provider.parse_cancel(await self._lane.send(request))
            except RequestError as refused:
                refusal = f"; {provider.name} refused to cancel it ({refused})"
            else:
                cancelled = JobCancelledError(
                    f"{name} cancelled at {provider.name}", provider=provider.name
                )
                if self._registry.advance(
                    entry, JobStatus.CANCELLED, cost=update.cost, error=cancelled
                ):
                    self._abandon(entry)
                    return CancelResult(
                        ended=True,
                        remote=True,
                        status=entry.status,
                        detail=f"{name} was cancelled at {provider.name}",
                    )
                return CancelResult(
                    ended=False,
                    remote=False,
                    status=entry.status,
                    detail=f"{name} ended {entry.status.value} before the cancel took effect",
                )
            if entry.status.is_terminal:
                return CancelResult(
                    ended=False,
                    remote=False,
                    status=entry.status,
                    detail=f"{name} ended {entry.status.value} meanwhile{refusal}",
                )
        if entry.job_id is not None:
            consequence = (
                f"{provider.name} may still finish and charge it" + refusal
                if refusal or request is None
                else f"{provider.name} may still finish and charge it"
            )
            if request is None:
                consequence += f" ({provider.name} documents no cancel)"
        elif entry.local_id in self._sent:
            consequence = (
                f"its create was in flight: {provider.name} may still create and charge it"
            )
        else:
            consequence = "its create was never sent: nothing was charged"
        detail = f"{name} ended locally; {consequence}"
        ended = self._registry.finish(
            entry, JobStatus.CANCELLED, JobCancelledError(detail, provider=provider.name)
        )
        self._abandon(entry)
        return CancelResult(ended=ended, remote=False, status=entry.status, detail=detail)
