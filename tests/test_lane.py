"""`Lane`: the shared 429 pause, create pacing and retry budget, on a fake clock (no HTTP)."""

from __future__ import annotations

import asyncio
import heapq

import pytest

from flux_async import Limits, RetryPolicy
from flux_async._http import HTTPRequest, HTTPResponse
from flux_async._lane import Lane

pytestmark = pytest.mark.anyio


class FakeClock:
    """A clock that moves only when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def lane_for(clock: FakeClock, **limits: object) -> Lane:
    return Lane(
        provider="shortapi",
        limits=Limits(**limits),  # type: ignore[arg-type]
        retry=RetryPolicy(wait_initial=0.25),
        clock=clock,
        sleep=clock.sleep,
    )


async def test_a_429_pause_holds_every_create_not_only_the_one_refused() -> None:
    clock = FakeClock()
    lane = lane_for(clock)
    await lane.wait_for_create_turn()
    assert clock.sleeps == []  # no pause, no rate: free
    assert lane.pause_creates(2.0) == 2.0
    # Two other creates, started after the 429, both wait for the pause to end.
    await lane.wait_for_create_turn()
    assert clock.sleeps == [2.0] and clock.now == 102.0
    await lane.wait_for_create_turn()
    assert clock.sleeps == [2.0]


async def test_a_shorter_pause_never_cuts_a_longer_one() -> None:
    clock = FakeClock()
    lane = lane_for(clock)
    lane.pause_creates(5.0)
    lane.pause_creates(1.0)
    assert lane.creates_paused_until == 105.0
    await lane.wait_for_create_turn()
    assert clock.now == 105.0


async def test_a_pause_without_retry_after_is_the_first_backoff_step() -> None:
    clock = FakeClock()
    lane = lane_for(clock)
    assert lane.pause_creates(None) == lane.retry_table[0] == 0.25


async def test_creates_per_second_paces_creates_after_one_seconds_burst() -> None:
    clock = FakeClock()
    lane = lane_for(clock, creates_per_second=2.0)
    for _ in range(10):
        await lane.wait_for_create_turn()
    # A burst of 2 goes at once, then one every 0.5 s: 8 more take 4 s.
    assert clock.now - 100.0 == pytest.approx(4.0)
    assert clock.sleeps == [pytest.approx(0.5)] * 8


async def test_no_create_rate_means_no_pacing() -> None:
    clock = FakeClock()
    lane = lane_for(clock)
    for _ in range(1000):
        await lane.wait_for_create_turn()
    assert clock.sleeps == []


async def test_limits_are_read_once_into_the_lane() -> None:
    clock = FakeClock()
    lane = lane_for(clock, max_connections=3, max_jobs_in_flight=5)
    for _ in range(3):
        await lane.http_slots.acquire()
    assert lane.http_slots.locked()
    for _ in range(5):
        await lane.job_slots.acquire()
    assert lane.job_slots.locked()


async def test_the_retry_budget_is_spent_and_earned_back() -> None:
    clock = FakeClock()
    lane = Lane(
        provider="shortapi",
        limits=Limits(),
        retry=RetryPolicy(budget_reserve=2.0, budget_ratio=0.5),
        clock=clock,
        sleep=clock.sleep,
    )
    assert lane.retry_budget.try_spend() and lane.retry_budget.try_spend()
    assert not lane.retry_budget.try_spend()
    lane.retry_budget.record_success()
    assert not lane.retry_budget.try_spend()  # half a retry is not one
    lane.retry_budget.record_success()
    assert lane.retry_budget.try_spend()


class VirtualTime:
    """A clock for several tasks at once: `sleep` waits until the driver reaches its time."""

    def __init__(self) -> None:
        self.now = 100.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._count += 1
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), self._count, future))
        await future

    async def run(self, tasks: list[asyncio.Task[None]]) -> None:
        """Run ``tasks`` to their end, moving the clock to each next wake-up in turn."""
        while not all(task.done() for task in tasks):
            for _ in range(10):  # let every runnable task reach its next sleep
                await asyncio.sleep(0)
            if self._sleepers:
                wake, _, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, wake)
                future.set_result(None)
        await asyncio.gather(*tasks)


class RefusingFirst:
    """A transport that answers the first ``refused`` requests 429 (Retry-After: 0)."""

    def __init__(self, refused: int) -> None:
        self.refused = refused
        self.sent = 0

    async def send(self, request: HTTPRequest, *, provider: str, long_read: bool) -> HTTPResponse:
        self.sent += 1
        await asyncio.sleep(0)  # the answer comes later: the other creates go meanwhile
        if self.sent <= self.refused:
            return HTTPResponse(429, {"Retry-After": "0"}, b"{}")
        return HTTPResponse(200, {}, b"{}")


async def test_after_a_storm_of_429s_the_create_pace_recovers_within_seconds() -> None:
    """15 creates in a row refused (Retry-After: 0), then all accepted: 8 creates are done
    within a few seconds, not the ~8 s of a pace that crept up from its floor by +1/s while
    the creates already waiting kept the slow turns they had taken."""
    clock = VirtualTime()
    transport = RefusingFirst(15)
    lane = Lane(
        provider="shortapi",
        limits=Limits(),
        retry=RetryPolicy(),
        transport=transport,  # type: ignore[arg-type]
        clock=clock,
        sleep=clock.sleep,
    )
    request = HTTPRequest("POST", "http://x/create", operation="create", headers={})

    async def create() -> None:
        while True:
            await lane.wait_for_create_turn()
            response = await lane.send(request)
            if response.status != 429:
                return
            lane.pause_creates(0.0)

    tasks = [asyncio.ensure_future(create()) for _ in range(8)]
    await clock.run(tasks)
    assert transport.sent == 15 + 8
    assert lane.create_pace.value is not None  # the storm did start a pace
    assert clock.now - 100.0 < 4.0


async def test_limits_reports_tell_a_growing_request_rate_not_only_decreases() -> None:
    """The ``limits`` report came when the rate decreased (or connections grew), never when
    the discovered request rate grew back: a batch's progress showed the lowest rate it had
    had. Now a rate grown by a quarter since the last report is reported too."""
    clock = FakeClock()
    reports: list[str] = []
    transport = RefusingFirst(0)
    lane = Lane(
        provider="shortapi",
        limits=Limits(max_connections=10**6),
        retry=RetryPolicy(),
        transport=transport,  # type: ignore[arg-type]
        clock=clock,
        sleep=clock.sleep,
        report=reports.append,
    )
    query = HTTPRequest("GET", "http://x/query", operation="query", headers={})
    for _ in range(100):  # a second of answers, then a wall of 429s
        await lane.send_in_slot(query)
        clock.now += 0.01
    transport.refused, transport.sent = 10**9, 0
    for _ in range(10):
        await lane.send_in_slot(query)
    transport.refused = 0
    started = lane.request_pace.value
    assert started is not None and reports
    assert reports[-1].split()[2] == f"requests_per_second={started:.0f}"
    reports.clear()
    clock.now += 2.0
    while clock.now < 200.0 and lane.request_pace.value < 1.3 * started:
        clock.now += lane.poll_delay()
        await lane.send_in_slot(query)
    assert lane.request_pace.value >= 1.3 * started  # it grew ...
    rates = [float(report.split()[2].split("=")[1]) for report in reports]
    assert rates and rates[0] >= 1.25 * started - 1  # ... and said so


class Held:
    """A transport whose answers wait until `release` (a create on the wire)."""

    def __init__(self) -> None:
        self.sent = 0
        self.gate = asyncio.Event()

    async def send(self, request: HTTPRequest, *, provider: str, long_read: bool) -> HTTPResponse:
        self.sent += 1
        await self.gate.wait()
        return HTTPResponse(200, {}, b"{}")


async def test_once_creates_are_stopped_one_waiting_for_a_connection_is_not_sent() -> None:
    """Closing: a create already on the wire is answered; one still waiting for a
    connection fails as never sent (it used to be sent once a connection was free)."""
    from flux_async._errors import Phase, TransportError

    clock = FakeClock()
    transport = Held()
    lane = Lane(
        provider="shortapi",
        limits=Limits(max_connections=1),
        retry=RetryPolicy(),
        transport=transport,  # type: ignore[arg-type]
        clock=clock,
        sleep=clock.sleep,
    )
    request = HTTPRequest("POST", "http://x/create", operation="create", headers={})

    async def create() -> HTTPResponse:
        await lane.wait_for_create_turn()
        return await lane.send(request)

    on_the_wire = asyncio.ensure_future(create())
    waiting = asyncio.ensure_future(create())
    for _ in range(5):
        await asyncio.sleep(0)
    assert transport.sent == 1
    lane.stop_creates()
    transport.gate.set()
    assert (await on_the_wire).status == 200
    with pytest.raises(TransportError) as caught:
        await waiting
    assert caught.value.phase is Phase.NOT_SENT and caught.value.operation == "create"
    assert transport.sent == 1
    assert not lane.http_slots.locked()
