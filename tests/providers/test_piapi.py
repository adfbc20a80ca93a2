"""PiAPI adapter: the requests it builds, and answers, errors and webhooks decoded from bytes
(providers.md 3, 7.2). What each task type takes: test_piapi_tasks.py; how task data and
history pages are read: test_piapi_wire.py."""

from __future__ import annotations

import json
import urllib.parse
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_async import (
    AuthenticationError,
    BadRequestError,
    FluxError,
    GenerationRequest,
    InsufficientCreditsError,
    JobStatus,
    Phase,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    UnexpectedResponseError,
    UnknownStatusError,
)
from flux_async.providers._base import CallbackUpdate, HTTPResponse, Update
from flux_async.providers.piapi import PiAPI

from .hostile import FUZZ, spoiled
from .piapi_examples import (
    BASE,
    IMG2IMG_REQUEST,
    IMG2IMG_RESPONSE,
    KEY,
    SECRET,
    envelope,
    respond,
    task,
)


@pytest.fixture
def api() -> PiAPI:
    return PiAPI(KEY, base_url=BASE + "/")


# -- configuration ---------------------------------------------------------------------------


def test_class_facts() -> None:
    assert PiAPI.name == "piapi" and PiAPI.default_base_url == "https://api.piapi.ai"
    assert PiAPI.synchronous is False and PiAPI.supports_callbacks is True
    assert PiAPI.typical_latency > 0


# -- building requests -----------------------------------------------------------------------


def test_the_documented_image_to_image_request(api: PiAPI) -> None:
    prepared = api.prepare(
        GenerationRequest(
            prompt="a bear",
            image_url="https://i.ibb.co/J7ZNgSG/01.jpg",
            model="Qubico/flux1-schnell",
        )
    )
    request = api.build_create(
        prepared, callback_url="https://webhook.site/xxxx", webhook_secret=""
    )
    assert request.method == "POST"
    assert request.url == f"{BASE}/api/v1/task"
    assert request.operation == "create"
    assert request.headers == {"X-API-Key": KEY, "Content-Type": "application/json"}
    assert json.loads(request.body or b"") == IMG2IMG_REQUEST


def test_text_to_image_with_webhook_and_service_mode(api: PiAPI) -> None:
    prepared = api.prepare(
        GenerationRequest(
            prompt="a little cat",
            width=1024,
            height=1024,
            guidance=3.5,
            steps=28,
            seed=-1,
            extra={"negative_prompt": "blurry", "service_mode": "private"},
        )
    )
    assert prepared.model == "Qubico/flux1-dev"
    assert prepared.args == {
        "task_type": "txt2img",
        "input": {
            "prompt": "a little cat",
            "width": 1024,
            "height": 1024,
            "guidance_scale": 3.5,
            "steps": 28,
            "seed": -1,
            "negative_prompt": "blurry",
        },
        "config": {"service_mode": "private"},
    }
    request = api.build_create(prepared, callback_url="https://cb/piapi/1/t", webhook_secret=SECRET)
    assert json.loads(request.body or b"") == {
        "model": "Qubico/flux1-dev",
        "task_type": "txt2img",
        "input": prepared.args["input"],
        "config": {
            "service_mode": "private",
            "webhook_config": {"endpoint": "https://cb/piapi/1/t", "secret": SECRET},
        },
    }
    assert SECRET not in repr(request)


def test_no_callback_means_no_config(api: PiAPI) -> None:
    request = api.build_create(
        api.prepare(GenerationRequest(prompt="p")), callback_url=None, webhook_secret=SECRET
    )
    assert json.loads(request.body or b"") == {
        "model": "Qubico/flux1-dev",
        "task_type": "txt2img",
        "input": {"prompt": "p"},
    }


def test_callback_without_secret(api: PiAPI) -> None:
    request = api.build_create(
        api.prepare(GenerationRequest(prompt="p")), callback_url="https://cb/x", webhook_secret=None
    )
    assert json.loads(request.body or b"")["config"] == {
        "webhook_config": {"endpoint": "https://cb/x"}
    }


