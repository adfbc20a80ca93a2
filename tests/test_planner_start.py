"""The start of a learned schedule. A job's first poll is due at its planned age, not moved
onto the scheduler's coalescing grid, when the wait is short (jobs done in a fraction of a
second); long waits keep the grid. Scouts polled before the model learned anything move to
the plan's next check once it has. The lane, its scheduler and the replay
(`_planner.replay_batch`) take the same decisions.

No wall-clock assertions: due times are read from the heap, the replay runs in simulated time.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from flux_async import JobStatus, Limits, PollPolicy, RetryPolicy
from flux_async._http import HTTPRequest, HTTPResponse
from flux_async._lane import Lane, Tasks
from flux_async._latency import LatencyEstimate
from flux_async._planner import SCOUTS, ModelPlan, PollPlanner, replay_batch
from flux_async._poll import PollLane
from flux_async._registry import Entry, Registry
from flux_async._scheduler import COALESCE_MAX, PollScheduler
from flux_async.providers import ShortAPI


def coalescing_scheduler() -> PollScheduler:
    return PollScheduler(
        policy=PollPolicy(timeout=300.0),
        first_wait=8.0,
        acquire_slot=asyncio.Semaphore(1).acquire,
        release_slot=lambda: None,
        poll=lambda entry: asyncio.sleep(0),
        on_deadline=lambda entry: None,
        rng=None,
        coalesce=True,
    )


def accepted(count: int) -> list[Entry]:
    registry = Registry(clock=time.time)
    entries = []
    for n in range(count):
        entry = registry.allocate("shortapi", "flux")
        registry.accept(entry, f"job-{n}")
        entries.append(entry)
    return entries


@pytest.mark.anyio
async def test_a_short_learned_first_wait_is_due_at_its_planned_age() -> None:
    """Before, a 0.2 s first wait was floored onto a 1/128 s grid: up to 7.8 ms (~4 % of the
    wait) early, which on 0.1-0.3 s jobs is ~1 % more polls; first polls that fall due
    together still share a wake-up (the scheduler's `EARLY` window)."""
    scheduler = coalescing_scheduler()
    for k, entry in enumerate(accepted(20)):
        wait = 0.2 + 0.0007 * k
        scheduler.add(entry, first_wait=wait)
        assert entry.next_poll is not None
        assert entry.next_poll - scheduler.started(entry) == pytest.approx(wait, abs=1e-9)


@pytest.mark.anyio
async def test_a_long_learned_first_wait_stays_on_the_coalescing_grid() -> None:
    scheduler = coalescing_scheduler()
    for entry in accepted(5):
        scheduler.add(entry, first_wait=5.0)
        assert entry.next_poll is not None
        started = scheduler.started(entry)
        assert started + 5.0 - COALESCE_MAX <= entry.next_poll <= started + 5.0
        grid_steps = entry.next_poll / COALESCE_MAX
        assert grid_steps == pytest.approx(round(grid_steps), abs=1e-6)


def test_the_replay_polls_first_at_the_planned_age_as_the_scheduler_does() -> None:
    """Jobs that end 1 ms before the planned first check are found by it: one poll each.
    With the first poll floored onto the grid (before), each took two."""
    rng = random.Random(2)
    estimate = LatencyEstimate(None)
    for _ in range(400):
        estimate.observe(rng.uniform(0.1, 0.3))
    planner = PollPlanner(estimate)
    first = planner.first_check
    assert 0.15 < first < 0.5  # a short first wait
    # All created at once, before any ends: every first poll is planned from this plan;
    # no rng, so no jitter and no probes.
    jobs = replay_batch(planner, [first - 0.001] * 50, 50, None)
    assert [job.polls for job in jobs] == [1] * 50
    assert max(job.lag for job in jobs) == pytest.approx(0.001, abs=1e-9)


def test_scouts_polled_before_the_model_learned_move_to_the_plans_next_check() -> None:
    """A scout polled before any job ended waits twice its age; once the model learns, its
    next poll moves to a lag target after its last one. Before, the scouts checked at
    0.15-0.19 s were next checked at 0.30-0.38 s, finding 0.2 s jobs up to 178 ms late."""
    jobs = replay_batch(PollPlanner(LatencyEstimate(8.0)), [0.2] * 40, 40, None)
    scouts = jobs[:SCOUTS]
    lag_target = 0.1  # the planner's floor, for 0.2 s jobs
    assert max(job.lag for job in scouts) <= lag_target + 1e-9
    assert max(job.polls for job in scouts) <= 2


def test_a_scouts_moved_poll_is_never_in_the_past() -> None:
    estimate = LatencyEstimate(None)
    for _ in range(50):
        estimate.observe(0.2)
    model = ModelPlan(estimate, 15.0)
    gap = model.planner.lag_target
    assert model.moved_scout(10.0, 0.15, 10.2) == pytest.approx(10.15 + gap)
    assert model.moved_scout(10.0, 0.15, 10.4) == 10.4


class RunningAnswers:
    """A ShortAPI that answers every query "running", at once."""

    async def send(self, request: HTTPRequest, *, provider: str, long_read: bool) -> HTTPResponse:
        return HTTPResponse(200, {}, b'{"code": 0, "data": {"status": 1}}')


@pytest.mark.anyio
async def test_the_lane_moves_a_scout_polled_before_it_learned_to_the_plans_next_check() -> None:
    registry = Registry(clock=time.time)
    lane = Lane(
        provider="shortapi", limits=Limits(), retry=RetryPolicy(), transport=RunningAnswers()
    )
    poll_lane = PollLane(
        provider=ShortAPI("sk-test"),
        lane=lane,
        registry=registry,
        policy=PollPolicy(),
        webhooks=None,
        tasks=Tasks(),
        rng=None,
    )
    scout = registry.allocate("shortapi", "flux")
    registry.accept(scout, "scout")
    poll_lane.track(scout)
    scheduler = poll_lane.scheduler
    scout.deadline -= 0.16  # created 0.16 s ago
    await poll_lane.poll(scout)  # still running at 0.16 s: next at twice its age
    started = scheduler.started(scout)
    assert scout.next_poll is not None and scout.next_poll > started + 0.3
    other = registry.allocate("shortapi", "flux")
    registry.accept(other, "other")
    poll_lane.track(other)
    poll_lane._answering = other
    poll_lane._answer_age = 0.17
    registry.advance(other, JobStatus.SUCCEEDED)
    poll_lane.learn(other)  # the first job ends: the model learns, the scout moves
    gap = poll_lane._model("flux").planner.lag_target
    assert scout.next_poll - started == pytest.approx(scout.running_age + gap, abs=1e-6)
    await poll_lane.aclose()
