"""PiAPI answers read: task states, outputs, failure reasons, charges, times and history pages
(providers.md 3.4-3.7, 7.2)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from flux_async import (
    BadRequestError,
    JobStatus,
    Phase,
    UnexpectedResponseError,
)
from flux_async.providers._base import HTTPResponse
from flux_async.providers.piapi import PiAPI

from .piapi_examples import (
    BASE,
    KEY,
    SECRET,
    done,
    envelope,
    respond,
    task,
)


@pytest.fixture
def api() -> PiAPI:
    return PiAPI(KEY, base_url=BASE + "/")


# -- task states ---------------------------------------------------------------------------------


STATUS_SPELLINGS = [
    ("completed", JobStatus.SUCCEEDED),
    ("Completed", JobStatus.SUCCEEDED),
    ("success", JobStatus.SUCCEEDED),
    (" SUCCESS\n", JobStatus.SUCCEEDED),
    ("failed", JobStatus.FAILED),
    ("Failed", JobStatus.FAILED),
    ("pending", JobStatus.QUEUED),
    ("Pending", JobStatus.QUEUED),
    ("staged", JobStatus.QUEUED),
    ("Staged", JobStatus.QUEUED),
    ("starting", JobStatus.RUNNING),
    ("processing", JobStatus.RUNNING),
    ("Processing", JobStatus.RUNNING),
    ("retry", JobStatus.RUNNING),
]


@pytest.mark.parametrize(("status", "expected"), STATUS_SPELLINGS)
def test_every_status_spelling(api: PiAPI, status: str, expected: JobStatus) -> None:
    output = {"image_url": "https://img.theapi.app/temp/a.png", "image_base64": ""}
    update = api.parse_query(envelope(status=status, output=output))
    assert update.status is expected
    callback = api.parse_callback(
        json.dumps({"timestamp": 1723018391, "data": task(status=status, output=output)}).encode()
    )
    assert callback.update.status is expected


@pytest.mark.parametrize(
    ("output", "urls"),
    [
        (
            {"image_url": "https://img.theapi.app/temp/a.png", "image_base64": ""},
            ["https://img.theapi.app/temp/a.png"],
        ),
        (
            {
                "image_urls": [
                    "https://img.theapi.app/temp/a.png",
                    "https://img.theapi.app/temp/b.png",
                ]
            },
            ["https://img.theapi.app/temp/a.png", "https://img.theapi.app/temp/b.png"],
        ),
        (
            {
                "image_url": "https://x/b.png",
                "image_urls": ["https://x/a.png", "https://x/b.png", "https://x/a.png", "", None],
            },
            ["https://x/b.png", "https://x/a.png"],
        ),
        (
            {"image_url": "", "image_urls": None, "image_base64": "iVBORw0KGgoAAAA"},
            ["data:image/png;base64,iVBORw0KGgoAAAA"],
        ),
        ({"image_base64": "/9j/4AAQ"}, ["data:image/jpeg;base64,/9j/4AAQ"]),
        ({"image_base64": "data:image/webp;base64,UklGRg"}, ["data:image/webp;base64,UklGRg"]),
        ({"image_url": "https://x/a.png", "image_base64": "iVBORw0KGgo"}, ["https://x/a.png"]),
    ],
)
def test_output_shapes(api: PiAPI, output: dict[str, Any], urls: list[str]) -> None:
    update = api.parse_query(done(output))
    assert update.status is JobStatus.SUCCEEDED
    assert [image.url for image in update.images] == urls


@pytest.mark.parametrize(
    "output",
    [None, {}, {"image_url": "", "image_urls": [], "image_base64": ""}, {"image_urls": [3, None]}],
)
def test_completed_without_an_image_is_definitive(api: PiAPI, output: Any) -> None:
    with pytest.raises(UnexpectedResponseError) as info:
        api.parse_query(done(output))
    assert info.value.phase is Phase.DEFINITIVE
    assert SECRET not in str(info.value.payload)
    assert info.value.payload["data"]["config"]["webhook_config"]["secret"] == "<redacted>"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ({"code": 1100, "raw_message": "nsfw raw", "message": "nsfw", "detail": None}, "nsfw"),
        (
            {"code": 1100, "raw_message": "image url unreachable", "message": ""},
            "image url unreachable",
        ),
        ({"code": 0, "raw_message": "", "message": "", "detail": None}, "generation failed"),
        ("plain words", "plain words"),
        (None, "generation failed"),
    ],
)
def test_failure_reason(api: PiAPI, error: Any, reason: str) -> None:
    update = api.parse_query(envelope(status="failed", error=error))
    assert update.status is JobStatus.FAILED and update.error == reason and not update.images


@pytest.mark.parametrize(
    "meta",
    [
        {
            "created_at": "2024-09-25T07:40:08.333962391Z",
            "started_at": "0001-01-01T00:00:00Z",
            "ended_at": "0001-01-01T00:00:00Z",
        },
        {
            "created_at": "2024-09-25T07:40:08Z",
            "started_at": "2024-09-25T07:40:09Z",
            "ended_at": "2024-09-25T07:40:19.5Z",
        },
        {"created_at": "0001-01-01T00:00:00Z", "started_at": None, "ended_at": ""},
    ],
)
def test_go_zero_and_real_times_are_both_fine(api: PiAPI, meta: dict[str, Any]) -> None:
    # Times are not surfaced (Update has no time fields); they must never break a decode.
    update = api.parse_query(envelope(status="processing", meta=meta))
    assert update.status is JobStatus.RUNNING and update.cost is None


@pytest.mark.parametrize(
    ("usage", "cost"),
    [
        ({"type": "quota", "frozen": 0, "consume": 20000}, Decimal(20000)),
        ({"type": "quota", "consume": 4000.5}, Decimal("4000.5")),
        ({"type": "llm", "consume": "12"}, Decimal(12)),
        ({"type": "quota", "consume": "n/a"}, None),
        ({"type": "quota"}, None),
        (None, None),
    ],
)
def test_usage_is_the_cost_in_quota_points(api: PiAPI, usage: Any, cost: Decimal | None) -> None:
    meta = {"usage": usage} if usage is not None else None
    update = api.parse_query(envelope(status="processing", meta=meta))
    assert update.cost == cost
    assert api.parse_create(envelope(meta=meta)).cost == cost


@pytest.mark.parametrize(
    "response",
    [
        respond({"code": 200}),
        respond(b"[]"),
        respond({"code": 200, "data": "nope"}),
        respond(b"{"),
        respond({"code": 200, "data": {"output": "x"}}),
        respond(b"[" * 2000),
    ],
)
def test_unreadable_query_answers_are_definitive(api: PiAPI, response: HTTPResponse) -> None:
    with pytest.raises(UnexpectedResponseError) as info:
        api.parse_query(response)
    assert info.value.phase is Phase.DEFINITIVE and info.value.operation == "query"


def test_query_not_found(api: PiAPI) -> None:
    with pytest.raises(BadRequestError) as info:
        api.parse_query(respond({"code": 404, "data": None, "message": "task not found"}, 404))
    assert info.value.phase is Phase.DEFINITIVE and info.value.provider_message == "task not found"


# -- task history pages ----------------------------------------------------------------------


def test_piapi_parse_history_reads_ids_times_inputs_and_endpoints() -> None:
    body = {
        "code": 200,
        "message": "success",
        "data": {
            "total": 7,
            "list": [
                {
                    "task_id": "t1",
                    "model": "Qubico/flux1-dev",
                    "input": {"prompt": "a"},
                    "config": {
                        "webhook_config": {"endpoint": "https://x/piapi/L1/T", "secret": "s"}
                    },
                    "meta": {"created_at": "2024-05-01T10:00:00.123456789Z"},
                },
                {"task_id": "t2", "meta": {"created_at": "0001-01-01T00:00:00Z"}},
                {"model": "no id: skipped"},
                "junk",
            ],
        },
    }
    tasks, total = PiAPI(api_key="k").parse_history(respond(body, 200))
    assert total == 7
    assert [task.job_id for task in tasks] == ["t1", "t2"]
    assert tasks[0].input == {"prompt": "a"}
    assert tasks[0].callback_url == "https://x/piapi/L1/T"
    assert tasks[0].created_at == pytest.approx(1714557600.123456)
    assert tasks[1].created_at is None and tasks[1].callback_url is None
    assert "L1" not in repr(tasks[0])  # the endpoint holds the token


@pytest.mark.parametrize("body", [{"code": 200, "data": None}, {"code": 500, "data": {}}])
def test_piapi_parse_history_refuses_an_answer_without_data(body: object) -> None:
    with pytest.raises(UnexpectedResponseError):
        PiAPI(api_key="k").parse_history(respond(body, 200))