def test_query_request(api: PiAPI) -> None:
    request = api.build_query("1631d053-2352-4add-95cc-360fc52d5f89")
    assert request.method == "GET" and request.body is None and request.operation == "query"
    assert request.url == f"{BASE}/api/v1/task/1631d053-2352-4add-95cc-360fc52d5f89"
    assert request.headers == {"X-API-Key": KEY}
    assert api.build_query("a/b?c").url == f"{BASE}/api/v1/task/a%2Fb%3Fc"


# -- create responses ---------------------------------------------------------------------------


def test_the_documented_create_response(api: PiAPI) -> None:
    accepted = api.parse_create(respond(IMG2IMG_RESPONSE))
    assert accepted.job_id == "1631d053-2352-4add-95cc-360fc52d5f89"
    assert accepted.cost == Decimal(20000)
    assert accepted.update is not None and accepted.update.status is JobStatus.QUEUED


@pytest.mark.parametrize("code", [200, "200"])
def test_create_code_spellings(api: PiAPI, code: Any) -> None:
    body = {**IMG2IMG_RESPONSE, "code": code}
    assert api.parse_create(respond(body, 201)).job_id == "1631d053-2352-4add-95cc-360fc52d5f89"


@pytest.mark.parametrize("status", ["weird", 7, None])
def test_create_keeps_the_job_whatever_its_status(api: PiAPI, status: Any) -> None:
    accepted = api.parse_create(respond({"code": 200, "data": task(status=status)}))
    assert accepted.job_id == "1631d053-2352-4add-95cc-360fc52d5f89"
    assert accepted.update is None


def test_create_keeps_the_job_when_a_field_has_an_odd_type(api: PiAPI) -> None:
    accepted = api.parse_create(respond({"code": 200, "data": task(output=[1], meta="x")}))
    assert accepted.job_id == "1631d053-2352-4add-95cc-360fc52d5f89"


@pytest.mark.parametrize(
    ("response", "kind", "phase"),
    [
        (
            respond({"code": 401, "data": None, "message": "Unauthorized"}, 401),
            AuthenticationError,
            Phase.DEFINITIVE,
        ),
        (
            respond({"code": 402, "data": None, "message": "no credits"}, 402),
            InsufficientCreditsError,
            Phase.DEFINITIVE,
        ),
        (
            respond({"code": 400, "data": None, "message": "bad input"}, 400),
            BadRequestError,
            Phase.DEFINITIVE,
        ),
        (
            respond({"code": 429, "data": None, "message": "slow"}, 429, {"Retry-After": "5"}),
            RateLimitedError,
            Phase.REFUSED,
        ),
        (respond(b"<html>502 Bad Gateway</html>", 502), ProviderUnavailableError, Phase.AMBIGUOUS),
        (
            respond({"message": "Internal Server Error"}, 500),
            ProviderUnavailableError,
            Phase.AMBIGUOUS,
        ),
        (respond(b"", 503), ProviderUnavailableError, Phase.REFUSED),
        (
            respond({"code": 400, "data": None, "message": "task_type invalid"}),
            BadRequestError,
            Phase.DEFINITIVE,
        ),
        (
            respond({"code": 10000, "message": "insufficient quota"}),
            InsufficientCreditsError,
            Phase.DEFINITIVE,
        ),
        (respond({"code": 500, "message": "oops"}), ProviderUnavailableError, Phase.AMBIGUOUS),
        (respond({"code": "429", "message": "slow"}), RateLimitedError, Phase.REFUSED),
        (respond({"code": 200, "data": None}), UnexpectedResponseError, Phase.AMBIGUOUS),
        (
            respond({"code": 200, "data": task(task_id="")}),
            UnexpectedResponseError,
            Phase.AMBIGUOUS,
        ),
        (respond(b"{not json"), UnexpectedResponseError, Phase.AMBIGUOUS),
        (respond(b"[" * 5000), UnexpectedResponseError, Phase.AMBIGUOUS),
    ],
)
def test_create_errors(api: PiAPI, response: HTTPResponse, kind: type, phase: Phase) -> None:
    with pytest.raises(kind) as info:
        api.parse_create(response)
    assert info.value.phase is phase
    assert info.value.operation == "create"
    assert KEY not in str(info.value)


def test_create_error_carries_the_provider_message(api: PiAPI) -> None:
    with pytest.raises(RateLimitedError) as info:
        api.parse_create(
            respond(
                {"code": 429, "data": None, "message": "too many requests"},
                429,
                {"Retry-After": "5"},
            )
        )
    assert info.value.provider_message == "too many requests"
    assert info.value.code == 429 and info.value.retry_after == 5.0
    assert "too many requests" in str(info.value)


