"""The create lane (`flux_async._create`, `flux_async._reattach`): what a resumed batch does
with a recorded job, by provider kind."""

from __future__ import annotations

import time

import pytest
from support import KEY, client_for

from flux_async import AIMLAPI, GenerationRequest, JobStatus, JobUnknownError
from flux_async._store import JobRecord, MemoryStore
from flux_async.testing import FakeProvider

pytestmark = pytest.mark.anyio

PROMPT = "a synchronous generation lost in a crash"


async def _crashed_between_accept_and_end(store: MemoryStore) -> JobRecord:
    """The journal of an AI/ML API batch killed after the create's answer was recorded
    (its provider id) but before its end was (the same tick, two writes)."""
    request = GenerationRequest(prompt=PROMPT)
    model = AIMLAPI(KEY).prepare(request).model
    await store.begin_batch("crashed")
    record = JobRecord.allocate(
        request,
        local_id="0123456789abcdef",
        provider="aimlapi",
        model=model,
        created_at=time.time(),
        batch_id="crashed",
        index=0,
    )
    await store.put_allocated(record)
    store.put_accepted(record.local_id, "generation-lost-1")
    found = await store.find(record.local_id)
    assert found is not None and found.status is JobStatus.SUBMITTED
    return found


async def test_a_synchronous_job_accepted_but_not_ended_resumes_unknown(
    fake: FakeProvider,
) -> None:
    store = MemoryStore()
    record = await _crashed_between_accept_and_end(store)
    async with client_for("aimlapi", fake) as client:
        (outcome,) = [o async for o in client.generate_many([PROMPT], journal=store)]
    assert outcome.status == "unknown", outcome.error
    assert isinstance(outcome.error, JobUnknownError)
    assert "generation-lost-1" in str(outcome.error)
    assert outcome.resumed
    assert outcome.job is not None and outcome.job.id == "generation-lost-1"
    assert fake.create_attempts == 0  # not resent: that could pay twice
    ended = await store.find(record.local_id)
    assert ended is not None and ended.status is JobStatus.UNKNOWN

    # The next resume says the same; asked to, it sends the input again (attempt 2).
    async with client_for("aimlapi", fake) as client:
        (again,) = [o async for o in client.generate_many([PROMPT], journal=store)]
        assert again.status == "unknown" and fake.create_attempts == 0
        (resent,) = [
            o async for o in client.generate_many([PROMPT], journal=store, resubmit_unknown=True)
        ]
    assert resent.status == "succeeded", resent.error
    assert fake.create_attempts == 1
    assert [r.attempt for r in await store.records("crashed")] == [1, 2]
