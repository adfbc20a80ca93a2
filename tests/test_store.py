"""Job stores (``flux_async._store``): the in-memory store and the SQLite journal, against
the same expectations (``tests/redis/test_redis_store.py`` runs them against Redis too).

The SQLite journal's own behaviour is in ``test_sqlite_journal.py``; fingerprints in
``test_record.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from flux_async import GenerationRequest, Image, JobStatus
from flux_async._errors import ConfigurationError, JobFailedError
from flux_async.stores import (
    JobRecord,
    JobStore,
    JournalError,
    JournalMismatchError,
    MemoryStore,
    SQLiteJournal,
    fingerprint,
)

NOW = 1_700_000_000.5


def clock() -> float:
    return NOW


def record(local_id: str = "L1", index: int = 0, **changes: Any) -> JobRecord:
    request = changes.pop("request", GenerationRequest(prompt=f"a red fox {index}"))
    base = JobRecord.allocate(
        request,
        local_id=local_id,
        provider="shortapi",
        model="flux-dev",
        created_at=NOW - 10,
        batch_id="B",
        index=index,
        token_hash=hashlib.sha256(f"token-{local_id}".encode()).digest(),
    )
    return msgspec.structs.replace(base, **changes)


StoreFactory = Callable[[], JobStore]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Return a factory of stores over the same data (a reopened journal, the same dict)."""
    if request.param == "memory":
        memory = MemoryStore(clock=clock)
        return lambda: memory
    return lambda: SQLiteJournal(tmp_path / "run.sqlite", clock=clock)


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[JobStore]:
    opened = make_store()
    await opened.open()
    yield opened
    await opened.aclose()


async def reopened(make_store: StoreFactory, current: JobStore) -> JobStore:
    """Close ``current`` and open the data again, as a resumed run would."""
    await current.aclose()
    again = make_store()
    await again.open()
    return again


# Round trips -------------------------------------------------------------------------------


async def test_every_field_round_trips(make_store: StoreFactory) -> None:
    full = record(
        "L1",
        index=7,
        attempt=2,
        request=GenerationRequest(
            prompt="a red fox",
            aspect_ratio="16:9",
            seed=5,
            guidance=3.5,
            extra={"b": [1, 2], "a": {"nested": True}},
        ),
        secret_hash=hashlib.sha256(b"secret").digest(),
        job_id="job-1",
        status=JobStatus.FAILED,
        cost=Decimal("0.0125"),
        refunded=True,
        images=(Image(url="https://x/1.png", width=1024, height=768, content_type="image/png"),),
        seed=42,
        polls=3,
        files=("/out/000007-0.png",),
        error_kind="JobFailedError",
        error_message="nsfw",
        accepted_at=NOW - 5,
        finished_at=NOW - 1,
    )
    store = make_store()
    await store.open()
    await store.begin_batch("B")
    await store.put_allocated(full)
    store = await reopened(make_store, store)
    try:
        assert await store.find("L1") == full
        assert await store.records("B") == [full]
        assert (await store.records("B"))[0].generation_request() == GenerationRequest(
            prompt="a red fox",
            aspect_ratio="16:9",
            seed=5,
            guidance=3.5,
            extra={"b": [1, 2], "a": {"nested": True}},
        )
    finally:
        await store.aclose()


async def test_a_job_life_round_trips(make_store: StoreFactory) -> None:
    store = make_store()
    await store.open()
    allocated = record("L1")
    await store.put_allocated(allocated)
    store.put_accepted("L1", "job-1", Decimal("0.01"))
    store.put_status("L1", JobStatus.QUEUED)
    store.put_status("L1", JobStatus.RUNNING)
    images = [Image(url="https://x/1.png", width=512, height=512)]
    store.put_finished("L1", JobStatus.SUCCEEDED, images=images, seed=9, polls=4)
    store.put_files("L1", [Path("/out/000000-0.png")])
    store = await reopened(make_store, store)
    try:
        found = await store.find("L1")
        assert found == msgspec.structs.replace(
            allocated,
            job_id="job-1",
            status=JobStatus.SUCCEEDED,
            cost=Decimal("0.01"),
            images=tuple(images),
            seed=9,
            polls=4,
            files=("/out/000000-0.png",),
            accepted_at=NOW,
            finished_at=NOW,
        )
        assert found is not None
        generation = found.generation()
        assert generation is not None
        assert (generation.job_id, generation.images, generation.cost, generation.seed) == (
            "job-1",
            tuple(images),
            Decimal("0.01"),
            9,
        )
        snapshot = found.snapshot()
        assert (snapshot.status, snapshot.id, snapshot.polls, snapshot.created_at) == (
            JobStatus.SUCCEEDED,
            "job-1",
            4,
            NOW - 10,
        )
    finally:
        await store.aclose()


async def test_failure_keeps_the_error_kind_and_message(store: JobStore) -> None:
    await store.put_allocated(record("L1"))
    store.put_accepted("L1", "job-1")
    store.put_finished(
        "L1",
        JobStatus.FAILED,
        refunded=True,
        cost=Decimal(0),
        error=JobFailedError("job L1 failed: nsfw", provider="shortapi"),
    )
    found = await store.find("L1")
    assert found is not None
    assert (found.status, found.refunded, found.cost) == (JobStatus.FAILED, True, Decimal(0))
    assert (found.error_kind, found.error_message) == ("JobFailedError", "job L1 failed: nsfw")
    assert found.generation() is None
    assert found.snapshot().error == "job L1 failed: nsfw"


