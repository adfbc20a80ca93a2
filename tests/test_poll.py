"""The poll scheduler and `PollLane`'s deadline, with a fake poll function and no HTTP.

Assertions are about order and state, never about how long something took.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest

from flux_async import JobStatus, JobTimeoutError, Limits, PollPolicy, RetryPolicy
from flux_async._lane import Lane, Tasks
from flux_async._poll import PollLane
from flux_async._registry import Entry, Registry
from flux_async._scheduler import PollScheduler
from flux_async.providers import ShortAPI

pytestmark = pytest.mark.anyio


def scheduler_for(
    poll: Callable[[Entry], Awaitable[None]],
    on_deadline: Callable[[Entry], None] = lambda entry: None,
    **policy: float,
) -> PollScheduler:
    slots = asyncio.Semaphore(8)
    return PollScheduler(
        policy=PollPolicy(**{"wait_initial": 0.005, "wait_max": 0.01, "timeout": 30.0, **policy}),
        first_wait=0.01,
        polls_per_second=10_000.0,
        acquire_slot=slots.acquire,
        release_slot=slots.release,
        poll=poll,
        on_deadline=on_deadline,
        rng=None,
    )


def accepted(registry: Registry, job_id: str) -> Entry:
    entry = registry.allocate("shortapi", "flux")
    registry.accept(entry, job_id)
    return entry


async def test_jobs_are_polled_in_the_order_they_fall_due() -> None:
    registry = Registry(clock=time.time)
    order: list[str] = []
    done = asyncio.Event()

    async def poll(entry: Entry) -> None:
        order.append(entry.job_id or "")
        if len(order) == 3:
            done.set()

    scheduler = scheduler_for(poll)
    scheduler.start()
    try:
        for job_id, wait in (("late", 0.03), ("first", 0.0), ("middle", 0.015)):
            scheduler.add(accepted(registry, job_id), first_wait=wait)
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await scheduler.stop()
    assert order == ["first", "middle", "late"]


async def test_a_job_past_its_deadline_times_out_and_is_never_polled_again() -> None:
    registry = Registry(clock=time.time)
    polls: list[str] = []
    ended = asyncio.Event()
    scheduler: PollScheduler

    async def poll(entry: Entry) -> None:
        polls.append(entry.local_id)
        scheduler.schedule_next(entry)  # still running: poll again by its backoff

    def on_deadline(entry: Entry) -> None:
        registry.finish(entry, JobStatus.TIMED_OUT, JobTimeoutError("deadline"))
        ended.set()

    scheduler = scheduler_for(poll, on_deadline, timeout=0.05)
    scheduler.start()
    entry = accepted(registry, "slow")
    try:
        scheduler.add(entry, first_wait=0.0)
        await asyncio.wait_for(ended.wait(), 10)
        polled_by_deadline = len(polls)
        for _ in range(5):  # several backoff steps' worth of loop turns
            await asyncio.sleep(0.01)
    finally:
        await scheduler.stop()
    assert entry.status is JobStatus.TIMED_OUT and entry.next_poll is None
    assert polled_by_deadline >= 1
    assert len(polls) == polled_by_deadline


async def test_an_exception_in_one_poll_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry(clock=time.time)
    seen: dict[str, int] = {}
    done = asyncio.Event()

    scheduler: PollScheduler

    async def poll(entry: Entry) -> None:
        job_id = entry.job_id or ""
        seen[job_id] = seen.get(job_id, 0) + 1
        if job_id == "buggy":
            if seen[job_id] == 1:
                raise RuntimeError("a bug in one poll")
            scheduler.schedule_next(entry)  # still running
        else:
            registry.advance(entry, JobStatus.SUCCEEDED)
        if seen.get("buggy", 0) >= 2 and seen.get("fine-1") and seen.get("fine-2"):
            done.set()

    scheduler = scheduler_for(poll)
    scheduler.start()
    try:
        with caplog.at_level(logging.ERROR, logger="flux_async"):
            for job_id, wait in (("buggy", 0.0), ("fine-1", 0.005), ("fine-2", 0.006)):
                scheduler.add(accepted(registry, job_id), first_wait=wait)
            await asyncio.wait_for(done.wait(), 10)
    finally:
        await scheduler.stop()
    assert seen["fine-1"] == seen["fine-2"] == 1
    assert seen["buggy"] >= 2  # rescheduled after the failure, not dropped
    assert "polling job" in caplog.text


async def test_poll_lane_deadline_names_the_job_and_abandons_its_create() -> None:
    registry = Registry(clock=time.time)
    lane = Lane(provider="shortapi", limits=Limits(), retry=RetryPolicy())
    poll_lane = PollLane(
        provider=ShortAPI("sk-test"),
        lane=lane,
        registry=registry,
        policy=PollPolicy(timeout=7),
        webhooks=None,
        tasks=Tasks(),
        rng=None,
    )
    abandoned: list[Entry] = []
    poll_lane.on_timed_out.append(abandoned.append)
    entry = accepted(registry, "job-42")
    poll_lane.on_deadline(entry)
    assert entry.status is JobStatus.TIMED_OUT and abandoned == [entry]
    error = entry.error
    assert isinstance(error, JobTimeoutError)
    assert "job-42" in str(error) and error.job is not None and error.job.id == "job-42"
    poll_lane.on_deadline(entry)  # a second deadline is a no-op
    assert abandoned == [entry]


async def test_a_failing_deadline_hook_does_not_stop_the_scheduler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The scheduler runs from a loop timer: an exception there must not lose the timer."""
    registry = Registry(clock=time.time)
    polled = asyncio.Event()

    async def poll(entry: Entry) -> None:
        polled.set()

    def on_deadline(entry: Entry) -> None:
        raise RuntimeError("a bug in a deadline hook")

    scheduler = scheduler_for(poll, on_deadline, timeout=0.01)
    scheduler.start()
    try:
        with caplog.at_level(logging.ERROR, logger="flux_async"):
            scheduler.add(accepted(registry, "expires"), first_wait=float("inf"))
            await asyncio.sleep(0.05)  # its deadline passed and the hook raised
            scheduler.add(accepted(registry, "later"), first_wait=0.0)
            await asyncio.wait_for(polled.wait(), 10)
    finally:
        await scheduler.stop()
    assert "at its deadline failed" in caplog.text
