"""The request rate of a provider key (`_pace.Pace`), shared by creates and polls, against
hidden limits on a fake clock (no HTTP, no timed assertions)."""

from __future__ import annotations

from typing import Any

import pytest

from flux_async import Limits, RetryPolicy
from flux_async._http import HTTPRequest, HTTPResponse
from flux_async._lane import Lane
from flux_async._pace import Pace

pytestmark = pytest.mark.anyio

CREATE = HTTPRequest("POST", "http://x/create", operation="create", headers={})
QUERY = HTTPRequest("GET", "http://x/query", operation="query", headers={})


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class HiddenBucket:
    """A provider's limit per API key: a token bucket over every request, creates and
    queries alike; beyond it, 429 with ``Retry-After`` in whole seconds (at least 1)."""

    def __init__(self, clock: FakeClock, rate: float, burst: float) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = clock.now
        self.statuses: list[int] = []

    async def send(self, request: HTTPRequest, *, provider: str, long_read: bool) -> HTTPResponse:
        now = self.clock.now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.statuses.append(200)
            return HTTPResponse(200, {}, b"{}")
        self.statuses.append(429)
        return HTTPResponse(429, {"Retry-After": "1"}, b"{}")


def lane_for(clock: FakeClock, transport: Any, **limits: Any) -> Lane:
    return Lane(
        provider="shortapi",
        limits=Limits(**limits),
        retry=RetryPolicy(),
        transport=transport,
        clock=clock,
        sleep=clock.sleep,
    )


async def drive(lane: Lane, clock: FakeClock, seconds: float, offered: float) -> None:
    """Offer ``offered`` jobs per second for ``seconds``, each a create and a poll (paced by
    the lane when it paces; a refused create pauses the creates for its ``Retry-After``, as
    the create path does)."""
    end = clock.now + seconds
    while clock.now < end:
        before = clock.now
        await lane.wait_for_create_turn()
        response = await lane.send(CREATE)
        if response.status == 429:
            lane.pause_creates(float(response.headers["Retry-After"]))
        delay = lane.poll_delay()
        if delay > 0:
            await clock.sleep(delay)
        await lane.send_in_slot(QUERY)
        spent = clock.now - before
        if spent < 1.0 / offered:
            clock.now += 1.0 / offered - spent


async def test_one_limit_over_creates_and_polls_is_reached_with_few_429s() -> None:
    """A key's limit counts creates and queries together: the lane finds it once for both,
    instead of a rate for each kind that together go over it."""
    clock = FakeClock()
    provider = HiddenBucket(clock, rate=100.0, burst=100.0)
    lane = lane_for(clock, provider)
    await drive(lane, clock, 5.0, offered=300.0)  # discovery
    start, began = len(provider.statuses), clock.now
    await drive(lane, clock, 60.0, offered=300.0)
    answers = provider.statuses[start:]
    accepted = answers.count(200) / (clock.now - began)
    assert accepted == pytest.approx(100.0, rel=0.15)
    assert answers.count(429) / len(answers) < 0.02
    limits = lane.current_limits()
    assert limits["requests_per_second"] is not None
    assert limits["creates_per_second"] == limits["polls_per_second"]


async def test_429s_on_polls_pace_the_creates_too() -> None:
    clock = FakeClock()
    provider = HiddenBucket(clock, rate=50.0, burst=50.0)
    lane = lane_for(clock, provider)
    for _ in range(100):  # polls at once: 50 accepted, then refused
        await lane.send_in_slot(QUERY)
    assert lane.current_limits()["creates_per_second"] is not None
    clock.now += 1.5  # past the Retry-After pause
    for _ in range(20):
        await lane.wait_for_create_turn()
    assert sum(clock.sleeps) > 0.1  # creates wait their turns in the discovered rate


def refuse_burst(pace: Pace, now: float, sent: int = 200, refused: int = 20) -> None:
    """``sent`` requests within a second, the last ``refused`` of them answered 429."""
    for i in range(sent):
        at = now + i / sent
        pace.reserve(at)
        if i < sent - refused:
            pace.on_success(at)
        else:
            pace.on_throttle(at, None, at)


