"""flux_async._scheduler: the poll tasks' bookkeeping (each poll task removes itself from
the scheduler's set as it ends, without a done callback)."""

from __future__ import annotations

import asyncio
import math
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


def test_learned_polls_due_within_a_quarter_of_their_wait_share_a_wake_up() -> None:
    """With ``coalesce``, 1 s waits land on a 250 ms grid: polls due within it share one
    wake-up (each a wake-up costs far more than a request on a loaded machine); none
    comes later than planned, nor earlier than a quarter of its wait."""
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
        now = 1000.0 + step * 0.0025  # due times spread over one 250 ms grid step
        due = scheduler._due(now, 1.0)
        assert now + 1.0 - 0.25 <= due <= now + 1.0
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


def test_a_wait_on_its_grid_keeps_a_job_on_its_grid_slot() -> None:
    """The planner rounds long waits to whole grid steps (`on_grid`, by at most a ninth):
    a job polled from a grid slot, a little late (the wake-up, a wait for a connection),
    is due on a grid slot again, exactly its wait later, so jobs stay on a few slots a
    second instead of spreading over all of them."""
    for n in range(400):
        wait = 0.5 + n * 0.0371
        rounded = _scheduler.on_grid(wait)
        assert abs(rounded - wait) <= wait / 9 + 1e-9
        grid = _scheduler.grid_step(rounded)
        assert grid <= 0.25 and grid <= rounded / 4
        assert rounded / grid == round(rounded / grid)
        slot = 4000 * grid
        for late in (0.0, 0.001, 0.4 * grid, 0.99 * grid):
            assert _scheduler.coalesced_due(slot + late, rounded) == slot + rounded
    assert _scheduler.on_grid(0.3) == 0.3  # short waits keep their fine grid as they are
    assert _scheduler.on_grid(0.99) == _scheduler.on_grid(1.1) == 1.0


async def test_a_long_wait_counts_from_when_the_poll_was_sent() -> None:
    """A learned wait of half a second or more counts from the poll's send time, which lies
    on its grid slot, not from its answer: a slow answer neither pushes the job off its slot
    nor makes its polls a round trip further apart than the plan's lag target."""
    registry = Registry(clock=time.time)
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
    scheduler.start()
    try:
        now = scheduler.now()
        sent = math.floor(now / 0.25) * 0.25 - 0.25 + 0.002  # a slot ago, 2 ms late
        slow, short, failed = accepted(registry, 3)
        scheduler.schedule_in(slow, 1.0, sent=sent)
        assert slow.next_poll == sent - 0.002 + 1.0
        # A short wait (fast jobs) still counts from the answer, as does a wait with no
        # send time (after a failed poll).
        scheduler.schedule_in(short, 0.2, sent=sent)
        assert short.next_poll is not None and short.next_poll >= now + 0.2 - 0.0125
        scheduler.schedule_in(failed, 1.0)
        assert failed.next_poll is not None and failed.next_poll >= now + 0.75
    finally:
        await scheduler.stop()


def test_a_models_own_grid_keeps_its_jobs_on_it() -> None:
    """A model's lag target, shortened by its margin, is no power of two: its grid is a
    whole share of it (`PollPlanner.grid`), and a poll waiting whole steps from a slot of
    that grid is due on a slot of it, the first poll too; a grid coarser than a quarter
    of a third of a wait is not used for it (it could come too early)."""
    for step in (0.121875, 0.24375, 0.2, 0.3046875):
        for n in range(1, 2000, 37):
            slot = n * step
            for steps in (3, 4, 5, 7, 13):
                due = _scheduler.coalesced_due(slot + 0.3 * step, steps * step, step)
                assert due == pytest.approx(slot + steps * step, abs=1e-9)
            first = 2.7 + n * 0.001
            due = _scheduler.coalesced_due(0.0, first, step)
            assert first - step <= due <= first
            assert due / step == pytest.approx(round(due / step), abs=1e-6)
    # A 0.6 s wait with a 0.24 s grid could come 40 % early: the power-of-two grid instead.
    assert _scheduler.coalesced_due(100.1, 0.6, 0.24375) == _scheduler.coalesced_due(100.1, 0.6)
    assert _scheduler.coalesced_due(100.1, 0.6, 0.24375) >= 100.1 + 0.6 - 0.6 / 4
