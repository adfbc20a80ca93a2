"""flux_async._scheduler: the poll runners' bookkeeping (a runner polls one job after
another instead of a task per poll; idle ones are bounded; `stop` cancels them all)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from flux_async import PollPolicy, _scheduler
from flux_async._registry import Entry, Registry
from flux_async._scheduler import PollScheduler

pytestmark = pytest.mark.anyio


def scheduler_for(slots: asyncio.Semaphore, polled: list[str]) -> PollScheduler:
    async def poll(entry: Entry) -> None:
        polled.append(entry.local_id)
        await asyncio.sleep(0)

    return PollScheduler(
        policy=PollPolicy(wait_initial=0.005, wait_max=0.01, timeout=30.0),
        first_wait=0.0,
        polls_per_second=10_000.0,
        acquire_slot=slots.acquire,
        release_slot=slots.release,
        poll=poll,
        on_deadline=lambda entry: None,
        rng=None,
    )


def accepted(registry: Registry, count: int) -> list[Entry]:
    entries = []
    for n in range(count):
        entry = registry.allocate("shortapi", "flux")
        registry.accept(entry, f"job-{n}")
        entries.append(entry)
    return entries


async def settle(check: Callable[[], bool]) -> None:
    for _ in range(400):
        if check():
            return
        await asyncio.sleep(0.005)


async def test_polls_reuse_runners_instead_of_a_task_each() -> None:
    loop = asyncio.get_running_loop()
    created = 0
    factory = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        nonlocal created
        created += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    slots = asyncio.Semaphore(4)
    polls: dict[str, int] = {}
    scheduler: PollScheduler

    async def poll(entry: Entry) -> None:
        polls[entry.local_id] = polls.get(entry.local_id, 0) + 1
        await asyncio.sleep(0)
        if polls[entry.local_id] < 5:
            scheduler.schedule_next(entry)

    scheduler = PollScheduler(
        policy=PollPolicy(wait_initial=0.005, wait_max=0.01, timeout=30.0),
        first_wait=0.0,
        polls_per_second=10_000.0,
        acquire_slot=slots.acquire,
        release_slot=slots.release,
        poll=poll,
        on_deadline=lambda entry: None,
        rng=None,
    )
    loop.set_task_factory(counting)
    try:
        scheduler.start()
        for entry in accepted(Registry(clock=time.time), 10):
            scheduler.add(entry, first_wait=0.0)
        await settle(lambda: sum(polls.values()) == 50 and len(scheduler._idle) == 10)
        assert sorted(polls.values()) == [5] * 10
        # 50 polls; a task each would be 50 tasks. At most one runner per poll in flight.
        assert created <= 10
        assert slots._value == 4  # every slot given back
        assert len(scheduler._tasks) == 10  # idle runners, waiting for the next poll
    finally:
        loop.set_task_factory(factory)
        await scheduler.stop()
    assert not scheduler._tasks and not scheduler._idle


async def test_idle_runners_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_scheduler, "IDLE_RUNNERS", 3)
    slots = asyncio.Semaphore(20)
    polled: list[str] = []
    scheduler = scheduler_for(slots, polled)
    scheduler.start()
    try:
        for entry in accepted(Registry(clock=time.time), 12):
            scheduler.add(entry, first_wait=0.0)
        await settle(lambda: len(polled) == 12 and len(scheduler._tasks) == 3)
        assert len(polled) == 12
        assert len(scheduler._tasks) == 3  # the others ended: 3 were already waiting
        assert len(scheduler._idle) == 3
        runners = list(scheduler._tasks)
    finally:
        await scheduler.stop()
    assert all(task.cancelled() for task in runners)
    assert not scheduler._tasks and not scheduler._idle


async def test_a_runner_goes_on_after_a_poll_that_raised() -> None:
    slots = asyncio.Semaphore(1)  # one slot: the polls run one after another
    polled: list[str] = []
    scheduler: PollScheduler

    async def poll(entry: Entry) -> None:
        polled.append(entry.local_id)
        if len(polled) == 1:
            raise RuntimeError("a bug in one poll")
        await asyncio.sleep(0)

    scheduler = PollScheduler(
        policy=PollPolicy(wait_initial=0.005, wait_max=0.01, timeout=30.0),
        first_wait=0.0,
        polls_per_second=10_000.0,
        acquire_slot=slots.acquire,
        release_slot=slots.release,
        poll=poll,
        on_deadline=lambda entry: None,
        rng=None,
    )
    scheduler.start()
    try:
        entries = accepted(Registry(clock=time.time), 3)
        for entry in entries:
            scheduler.add(entry, first_wait=0.0)
        # The job whose poll raised is polled again by its backoff; the others once.
        await settle(lambda: len(polled) == 4)
        assert sorted(polled) == sorted([e.local_id for e in entries] + [polled[0]])
        assert slots._value == 1
    finally:
        await scheduler.stop()


async def test_stop_cancels_polls_waiting_for_a_slot_and_forgets_them() -> None:
    slots = asyncio.Semaphore(0)  # no slot: every poll task waits (or has not started yet)
    polled: list[str] = []
    scheduler = scheduler_for(slots, polled)
    scheduler.start()
    for entry in accepted(Registry(clock=time.time), 10):
        scheduler.add(entry, first_wait=0.0)
    for _ in range(200):
        if len(scheduler._tasks) == 10:
            break
        await asyncio.sleep(0.005)
    tasks = list(scheduler._tasks)
    assert len(tasks) == 10
    await scheduler.stop()
    assert all(task.cancelled() for task in tasks)
    assert not scheduler._tasks and not polled
    assert slots._value == 0  # a slot never taken is never given back