def test_a_rate_measured_at_the_first_429s_grows_additively_not_by_slow_start() -> None:
    pace = Pace()
    refuse_burst(pace, 100.0)
    start = pace.value
    assert start is not None and start < 200.0
    now = 102.0
    rate = pace.rate
    assert rate is not None
    for _ in range(int(start)):  # one second of answers while the rate holds requests back
        now += rate.reserve(now)
        pace.on_success(now)
    assert pace.value is not None and pace.value < 1.1 * start  # about +2 % a second


def test_a_decrease_starts_from_what_the_provider_accepted_not_from_the_rate() -> None:
    pace = Pace()
    refuse_burst(pace, 100.0)
    assert pace.value is not None
    # Far later, the demand is a quarter of the rate; the provider then refuses again.
    now = 110.0
    for i in range(40):
        pace.reserve(now + i / 40)
        pace.on_success(now + i / 40)
    now += 1.0
    assert pace.on_throttle(now, None, now)
    assert pace.value <= 0.9 * 41


class RandomRefusals:
    """Refuses a share of requests at random, whatever the rate (a flaky gateway)."""

    def __init__(self, share: float, seed: int) -> None:
        import random

        self.rng = random.Random(seed)
        self.share = share
        self.statuses: list[int] = []

    async def send(self, request: HTTPRequest, *, provider: str, long_read: bool) -> HTTPResponse:
        status = 429 if self.rng.random() < self.share else 200
        self.statuses.append(status)
        return HTTPResponse(status, {"Retry-After": "0"} if status == 429 else {}, b"{}")


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("offered", [30.0, 150.0])
async def test_random_429s_do_not_wear_the_rate_down(seed: int, offered: float) -> None:
    """3 % of requests refused at random (above the 2 % threshold): decreases are tried,
    found useless and undone, also when a slow batch gives few answers per test window."""
    clock = FakeClock()
    provider = RandomRefusals(0.03, seed)
    lane = lane_for(clock, provider)
    await drive(lane, clock, 60.0, offered=offered)
    start, began = len(provider.statuses), clock.now
    await drive(lane, clock, 20.0, offered=offered)
    jobs = (len(provider.statuses) - start) / 2 / (clock.now - began)
    # Seeds 0-63: 127 of 128 runs above 0.8x, one at 0.67x (150/s); before paces started
    # in a young batch's first second started from its count so far, 10 of 64 runs at
    # 150/s were under 0.8x (seed 5: 0.65x).
    assert jobs > 0.8 * offered


def test_a_pace_starts_from_what_the_provider_accepted_not_from_the_turns_taken() -> None:
    """A batch's creates take their (unpaced) turns all at once, far more than are sent and
    answered before the first 429s: the pace starts under the rate the provider accepted
    (200 in the last second here), not from the turns (it started at ~850/s)."""
    pace = Pace()
    for _ in range(1000):
        pace.reserve(100.0)
    for i in range(200):
        pace.on_success(100.0 + i * 0.001)
    for i in range(10):
        pace.on_throttle(100.2 + i * 0.001, 1.0, 100.1)
    assert pace.value is not None and pace.value <= 200.0


def test_a_pace_started_by_scattered_429s_starts_near_the_demand_of_a_young_batch() -> None:
    """Three stray 429s among a batch's first 100 answers (500 requests a second, 0.2 s in):
    not a wall, so the pace starts from what was sent, which is a rate, not the count of a
    second not yet over (it started at ~90/s, a sixth of the demand, and a stray 3 % of 429s
    kept it there: one seeded run in ten at 150 jobs/s stayed under 0.8x its offered rate)."""
    pace = Pace()
    for i in range(100):
        at = 100.0 + i / 500
        pace.reserve(at)
        if i % 30 == 29:
            pace.on_throttle(at, None, at)
        else:
            pace.on_success(at)
    assert pace.value is not None and pace.value >= 250.0
