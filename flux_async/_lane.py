"""`Lane`: admission for one provider — HTTP and job slots, create and poll pacing, the 429
pause, retries.

Every number that limits how hard a client presses on its provider lives here. They are
discovered, not guessed (DESIGN.md "Polling that learns"): jobs in flight and connections
grow while they are what holds requests back and the provider answers, and shrink by 10 %
when many answers at once are 503 (overloaded; scattered 5xx change nothing); creates and
polls are not paced at all until the provider refuses enough of them with 429 (too many
requests), then paced from just under the rate it accepted, by additive increase and
multiplicative decrease (`AIMDLimit`, at most one decrease per congestion epoch). A
decrease after which the 429s go on just the same was not a limit and is undone (`Pace`).
`Limits` fields are ceilings on all of that. `Tasks` is the set of background tasks a
client owns (creates, verifications).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ._config import Limits, RetryPolicy
from ._http import HTTPRequest, HTTPResponse, parse_retry_after
from ._latency import AdaptiveRate, AIMDLimit
from ._retry import RetryBudget, wait_table
from ._transport import Transport

__all__ = ["AdjustableSlots", "Lane", "Pace", "Tasks"]

#: Starting points of the discovered limits (each then grows while it binds).
INITIAL_JOBS_IN_FLIGHT = 256
INITIAL_CONNECTIONS = 64
#: A limit that grew by this factor since the last ``limits`` event is reported again.
_REPORT_GROWTH = 1.25
_THROTTLED = frozenset({429, 503})


class AdjustableSlots:
    """An `asyncio.Semaphore` whose capacity follows an `AIMDLimit`.

    Growing releases extra permits; shrinking withholds permits as they are given back
    (``_debt``), so nothing in flight is interrupted. The capacity grows only while every
    slot is taken (the limit is what holds requests back), so an idle client does not build
    up a capacity it never tested. ``acquire`` is the semaphore's own method: the hot path
    pays nothing for the adjustability but one check in `release`.
    """

    __slots__ = ("_debt", "_semaphore", "acquire", "capacity", "limit", "locked")

    def __init__(self, limit: AIMDLimit) -> None:
        self.limit = limit
        self.capacity = int(limit.value)
        self._semaphore = asyncio.Semaphore(self.capacity)
        self._debt = 0
        self.acquire = self._semaphore.acquire
        self.locked = self._semaphore.locked

    def release(self) -> None:
        """Give one slot back (kept back instead while the capacity is being lowered)."""
        if self._debt:
            self._debt -= 1
        else:
            self._semaphore.release()

    async def __aenter__(self) -> None:
        await self._semaphore.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def on_success(self, now: float) -> bool:
        """Count an answered request; grow if every slot was taken. Return whether it grew."""
        if not self._semaphore.locked():
            return False
        self.limit.on_success(now)
        return self._follow()

    def on_throttle(self, now: float, sent_at: float | None = None) -> bool:
        """Count a 429/503; shrink unless cooling down. Return whether it shrank."""
        return self.limit.on_throttle(now, sent_at) and self._follow()

    def _follow(self) -> bool:
        target = int(self.limit.value)
        change = target - self.capacity
        if change == 0:
            return False
        self.capacity = target
        if change > 0:
            paid = min(change, self._debt)
            self._debt -= paid
            for _ in range(change - paid):
                self._semaphore.release()
        else:
            self._debt -= change
        return True


class ThrottleShare:
    """Answers and throttles (429/503) of one kind of request, over about the last second.

    A few stray throttles among many answers (a flaky gateway, a fault injector) are not a
    limit being hit: a throttle is a capacity signal only when at least 3 of the recent
    answers, and at least `threshold` of them, were throttles. The threshold is ``NOISE``
    until a decrease turns out not to have helped (see `Pace`); it is then raised above the
    share of throttles that caused it, and decays back over ``NOISE_MEMORY`` seconds.
    """

    NOISE = 0.05
    #: A share of throttles this high is a limit, whatever else happens.
    HEAVY = 0.25
    NOISE_MEMORY = 60.0

    __slots__ = (
        "_answers",
        "_before",
        "_noise",
        "_noise_at",
        "_start",
        "_throttles",
        "answers",
        "throttles",
    )

    def __init__(self) -> None:
        self._start = -math.inf
        self._answers = 0
        self._throttles = 0
        self._before = (0, 0)  # the previous second's (answers, throttles)
        self._noise = self.NOISE
        self._noise_at = -math.inf
        self.answers = 0
        """Every answer counted (throttles included)."""
        self.throttles = 0
        """Every throttle counted."""

    def _roll(self, now: float) -> None:
        elapsed = now - self._start
        if elapsed >= 1.0:
            self._before = (self._answers, self._throttles) if elapsed < 2.0 else (0, 0)
            self._start = now
            self._answers = self._throttles = 0

    def answered(self, now: float) -> None:
        if now - self._start >= 1.0:
            self._roll(now)
        self._answers += 1
        self.answers += 1

    def throttled(self, now: float) -> None:
        self._roll(now)
        self._answers += 1
        self._throttles += 1
        self.answers += 1
        self.throttles += 1

    def share(self) -> float:
        """Throttles among the answers of the current and the previous second."""
        answers = self._answers + self._before[0]
        return (self._throttles + self._before[1]) / answers if answers else 0.0

    def threshold(self, now: float) -> float:
        """The share of throttles above which they are a capacity signal."""
        raised = self._noise - self.NOISE
        if raised <= 0.0:
            return self.NOISE
        fading: float = 0.5 ** ((now - self._noise_at) / (self.NOISE_MEMORY / 4))
        return self.NOISE + raised * fading

    def signals(self, now: float) -> bool:
        """Whether the recent throttles are a capacity signal (call after `throttled`)."""
        throttles = self._throttles + self._before[1]
        return throttles >= 3 and self.share() >= self.threshold(now)

    def heavy(self) -> bool:
        """Whether the recent throttles are too many to be noise."""
        return self._throttles + self._before[1] >= 3 and self.share() >= self.HEAVY

    def is_noise(self, now: float, share: float) -> None:
        """A share of throttles turned out not to be a limit: ignore it from now on."""
        self._noise = min(self.HEAVY, max(self.threshold(now), 1.5 * share))
        self._noise_at = now


class Pace:
    """A rate (creates or polls per second) that is not limited until the provider refuses.

    With a ``ceiling`` it starts paced at the ceiling (one second's burst). Without one it
    only counts what is sent; the first capacity signal (429s above the noise, see
    `ThrottleShare`) starts an `AdaptiveRate` just under the rate the provider accepted
    over the last second, which then grows while it holds requests back (back towards
    where it was quickly, beyond it by about 2 % a second) and shrinks by 10 % at most once
    per congestion epoch (about a second). A ``Retry-After`` pauses every request of this
    kind while it is paced.

    Every decrease is tested: if among the answers to requests sent after it the share of
    throttles did not at least halve, slowing down did not help, so they were not a rate
    limit (random 429s do not go away when a client slows down, a limit's do): the decrease
    is undone (a pace it started is dropped) and such a share counts as noise from then on.
    A share of `ThrottleShare.HEAVY` or more is never taken for noise.
    """

    #: After a decrease: answers before the test window (requests still sent at the old
    #: rate), and the window's length, in seconds.
    SETTLE = 0.25
    WINDOW = 1.0
    #: Fewer answers in the window than this: the test says nothing, the decrease stays.
    TEST_ANSWERS = 20

    __slots__ = (
        "_count",
        "_previous",
        "_test_at",
        "_test_before",
        "_test_end",
        "_test_share",
        "_test_snapshot",
        "_test_started",
        "_window_start",
        "ceiling",
        "rate",
        "share",
    )

    def __init__(self, ceiling: float | None) -> None:
        self.ceiling = ceiling
        self.rate: AdaptiveRate | None = None
        if ceiling is not None:
            self.rate = AdaptiveRate(AIMDLimit(ceiling, ceiling=ceiling), burst=ceiling)
        self._window_start = -math.inf
        self._count = 0
        self._previous = 0
        self.share = ThrottleShare()
        self._test_at = math.inf  # the next step of a running decrease test
        self._test_end = -math.inf
        self._test_snapshot = (0, 0)
        self._test_share = 0.0
        self._test_before = 0.0
        self._test_started = False

    @property
    def value(self) -> float | None:
        """Requests per second allowed now (``None``: not limited)."""
        return None if self.rate is None else self.rate.rate

    def reserve(self, now: float) -> float:
        """Take one slot; return the seconds to wait before sending (0 when free)."""
        rate = self.rate
        if rate is not None:
            return rate.reserve(now)
        elapsed = now - self._window_start
        if elapsed >= 1.0:
            self._previous = self._count if elapsed < 2.0 else 0
            self._window_start = now
            self._count = 0
        self._count += 1
        return 0.0

    def sent_rate(self, now: float) -> float:
        """Requests sent over about the last second (a sliding-window estimate)."""
        elapsed = now - self._window_start
        if not 0.0 <= elapsed < 2.0:
            return 0.0
        if elapsed >= 1.0:
            return self._count / elapsed
        return self._previous * (1.0 - elapsed) + self._count

    def on_success(self, now: float) -> None:
        """Count one answer that was not a throttle."""
        self.share.answered(now)
        if self.rate is not None:
            self.rate.on_success(now)
        if now >= self._test_at:
            self._test(now)

    def on_throttle(self, now: float, retry_after: float | None, sent_at: float | None) -> bool:
        """Count a 429/503; return whether the rate decreased."""
        share = self.share
        share.throttled(now)
        if now >= self._test_at:
            self._test(now)
        rate = self.rate
        if not share.signals(now) or now < self._test_end:
            if rate is not None:
                rate.pause(now, retry_after)
            return False
        started = rate is None
        if rate is None:
            # Just under what the provider accepted over the last second.
            start = max(self.sent_rate(now) * (1.0 - share.share()) * 0.9, 2.0)
            # Never below 5 % of it: a limit that keeps shrinking slows a batch down but
            # cannot stall it.
            limit = AIMDLimit(start, floor=max(1.0, 0.05 * start), decrease=0.9)
            limit.throttles = 1
            self.rate = rate = AdaptiveRate(limit, burst=1.0)
            rate.pause(now, retry_after)
            before = math.inf
        else:
            limit = rate.limit
            before = limit.value
            throttles = limit.throttles
            rate.on_throttle(now, retry_after, sent_at)
            if limit.throttles == throttles:
                return False
        limit.increase = max(1.0, 0.02 * limit.value)  # per second while it binds
        if share.share() < ThrottleShare.HEAVY:
            self._test_at = now + self.SETTLE
            self._test_end = now + self.SETTLE + self.WINDOW
            self._test_snapshot = (-1, -1)
            self._test_share = share.share()
            self._test_before = before
            self._test_started = started
        return True

    def _test(self, now: float) -> None:
        """The next step of a decrease's test (see the class docstring)."""
        share = self.share
        answers, throttles = self._test_snapshot
        if answers < 0:  # the window opens
            self._test_snapshot = (share.answers, share.throttles)
            self._test_at = self._test_end
            return
        self._test_at = math.inf
        answers = share.answers - answers
        throttles = share.throttles - throttles
        if answers < self.TEST_ANSWERS or throttles < 0.5 * self._test_share * answers:
            return  # slowing down helped (or too few answers to tell): a limit
        share.is_noise(now, self._test_share)
        if self._test_started:
            self.rate = None
        elif self.rate is not None:
            self.rate.limit.undo(self._test_before)


def _show(value: float | None) -> str:
    return "none" if value is None else f"{value:.0f}"


class Lane:
    """The shared admission state of one provider's requests.

    Args:
        provider: the provider's name (for errors).
        limits: ceilings on connections, jobs and the create and poll rates.
        retry: the retry policy (its budget and backoff table are built here).
        transport: sends the requests; ``None`` for tests that never `send`.
        clock: the event loop's clock by default; tests pass a fake one.
        sleep: ``asyncio.sleep`` by default; tests pass one that advances their clock.
        report: called with a description of the current limits when one changed notably
            (the client turns it into a ``limits`` progress event).
    """

    def __init__(
        self,
        *,
        provider: str,
        limits: Limits,
        retry: RetryPolicy,
        transport: Transport | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.provider = provider
        self.limits = limits
        self.retry = retry
        self._transport = transport
        self._clock = clock or asyncio.get_running_loop().time
        self._sleep = sleep
        self._report = report
        # Semaphores, not CapacityLimiters: a poll's slot is taken by the scheduler's task
        # and given back by the poll's own task. asyncio's, not anyio's, on this per-request
        # path: anyio's acquire always yields to the event loop, an extra loop turn and
        # ~11 us per request even when a slot is free (benchmarks/README.md).
        self.http_slots = AdjustableSlots(_limit(INITIAL_CONNECTIONS, limits.max_connections))
        self.job_slots = AdjustableSlots(_limit(INITIAL_JOBS_IN_FLIGHT, limits.max_jobs_in_flight))
        self.create_pace = Pace(limits.creates_per_second)
        self.poll_pace = Pace(limits.polls_per_second)
        self.retry_budget = RetryBudget(ratio=retry.budget_ratio, reserve=retry.budget_reserve)
        self.retry_table = wait_table(retry.wait_initial, retry.wait_exp_base, retry.wait_max)
        self._creates_paused_until = -float("inf")
        self._reported: tuple[float, float] = (self.http_slots.capacity, self.job_slots.capacity)
        self.throttled = 0
        """429/503 answers received (creates and polls)."""

    @property
    def creates_paused_until(self) -> float:
        """The clock time before which no create is sent (after a 429)."""
        return self._creates_paused_until

    def now(self) -> float:
        """The lane's clock."""
        return self._clock()

    def current_limits(self) -> dict[str, float | None]:
        """The limits in force now (``None``: not limited)."""
        return {
            "jobs_in_flight": self.job_slots.capacity,
            "connections": self.http_slots.capacity,
            "creates_per_second": self.create_pace.value,
            "polls_per_second": self.poll_pace.value,
        }

    def describe_limits(self) -> str:
        """`current_limits` as ``name=value`` pairs (``none``: not limited)."""
        return " ".join(f"{name}={_show(value)}" for name, value in self.current_limits().items())

    async def send(self, request: HTTPRequest, *, long_read: bool = False) -> HTTPResponse:
        """Send a create in one of the provider's HTTP slots; learn from its answer."""
        slots = self.http_slots
        await slots.acquire()
        try:
            assert self._transport is not None, "this lane has no transport"
            sent_at = self._clock()
            response = await self._transport.send(
                request, provider=self.provider, long_read=long_read
            )
        finally:
            slots.release()
        if response.status in _THROTTLED:
            self._throttled(response, sent_at, create=True)
        else:
            now = self._clock()
            self.create_pace.on_success(now)
            grew = slots.on_success(now)
            grew = self.job_slots.on_success(now) or grew
            if grew:
                self._maybe_report(False)
        return response

    async def send_in_slot(self, request: HTTPRequest, *, long_read: bool = False) -> HTTPResponse:
        """Send a query when the caller already holds an HTTP slot (the poll scheduler)."""
        assert self._transport is not None, "this lane has no transport"
        response = await self._transport.send(request, provider=self.provider, long_read=long_read)
        if response.status in _THROTTLED:
            self._throttled(response, None, create=False)
            return response
        now = self._clock()
        self.poll_pace.on_success(now)
        if self.http_slots.locked() and self.http_slots.on_success(now):
            self._maybe_report(False)
        return response

    def _throttled(self, response: HTTPResponse, sent_at: float | None, *, create: bool) -> None:
        self.throttled += 1
        now = self._clock()
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        pace = self.create_pace if create else self.poll_pace
        if response.status == 429:  # too many requests per second
            shrank = pace.on_throttle(now, retry_after, sent_at)
        else:
            # 503, overloaded: fewer requests at once (and, for creates, fewer jobs), but
            # only when many answers say so; scattered 5xx are not a capacity signal.
            pace.share.throttled(now)
            shrank = False
            if pace.share.heavy():
                shrank = self.http_slots.on_throttle(now, sent_at)
                if create:
                    shrank = self.job_slots.on_throttle(now, sent_at) or shrank
        if shrank:
            self._maybe_report(True)

    def _maybe_report(self, shrank: bool) -> None:
        if self._report is None:
            return
        sizes = (self.http_slots.capacity, self.job_slots.capacity)
        grown = any(
            size >= before * _REPORT_GROWTH
            for size, before in zip(sizes, self._reported, strict=True)
        )
        if shrank or grown:
            self._reported = sizes
            self._report(self.describe_limits())

    def poll_delay(self) -> float:
        """Take a poll's place in the poll rate; return the seconds to wait first."""
        return self.poll_pace.reserve(self._clock())

    async def wait_for_create_turn(self) -> None:
        """Wait out a 429 pause, then take this create's place in the create rate."""
        while True:
            pause = self._creates_paused_until - self._clock()
            if pause <= 0:
                break
            await self._sleep(pause)
        delay = self.create_pace.reserve(self._clock())
        if delay > 0:
            await self._sleep(delay)

    def pause_creates(self, seconds: float | None) -> float:
        """Hold every create of this provider for ``seconds`` (the first backoff step when
        ``None``); a longer pause already running is kept. Returns the pause applied."""
        pause = seconds if seconds is not None else self.retry_table[0]
        self._creates_paused_until = max(self._creates_paused_until, self._clock() + pause)
        return pause


def _limit(initial: int, ceiling: int | None) -> AIMDLimit:
    start = initial if ceiling is None else min(initial, ceiling)
    return AIMDLimit(start, ceiling=ceiling, decrease=0.9, cooldown=1.0)


class Tasks:
    """Background tasks owned by a client; `aclose` cancels them and waits for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coroutine`` in a task kept until it ends."""
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        """Cancel every task and return when all have ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
