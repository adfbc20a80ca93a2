"""flux_async._scheduler: the poll tasks' bookkeeping (each poll task removes itself from
the scheduler's set as it ends, without a done callback)."""

from __future__ import annotations

import asyncio
import time

import pytest

from flux_async import FluxError, JobStatus, PollPolicy, _scheduler
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


async def test_finished_poll_tasks_are_forgotten() -> None:
    slots = asyncio.Semaphore(4)
    polled: list[str] = []
    scheduler = scheduler_for(slots, polled)
    scheduler.start()
    try:
        for entry in accepted(Registry(clock=time.time), 30):
            scheduler.add(entry, first_wait=0.0)
        for _ in range(200):
            if len(polled) == 30 and not scheduler._tasks:
                break
            await asyncio.sleep(0.005)
        assert len(polled) == 30
        assert not scheduler._tasks  # each task took itself out as it ended
        assert slots._value == 4  # and gave its slot back
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


async def test_finished_jobs_do_not_stay_in_the_heap_until_their_safety_net_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With callbacks, each job's only heap item is its safety-net poll a minute away; jobs
    a callback ended are dropped once stale items pile up, not kept alive until then."""
    monkeypatch.setattr(_scheduler, "COMPACT_MIN", 64)
    polled: list[str] = []
    scheduler = scheduler_for(asyncio.Semaphore(4), polled)
    scheduler._compact_at = 64
    scheduler.start()
    registry = Registry(clock=time.time)
    try:
        entries = accepted(registry, 1000)
        for n, entry in enumerate(entries):
            scheduler.add(entry, first_wait=60.0, slow=True)
            if n % 10:  # 9 in 10 end by callback soon after
                registry.finish(entry, JobStatus.CANCELLED, FluxError("ended"))
        open_jobs = [entry for entry in entries if not entry.status.is_terminal]
        assert len(open_jobs) == 100
        in_heap = [item[3] for item in scheduler._heap]
        assert len(in_heap) < 2 * 64 + 100  # not all 1,000
        assert {id(entry) for entry in open_jobs} <= {id(entry) for entry in in_heap}
        assert not polled
    finally:
        await scheduler.stop()


def test_learned_polls_due_within_an_eighth_of_their_wait_share_a_wake_up() -> None:
    """With ``coalesce``, 1 s waits land on a 125 ms grid: polls due within it share one
    wake-up (each a wake-up costs far more than a request on a loaded machine); none
    comes later than planned, nor earlier than an eighth of its wait."""
    scheduler = PollScheduler(
        policy=PollPolicy(timeout=300.0),
        first_wait=1.0,
        acquire_slot=asyncio.Semaphore(1).acquire,
        release_slot=lambda: None,
        poll=lambda entry: asyncio.sleep(0),
        on_deadline=lambda entry: None,
        rng=None,
        coalesce=True,
    )
    dues = set()
    for step in range(100):
        now = 1000.0 + step * 0.00125  # due times spread over one 125 ms grid step
        due = scheduler._due(now, 1.0)
        assert now + 1.0 - 0.125 <= due <= now + 1.0
        dues.add(due)
    assert dues == {1001.0}
    # Waits under half a second (jobs done in a fraction of a second, where a few ms early
    # is a wasted request) keep a grid of a sixteenth: a 0.2 s wait comes at most 12.5 ms
    # early, and polls 10 ms apart do not share a wake-up.
    for step in range(100):
        now = 1000.0 + step * 0.00125
        due = scheduler._due(now, 0.2)
        assert now + 0.2 - 0.0125 <= due <= now + 0.2
    assert scheduler._due(1000.0, 0.2) != scheduler._due(1000.01, 0.2)
