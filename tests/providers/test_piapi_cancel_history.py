"""PiAPI cancel and task history (providers.md 7.2), and the no-cancel default elsewhere."""

from __future__ import annotations

import urllib.parse

import msgspec
import pytest

from flux_async import AIMLAPI, PiAPI, ShortAPI
from flux_async._errors import BadRequestError, ProviderError, UnexpectedResponseError
from flux_async._http import HTTPResponse
from flux_async._models import JobStatus


def _answer(status: int, body: object) -> HTTPResponse:
    return HTTPResponse(status, {}, msgspec.json.encode(body))


@pytest.mark.parametrize("provider", [ShortAPI(api_key="k"), AIMLAPI(api_key="k")])
def test_providers_without_a_documented_cancel_build_none(provider: object) -> None:
    assert provider.build_cancel("abc") is None  # type: ignore[attr-defined]
    assert provider.build_history(start_time=0, end_time=1) is None  # type: ignore[attr-defined]


def test_piapi_cancel_request_is_a_delete_on_the_task_path_with_the_key() -> None:
    request = PiAPI(api_key="secret-key", base_url="http://h").build_cancel("a/b c")
    assert request.method == "DELETE"
    assert request.url == "http://h/api/v1/task/a%2Fb%20c"
    assert request.headers["X-API-Key"] == "secret-key"


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, {"code": 200, "data": {"task_id": "t", "status": "failed",
                                     "meta": {"usage": {"consume": 0}}}, "message": "success"},
         JobStatus.CANCELLED),
        (200, {"code": 200, "data": None, "message": "success"}, JobStatus.CANCELLED),
        (400, {"code": 400, "data": None,
               "message": "task is processing: only pending tasks can be canceled"},
         BadRequestError),
        (404, {"code": 404, "data": None, "message": "task not found"}, ProviderError),
        (200, {"code": 400, "data": None, "message": "cannot cancel"}, ProviderError),
    ],
)
def test_piapi_parse_cancel(status: int, body: object, outcome: object) -> None:
    provider = PiAPI(api_key="k")
    if isinstance(outcome, JobStatus):
        assert provider.parse_cancel(_answer(status, body)).status is outcome
    else:
        with pytest.raises(outcome) as caught:  # type: ignore[call-overload]
            provider.parse_cancel(_answer(status, body))
        assert caught.value.operation == "cancel"


def test_piapi_history_request_has_the_documented_parameters() -> None:
    request = PiAPI(api_key="k", base_url="http://h").build_history(
        start_time=100, end_time=200, page=3, page_size=500
    )
    url = urllib.parse.urlsplit(request.url)
    assert url.path == "/api/open/tasks/histories"
    query = dict(urllib.parse.parse_qsl(url.query))
    assert query == {"page": "3", "page_size": "100", "model": "flux",
                     "start_time": "100", "end_time": "200"}
    assert request.headers["X-API-Key"] == "k"


def test_piapi_parse_history_reads_ids_times_inputs_and_endpoints() -> None:
    body = {"code": 200, "message": "success", "data": {"total": 7, "list": [
        {"task_id": "t1", "model": "Qubico/flux1-dev", "input": {"prompt": "a"},
         "config": {"webhook_config": {"endpoint": "https://x/piapi/L1/T", "secret": "s"}},
         "meta": {"created_at": "2024-05-01T10:00:00.123456789Z"}},
        {"task_id": "t2", "meta": {"created_at": "0001-01-01T00:00:00Z"}},
        {"model": "no id: skipped"},
        "junk",
    ]}}
    tasks, total = PiAPI(api_key="k").parse_history(_answer(200, body))
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
        PiAPI(api_key="k").parse_history(_answer(200, body))
