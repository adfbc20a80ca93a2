"""One poll scheduler for all jobs: a timer heap, per-job backoff, a global poll rate.

There is no sleeping task per job. Each outstanding job sits in one heap keyed by its next
poll time; a single loop pops due jobs, waits for the poll-rate budget and a free HTTP slot,
and starts the poll. Every job also has a deadline: no poll is scheduled at or after it, and
when it passes the job ends ``timed_out``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
from collections.abc import Awaitable, Callable

from ._config import PollPolicy
from ._registry import Entry
from ._retry import TokenBucket, jittered, wait_table

__all__ = ["PollScheduler"]

logger = logging.getLogger("flux_async")

_POLL = 0
_DEADLINE = 1


class PollScheduler:
    """Decides when each job is polled and runs the polls.

    Args:
        policy: waits and the per-job deadline.
        first_wait: seconds before a job's first poll (the provider's typical latency).
        polls_per_second: a fixed aggregate poll rate (tests); ``None``: ``reserve`` paces.
        reserve: takes a poll's place in the provider's poll rate and returns the seconds
            to wait first (the lane's discovered rate).
        acquire_slot/release_slot: the per-provider cap on concurrent HTTP requests.
        poll: polls one job; must not raise. Calls `schedule_next` when the job goes on.
        on_deadline: ends a job whose deadline passed (synchronous).
        rng: randomness for jitter (``None``: no jitter).
    """

    def __init__(
        self,
        *,
        policy: PollPolicy,
        first_wait: float,
        polls_per_second: float | None = None,
        reserve: Callable[[float], float] | None = None,
        acquire_slot: Callable[[], Awaitable[object]],
        release_slot: Callable[[], None],
        poll: Callable[[Entry], Awaitable[None]],
        on_deadline: Callable[[Entry], None],
        rng: random.Random | None,
    ) -> None:
        self._policy = policy
        self._first_wait = first_wait
        self._table = wait_table(*policy.backoff)
        if reserve is None:
            reserve = TokenBucket(polls_per_second or 1e9).reserve
        self._reserve = reserve
        self._acquire_slot = acquire_slot
        self._release_slot = release_slot
        self._poll = poll
        self._on_deadline = on_deadline
        self._rng = rng
        self._heap: list[tuple[float, int, int, Entry]] = []
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def start(self) -> None:
        """Start the scheduling loop on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._runner = self._loop.create_task(self._run(), name="flux_async poll scheduler")

    async def stop(self) -> None:
        """Stop the loop and cancel polls in progress; return when they have ended."""
        tasks = [task for task in (self._runner, *self._tasks) if task is not None]
        for task in tasks:
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._heap.clear()

    def add(self, entry: Entry, *, first_wait: float | None = None, slow: bool = False) -> None:
        """Start tracking a submitted job: set its deadline and its first poll.

        ``slow``: after the first poll, wait the longest backoff step each time (the
        safety net behind webhooks).
        """
        now = self._now()
        entry.deadline = now + self._policy.timeout
        entry.attempt = len(self._table) - 1 if slow else 0
        wait = self._first_wait if first_wait is None else first_wait
        if self._rng is not None and (first_wait is None or slow):
            # A little jitter on the first check keeps a burst of creates from becoming a
            # burst of polls.
            wait *= self._rng.uniform(0.9, 1.1)
        self._push(entry, now + wait)

    def schedule_next(self, entry: Entry, *, at_least: float = 0.0) -> None:
        """Schedule the next poll of a job that is still running, by its backoff."""
        wait = max(at_least, jittered(self._table, entry.attempt, self._rng))
        entry.attempt += 1
        self._push(entry, self._now() + wait)

    def schedule_in(self, entry: Entry, wait: float) -> None:
        """Schedule the next poll of a job ``wait`` seconds from now (a learned schedule)."""
        self._push(entry, self._now() + wait)

    def replan(self, entry: Entry, due: float) -> None:
        """Move a job's next poll earlier, to ``due`` (the old heap item becomes stale)."""
        if entry.next_poll is not None and due < entry.next_poll:
            self._push(entry, due)

    def waiting(self) -> list[Entry]:
        """The jobs waiting for a poll (each once), in no particular order."""
        return [item[3] for item in self._heap if item[3].next_poll == item[0]]

    def started(self, entry: Entry) -> float:
        """The loop time the job's polling started (its ages count from it)."""
        return entry.deadline - self._policy.timeout

    def now(self) -> float:
        """The loop's clock."""
        return self._now()

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _push(self, entry: Entry, due: float) -> None:
        if entry.status.is_terminal:
            entry.next_poll = None
            return
        kind = _POLL
        if due >= entry.deadline:
            due, kind = entry.deadline, _DEADLINE
        entry.next_poll = due
        heapq.heappush(self._heap, (due, next(self._seq), kind, entry))
        if due < self._timer_at:
            self._arm(due)

    def _arm(self, due: float) -> None:
        """Make the loop wake at ``due`` (or now, if it is sleeping on a later time)."""
        if self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = due
        self._timer = self._loop.call_at(due, self._wake)

    def _wake(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _run(self) -> None:
        assert self._loop is not None
        loop = self._loop
        heap = self._heap
        while True:
            now = loop.time()
            if not heap or heap[0][0] > now:
                if heap:
                    self._arm(heap[0][0])
                self._wakeup = loop.create_future()
                await self._wakeup
                continue
            due, _, kind, entry = heapq.heappop(heap)
            if entry.status.is_terminal or entry.next_poll != due:
                continue  # finished meanwhile, or rescheduled: a stale heap item
            if kind == _DEADLINE:
                entry.next_poll = None
                self._on_deadline(entry)
                continue
            delay = self._reserve(now)
            if delay > 0:
                await asyncio.sleep(delay)
            await self._acquire_slot()
            if entry.status.is_terminal or entry.next_poll != due:
                self._release_slot()
                continue
            if loop.time() >= entry.deadline:
                self._release_slot()
                entry.next_poll = None
                self._on_deadline(entry)
                continue
            entry.next_poll = None
            task = loop.create_task(self._poll_and_release(entry))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _poll_and_release(self, entry: Entry) -> None:
        try:
            await self._poll(entry)
        except Exception:  # a bug in one poll must not stop the others
            logger.exception("polling job %s failed unexpectedly", entry.local_id)
            self.schedule_next(entry)
        finally:
            self._release_slot()
