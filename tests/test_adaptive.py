"""Learned polling and discovered limits, in the lanes: a fake clock or fake HTTP, never wall
time. (The sans-IO estimate and planner are tested in test_latency.py.)"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest

from flux_async import JobStatus, Limits, PollPolicy, RetryPolicy
from flux_async._http import HTTPRequest, HTTPResponse
from flux_async._lane import Lane, Tasks
from flux_async._latency import LatencyEstimate
from flux_async._planner import PollPlanner
from flux_async._poll import SCOUT_FIRST, SCOUTS, PollLane, latency_key, load_latency, save_latency
from flux_async._registry import Entry, Registry
from flux_async._scheduler import COALESCE_SHARE
from flux_async.providers import ShortAPI
from flux_async.stores import MemoryStore, SQLiteJournal

pytestmark = pytest.mark.anyio

MODEL = "flux-model"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedTransport:
    """Answers each request with the next status of a script (200 when it runs out)."""

    def __init__(self, statuses: list[int], clock: FakeClock, retry_after: str | None = None):
        self.statuses = statuses
        self.clock = clock
        self.retry_after = retry_after
        self.sent = 0

    async def send(self, request: HTTPRequest, *, provider: str, long_read: bool) -> HTTPResponse:
        self.sent += 1
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {"Retry-After": self.retry_after} if status == 429 and self.retry_after else {}
        return HTTPResponse(status, headers, b"{}")


def lane_for(clock: FakeClock, transport: Any = None, **limits: Any) -> Lane:
    return Lane(
        provider="shortapi",
        limits=Limits(**limits),
        retry=RetryPolicy(),
        transport=transport,
        clock=clock,
        sleep=clock.sleep,
    )


REQUEST = HTTPRequest("POST", "http://x/create", operation="create", headers={})


# -- the poll lane asks the planner ----------------------------------------------------------


def poll_lane_for(policy: PollPolicy | None = None) -> tuple[PollLane, Registry]:
    registry = Registry(clock=time.time)
    lane = Lane(provider="shortapi", limits=Limits(), retry=RetryPolicy())
    poll_lane = PollLane(
        provider=ShortAPI("sk-test"),
        lane=lane,
        registry=registry,
        policy=policy or PollPolicy(),
        webhooks=None,
        tasks=Tasks(),
        rng=random.Random(3),
    )
    return poll_lane, registry


def tracked(poll_lane: PollLane, registry: Registry, job_id: str) -> Entry:
    entry = registry.allocate("shortapi", MODEL)
    registry.accept(entry, job_id)
    poll_lane.track(entry)
    return entry


def succeed_after(poll_lane: PollLane, registry: Registry, entry: Entry, age: float) -> None:
    """Pretend a poll at ``age`` found ``entry`` ready (what `PollLane.poll` does)."""
    poll_lane._answering = entry
    poll_lane._answer_age = age
    try:
        registry.advance(entry, JobStatus.SUCCEEDED)
        poll_lane.learn(entry)
    finally:
        poll_lane._answering = None


async def test_after_fast_jobs_the_first_poll_comes_long_before_the_prior_would_have() -> None:
    poll_lane, registry = poll_lane_for()
    cold = tracked(poll_lane, registry, "cold")
    started = poll_lane.scheduler.started(cold)
    assert cold.next_poll is not None
    # The prior (ShortAPI: 8 s typical) alone would first check after about 2 s ...
    prior_first = poll_lane._model(MODEL).planner.first_check
    assert prior_first > 1.0
    # ... but the first jobs of a model scout early, so a fast provider is found at once.
    # (a learned schedule's polls may come a little early, to share wake-ups)
    assert SCOUT_FIRST * (1 - COALESCE_SHARE) <= cold.next_poll - started <= SCOUT_FIRST
    for number in range(30):
        entry = tracked(poll_lane, registry, f"fast-{number}")
        succeed_after(poll_lane, registry, entry, 0.1)
    warm = tracked(poll_lane, registry, "warm")
    assert warm.next_poll is not None
    first = warm.next_poll - poll_lane.scheduler.started(warm)
    assert first < 0.5
    assert first < prior_first / 4


async def test_scouts_are_few_and_waiting_jobs_are_replanned_when_the_estimate_drops() -> None:
    poll_lane, registry = poll_lane_for()
    entries = [tracked(poll_lane, registry, f"job-{n}") for n in range(20)]
    scouts = [entry for entry in entries if entry.attempt == -1]
    assert len(scouts) == SCOUTS
    slow_planned = [entry.next_poll for entry in entries[SCOUTS:]]
    for scout in scouts:
        succeed_after(poll_lane, registry, scout, 0.1)
    waiting = entries[SCOUTS:]
    now = poll_lane.scheduler.now()
    for entry, before in zip(waiting, slow_planned, strict=True):
        assert entry.next_poll is not None and before is not None
        assert entry.next_poll < before  # moved earlier
        assert entry.next_poll - now < 1.0


async def test_a_fixed_policy_keeps_its_exact_schedule() -> None:
    policy = PollPolicy.fixed(0.25, first=2.0)
    assert not policy.learned and PollPolicy().learned
    assert PollPolicy(wait_first=1.0).learned is False  # setting a wait means fixed
    assert PollPolicy(timeout=5).learned is True
    poll_lane, registry = poll_lane_for(policy)
    entry = tracked(poll_lane, registry, "fixed")
    scheduler = poll_lane.scheduler
    assert entry.next_poll == pytest.approx(scheduler.started(entry) + 2.0)
    for _ in range(5):  # every 0.25 s, no jitter, however much was learned
        before = scheduler.now()
        poll_lane._schedule_next(entry, 0.0)
        assert entry.next_poll == pytest.approx(before + 0.25, abs=1e-3)
    other = tracked(poll_lane, registry, "other")
    succeed_after(poll_lane, registry, other, 0.05)
    assert poll_lane.estimate(MODEL) is None  # a fixed schedule learns nothing


async def test_jobs_waiting_for_a_poll_are_the_plans_censored_observations() -> None:
    """The planner hears of the jobs still running, each with its creation time and the age
    at which a poll last found it running; jobs not polled yet and other models' jobs are
    left out."""
    poll_lane, registry = poll_lane_for()
    seen = [tracked(poll_lane, registry, f"seen-{n}") for n in range(3)]
    unpolled = tracked(poll_lane, registry, "unpolled")
    other = registry.allocate("shortapi", "other-model")
    registry.accept(other, "other")
    poll_lane.track(other)
    for number, entry in enumerate(seen):
        entry.running_age = 1.0 + number
    other.running_age = 5.0
    planner = poll_lane._model(MODEL).planner
    assert planner.running is not None
    census = sorted(planner.running())
    scheduler = poll_lane.scheduler
    assert census == sorted((scheduler.started(entry), entry.running_age) for entry in seen)
    assert unpolled.running_age == 0.0
    # One job ended in 0.2 s (the 8 s prior goes), three are known to take over 1-3 s: the
    # plan's median is beyond a second, not the one sample's 0.2 s.
    estimate = poll_lane._model(MODEL).estimate
    estimate.observe(0.2, now=scheduler.now())
    assert PollPlanner(estimate).lag_target == pytest.approx(0.1)  # an eighth of 0.2 s, floored
    assert planner.lag_target >= 1.0 / 8


class SlowRunningAnswers:
    """A ShortAPI that answers every query "running", 0.3 s after it was sent."""

    async def send(self, request: HTTPRequest, *, provider: str, long_read: bool) -> HTTPResponse:
        await asyncio.sleep(0.3)
        return HTTPResponse(200, {}, b'{"code": 0, "data": {"status": 1}}')


async def test_a_poll_teaches_the_age_it_was_sent_at_not_the_age_of_its_answer() -> None:
    """The plan decides when to send a poll: an answer's round trip counted into the job's
    age taught latencies one round trip too long, and the first check came that much late
    (fast jobs: p50 lag 9 ms over the loop's in the benchmark)."""
    registry = Registry(clock=time.time)
    lane = Lane(
        provider="shortapi", limits=Limits(), retry=RetryPolicy(), transport=SlowRunningAnswers()
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
    entry = tracked(poll_lane, registry, "slow-answer")
    scheduler = poll_lane.scheduler
    sent_age = scheduler.now() - scheduler.started(entry)
    await poll_lane.poll(entry)
    assert entry.status is JobStatus.RUNNING
    assert entry.running_age == pytest.approx(sent_age, abs=0.1)  # not sent_age + 0.3
    await poll_lane.aclose()


class ReadyAnswers:
    """A ShortAPI that answers every query "succeeded" (with one image)."""

    async def send(self, request: HTTPRequest, *, provider: str, long_read: bool) -> HTTPResponse:
        body = b'{"code": 0, "data": {"status": 2, "result": {"images": [{"url": "https://x/i.png"}]}}}'
        return HTTPResponse(200, {}, body)


async def test_planned_first_polls_are_probes_and_an_attached_jobs_first_poll_is_not() -> None:
    """A job attached by id is first polled at once, whatever its real age: what that poll
    finds says nothing about when jobs end, so it must not teach the plan's low end, nor
    the latency estimate."""
    registry = Registry(clock=time.time)
    lane = Lane(provider="shortapi", limits=Limits(), retry=RetryPolicy(), transport=ReadyAnswers())
    poll_lane = PollLane(
        provider=ShortAPI("sk-test"),
        lane=lane,
        registry=registry,
        policy=PollPolicy(),
        webhooks=None,
        tasks=Tasks(),
        rng=None,
    )
    planner = poll_lane._model(MODEL).planner
    attached = registry.allocate("shortapi", MODEL)
    registry.accept(attached, "attached")
    poll_lane.track(attached, first_wait=0.0, callbacks=False)
    await poll_lane.poll(attached)
    assert attached.status is JobStatus.SUCCEEDED
    assert planner._probes == 0.0
    # Nor its latency: its age here is the time since it was attached (a job created an
    # hour ago and found ready at once must not teach "ready in a few milliseconds").
    poll_lane.learn(attached)
    assert planner.estimate.samples == 0.0
    planned = tracked(poll_lane, registry, "planned")  # a scout, polled early on purpose
    await poll_lane.poll(planned)
    assert planned.status is JobStatus.SUCCEEDED
    assert planner._probes == 1.0
    poll_lane.learn(planned)
    assert planner.estimate.samples == pytest.approx(1.0)
    await poll_lane.aclose()


async def test_webhook_and_synchronous_jobs_teach_their_exact_latency() -> None:
    poll_lane, registry = poll_lane_for()
    entry = tracked(poll_lane, registry, "hooked")
    registry.advance(entry, JobStatus.SUCCEEDED)  # a callback: not a poll answer
    poll_lane.learn(entry)
    estimate = poll_lane.estimate(MODEL)
    assert estimate is not None and estimate.samples == pytest.approx(1.0)
    failed = tracked(poll_lane, registry, "failed")
    registry.advance(failed, JobStatus.FAILED)
    poll_lane.learn(failed)
    assert estimate.samples == pytest.approx(1.0)  # failures say nothing about latency


# -- saving and loading what was learned --------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_latency_is_saved_to_and_loaded_from_a_store(kind: str, tmp_path: Path) -> None:
    poll_lane, registry = poll_lane_for()
    for number in range(50):
        succeed_after(poll_lane, registry, tracked(poll_lane, registry, f"j{number}"), 0.3)
    state = poll_lane.latency_state()
    assert list(state) == [latency_key("shortapi", MODEL)]
    store: Any = MemoryStore() if kind == "memory" else SQLiteJournal(tmp_path / "j.sqlite")
    if kind == "sqlite":
        await store.open()
    try:
        await save_latency(store, state, "shortapi")
        loaded = await load_latency(store, "shortapi")
        assert await load_latency(store, "piapi") == {}
    finally:
        if kind == "sqlite":
            await store.aclose()
    assert loaded == state
    fresh, fresh_registry = poll_lane_for()
    assert fresh.load_latency(*next(iter(loaded.items())))
    saved = state[latency_key("shortapi", MODEL)]
    assert not fresh.load_latency(latency_key("piapi", MODEL), saved)
    assert not fresh.load_latency(latency_key("shortapi", "x"), b"not an estimate")
    warm = tracked(fresh, fresh_registry, "warm")  # no scouting: it starts warm
    assert warm.attempt == 0
    assert warm.next_poll is not None
    assert warm.next_poll - fresh.scheduler.started(warm) < 0.6
    estimate = fresh.estimate(MODEL)
    assert isinstance(estimate, LatencyEstimate) and estimate.quantile(0.5) < 0.5


# -- discovered limits in the lane ---------------------------------------------------------------


async def test_creates_are_not_paced_until_the_provider_first_says_429() -> None:
    clock = FakeClock()
    lane = lane_for(clock)
    for _ in range(2000):
        await lane.wait_for_create_turn()
    assert clock.sleeps == []
    assert lane.current_limits()["creates_per_second"] is None


async def test_a_burst_of_429s_lowers_the_create_rate_once_and_successes_raise_it() -> None:
    clock = FakeClock()
    transport = ScriptedTransport([], clock, retry_after="1")
    lane = lane_for(clock, transport)
    for _ in range(100):  # 100 creates in the same instant
        await lane.wait_for_create_turn()
        await lane.send(REQUEST)
    transport.statuses = [429] * 20  # the provider refuses a burst
    for _ in range(20):
        await lane.send(REQUEST)
    rate = lane.create_pace.rate
    assert rate is not None
    assert rate.limit.throttles == 1  # one burst, one decrease
    lowered = rate.rate
    assert lowered <= 0.9 * 100 + 1e-9  # just under the 100 creates/s it accepted
    clock.now += 1.5  # past the cooldown and the Retry-After pause
    for _ in range(300):  # answered creates while the rate is what holds them back
        await lane.wait_for_create_turn()
        await lane.send(REQUEST)
    assert rate.rate > lowered
    assert any(sleep > 0 for sleep in clock.sleeps)  # and it does pace now


async def test_stray_429s_among_many_answers_do_not_lower_any_limit() -> None:
    clock = FakeClock()
    transport = ScriptedTransport(([200] * 99 + [429]) * 5, clock)
    lane = lane_for(clock, transport)
    for _ in range(500):
        await lane.send(REQUEST)
        clock.now += 0.002
    assert lane.throttled == 5
    assert lane.create_pace.rate is None


async def test_503_bursts_shrink_connections_and_ceilings_always_hold() -> None:
    clock = FakeClock()
    transport = ScriptedTransport([503] * 10, clock)
    lane = lane_for(clock, transport, max_connections=10, max_jobs_in_flight=12)
    assert lane.http_slots.capacity == 10 and lane.job_slots.capacity == 12
    for _ in range(10):
        await lane.send(REQUEST)
    assert lane.http_slots.capacity == 9 and lane.job_slots.capacity == 10
    # Growth only while every slot is taken, and never beyond the ceiling.
    clock.now += 5
    for _ in range(12):
        await lane.job_slots.acquire()
    for _ in range(200):
        clock.now += 0.01
        await lane.send(REQUEST)
    assert lane.job_slots.capacity == 12
    assert lane.current_limits()["jobs_in_flight"] == 12


async def test_shrinking_slots_withholds_permits_without_interrupting_holders() -> None:
    clock = FakeClock()
    lane = lane_for(clock, max_connections=4)
    slots = lane.http_slots
    for _ in range(4):
        await slots.acquire()
    slots.limit.value = 2.0
    slots._follow()  # what a throttle does
    for _ in range(4):
        slots.release()
    for _ in range(2):
        await asyncio.wait_for(slots.acquire(), 1)
    assert slots.locked()  # the capacity is 2 now


async def test_the_poll_rate_is_discovered_the_same_way() -> None:
    clock = FakeClock()
    transport = ScriptedTransport([429] * 5, clock, retry_after="2")
    lane = lane_for(clock, transport)
    for _ in range(50):
        assert lane.poll_delay() == 0.0
    for _ in range(5):
        await lane.send_in_slot(REQUEST)
    assert lane.current_limits()["polls_per_second"] is not None
    assert lane.poll_delay() >= 1.9  # the Retry-After pause holds every poll


async def test_limits_events_report_changes() -> None:
    clock = FakeClock()
    reports: list[str] = []
    transport = ScriptedTransport([429] * 3, clock, retry_after="1")
    lane = Lane(
        provider="shortapi",
        limits=Limits(),
        retry=RetryPolicy(),
        transport=transport,
        clock=clock,
        sleep=clock.sleep,
        report=reports.append,
    )
    for _ in range(3):
        await lane.send(REQUEST)
    assert len(reports) == 1 and "creates_per_second=" in reports[0]
    assert "creates_per_second=none" not in reports[0]


class DecidingTransport:
    """Answers each request with ``decide(now)``'s status (429s carry ``Retry-After``)."""

    def __init__(self, decide: Any, clock: FakeClock, retry_after: str | None = None):
        self.decide = decide
        self.clock = clock
        self.retry_after = retry_after
        self.statuses: list[int] = []

    async def send(self, request: HTTPRequest, *, provider: str, long_read: bool) -> HTTPResponse:
        status = self.decide(self.clock.now)
        self.statuses.append(status)
        headers = {"Retry-After": self.retry_after} if status == 429 and self.retry_after else {}
        return HTTPResponse(status, headers, b"{}")


async def drive_creates(lane: Lane, clock: FakeClock, seconds: float, offered: float) -> None:
    """Offer ``offered`` creates per second for ``seconds`` (paced by the lane when it paces)."""
    end = clock.now + seconds
    while clock.now < end:
        before = clock.now
        await lane.wait_for_create_turn()
        await lane.send(REQUEST)
        spent = clock.now - before
        if spent < 1.0 / offered:
            clock.now += 1.0 / offered - spent


async def test_random_429s_that_do_not_go_away_when_slowing_down_are_not_a_limit() -> None:
    clock = FakeClock()
    rng = random.Random(5)
    # 8 % of creates refused at random, whatever the rate: above the 5 % noise threshold.
    transport = DecidingTransport(lambda now: 429 if rng.random() < 0.08 else 200, clock, "0")
    lane = lane_for(clock, transport)
    pace = lane.create_pace
    raised = []
    for _ in range(60):
        await drive_creates(lane, clock, 1.0, offered=300.0)
        raised.append(pace.share.threshold(clock.now) > 0.08)
    # A decrease was tested, found useless and undone; the threshold rose above that share.
    assert any(raised)
    sent_late = len(transport.statuses)
    began = clock.now
    await drive_creates(lane, clock, 20.0, offered=300.0)
    rate = (len(transport.statuses) - sent_late) / (clock.now - began)
    assert rate == pytest.approx(300.0, rel=0.05)  # the batch goes at the rate it offers


async def test_a_real_rate_limit_is_kept_and_approached_with_few_429s() -> None:
    clock = FakeClock()
    bucket = {"tokens": 100.0, "at": clock.now}

    def hidden_limit(now: float) -> int:  # 100 creates/s, a burst of 100
        bucket["tokens"] = min(100.0, bucket["tokens"] + (now - bucket["at"]) * 100.0)
        bucket["at"] = now
        if bucket["tokens"] >= 1.0:
            bucket["tokens"] -= 1.0
            return 200
        return 429

    transport = DecidingTransport(hidden_limit, clock, "1")
    lane = lane_for(clock, transport)
    await drive_creates(lane, clock, 5.0, offered=400.0)
    assert lane.create_pace.value is not None
    start = len(transport.statuses)
    began = clock.now
    await drive_creates(lane, clock, 60.0, offered=400.0)
    answers = transport.statuses[start:]
    accepted = answers.count(200) / (clock.now - began)
    assert accepted == pytest.approx(100.0, rel=0.15)
    assert answers.count(429) / len(answers) < 0.02


async def test_scattered_503s_leave_jobs_in_flight_and_connections_alone() -> None:
    clock = FakeClock()
    rng = random.Random(2)
    transport = DecidingTransport(lambda now: 503 if rng.random() < 0.1 else 200, clock)
    lane = lane_for(clock, transport)
    jobs, connections = lane.job_slots.capacity, lane.http_slots.capacity
    await drive_creates(lane, clock, 10.0, offered=200.0)
    assert lane.throttled > 100
    assert lane.job_slots.capacity >= jobs and lane.http_slots.capacity >= connections


async def test_a_jobs_age_counts_from_when_its_create_was_sent() -> None:
    """In a burst of creates the answers come tens of ms after the jobs were made: a job's
    ages (its first check, its learned latency, its deadline) count from the create's send,
    so its first check is not late by that much. Real loopback HTTP: the fake holds each
    create's answer 0.3 s after making the job."""
    from flux_async import FluxClient
    from flux_async.testing import FakeProvider, Faults

    async with FakeProvider(latency=5.0, faults=Faults(create_delay=0.3), seed=2) as fake:
        provider = ShortAPI("sk-test", base_url=fake.url)
        async with FluxClient(provider, poll=PollPolicy(timeout=60.0)) as client:
            sent = asyncio.get_running_loop().time()
            job = await client.submit("held")
            answered = asyncio.get_running_loop().time()
            assert answered - sent >= 0.3
            scheduler = client._parts.poll_lane.scheduler  # type: ignore[union-attr]
            started = scheduler.started(job._entry)
            assert sent <= started <= sent + 0.1  # not the answer's time
            assert job._entry.deadline == pytest.approx(started + 60.0)
            await job.cancel()
