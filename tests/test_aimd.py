"""`_aimd.AIMDLimit` growth clocked in time, and the lane's connections (sans-IO, fake times)."""

from __future__ import annotations

import pytest

from flux_async import Limits, RetryPolicy
from flux_async._aimd import AIMDLimit
from flux_async._lane import INITIAL_CONNECTIONS, Lane


def test_slow_start_at_most_doubles_within_its_doubling_time() -> None:
    limit = AIMDLimit(64, doubling=0.25)
    for i in range(1000):  # answers every millisecond: 250 within the first 0.25 s
        limit.on_success(100.0 + i * 0.001)
    # 0.25 s per doubling: 64 -> 128 -> 256 -> 512 -> 1024 (about 1,064 unbounded)
    assert limit.value <= 64 * 2**4
    assert limit.value >= 64 * 2**3  # it still doubles, once per period


def test_without_a_doubling_time_slow_start_doubles_per_window_of_answers() -> None:
    limit = AIMDLimit(64)
    for i in range(200):
        limit.on_success(100.0 + i * 0.001)
    assert limit.value == 264


def test_connections_grow_by_at_most_double_in_a_quarter_second() -> None:
    """A batch's first 0.2 s against a fast provider: 200 answers while every connection is
    taken. The connections used to grow by one per answer (64 -> 264 in 0.2 s): when a hidden
    rate limit is then hit, every request in flight is refused."""
    lane = Lane(
        provider="shortapi",
        limits=Limits(),
        retry=RetryPolicy(),
        clock=lambda: 100.0,
    )
    slots = lane.http_slots
    for i in range(200):
        slots._semaphore._value = 0  # every connection taken (waiters take new ones)
        slots.on_success(100.0 + i * 0.001)
    assert slots.capacity <= 2 * INITIAL_CONNECTIONS


@pytest.mark.parametrize("doubling", [0.0, 0.25])
def test_a_throttle_ends_slow_start_either_way(doubling: float) -> None:
    limit = AIMDLimit(64, doubling=doubling)
    assert limit.on_throttle(100.0)
    for i in range(100):
        limit.on_success(102.0 + i * 0.001)
    assert limit.value < 64 + 2  # back towards 64, not doubling from it
