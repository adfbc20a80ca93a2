"""`PollLane`: polls accepted jobs through the one `PollScheduler`, verifies callbacks, ends
jobs whose deadline passed.

With the default (learned) `PollPolicy`, each job's polls come from a `PollPlanner` over a
`LatencyEstimate` per model (a `_planner.ModelPlan`), whose prior is the provider's typical
latency. Every job that succeeds teaches it: a polled one as the interval between the last
poll that found it running and the one that found it ready (`Entry.running_age`), a webhook
or synchronous one by its exact age; the jobs still waiting for a poll are censored
observations of the plan (slower than the age at which a poll last found them running).
While a model has no finished job yet, a few "scout" jobs are polled at doubling ages from
0.15 s, so a provider much faster than its typical latency is found at once; when the
estimate's first check then drops to less than half of what the jobs already waiting were
planned with, their first polls are moved earlier.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from ._config import PollPolicy, Webhooks
from ._errors import JobTimeoutError, Phase, RequestError
from ._events import log_poll
from ._lane import Lane, Tasks
from ._latency import LatencyEstimate
from ._models import JobStatus
from ._planner import SCOUT_FIRST, SCOUTS, ModelPlan
from ._registry import Entry, Registry
from ._scheduler import PollScheduler
from .providers._base import Provider

if TYPE_CHECKING:
    from ._store import JobStore

__all__ = ["SCOUTS", "SCOUT_FIRST", "PollLane", "latency_key", "load_latency", "save_latency"]

_SCOUT = -1  # `Entry.attempt` of a scout (a learned schedule uses no backoff step)
_UNPLANNED = -2  # `Entry.attempt` of a job whose first poll was not planned (e.g. attached)


def latency_key(provider: str, model: str) -> str:
    """The store key (`JobStore.save_meta`) of one provider/model's latency estimate."""
    return f"latency:{provider}:{model}"


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
        if not policy.wait_jitter:
            rng = None
        self._rng = rng
        self._learned = policy.learned
        self._models: dict[str, ModelPlan] = {}
        self._answering: Entry | None = None  # the entry whose poll answer is being applied
        self._answer_age = 0.0
        self.on_timed_out: list[Callable[[Entry], None]] = []
        """Called after a job ended ``timed_out`` (the create lane abandons its create)."""
        slots = lane.http_slots
        self.scheduler = PollScheduler(
            policy=policy,
            first_wait=policy.wait_first or provider.typical_latency,
            reserve=lane.poll_pace.reserve,
            acquire_slot=slots.acquire,
            release_slot=slots.release,
            poll=self.poll,
            on_deadline=self.on_deadline,
            # A learned schedule jitters through its planner (shortening waits only).
            rng=None if self._learned else rng,
            coalesce=self._learned,
        )

    def start(self) -> None:
        """Start the scheduler on the running loop."""
        self.scheduler.start()

    async def aclose(self) -> None:
        """Stop the scheduler and the polls in progress."""
        await self.scheduler.stop()

    def track(
        self,
        entry: Entry,
        *,
        first_wait: float | None = None,
        callbacks: bool = True,
        sent_at: float | None = None,
    ) -> None:
        """Start polling an accepted job (only as a safety net when callbacks will come).

        ``sent_at``: when its create was sent (loop clock): its age counts from then, not
        from the create's answer, which comes up to tens of ms later in a burst of creates.

        ``first_wait``: seconds to the first poll (default: the provider's typical latency,
        or the callback grace); ``callbacks=False``: no callback will come for this job
        (attached by id), so it is polled normally even when webhooks are on.
        """
        if entry.status.is_terminal:
            return
        # A first wait given: attached by id or again after a restart (see `learn`).
        entry.attached = first_wait is not None
        if self._webhooks is None or not callbacks:
            if first_wait is not None or not self._learned:
                self.scheduler.add(entry, first_wait=first_wait, started=sent_at)
                if self._learned:
                    entry.attempt = _UNPLANNED  # its first poll is no probe of the plan
                return
            wait, scout = self._first_wait(entry)
            self.scheduler.add(
                entry, first_wait=wait, step=self._model(entry.model).planner.grid, started=sent_at
            )
            if scout:
                entry.attempt = _SCOUT
            return
        self.scheduler.add(
            entry,
            first_wait=self.grace() if first_wait is None else first_wait,
            slow=True,
            started=sent_at,
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
        # The job's age when the query goes out: the frame the plan decides in (a poll sent
        # at age t finds the job ready or not), not when the answer is back, which would
        # teach latencies one round trip too long and put the first check that much late.
        sent = self.scheduler.now()
        try:
            response = await lane.send_in_slot(self._provider.build_query(entry.job_id))
            update = self._provider.parse_query(response)
        except RequestError as error:
            if entry.status.is_terminal:
                return
            log_poll(entry, error)
            if error.phase is Phase.DEFINITIVE:
                # e.g. an unknown status value: end the job rather than poll forever.
                self._registry.finish(entry, JobStatus.FAILED, error)
                return
            # Beyond the shared retry budget a failed query waits the longest backoff step;
            # one the provider paced itself (Retry-After) does not draw on the budget, as
            # for creates: a rate limit must not turn into polls 15 s late.
            retry_after = getattr(error, "retry_after", None)
            at_least = float(retry_after or 0.0)
            if retry_after is None and not lane.retry_budget.try_spend():
                at_least = max(at_least, self._policy.wait_max)
            self._schedule_next(entry, at_least)
            return
        lane.retry_budget.record_success()
        log_poll(entry, update.status)
        if self._learned:
            self._answering = entry
            self._answer_age = sent - self.scheduler.started(entry)
            try:
                self._registry.apply(entry, update)
            finally:
                self._answering = None
            if entry.polls == 1 and entry.attempt != _UNPLANNED:
                # A planned first poll: what it found (see `PollPlanner.probed`).
                self._model(entry.model).planner.probed(
                    self._answer_age, entry.status is JobStatus.SUCCEEDED
                )
            if not entry.status.is_terminal:
                entry.running_age = self._answer_age
                self._schedule_next(entry, 0.0, sent)
            return
        self._registry.apply(entry, update)
        if not entry.status.is_terminal:
            self.scheduler.schedule_next(entry)

    # -- the learned schedule ----------------------------------------------------------

    def _model(self, model: str) -> ModelPlan:
        learned = self._models.get(model)
        if learned is None:
            estimate = LatencyEstimate(self._provider.typical_latency)
            learned = self._models[model] = self._new_model(model, estimate)
        return learned

    def _new_model(self, name: str, estimate: LatencyEstimate) -> ModelPlan:
        def census() -> Iterator[tuple[float, float]]:
            started = self.scheduler.started
            for entry in self.scheduler.waiting():
                if entry.model == name and entry.running_age > 0.0:
                    yield started(entry), entry.running_age

        return ModelPlan(estimate, self._policy.wait_max, census)

    def _first_wait(self, entry: Entry) -> tuple[float, bool]:
        """The wait before a job's first poll, and whether the job scouts."""
        entry.running_age = 0.0
        return self._model(entry.model).first_wait(len(self.scheduler), self._rng)

    def _schedule_next(self, entry: Entry, at_least: float, sent: float | None = None) -> None:
        """Schedule a running job's next poll; ``sent``: when the poll that found it running
        was sent (``None`` after a failed one: the wait counts from now)."""
        if not self._learned or entry.attempt > 0:  # a fixed schedule, a safety net
            self.scheduler.schedule_next(entry, at_least=at_least)
            return
        scheduler = self.scheduler
        age = scheduler.now() - scheduler.started(entry)
        model = self._model(entry.model)
        model.planner.censored = model.estimate.samples < len(scheduler)
        wait = model.next_wait(age, entry.polls, entry.attempt == _SCOUT, self._rng)
        if wait > at_least:
            scheduler.schedule_in(entry, wait, sent=sent, step=model.planner.grid)
        else:
            scheduler.schedule_in(entry, at_least)

    def learn(self, entry: Entry) -> None:
        """Learn from a job that ended (the client calls this for every finished job)."""
        if entry.status is not JobStatus.SUCCEEDED or not self._learned:
            return
        if entry.deadline == float("inf"):
            return  # never tracked here (e.g. finished before its create was answered)
        if entry.attached:
            return  # its age here is the time since it was attached, not its latency
        model = self._model(entry.model)
        now = self.scheduler.now()
        if entry is self._answering:
            model.estimate.observe_interval(entry.running_age, self._answer_age, now)
        else:
            model.estimate.observe(now - self.scheduler.started(entry), now)
        # With callbacks, polls are a safety net a grace after the create, never planned
        # from the estimate: keep learning (it is saved), but do not refresh a plan per job.
        if self._webhooks is None and model.learned(len(self.scheduler)):
            self._replan(entry.model, model)

    def _replan(self, name: str, model: ModelPlan) -> None:
        """Move the first polls of jobs waiting for one planned with a slower estimate, and
        the next polls of scouts polled before anything was learned (off their doubling
        wait: `ModelPlan.moved_scout`)."""
        scheduler = self.scheduler
        now = scheduler.now()
        rng = self._rng
        for entry in scheduler.waiting():
            if entry.model != name:
                continue
            if entry.polls == 0 and entry.attempt <= 0:
                scheduler.replan(entry, model.moved_first(scheduler.started(entry), now, rng))
            elif entry.attempt == _SCOUT:
                scheduler.replan(
                    entry, model.moved_scout(scheduler.started(entry), entry.running_age, now)
                )

    def latency_state(self) -> dict[str, bytes]:
        """Every model's latency estimate, saved (`latency_key` -> `LatencyEstimate.to_bytes`)."""
        provider = self._provider.name
        return {
            latency_key(provider, name): model.estimate.to_bytes()
            for name, model in self._models.items()
            if model.estimate.samples > 0.0
        }

    def load_latency(self, key: str, data: bytes) -> bool:
        """Start a model from a saved estimate (see `latency_state`); return whether ``key``
        named this provider and ``data`` was a valid estimate (otherwise nothing changes)."""
        prefix = latency_key(self._provider.name, "")
        if not key.startswith(prefix):
            return False
        try:
            estimate = LatencyEstimate.from_bytes(data)
        except ValueError:
            return False
        name = key[len(prefix) :]
        self._models[name] = self._new_model(name, estimate)
        return True

    def estimate(self, model: str) -> LatencyEstimate | None:
        """The latency estimate of ``model`` (``None`` before any of its jobs was tracked)."""
        learned = self._models.get(model)
        return None if learned is None else learned.estimate

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


async def save_latency(store: JobStore, state: Mapping[str, bytes], provider: str) -> None:
    """Save ``state`` (`PollLane.latency_state`) in ``store``: one key per model, plus
    ``latency:{provider}`` listing them (a store cannot list its keys)."""
    models = [key[len(latency_key(provider, "")) :] for key in state]
    for key, data in state.items():
        await store.save_meta(key, data)
    if models:
        await store.save_meta(f"latency:{provider}", "\n".join(models).encode())


async def load_latency(store: JobStore, provider: str) -> dict[str, bytes]:
    """Return the latency estimates `save_latency` kept in ``store`` for ``provider``."""
    index = await store.load_meta(f"latency:{provider}")
    if not index:
        return {}
    state: dict[str, bytes] = {}
    for model in bytes(index).decode("utf-8", "replace").split("\n"):
        key = latency_key(provider, model)
        data = await store.load_meta(key)
        if data is not None:
            state[key] = data
    return state