# State rules -------------------------------------------------------------------------------


async def test_status_only_moves_forward_and_terminal_is_absorbing(store: JobStore) -> None:
    await store.put_allocated(record("L1"))
    store.put_status("L1", JobStatus.RUNNING)
    store.put_status("L1", JobStatus.QUEUED)  # late, out of order
    assert (found := await store.find("L1")) is not None and found.status is JobStatus.RUNNING
    store.put_finished("L1", JobStatus.SUCCEEDED, images=[Image(url="https://x/1.png")])
    store.put_finished("L1", JobStatus.FAILED, error=RuntimeError("late"))
    store.put_status("L1", JobStatus.RUNNING)
    found = await store.find("L1")
    assert found is not None
    assert found.status is JobStatus.SUCCEEDED
    assert found.images == (Image(url="https://x/1.png"),)
    assert found.error_kind is None


async def test_accepted_after_the_end_keeps_the_id_and_the_end(store: JobStore) -> None:
    # A callback can finish a job before the create's answer records its id.
    await store.put_allocated(record("L1"))
    store.put_finished("L1", JobStatus.SUCCEEDED, cost=Decimal("0.02"))
    store.put_accepted("L1", "job-1", Decimal("0.05"))
    store.put_accepted("L1", "job-other")  # a duplicate answer changes nothing
    found = await store.find("L1")
    assert found is not None
    assert (found.status, found.job_id, found.cost) == (
        JobStatus.SUCCEEDED,
        "job-1",
        Decimal("0.02"),
    )
    assert await store.find_job("shortapi", "job-1") == found
    assert await store.find_job("shortapi", "job-other") is None


async def test_writes_for_an_unknown_local_id_are_ignored(store: JobStore) -> None:
    store.put_accepted("nope", "job-1")
    store.put_status("nope", JobStatus.RUNNING)
    store.put_finished("nope", JobStatus.FAILED)
    store.put_files("nope", ["/x"])
    await store.flush()
    assert await store.find("nope") is None
    assert await store.find_job("shortapi", "job-1") is None


async def test_wrong_kind_of_status_is_refused(store: JobStore) -> None:
    with pytest.raises(ValueError, match="put_finished"):
        store.put_status("L1", JobStatus.SUCCEEDED)
    with pytest.raises(ValueError, match="terminal"):
        store.put_finished("L1", JobStatus.RUNNING)


async def test_a_duplicate_local_id_is_refused_without_losing_the_others(
    store: JobStore,
) -> None:
    await store.put_allocated(record("L1"))
    results = await asyncio.gather(
        store.put_allocated(record("L2", index=1)),
        store.put_allocated(record("L1", index=5)),
        store.put_allocated(record("L3", index=2)),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], JournalError)
    assert [r.local_id for r in await store.records("B")] == ["L1", "L2", "L3"]
    assert (found := await store.find("L1")) is not None and found.index == 0


# Lookups -----------------------------------------------------------------------------------


async def test_lookups(store: JobStore) -> None:
    assert await store.begin_batch("B") is False
    assert await store.begin_batch("B") is True
    assert await store.begin_batch("A") is False
    assert await store.batches() == ["B", "A"]
    for local_id, index, attempt in [("L3", 2, 1), ("L1", 0, 1), ("L2", 1, 1), ("L4", 1, 2)]:
        await store.put_allocated(record(local_id, index=index, attempt=attempt))
    await store.put_allocated(record("other", batch_id="A"))
    store.put_accepted("L2", "job-2")
    assert [(r.index, r.attempt) for r in await store.records("B")] == [
        (0, 1),
        (1, 1),
        (1, 2),
        (2, 1),
    ]
    assert [r.local_id for r in await store.records("A")] == ["other"]
    assert await store.records("missing") == []
    assert (found := await store.find_job("shortapi", "job-2")) is not None
    assert found.local_id == "L2"
    assert await store.find_job("piapi", "job-2") is None
    token = hashlib.sha256(b"token-L3").digest()
    assert (found := await store.find_by_token_hash(token)) is not None
    assert found.local_id == "L3"
    assert await store.find_by_token_hash(hashlib.sha256(b"forged").digest()) is None
    assert await store.find("missing") is None


async def test_check_inputs(store: JobStore) -> None:
    first = record("L1", index=3)
    await store.put_allocated(first)
    assert await store.check_inputs("B", 3, first.fingerprint) == first
    assert await store.check_inputs("B", 4, first.fingerprint) is None
    assert await store.check_inputs("A", 3, first.fingerprint) is None
    resent = record("L2", index=3, attempt=2)
    await store.put_allocated(resent)
    assert await store.check_inputs("B", 3, first.fingerprint) == resent  # the latest attempt
    changed = fingerprint(GenerationRequest(prompt="a blue fox"), "shortapi", "flux-dev")
    with pytest.raises(JournalMismatchError, match=r"input 3 of batch 'B'") as caught:
        await store.check_inputs("B", 3, changed)
    assert (caught.value.index, caught.value.batch_id) == (3, "B")
    assert isinstance(caught.value, ConfigurationError)


async def test_meta_round_trips(make_store: StoreFactory) -> None:
    store = make_store()
    await store.open()
    assert await store.load_meta("latency") is None
    await store.save_meta("latency", b"\x00one")
    await store.save_meta("latency", b"\x00two")
    store = await reopened(make_store, store)
    try:
        assert await store.load_meta("latency") == b"\x00two"
    finally:
        await store.aclose()