# -- the echoed webhook secret never leaks -------------------------------------------------------


@pytest.mark.parametrize("status", ["weird", "", "cancelled", 2, None, ["completed"]])
def test_unknown_status_carries_the_payload_without_the_secret(api: PiAPI, status: Any) -> None:
    for parse in (
        lambda: api.parse_query(envelope(status=status)),
        lambda: api.parse_callback(
            json.dumps({"timestamp": 1, "data": task(status=status)}).encode()
        ),
    ):
        with pytest.raises(UnknownStatusError) as info:
            parse()
        error = info.value
        assert error.phase is Phase.DEFINITIVE
        for text in (str(error), repr(error), repr(error.payload), repr(error.args)):
            assert SECRET not in text
        data = error.payload["data"]
        assert data["status"] == status and data["task_id"] == task()["task_id"]
        # The endpoint's path is the callback token: it goes too (issue 9).
        assert data["config"]["webhook_config"] == {
            "endpoint": "<redacted>",
            "secret": "<redacted>",
        }


def test_secret_scrubbed_from_bare_callback_and_error_bodies(api: PiAPI) -> None:
    with pytest.raises(UnknownStatusError) as info:
        api.parse_callback(json.dumps(task(status="odd")).encode())
    assert SECRET not in repr(info.value.payload)
    body = {"code": 500, "message": "boom", "data": task()}
    with pytest.raises(ProviderUnavailableError) as http:
        api.parse_query(respond(body, 500))
    assert SECRET not in repr(http.value.payload)
    with pytest.raises(ProviderUnavailableError) as coded:
        api.parse_query(respond(body))
    assert SECRET not in repr(coded.value.payload)


TOKEN = "tok-0123456789abcdef"
ENDPOINT = f"https://me.example/flux/piapi/{TOKEN}"


def echoing(**changes: Any) -> dict[str, Any]:
    """A task object echoing a webhook whose endpoint carries the callback token."""
    data = task(**changes)
    data["config"] = {"webhook_config": {"endpoint": ENDPOINT, "secret": SECRET}}
    return data


def _parse_all(api: PiAPI) -> list[Any]:
    body = {"code": 200, "data": echoing(status="completed", output={})}
    raw = json.dumps(body).encode()
    return [
        lambda: api.parse_query(respond({"code": 500, "message": "x", "data": echoing()}, 500)),
        lambda: api.parse_query(respond({"code": 402, "message": "x", "data": echoing()})),
        lambda: api.parse_create(respond({"code": 400, "message": "x", "data": echoing()})),
        lambda: api.parse_query(respond({"code": 200, "data": echoing(status="odd")})),
        lambda: api.parse_query(respond(body)),  # completed without an image
        lambda: api.parse_query(respond(raw[:-2])),  # undecodable
        lambda: api.parse_query(respond(raw.replace(b'"status"', b'"status": 1, "x"'))),
        lambda: api.parse_callback(json.dumps({"data": echoing(status="odd")}).encode()),
    ]


@pytest.mark.parametrize("index", range(8))
def test_error_payloads_hide_the_webhook_endpoint_and_secret(api: PiAPI, index: int) -> None:
    # The endpoint's path is the callback token (issue 9): neither it nor the secret may
    # reach exc.payload, str(exc) or repr(exc), whichever way the answer fails.
    with pytest.raises(FluxError) as info:
        _parse_all(api)[index]()
    error = info.value
    for text in (str(error), repr(error), repr(getattr(error, "payload", None))):
        assert TOKEN not in text and SECRET not in text


@pytest.mark.parametrize("separator", [b'"secret": "', b'"secret" :  "', b'"Secret":"'])
def test_secret_scrubbed_from_undecodable_bodies(api: PiAPI, separator: bytes) -> None:
    raw = json.dumps({"code": 200, "data": task(status="completed")}).encode()
    raw = raw.replace(b'"secret": "', separator)
    start = raw.index(SECRET.encode())
    for body in (raw[:-1], raw[: start + 5]):  # one byte short; cut inside the secret
        with pytest.raises(UnexpectedResponseError) as info:
            api.parse_query(respond(body))
        assert SECRET[:5].encode() not in info.value.payload
        assert SECRET[:5] not in str(info.value)


