"""generate_many: every input accounted for, bounded memory, budget, download_to, events,
argument checks. (FluxClient.download itself: test_download.py.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from support import tasks_from, wait_until

from flux_async import (
    BudgetExceededError,
    ConfigurationError,
    Event,
    FluxClient,
    JobStatus,
    Limits,
    PollPolicy,
    RetryPolicy,
    ShortAPI,
    ValidationError,
)
from flux_async.testing import FakeProvider, Faults

pytestmark = pytest.mark.anyio

KEY = "sk-batch-secret-777"
FAST_POLL = PollPolicy(wait_first=0.03, wait_initial=0.02, wait_max=0.1, timeout=1.5)
FAST_RETRY = RetryPolicy(attempts=30, wait_initial=0.01, wait_max=0.05)
BIG = Limits(max_jobs_in_flight=2000, max_connections=64, polls_per_second=20000)


def client_for(fake: FakeProvider, **kwargs: object) -> FluxClient:
    kwargs.setdefault("poll", FAST_POLL)
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("limits", BIG)
    return FluxClient(ShortAPI(KEY, base_url=fake.url), seed=0, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "rare", "least_ok"),
    [
        # A few hundred jobs, with the rare faults (lost answers, jobs that never end) made
        # common enough that each surely happens.
        (600, 0.03, 500),
        # Thousands of jobs under load, at realistic fault rates.
        pytest.param(5000, 0.01, 4500, marks=pytest.mark.slow),
    ],
)
async def test_many_prompts_with_faults_each_accounted_for_once(
    n: int, rare: float, least_ok: int
) -> None:
    faults = Faults(
        create_429=0.03,
        create_5xx=0.02,
        query_5xx=0.05,
        query_reset=rare,
        drop_after_accept=rare,
        never_finish=rare,
        retry_after=0,
    )
    pulled = 0

    def prompts() -> Iterator[str]:
        nonlocal pulled
        for i in range(n):
            pulled += 1
            yield f"prompt {i}"

    async with FakeProvider(latency=(0.01, 0.05), faults=faults, seed=7) as fake:
        async with client_for(fake) as client:
            indexes = []
            statuses: Counter[str] = Counter()
            async for outcome in client.generate_many(prompts(), concurrency=400):
                indexes.append(outcome.index)
                statuses[outcome.status] += 1
                assert (outcome.generation is not None) == (outcome.status == "succeeded")
                assert (outcome.error is None) == outcome.ok
            assert client.outstanding == 0
    assert sorted(indexes) == list(range(n))
    assert pulled == n
    assert max(fake.creates_per_prompt.values()) == 1
    assert statuses["succeeded"] > least_ok, statuses
    assert statuses["unknown"] >= 1 and statuses["timed_out"] >= 1, statuses
    # every lost create response ended "unknown", never resent
    assert statuses["unknown"] >= fake.lost_responses


async def test_input_is_read_lazily_and_the_registry_stays_bounded() -> None:
    pulled = 0
    peak_registry = 0

    def prompts() -> Iterator[str]:
        nonlocal pulled
        for i in range(100_000):
            pulled += 1
            yield f"lazy {i}"

    # Polling is not the subject here: a quick schedule keeps the 300 jobs short.
    quick = PollPolicy(wait_first=0.005, wait_initial=0.005, wait_max=0.02, timeout=5)
    async with FakeProvider(latency=0.005, seed=8) as fake:
        async with client_for(fake, poll=quick) as client:
            seen = 0
            batch = client.generate_many(prompts(), concurrency=8)
            async with contextlib.aclosing(batch):
                async for _ in batch:
                    seen += 1
                    peak_registry = max(peak_registry, client.outstanding)
                    if seen == 300:
                        break
            assert client.outstanding == 0
    assert peak_registry <= 8
    assert pulled <= 300 + 8 + 8 + 2  # consumed, in flight, queued, one in hand


async def test_async_iterables_mappings_and_rejections() -> None:
    async def requests() -> AsyncIterator[object]:
        yield "plain"
        yield {"prompt": "mapped", "aspect_ratio": "16:9", "num_images": 2}
        yield {"prompt": "bad", "num_images": 3}
        yield {"no": "prompt"}
        yield 42

    async with FakeProvider(latency=0.01) as fake:
        async with client_for(fake) as client:
            outcomes = {o.index: o async for o in client.generate_many(requests())}
    assert outcomes[0].ok and outcomes[1].ok
    assert outcomes[1].generation is not None and len(outcomes[1].generation.images) == 2
    for index in (2, 3, 4):
        assert outcomes[index].status == "rejected"
        assert isinstance(outcomes[index].error, ValidationError)
    assert fake.create_attempts == 2


async def test_budget_stops_new_submissions_and_paid_jobs_finish() -> None:
    async with FakeProvider(latency=0.02) as fake:
        async with client_for(fake) as client:
            outcomes = [
                o
                async for o in client.generate_many(
                    (f"budget {i}" for i in range(12)), concurrency=3, budget="0.10"
                )
            ]
    done = [o for o in outcomes if o.ok]
    skipped = [o for o in outcomes if o.status == "skipped"]
    assert len(outcomes) == 12
    assert len(done) == 5 and len(skipped) == 7  # $0.02 each
    assert all(isinstance(o.error, BudgetExceededError) for o in skipped)
    assert sum((o.cost or Decimal(0)) for o in outcomes) == Decimal("0.10")
    assert client.total_cost == Decimal("0.10")
    assert sum(fake.creates_per_prompt.values()) == 5


async def test_downloads_saved_atomically_with_served_bytes(tmp_path: Path) -> None:
    async with FakeProvider(latency=0.02) as fake:
        async with client_for(fake) as client:
            outcomes = [
                o
                async for o in client.generate_many(
                    [{"prompt": f"d{i}", "num_images": 2} for i in range(6)],
                    download_to=tmp_path,
                )
            ]
    assert all(o.ok for o in outcomes)
    files = [path for o in outcomes for path in o.files]
    assert len(files) == 12
    for outcome in outcomes:
        assert outcome.generation is not None
        for image, path in zip(outcome.generation.images, outcome.files, strict=True):
            served = fake.served_files[image.url.removeprefix(fake.url)]
            assert path.read_bytes() == served
            assert path.suffix == ".png" and path.parent == tmp_path
    assert not list(tmp_path.glob(".*.part"))


async def test_early_break_leaves_nothing_running() -> None:
    before = asyncio.all_tasks()
    async with FakeProvider(latency=(0.05, 0.2), seed=9) as fake:
        async with client_for(fake) as client:
            batch = client.generate_many((f"e{i}" for i in range(1000)), concurrency=50)
            async with contextlib.aclosing(batch):
                async for _ in batch:
                    break
            assert client.outstanding == 0
            await asyncio.sleep(0)
            # A poll already on the wire for a job just cancelled ends on its own (it is not
            # cancelled mid-request); after those, nothing of the client's is left running
            # (the poll scheduler runs from a loop timer, no task of its own).
            polls = [
                t
                for t in tasks_from(besides=before)
                if t.get_coro().__qualname__ == "PollScheduler._poll_and_release"
            ]
            if polls:
                await asyncio.wait(polls)
            leftover = tasks_from(besides=before)
            assert [t.get_name() for t in leftover] == []
            # the client is still usable
            assert (await client.generate("after")).images


async def test_cancelling_the_consumer_cancels_outstanding_jobs() -> None:
    async with FakeProvider(latency=5, seed=10) as fake:
        async with client_for(fake, poll=PollPolicy(wait_first=0.05, timeout=30)) as client:

            async def consume() -> None:
                async for _ in client.generate_many((f"c{i}" for i in range(100)), concurrency=10):
                    pass

            task = asyncio.ensure_future(consume())
            await wait_until(lambda: fake.create_attempts == 10)
            assert client.outstanding == 10  # concurrency=10: no eleventh job is sent
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert client.outstanding == 0
    assert fake.create_attempts == 10


async def test_events_report_progress() -> None:
    events: list[Event] = []
    async with FakeProvider(latency=0.02, faults=Faults(retry_after=0)) as fake:
        async with client_for(fake) as client:
            stop = client.subscribe(events.append)
            async for _ in client.generate_many(["one", "[fault:429] two"]):
                pass
            stop()
            await client.generate("unseen")
    kinds = Counter(event.kind for event in events)
    assert kinds["submitted"] == 2 and kinds["finished"] == 2
    assert kinds["rate_limited"] == 1 and kinds["retried"] == 1
    finished = [e for e in events if e.kind == "finished"]
    assert all(e.status is JobStatus.SUCCEEDED and e.job_id for e in finished)


async def test_budget_counts_unknown_creates_as_paid() -> None:
    """A create that may have reached the provider may have been charged: it counts."""
    async with FakeProvider(latency=0.02) as fake:
        async with client_for(fake) as client:
            inputs = ["[fault:drop] a", "[fault:drop] b", "c", "d", "e"]
            outcomes = [o async for o in client.generate_many(inputs, concurrency=1, budget="0.06")]
    statuses = [o.status for o in outcomes]
    assert statuses == ["unknown", "unknown", "succeeded", "skipped", "skipped"]
    assert sum(fake.creates_per_prompt.values()) == 3


async def test_a_slow_consumer_slows_submissions() -> None:
    async with FakeProvider(latency=0.01) as fake:
        async with client_for(fake) as client:
            batch = client.generate_many((f"slow {i}" for i in range(1000)), concurrency=5)
            async with contextlib.aclosing(batch):
                async for _ in batch:
                    await asyncio.sleep(0.5)  # the consumer dawdles over its first outcome
                    break
            created = fake.create_attempts
    # one consumed, at most 5 queued outcomes and 5 jobs holding slots
    assert created <= 11


async def test_a_failing_input_iterable_raises_after_cleaning_up() -> None:
    def broken() -> Iterator[str]:
        yield "fine"
        raise OSError("disk on fire")

    async with FakeProvider(latency=0.05) as fake:
        async with client_for(fake) as client:
            with pytest.raises(OSError, match="disk on fire"):
                async for _ in client.generate_many(broken()):
                    pass
            assert client.outstanding == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"concurrency": 0}, "concurrency must be an integer >= 1, got 0"),
        ({"concurrency": -3}, "concurrency must be an integer >= 1"),
        ({"concurrency": True}, "concurrency must be an integer >= 1, got True"),
        ({"concurrency": 2.5}, "concurrency must be an integer >= 1"),
        ({"concurrency": "4"}, "concurrency must be an integer >= 1"),
        ({"budget": -1}, "budget must be a number >= 0, got -1"),
        ({"budget": "lots"}, "budget must be a number, got 'lots'"),
        ({"budget": float("inf")}, "budget must be a number >= 0"),
        ({"budget": "NaN"}, "budget must be a number >= 0"),
        ({"price_per_job": -0.01}, "price_per_job must be a number >= 0"),
    ],
)
async def test_batch_arguments_are_checked_before_anything_is_read(
    arguments: dict[str, object], message: str
) -> None:
    pulled = 0

    def prompts() -> Iterator[str]:
        nonlocal pulled
        pulled += 1
        yield "never sent"

    async with FakeProvider(latency=0.01) as fake:
        async with client_for(fake) as client:
            with pytest.raises(ConfigurationError) as info:
                client.generate_many(prompts(), **arguments)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert pulled == 0 and fake.create_attempts == 0


async def test_a_zero_budget_skips_everything_and_sends_nothing() -> None:
    async with FakeProvider(latency=0.01) as fake:
        async with client_for(fake) as client:
            outcomes = [o async for o in client.generate_many(["a", "b"], budget=0)]
    assert [o.status for o in outcomes] == ["skipped", "skipped"]
    assert fake.create_attempts == 0


async def test_a_job_waiting_for_its_end_holds_no_task_of_the_batch() -> None:
    before = asyncio.all_tasks()
    async with FakeProvider(latency=2, seed=12) as fake:
        async with client_for(fake, poll=PollPolicy(wait_first=5, timeout=30)) as client:
            batch = client.generate_many((f"t{i}" for i in range(20)), concurrency=20)
            first = asyncio.ensure_future(batch.__anext__())
            try:
                await wait_until(lambda: fake.create_attempts == 20)
                await wait_until(
                    lambda: not any("_create" in _name(t) for t in tasks_from(besides=before))
                )
                names = [_name(t) for t in tasks_from(besides=before) if t is not first]
                # Each job's outcome is taken when it ends (a callback), not by a task
                # waiting for it: 20 jobs in flight, and the batch's only task is the one
                # reading the inputs.
                assert [name for name in names if "generate_many" in name] == [
                    "generate_many.<locals>.produce"
                ], names
            finally:
                first.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await first
                await batch.aclose()


async def test_a_slow_consumer_still_gets_every_outcome() -> None:
    async with FakeProvider(latency=0.01, seed=13) as fake:
        async with client_for(fake) as client:
            indexes = []
            async for outcome in client.generate_many((f"s{i}" for i in range(30)), concurrency=3):
                await asyncio.sleep(0.02)  # outcomes pile up beyond the queue's room
                assert outcome.ok
                indexes.append(outcome.index)
    assert sorted(indexes) == list(range(30))
    assert fake.create_attempts == 30


def _name(task: asyncio.Task[object]) -> str:
    return str(task.get_coro().__qualname__)  # type: ignore[union-attr]
