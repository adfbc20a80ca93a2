"""`PollLane`: polls accepted jobs through the one `PollScheduler`, verifies callbacks, ends
jobs whose deadline passed."""

from __future__ import annotations

import random
from collections.abc import Callable

from ._config import PollPolicy, Webhooks
from ._errors import JobTimeoutError, Phase, RequestError
from ._lane import Lane, Tasks
from ._models import JobStatus
from ._registry import Entry, Registry
from ._scheduler import PollScheduler
from .providers._base import Provider

__all__ = ["PollLane"]


class PollLane:
    """Everything that asks the provider about a job after its create.

    Args:
        provider: the adapter that builds queries and reads their answers.
        lane: the provider's slots and retry budget.
        registry: where updates go.
        policy: poll waits and the per-job deadline.
        webhooks: when set, polling is only a slow safety net behind callbacks.
        tasks: where verifying queries run.
        rng: jitter (``None``: none).
    """

    def __init__(
        self,
        *,
        provider: Provider,
        lane: Lane,
        registry: Registry,
        policy: PollPolicy,
        webhooks: Webhooks | None,
        tasks: Tasks,
        rng: random.Random | None,
    ) -> None:
        self._provider = provider
        self._lane = lane
        self._registry = registry
        self._policy = policy
        self._webhooks = webhooks
        self._tasks = tasks
        self.on_timed_out: list[Callable[[Entry], None]] = []
        """Called after a job ended ``timed_out`` (the create lane abandons its create)."""
        slots = lane.http_slots
        self.scheduler = PollScheduler(
            policy=policy,
            first_wait=policy.wait_first or provider.typical_latency,
            polls_per_second=lane.limits.polls_per_second,
            acquire_slot=slots.acquire,
            release_slot=slots.release,
            poll=self.poll,
            on_deadline=self.on_deadline,
            rng=rng,
        )

    def start(self) -> None:
        """Start the scheduler on the running loop."""
        self.scheduler.start()

    async def aclose(self) -> None:
        """Stop the scheduler and the polls in progress."""
        await self.scheduler.stop()

    def track(
        self, entry: Entry, *, first_wait: float | None = None, callbacks: bool = True
    ) -> None:
        """Start polling an accepted job (only as a safety net when callbacks will come).

        ``first_wait``: seconds to the first poll (default: the provider's typical latency,
        or the callback grace); ``callbacks=False``: no callback will come for this job
        (attached by id), so it is polled normally even when webhooks are on.
        """
        if entry.status.is_terminal:
            return
        if self._webhooks is None or not callbacks:
            self.scheduler.add(entry, first_wait=first_wait)
            return
        self.scheduler.add(
            entry, first_wait=self.grace() if first_wait is None else first_wait, slow=True
        )
        if entry.hinted and not entry.verifying:
            # A callback beat the create response but named no job: check now.
            self._tasks.spawn(self._verify(entry))

    def watch_deadline(self, entry: Entry) -> None:
        """Start only the deadline of a job whose answer comes with its create (AI/ML API)."""
        self.scheduler.add(entry, first_wait=float("inf"))

    def grace(self) -> float:
        """Seconds before the first safety-net poll of a job expecting a callback."""
        assert self._webhooks is not None
        if self._webhooks.grace is not None:
            return self._webhooks.grace
        return max(60.0, 4 * self._provider.typical_latency)

    def verify_soon(self, entry: Entry) -> None:
        """A callback said something about ``entry``: ask the provider (one query)."""
        if entry.job_id is None:
            entry.hinted = True
        elif not entry.verifying and not entry.status.is_terminal:
            entry.verifying = True
            self._tasks.spawn(self._verify(entry))

    async def _verify(self, entry: Entry) -> None:
        entry.verifying = True
        try:
            async with self._lane.http_slots:
                await self.poll(entry)
        finally:
            entry.verifying = False

    async def poll(self, entry: Entry) -> None:
        """Query one job (the caller holds an HTTP slot) and apply the answer; never raises
        a `RequestError`: a failed query is tried again by the job's backoff."""
        if entry.job_id is None or entry.status.is_terminal:
            return
        entry.polls += 1
        lane = self._lane
        try:
            response = await lane.send_in_slot(self._provider.build_query(entry.job_id))
            update = self._provider.parse_query(response)
        except RequestError as error:
            if entry.status.is_terminal:
                return
            if error.phase is Phase.DEFINITIVE:
                # e.g. an unknown status value: end the job rather than poll forever.
                self._registry.finish(entry, JobStatus.FAILED, error)
                return
            # Beyond the shared retry budget a failed query waits the longest backoff step.
            at_least = float(getattr(error, "retry_after", None) or 0.0)
            if not lane.retry_budget.try_spend():
                at_least = max(at_least, self._policy.wait_max)
            self.scheduler.schedule_next(entry, at_least=at_least)
            return
        lane.retry_budget.record_success()
        self._registry.apply(entry, update)
        if not entry.status.is_terminal:
            self.scheduler.schedule_next(entry)

    def on_deadline(self, entry: Entry) -> None:
        """End a job whose deadline passed ``timed_out``; it is never polled again."""
        error = JobTimeoutError(
            f"job {entry.local_id} (provider id {entry.job_id}) did not finish within "
            f"{self._policy.timeout:g}s; it is no longer polled",
            provider=entry.provider,
        )
        if self._registry.finish(entry, JobStatus.TIMED_OUT, error):
            for hook in self.on_timed_out:
                hook(entry)