# -- callbacks ---------------------------------------------------------------------------------


def test_the_documented_webhook_body(api: PiAPI) -> None:
    body = {
        "timestamp": 1723018391,
        "data": task(
            status="completed",
            output={"image_url": "https://img.theapi.app/temp/a.png", "image_base64": ""},
        ),
    }
    callback = api.parse_callback(json.dumps(body).encode())
    assert callback.job_id == "1631d053-2352-4add-95cc-360fc52d5f89"
    assert callback.secret == SECRET
    assert callback.update.status is JobStatus.SUCCEEDED
    assert callback.update.images[0].url == "https://img.theapi.app/temp/a.png"
    assert callback.update.cost == Decimal(20000)


@pytest.mark.parametrize("status", ["pending", "processing", "starting", "staged", "retry"])
def test_non_terminal_deliveries(api: PiAPI, status: str) -> None:
    callback = api.parse_callback(
        json.dumps({"timestamp": 1, "data": task(status=status)}).encode()
    )
    assert callback.update.status in (JobStatus.QUEUED, JobStatus.RUNNING)
    assert not callback.update.status.is_terminal


@pytest.mark.parametrize(
    "body",
    [
        IMG2IMG_RESPONSE,  # the GET envelope
        IMG2IMG_RESPONSE["data"],  # a bare task object
        {
            "timestamp": 1,
            "data": {"task_id": "1631d053-2352-4add-95cc-360fc52d5f89", "status": "pending"},
        },
    ],
)
def test_callback_shapes(api: PiAPI, body: dict[str, Any]) -> None:
    callback = api.parse_callback(json.dumps(body).encode())
    assert callback.job_id == "1631d053-2352-4add-95cc-360fc52d5f89"
    assert callback.update.status is JobStatus.QUEUED
    assert callback.secret is None  # "" in the doc example means none


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b'"data"',
        b"{}",
        b'{"data": 3}',
        b'{"timestamp": 1}',
        b'{"data": {"status": []}}',
        b'{"data": {"output": 5, "status": "completed"}}',
        b"[" * 100_000,
        b'{"data": {"status": 1e999}}',
        b'{"data": {"task_id": 1' + b"0" * 5000 + b"}}",
        b"\xff\xfe",
    ],
)
def test_hostile_callback_examples(api: PiAPI, body: bytes) -> None:
    with pytest.raises((ValueError, msgspec.DecodeError, FluxError)):
        api.parse_callback(body)


# A task as PiAPI sends it, holding every field the adapter reads, in any documented status.
TASK = st.builds(
    dict,
    task_id=st.just("t-1"),
    # A third each: the output is read, the error is read, neither.
    status=st.sampled_from(["completed", " SUCCESS\n", "failed", "Failed", "pending", "Staged"]),
    output=st.just(
        {
            "image_url": "https://img.theapi.app/a.png",
            "image_urls": ["https://img.theapi.app/a.png", " https://x/b.png "],
            "image_base64": "iVBORw0KGgo",
        }
    ),
    meta=st.just({"usage": {"type": "quota", "consume": 20000}}),
    error=st.just({"code": 0, "raw_message": "", "message": "boom"}),
    config=st.just({"webhook_config": {"endpoint": "https://cb/x", "secret": SECRET}}),
)
# Answers, webhook bodies and bare tasks, each with one to three fields (at any depth, the
# whole task included) replaced by any JSON.
ANSWERS = spoiled(st.builds(lambda task: {"code": 200, "message": "success", "data": task}, TASK))
CALLBACKS = spoiled(st.builds(lambda task: {"timestamp": 1723018391, "data": task}, TASK))


# parse_callback's documented refusals (its docstring): a body that is not JSON, or not a
# JSON object holding a task object. Any other ValueError (a bad int(), say) is a bug.
_REFUSED_CALLBACKS = (
    "piapi callback body is not a JSON object",
    "piapi callback body has no data object",
)


