"""One poll scheduler for all jobs: a timer heap, per-job backoff, a global poll rate.

There is no sleeping task per job. Each outstanding job sits in one heap keyed by its next
poll time, behind one event-loop timer (no task of its own): when the timer fires, every poll
due by then (or within `EARLY` of it) is started, in order, each in a task that takes a free
HTTP slot and polls; polls that fall due together share one wake-up. The poll rate, when one
is set, is taken in order too: a poll that must wait for it holds back the ones behind it
until its turn. Every job also has a deadline: no poll is scheduled at or after it, and when
it passes the job ends ``timed_out``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
from collections.abc import Awaitable, Callable

from ._config import PollPolicy
from ._registry import Entry
from ._retry import TokenBucket, jittered, wait_table

__all__ = ["PollScheduler", "coalesced_due", "grid_step", "on_grid"]

logger = logging.getLogger("flux_async")

_POLL = 0
_DEADLINE = 1
#: Polls due within this many seconds of a wake-up go with it (a little early) instead of
#: each taking an event-loop wake-up of its own; deadlines are never early.
EARLY = 0.003
#: With ``coalesce``, a poll due in ``wait`` seconds may come up to a share of ``wait``
#: early (and never more than `COALESCE_MAX` seconds): its due time is rounded down onto a
#: grid, so polls that fall due close together share one wake-up. A wake-up is what a
#: spread-out schedule pays for: on a 2-core VM, the same 200 requests a second cost a
#: client ~640 µs each sent one at a time and ~250 µs each sent 25 at a time (the fake
#: ~415 vs ~170). Waits of `COALESCE_LONG_WAIT` or more take a quarter, at most 250 ms:
#: four wake-ups a second at most. Such a wait counts from when the poll before it was
#: sent, which lies on the grid, and the planner makes its lag target a whole number of
#: steps of the model's own grid (`PollPlanner.grid`, from the ladder of `on_grid`), so a
#: job stays on one grid slot from poll to poll and the rounding down costs nothing after
#: its first poll. Shorter waits, where a few ms early
#: is a wasted request (jobs done in a fraction of a second), take a sixteenth.
COALESCE_SHARE = 1.0 / 16.0
COALESCE_LONG_SHARE = 1.0 / 4.0
COALESCE_LONG_WAIT = 0.5
COALESCE_MAX = 0.25
#: A model's own grid (`PollPlanner.grid`: a quarter to a seventh of its lag target) is used
#: for waits of three of its steps or more: a lag target shortened by one step, now and
#: then, stays on it.
COALESCE_STEP_SHARE = 1.0 / 3.0


def grid_step(wait: float) -> float:
    """The grid a poll ``wait`` seconds away is rounded down onto (see `coalesced_due`):
    a power of two, so that polls with similar waits land on the same grid."""
    share = wait * (COALESCE_LONG_SHARE if wait >= COALESCE_LONG_WAIT else COALESCE_SHARE)
    return math.ldexp(1.0, math.frexp(share if share < COALESCE_MAX else COALESCE_MAX)[1] - 1)


def coalesced_due(now: float, wait: float, step: float = 0.0) -> float:
    """The due time of a learned schedule's poll ``wait`` seconds from ``now``: rounded down
    onto a grid of at most a share of the wait (see `COALESCE_SHARE`), so that polls due
    close together share one wake-up. The grid is ``step`` (a model's: `PollPlanner.grid`)
    where the wait is three steps or more, else a power of two (`grid_step`). A wait of
    whole steps from a poll on the grid is not moved at all. Shared by `PollScheduler` and
    the replay."""
    due = now + wait
    if wait * COALESCE_SHARE < EARLY or due == math.inf:
        return due
    # (Whole steps computed in floats: a wait of exactly three steps may be a hair under.)
    grid = step if 0.0 < step <= wait * COALESCE_STEP_SHARE * (1.0 + 1e-9) else grid_step(wait)
    # A hair over, so that a due time already on the grid plus whole steps stays there
    # whatever the float rounding of the division.
    return math.floor(due / grid + 1e-9) * grid


def on_grid(wait: float) -> float:
    """``wait`` rounded to the nearest whole number of its own grid steps (`grid_step`),
    for waits of `COALESCE_LONG_WAIT` or more (shorter ones as they are).

    A poll that waits a whole number of grid steps after one sent on the grid is due on
    the grid: `coalesced_due` does not move it, and jobs polled at the same interval share
    wake-ups for good. Rounding moves the wait by at most a ninth (0.99 s -> 1 s, 1.1 s ->
    1 s, 1.2 s -> 1.25 s).
    """
    if not COALESCE_LONG_WAIT <= wait < math.inf:
        return wait
    grid = grid_step(wait)
    rounded = max(COALESCE_LONG_WAIT, round(wait / grid) * grid)
    return rounded


#: The heap is rebuilt without its stale items (jobs finished or rescheduled since they were
#: pushed) once it holds twice as many items as after the last rebuild, and at least this
#: many: a job a callback ended keeps its safety-net item until that is due (a minute or
#: more), which kept every finished job alive that long.
COMPACT_MIN = 1024


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
        coalesce: let polls come a little early (`COALESCE_SHARE` of their wait) to share
            wake-ups; for a learned schedule, whose jitter already moves polls earlier, and
            not for a fixed one, which keeps its exact times.
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
        coalesce: bool = False,
    ) -> None:
        self._coalesce = coalesce
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
        self._compact_at = COMPACT_MIN
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        # A poll waiting for its turn in the poll rate: (its turn, its due time, the job).
        self._held: tuple[float, float, Entry] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False

    def __len__(self) -> int:
        return len(self._heap)

    def start(self) -> None:
        """Start scheduling on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._started = True
        if self._heap:
            self._arm(self._heap[0][0])

    async def stop(self) -> None:
        """Stop scheduling and cancel polls in progress; return when they have ended."""
        self._started = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = float("inf")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()  # a task cancelled before its first step never removed itself
        self._heap.clear()
        self._held = None

    #: A first poll due sooner than this is not moved onto the coalescing grid: for jobs
    #: done in a fraction of a second the first check is where the plan's lag and requests
    #: are decided (up to 1/16 of its wait early: ~4 ms on a 0.2 s check, ~1 % more polls),
    #: and first polls that fall due together still share a wake-up within `EARLY`. Longer
    #: first waits stay on the grid (a model's own, with ``step``).
    FIRST_EXACT_WAIT = COALESCE_LONG_WAIT

    def add(
        self,
        entry: Entry,
        *,
        first_wait: float | None = None,
        slow: bool = False,
        step: float = 0.0,
        started: float | None = None,
    ) -> None:
        """Start tracking a submitted job: set its deadline and its first poll.

        ``slow``: after the first poll, wait the longest backoff step each time (the
        safety net behind webhooks). ``step``: the grid of the job's model (see
        `schedule_in`), so that its first poll already falls on it. ``started``: when its
        create was sent (loop clock; default now): its ages, deadline and first poll count
        from then.
        """
        now = self._now()
        if started is not None and now - self._policy.timeout < started < now:
            now = started
        entry.deadline = now + self._policy.timeout
        entry.attempt = len(self._table) - 1 if slow else 0
        wait = self._first_wait if first_wait is None else first_wait
        if self._rng is not None and (first_wait is None or slow):
            # A little jitter on the first check keeps a burst of creates from becoming a
            # burst of polls.
            wait *= self._rng.uniform(0.9, 1.1)
        if wait < self.FIRST_EXACT_WAIT:
            self._push(entry, now + wait)
        else:
            self._push(entry, self._due(now, wait, step))

    def schedule_next(self, entry: Entry, *, at_least: float = 0.0) -> None:
        """Schedule the next poll of a job that is still running, by its backoff."""
        wait = max(at_least, jittered(self._table, entry.attempt, self._rng))
        entry.attempt += 1
        self._push(entry, self._now() + wait)

    def schedule_in(
        self, entry: Entry, wait: float, *, sent: float | None = None, step: float = 0.0
    ) -> None:
        """Schedule the next poll of a job ``wait`` seconds from now (a learned schedule).

        ``sent``: when the poll just answered was sent. A wait of `COALESCE_LONG_WAIT` or
        more counts from then rather than from now: the job keeps the grid slot it was
        polled on (``step``, its model's grid: `PollPlanner.grid`), and its polls are
        ``wait`` apart as sent, which is what the plan's lag target means, rather than
        ``wait`` plus a round trip.
        """
        now = self._now()
        start = sent if sent is not None and wait >= COALESCE_LONG_WAIT and sent <= now else now
        self._push(entry, self._due(start, wait, step))

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

    def _due(self, now: float, wait: float, step: float = 0.0) -> float:
        """The due time of a poll ``wait`` seconds from ``now`` (see ``coalesce``)."""
        return coalesced_due(now, wait, step) if self._coalesce else now + wait

    def _push(self, entry: Entry, due: float) -> None:
        if entry.status.is_terminal:
            entry.next_poll = None
            return
        kind = _POLL
        if due >= entry.deadline:
            due, kind = entry.deadline, _DEADLINE
        entry.next_poll = due
        heap = self._heap
        heapq.heappush(heap, (due, next(self._seq), kind, entry))
        if len(heap) >= self._compact_at:
            self._compact()
        if due < self._timer_at:
            self._arm(due)

    def _compact(self) -> None:
        """Drop the stale items (see `COMPACT_MIN`); in place, as `_wake` may be iterating."""
        heap = self._heap
        heap[:] = [
            item for item in heap if item[3].next_poll == item[0] and not item[3].status.is_terminal
        ]
        heapq.heapify(heap)
        self._compact_at = max(COMPACT_MIN, 2 * len(heap))

    def _arm(self, due: float) -> None:
        """Make the timer fire at ``due`` (instead of a later time it was set for)."""
        if not self._started or self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = due
        self._timer = self._loop.call_at(due, self._wake)

    def _wake(self) -> None:
        """The timer fired: start every poll due, end every job whose deadline passed."""
        self._timer = None
        self._timer_at = float("inf")
        loop = self._loop
        assert loop is not None
        now = loop.time()
        held = self._held
        if held is not None:
            turn, due, entry = held
            if now < turn - 1e-6:  # woken early (an earlier poll was added): still its turn to wait
                self._arm(turn)
                return
            self._held = None
            self._start_poll(entry, due)
        heap = self._heap
        soon = now + EARLY
        while heap:
            due, _, kind, entry = heap[0]
            if due > soon or (kind == _DEADLINE and due > now):
                self._arm(due)
                return
            heapq.heappop(heap)
            if entry.status.is_terminal or entry.next_poll != due:
                continue  # finished meanwhile, or rescheduled: a stale heap item
            if kind == _DEADLINE:
                entry.next_poll = None
                try:
                    self._on_deadline(entry)
                except Exception:  # one bad ending must not stop every later poll
                    logger.exception("ending job %s at its deadline failed", entry.local_id)
                continue
            delay = self._reserve(now)
            if delay > 0:
                self._held = (now + delay, due, entry)
                self._arm(now + delay)
                return
            self._start_poll(entry, due)

    def _start_poll(self, entry: Entry, due: float) -> None:
        assert self._loop is not None
        self._tasks.add(self._loop.create_task(self._poll_and_release(entry, due)))

    async def _poll_and_release(self, entry: Entry, due: float) -> None:
        try:
            await self._acquire_slot()
            try:
                if entry.status.is_terminal or entry.next_poll != due:
                    return  # finished, or rescheduled, while it waited for a slot
                if self._now() >= entry.deadline:
                    entry.next_poll = None
                    self._on_deadline(entry)
                    return
                entry.next_poll = None
                try:
                    await self._poll(entry)
                except Exception:  # a bug in one poll must not stop the others
                    logger.exception("polling job %s failed unexpectedly", entry.local_id)
                    self.schedule_next(entry)
            finally:
                self._release_slot()
        finally:
            # Here rather than in a done callback, which would cost a loop turn per poll.
            self._tasks.discard(asyncio.current_task())
