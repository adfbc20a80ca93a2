"""A batch's first burst into a provider's hidden limit, many creates at once, on virtual
time (several tasks, no HTTP, no timed assertions): creates queued for an HTTP slot when the
first 429s come back are held, not sent into the limit."""

from __future__ import annotations

import asyncio
import heapq

import pytest

from flux_async import Limits, RetryPolicy
from flux_async._http import HTTPRequest, HTTPResponse
from flux_async._lane import Lane

pytestmark = pytest.mark.anyio

CREATE = HTTPRequest("POST", "http://x/create", operation="create", headers={})


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


class HiddenBucket:
    """A provider's limit per API key (a token bucket) with a round trip: a request is
    counted when it arrives, its answer comes ``rtt`` later; beyond the limit, 429 with
    ``Retry-After: 1``."""

    def __init__(self, clock: VirtualTime, rate: float, burst: float, rtt: float) -> None:
        self.clock = clock
        self.rate = rate
        self.tokens = self.burst = burst
        self.at = clock.now
        self.rtt = rtt
        self.statuses: list[int] = []

    async def send(self, request: HTTPRequest, *, provider: str, long_read: bool) -> HTTPResponse:
        now = self.clock.now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        status = 200
        if self.tokens >= 1.0:
            self.tokens -= 1.0
        else:
            status = 429
        self.statuses.append(status)
        await self.clock.sleep(self.rtt)
        return HTTPResponse(status, {"Retry-After": "1"} if status == 429 else {}, b"{}")


async def create(lane: Lane) -> None:
    """One job's create as the create path sends it: its turn, then a slot; a 429 pauses
    every create for its Retry-After and the create is sent again after it."""
    while True:
        await lane.wait_for_create_turn()
        response = await lane.send(CREATE)
        if response.status != 429:
            return
        pause = lane.pause_creates(float(response.headers["Retry-After"]))
        await lane._sleep(pause)


@pytest.mark.parametrize("connections", [4, 16])
async def test_creates_queued_for_a_slot_are_held_after_the_first_429(connections: int) -> None:
    """300 creates at once against a limit of 50 a second (50 at once): once the first 429
    is back, the creates still waiting for an HTTP slot have not been sent and wait for the
    pause (and then the discovered pace), so only the requests already in flight are refused.
    Before, every create queued for a slot was sent into the limit (~100 of 300 refused)."""
    clock = VirtualTime()
    provider = HiddenBucket(clock, rate=50.0, burst=50.0, rtt=0.05)
    lane = Lane(
        provider="shortapi",
        limits=Limits(max_connections=connections, max_jobs_in_flight=1000),
        retry=RetryPolicy(),
        transport=provider,  # type: ignore[arg-type]
        clock=clock,
        sleep=clock.sleep,
    )
    tasks = [asyncio.ensure_future(create(lane)) for _ in range(300)]
    await clock.run(tasks)
    assert provider.statuses.count(200) == 300  # every job created once
    refused = provider.statuses.count(429)
    assert refused <= 2 * connections + 5
    assert refused / len(provider.statuses) < 0.05