def _parse_callback_or_refuse(body: bytes) -> CallbackUpdate | None:
    """The callback parsed, or None when it was refused in one of the documented ways."""
    try:
        callback = PiAPI(KEY, base_url=BASE).parse_callback(body)
    except (msgspec.DecodeError, FluxError):
        return None
    except ValueError as error:
        assert str(error) in _REFUSED_CALLBACKS, error
        return None
    assert isinstance(callback.update.status, JobStatus)
    assert callback.job_id is None or (isinstance(callback.job_id, str) and callback.job_id)
    assert callback.secret is None or isinstance(callback.secret, str)
    if callback.update.status is JobStatus.SUCCEEDED:
        assert callback.update.images and all(i.url for i in callback.update.images)
    return callback


@FUZZ
@given(st.binary(max_size=300))
def test_hostile_callback_bytes(body: bytes) -> None:
    _parse_callback_or_refuse(body)


@FUZZ
@given(CALLBACKS | spoiled(TASK))
def test_hostile_callback_json(value: Any) -> None:
    _parse_callback_or_refuse(json.dumps(value).encode())


def test_a_well_formed_callback_is_parsed() -> None:
    """The success branch the two tests above check when hypothesis reaches it."""
    body = json.dumps(
        {
            "timestamp": 1,
            "data": {
                "task_id": "t-1",
                "status": "completed",
                "output": {"image_url": "https://x/y.png"},
            },
        }
    )
    callback = _parse_callback_or_refuse(body.encode())
    assert callback is not None and callback.job_id == "t-1"
    assert callback.update.status is JobStatus.SUCCEEDED


@FUZZ
# Half the answers are 2xx (the task is read), half errors (only the error body is read).
@given(
    ANSWERS,
    st.sampled_from([200, 201]) | st.sampled_from([400, 404, 429, 500, 503]),
)
def test_hostile_responses_raise_only_flux_errors(answer: Any, status: int) -> None:
    api = PiAPI(KEY, base_url=BASE)
    response = respond(answer, status)
    for parse in (api.parse_query, api.parse_create):
        try:
            result = parse(response)
        except FluxError as error:
            assert error.provider == "piapi"
            continue
        # Only a 2xx answer can be read as a job, and then it names one, or its state.
        assert 200 <= status < 300
        if isinstance(result, Update):
            assert isinstance(result.status, JobStatus)
        else:
            assert isinstance(result.job_id, str) and result.job_id


# -- cancel and the history request (providers.md 7.2) ---------------------------------------


def test_piapi_cancel_request_is_a_delete_on_the_task_path_with_the_key() -> None:
    request = PiAPI(api_key="secret-key", base_url="http://h").build_cancel("a/b c")
    assert request.method == "DELETE"
    assert request.url == "http://h/api/v1/task/a%2Fb%20c"
    assert request.headers["X-API-Key"] == "secret-key"


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (
            200,
            {
                "code": 200,
                "data": {"task_id": "t", "status": "failed", "meta": {"usage": {"consume": 0}}},
                "message": "success",
            },
            JobStatus.CANCELLED,
        ),
        (200, {"code": 200, "data": None, "message": "success"}, JobStatus.CANCELLED),
        (
            400,
            {
                "code": 400,
                "data": None,
                "message": "task is processing: only pending tasks can be canceled",
            },
            BadRequestError,
        ),
        (404, {"code": 404, "data": None, "message": "task not found"}, ProviderError),
        (200, {"code": 400, "data": None, "message": "cannot cancel"}, ProviderError),
    ],
)
def test_piapi_parse_cancel(status: int, body: object, outcome: object) -> None:
    provider = PiAPI(api_key="k")
    if isinstance(outcome, JobStatus):
        assert provider.parse_cancel(respond(body, status)).status is outcome
    else:
        with pytest.raises(outcome) as caught:  # type: ignore[call-overload]
            provider.parse_cancel(respond(body, status))
        assert caught.value.operation == "cancel"


def test_piapi_history_request_has_the_documented_parameters() -> None:
    request = PiAPI(api_key="k", base_url="http://h").build_history(
        start_time=100, end_time=200, page=3, page_size=500
    )
    url = urllib.parse.urlsplit(request.url)
    assert url.path == "/api/open/tasks/histories"
    query = dict(urllib.parse.parse_qsl(url.query))
    assert query == {
        "page": "3",
        "page_size": "100",
        "model": "flux",
        "start_time": "100",
        "end_time": "200",
    }
    assert request.headers["X-API-Key"] == "k"
