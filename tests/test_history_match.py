"""`match_tasks` (``flux_async._history_match``): which task of PiAPI's history is which lost
create, with no HTTP."""

from __future__ import annotations

from flux_async import GenerationRequest, PiAPI
from flux_async._history_match import HISTORY_SKEW, match_tasks
from flux_async._record import JobRecord
from flux_async.providers._base import HistoryTask

API = PiAPI("key")
T0 = 1_700_000_000.0


def lost(local_id: str, prompt: str, created_at: float) -> JobRecord:
    request = GenerationRequest(prompt=prompt)
    return JobRecord.allocate(
        request,
        local_id=local_id,
        provider="piapi",
        model=API.prepare(request).model,
        created_at=created_at,
    )


def task(
    job_id: str, prompt: str, created_at: float, callback_url: str | None = None
) -> HistoryTask:
    prepared = API.prepare(GenerationRequest(prompt=prompt))
    return HistoryTask(
        job_id=job_id,
        model=prepared.model,
        created_at=created_at,
        input=dict(prepared.args["input"]),
        callback_url=callback_url,
    )


def test_the_callback_address_names_the_record() -> None:
    records = [lost("aaaa", "a fox", T0), lost("bbbb", "a fox", T0 + 1)]
    # The task of "bbbb" came first; its endpoint names it, so it is not "aaaa"'s.
    tasks = [
        task("t-b", "a fox", T0, "https://me/hooks/piapi/bbbb/token"),
        task("t-a", "a fox", T0 + 2),
    ]
    assert match_tasks(tasks, records, API, "piapi") == {"bbbb": "t-b", "aaaa": "t-a"}


def test_same_inputs_pair_in_creation_order_and_other_inputs_never() -> None:
    records = [lost("late", "a fox", T0 + 5), lost("early", "a fox", T0), lost("x", "an owl", T0)]
    tasks = [task("t-2", "a fox", T0 + 6), task("t-1", "a fox", T0 + 1)]
    assert match_tasks(tasks, records, API, "piapi") == {"early": "t-1", "late": "t-2"}


def test_a_task_created_well_before_the_record_is_not_its() -> None:
    records = [lost("aaaa", "a fox", T0)]
    old = task("t-old", "a fox", T0 - HISTORY_SKEW - 1)
    assert match_tasks([old], records, API, "piapi") == {}
    assert match_tasks([old, task("t-new", "a fox", T0)], records, API, "piapi") == {
        "aaaa": "t-new"
    }
