"""`Lane`: the shared 429 pause, create pacing and retry budget, on a fake clock (no HTTP)."""

from __future__ import annotations

import pytest

from flux_async import Limits, RetryPolicy
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
