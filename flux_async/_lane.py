"""`Lane`: admission for one provider — HTTP and job slots, create and poll pacing, the 429
pause, retries.

Every number that limits how hard a client presses on its provider lives here. They are
discovered, not guessed (DESIGN.md "Polling that learns"): jobs in flight and connections
grow while they are what holds requests back and the provider answers, and shrink by 10 %
when many answers at once are 503 (overloaded; scattered 5xx change nothing). A provider's
rate limit counts every request of an API key, so creates and polls share one request rate
(`_pace.Pace`): not paced at all until the provider refuses enough requests with 429 (too
many requests), then paced smoothly from just under the rate it accepted, by additive
increase and multiplicative decrease to 90 % of what it accepted (`_aimd.AIMDLimit`, at most
one decrease per congestion epoch); a 429's ``Retry-After`` pauses every request. A decrease
after which the 429s go on just the same was not a limit and is undone.
`Limits` fields are ceilings on all of that (``creates_per_second`` and ``polls_per_second``
as fixed paces each kind of request also keeps to). `Tasks` is the set of background tasks a
client owns (creates, verifications).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from typing import Any

from ._aimd import AdjustableSlots, AIMDLimit
from ._config import Limits, RetryPolicy
from ._errors import Phase, TransportError
from ._http import HTTPRequest, HTTPResponse, parse_retry_after
from ._pace import CappedPace, Pace, fixed_rate
from ._retry import RetryBudget, wait_table
from ._transport import Transport

__all__ = ["Lane", "Tasks"]

#: Starting points of the discovered limits (each then grows while it binds).
INITIAL_JOBS_IN_FLIGHT = 256
INITIAL_CONNECTIONS = 64
#: Connections at most double in this many seconds before the first 503 burst: requests
#: in flight when a provider's hidden rate limit is first hit are all refused (a fast
#: provider's answers would otherwise grow 64 connections to hundreds within 0.2 s).
_CONNECTIONS_DOUBLING = 0.25
#: A limit that grew by this factor since the last ``limits`` event is reported again.
_REPORT_GROWTH = 1.25
_THROTTLED = frozenset({429, 503})
#: A create waiting longer than this for its turn in the create rate looks again halfway.
_RECHECK = 1.0
_NO_TURN = object()
#: The request rate a create task took its turn in (`Lane.wait_for_create_turn`; ``None``:
#: not paced then), read when it has an HTTP slot (`Lane.send`). Per task: a context
#: variable lives as long as the create's task, with nothing to clean up.
_TURN: ContextVar[object] = ContextVar("flux_async_turn", default=_NO_TURN)


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
        self.http_slots = AdjustableSlots(
            _limit(INITIAL_CONNECTIONS, limits.max_connections, doubling=_CONNECTIONS_DOUBLING)
        )
        self.job_slots = AdjustableSlots(_limit(INITIAL_JOBS_IN_FLIGHT, limits.max_jobs_in_flight))
        self.request_pace = Pace()
        """The discovered request rate of the provider key, creates and polls together."""
        self.create_cap = fixed_rate(limits.creates_per_second)
        poll_cap = fixed_rate(limits.polls_per_second)
        # Creates and polls take their turns in the shared pace (and in their ceiling).
        self.create_pace = self.request_pace
        self.poll_pace: Pace | CappedPace = (
            self.request_pace if poll_cap is None else CappedPace(self.request_pace, poll_cap)
        )
        self.retry_budget = RetryBudget(ratio=retry.budget_ratio, reserve=retry.budget_reserve)
        self.retry_table = wait_table(retry.wait_initial, retry.wait_exp_base, retry.wait_max)
        self._creates_paused_until = -float("inf")
        self._creates_stopped = False
        self._reported: tuple[float, float] = (self.http_slots.capacity, self.job_slots.capacity)
        # The request rate last reported (None: not paced) and the rate that is reported
        # again when reached (growth by `_REPORT_GROWTH`; a pace dropped is reported too).
        self._reported_rate: float | None = None
        self._report_rate_at = math.inf
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
        shared = self.request_pace.value
        cap = self.create_cap
        creates = shared if cap is None else cap.rate if shared is None else min(shared, cap.rate)
        return {
            "jobs_in_flight": self.job_slots.capacity,
            "connections": self.http_slots.capacity,
            "requests_per_second": shared,
            "creates_per_second": creates,
            "polls_per_second": self.poll_pace.value,
        }

    def describe_limits(self) -> str:
        """`current_limits` as ``name=value`` pairs (``none``: not limited)."""
        return " ".join(f"{name}={_show(value)}" for name, value in self.current_limits().items())

    async def send(self, request: HTTPRequest, *, long_read: bool = False) -> HTTPResponse:
        """Send a create in one of the provider's HTTP slots; learn from its answer.

        A create that took its turn (`wait_for_create_turn`) before a 429 pause or before
        the request rate was paced waits its turn again once it has a slot, without it:
        hundreds of creates may be queued for a slot when the provider's first 429s come
        back, and none of them has been sent (nor paid for) yet.
        """
        slots = self.http_slots
        await slots.acquire()
        if request.operation == "create":
            while self._stale_turn():
                slots.release()
                await self.wait_for_create_turn()
                await slots.acquire()
            _TURN.set(_NO_TURN)  # a turn is for one request
            if self._creates_stopped:
                slots.release()
                raise TransportError(
                    f"{self.provider} create not sent: the client is closing",
                    provider=self.provider,
                    phase=Phase.NOT_SENT,
                    operation="create",
                )
        try:
            assert self._transport is not None, "this lane has no transport"
            sent_at = self._clock()
            response = await self._transport.send(
                request, provider=self.provider, long_read=long_read
            )
        finally:
            slots.release()
        response.sent_at = sent_at
        if response.status in _THROTTLED:
            self._throttled(response, sent_at, create=True)
        else:
            now = self._clock()
            pace = self.request_pace
            pace.on_success(now)
            grew = slots.on_success(now)
            grew = self.job_slots.on_success(now) or grew
            rate = pace.rate
            if grew or (
                rate.limit.value >= self._report_rate_at
                if rate is not None
                else self._reported_rate is not None
            ):
                self._maybe_report(False)
        return response

    async def send_in_slot(self, request: HTTPRequest, *, long_read: bool = False) -> HTTPResponse:
        """Send a query when the caller already holds an HTTP slot (the poll scheduler)."""
        assert self._transport is not None, "this lane has no transport"
        sent_at = self._clock()
        response = await self._transport.send(request, provider=self.provider, long_read=long_read)
        if response.status in _THROTTLED:
            self._throttled(response, sent_at, create=False)
            return response
        now = self._clock()
        pace = self.request_pace
        pace.on_success(now)
        rate = pace.rate
        if self.http_slots.on_success(now) or (
            rate.limit.value >= self._report_rate_at
            if rate is not None
            else self._reported_rate is not None
        ):
            self._maybe_report(False)
        return response

    def _throttled(self, response: HTTPResponse, sent_at: float | None, *, create: bool) -> None:
        self.throttled += 1
        now = self._clock()
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        pace = self.request_pace
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
        rate, reported = self.request_pace.value, self._reported_rate
        grown = any(
            size >= before * _REPORT_GROWTH
            for size, before in zip(sizes, self._reported, strict=True)
        )
        if rate is None or reported is None:
            grown = grown or rate is not reported  # a pace started or dropped
        else:
            grown = grown or rate >= reported * _REPORT_GROWTH
        if shrank or grown:
            self._reported = sizes
            self._reported_rate = rate
            self._report(self.describe_limits())
        # Reached again only by growth (a decrease is reported as it happens).
        self._report_rate_at = (
            math.inf if self._reported_rate is None else self._reported_rate * _REPORT_GROWTH
        )

    def _stale_turn(self) -> bool:
        """Whether the current create task's turn was taken before a pause or a pace that
        holds it now (a create that took no turn here is never held)."""
        turn = _TURN.get()
        if turn is _NO_TURN:
            return False
        now = self._clock()
        if now < self._creates_paused_until:
            return True
        rate = self.request_pace.rate
        if rate is None:
            return False
        # (A pause's last microsecond is a rounding error's worth: `wait` lets it go.)
        return rate is not turn or now < rate.paused_until - 1e-6

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
        cap = self.create_cap
        if cap is not None:
            delay = cap.reserve(self._clock())
            if delay > 0.0:
                await self._sleep(delay)
        pace = self.request_pace
        rate = pace.rate
        if rate is None:
            pace.reserve(self._clock())  # only counted
            _TURN.set(None)
            return
        ticket = rate.take(self._clock())
        while pace.rate is rate:  # a pace dropped (or started anew) lets its line go
            delay = rate.wait(ticket, self._clock())
            if delay <= 0.0:
                _TURN.set(rate)
                return
            # The rate may recover meanwhile (and move this create up): a long wait is
            # looked at again halfway.
            await self._sleep(delay if delay <= _RECHECK else max(_RECHECK, 0.5 * delay))
        _TURN.set(pace.rate)

    def stop_creates(self) -> None:
        """No create is sent from now on: one that has not reached the wire yet (waiting
        for an HTTP slot or for its turn again) fails with a `TransportError` of phase
        ``NOT_SENT`` (the client is closing; creates already sent are answered as usual)."""
        self._creates_stopped = True

    def pause_creates(self, seconds: float | None) -> float:
        """Hold every create of this provider for ``seconds`` (the first backoff step when
        ``None``); a longer pause already running is kept. Returns the pause applied."""
        pause = seconds if seconds is not None else self.retry_table[0]
        self._creates_paused_until = max(self._creates_paused_until, self._clock() + pause)
        return pause


def _limit(initial: int, ceiling: int | None, doubling: float = 0.0) -> AIMDLimit:
    start = initial if ceiling is None else min(initial, ceiling)
    return AIMDLimit(start, ceiling=ceiling, decrease=0.9, cooldown=1.0, doubling=doubling)


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
