"""ShortAPI adapter: requests built and responses decoded, from bytes (providers.md 1)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_async import (
    BadRequestError,
    GenerationRequest,
    InsufficientCreditsError,
    JobStatus,
    Phase,
    ProviderUnavailableError,
    RateLimitedError,
    UnexpectedResponseError,
    UnknownStatusError,
    ValidationError,
)
from flux_async.providers import ShortAPI
from flux_async.providers._base import CallbackUpdate, HTTPResponse
from flux_async.providers._wire import convert, decode_json
from flux_async.providers.shortapi import _QueryData

from .hostile import FUZZ, JSON_VALUES, spoiled

KEY = "sk-secret-key-123"


@pytest.fixture
def api() -> ShortAPI:
    return ShortAPI(KEY, base_url="https://api.example.test/")


def ok(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> HTTPResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HTTPResponse(status, headers or {}, raw)


# -- configuration -----------------------------------------------------------------------


# -- building requests --------------------------------------------------------------------


def test_text_to_image_request(api: ShortAPI) -> None:
    prepared = api.prepare(
        GenerationRequest(prompt="a fox", aspect_ratio="16:9", num_images=4, model="schnell")
    )
    request = api.build_create(prepared, callback_url="https://cb/x", webhook_secret=None)
    assert request.method == "POST"
    assert request.url == "https://api.example.test/api/v1/job/create"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body or b"") == {
        "model": "shortapi/flux-1.0/text-to-image",
        "args": {
            "prompt": "a fox",
            "aspect_ratio": "16:9",
            "num_images": 4,
            "performance": "schnell",
        },
        "callback_url": "https://cb/x",
    }


def test_image_url_selects_image_to_image(api: ShortAPI) -> None:
    prepared = api.prepare(GenerationRequest(prompt="a bear", image_url="https://i/x.jpg"))
    request = api.build_create(prepared, callback_url=None, webhook_secret=None)
    body = json.loads(request.body or b"")
    assert body == {
        "model": "shortapi/flux-1.0/image-to-image",
        "args": {"prompt": "a bear", "image_url": "https://i/x.jpg", "aspect_ratio": "1:1"},
    }


def test_query_request(api: ShortAPI) -> None:
    request = api.build_query("6a2753bc6797e45ded9f3025")
    assert request.method == "GET" and request.body is None
    assert request.url == "https://api.example.test/api/v1/job/query?id=6a2753bc6797e45ded9f3025"
    assert request.headers == {"Authorization": f"Bearer {KEY}"}
    assert api.build_query("a/b&c").url.endswith("?id=a%2Fb%26c")


@pytest.mark.parametrize(
    ("width", "height", "ratio"),
    [(1024, 1024, "1:1"), (1344, 768, "16:9"), (768, 1024, "3:4"), (2100, 900, "21:9")],
)
def test_sizes_map_to_exact_aspect_ratios(
    api: ShortAPI, width: int, height: int, ratio: str
) -> None:
    prepared = api.prepare(GenerationRequest(prompt="p", width=width, height=height))
    assert prepared.args["aspect_ratio"] == ratio


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"num_images": 3}, "num_images"),
        ({"num_images": 16}, "num_images"),
        ({"num_images": True}, "num_images"),
        ({"aspect_ratio": "5:4"}, "aspect_ratio"),
        ({"aspect_ratio": "16x9"}, "aspect_ratio"),
        ({"model": "pro"}, "model"),
        ({"extra": {"performance": "turbo"}}, "extra['performance']"),
        ({"extra": {"negative_prompt": "x"}}, "extra['negative_prompt']"),
        ({"image_url": "ftp://x/y.png"}, "image_url"),
        ({"image_url": "not a url"}, "image_url"),
        ({"image_url": "data:image/png;base64,AAAA"}, "image_url"),
        ({"seed": 5}, "seed"),
        ({"steps": 20}, "steps"),
        ({"guidance": 3.5}, "guidance"),
        ({"strength": 0.5}, "strength"),
        ({"width": 1000, "height": 700}, "width/height"),
        ({"width": 1024}, "height"),
        ({"model": "shortapi/flux-1.0/image-to-image"}, "image_url"),
        ({"model": "shortapi/flux-1.0/text-to-image", "image_url": "https://i/x"}, "model"),
    ],
)
def test_validation_names_the_field(api: ShortAPI, params: dict[str, Any], field: str) -> None:
    request = GenerationRequest(**{"prompt": "p", **params})
    with pytest.raises(ValidationError) as info:
        api.prepare(request)
    assert info.value.field == field
    assert info.value.provider == "shortapi"
    assert field in str(info.value) and "allowed" in str(info.value)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
@pytest.mark.parametrize("ratio", ["1:1", "9:16", "16:9", "4:3", "3:4", "3:2", "2:3", "21:9"])
def test_every_documented_value_is_accepted(api: ShortAPI, n: int, ratio: str) -> None:
    prepared = api.prepare(GenerationRequest(prompt="p", num_images=n, aspect_ratio=ratio))
    assert prepared.args["num_images"] == n and prepared.args["aspect_ratio"] == ratio


# -- decoding create responses ------------------------------------------------------------------


def test_create_response_from_the_docs(api: ShortAPI) -> None:
    accepted = api.parse_create(
        ok({"code": 0, "data": {"amount": "0.02", "job_id": "6a2753bc6797e45ded9f3025"}})
    )
    assert accepted.job_id == "6a2753bc6797e45ded9f3025"
    assert accepted.cost == Decimal("0.02")


@pytest.mark.parametrize(
    ("data", "cost"),
    [
        ({"amount": 0.002, "job_id": "j"}, Decimal("0.002")),
        ({"id": "j"}, None),  # data.id fallback (providers.md 1.3)
        ({"amount": "n/a", "job_id": "j"}, None),
    ],  # an unreadable charge never loses the job
)
def test_create_response_variants(
    api: ShortAPI, data: dict[str, Any], cost: Decimal | None
) -> None:
    accepted = api.parse_create(ok({"code": 0, "data": data}))
    assert accepted.job_id == "j" and accepted.cost == cost


@pytest.mark.parametrize(
    ("response", "kind", "phase"),
    [
        (ok({"code": 1, "info": "invalid model: x"}), BadRequestError, Phase.DEFINITIVE),
        (
            ok({"code": 3000, "message": "upstream unstable"}),
            ProviderUnavailableError,
            Phase.REFUSED,
        ),
        (
            ok({"code": 7, "info": "insufficient balance"}),
            InsufficientCreditsError,
            Phase.DEFINITIVE,
        ),
        (ok({"message": "slow down"}, 429, {"Retry-After": "3"}), RateLimitedError, Phase.REFUSED),
        (ok(b"<html>bad gateway</html>", 502), ProviderUnavailableError, Phase.AMBIGUOUS),
        (ok({"code": 0, "data": {}}), UnexpectedResponseError, Phase.AMBIGUOUS),
        (ok(b"{not json"), UnexpectedResponseError, Phase.AMBIGUOUS),
    ],
)
def test_create_errors(api: ShortAPI, response: HTTPResponse, kind: type, phase: Phase) -> None:
    with pytest.raises(kind) as info:
        api.parse_create(response)
    assert info.value.phase is phase
    assert info.value.operation == "create"
    assert KEY not in str(info.value)


def test_create_error_carries_the_provider_message(api: ShortAPI) -> None:
    with pytest.raises(BadRequestError) as info:
        api.parse_create(ok({"code": 1, "info": "invalid model: foo"}))
    assert info.value.provider_message == "invalid model: foo"
    assert info.value.code == 1
    assert "invalid model: foo" in str(info.value)
    with pytest.raises(RateLimitedError) as rate:
        api.parse_create(ok({}, 429, {"Retry-After": "4"}))
    assert rate.value.retry_after == 4.0


# -- decoding query responses ---------------------------------------------------------------------


def query(data: dict[str, Any]) -> HTTPResponse:
    return ok({"code": 0, "data": data})


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0, JobStatus.QUEUED),
        (1, JobStatus.RUNNING),
        (3, JobStatus.FAILED),
        (4, JobStatus.FAILED),
        (9, JobStatus.FAILED),
        ("1", JobStatus.RUNNING),
        ("pending", JobStatus.QUEUED),
        ("Processing", JobStatus.RUNNING),
        ("failed", JobStatus.FAILED),
    ],
)
def test_query_statuses(api: ShortAPI, status: Any, expected: JobStatus) -> None:
    assert api.parse_query(query({"status": status})).status is expected


@pytest.mark.parametrize("status", [2, "2", "succeeded", "completed", "success", "SUCCESS "])
def test_query_success_spellings(api: ShortAPI, status: Any) -> None:
    update = api.parse_query(
        query(
            {
                "status": status,
                "result": {"images": [{"url": "https://cdn/1.png"}, {"url": "https://cdn/2.png"}]},
            }
        )
    )
    assert update.status is JobStatus.SUCCEEDED
    assert [image.url for image in update.images] == ["https://cdn/1.png", "https://cdn/2.png"]


def test_refunded_means_failed_with_reason(api: ShortAPI) -> None:
    update = api.parse_query(query({"status": 1, "refunded": True, "error": {"message": "nsfw"}}))
    assert update.status is JobStatus.FAILED and update.error == "nsfw"
    assert api.parse_query(query({"status": 3, "error": "boom"})).error == "boom"


# A failed job "is also flagged with refunded: true" (providers.md 1.4): it costs 0, whatever
# amount it still carries. A succeeded job is paid whatever the flag says.
FAILED, SUCCEEDED, QUEUED = JobStatus.FAILED, JobStatus.SUCCEEDED, JobStatus.QUEUED
REFUNDS = [
    (b'{"code":0,"data":{"status":3,"refunded":true,"amount":"0.02"}}', FAILED, "0", True),
    (b'{"code":0,"data":{"status":1,"refunded":true,"amount":"0.02"}}', FAILED, "0", True),
    (b'{"code":0,"data":{"status":"refunded","amount":"0.002"}}', FAILED, "0", True),
    (b'{"code":0,"data":{"status":" Refunded ","amount":0.02}}', FAILED, "0", True),
    (b'{"code":0,"data":{"status":3,"amount":"0.02"}}', FAILED, "0.02", False),
    (b'{"code":0,"data":{"status":3,"refunded":false,"amount":"0.02"}}', FAILED, "0.02", False),
    (b'{"code":0,"data":{"status":3,"refunded":"yes","amount":"0.02"}}', FAILED, "0.02", False),
    (
        b'{"code":0,"data":{"status":2,"refunded":true,"amount":"0.02",'
        b'"result":{"images":[{"url":"https://r/1.png"}]}}}',
        SUCCEEDED,
        "0.02",
        False,
    ),
    (b'{"code":0,"data":{"status":0,"amount":"0.02"}}', QUEUED, "0.02", False),
]


@pytest.mark.parametrize(("raw", "status", "cost", "refunded"), REFUNDS)
def test_refunded_jobs_cost_nothing(
    api: ShortAPI, raw: bytes, status: JobStatus, cost: str, refunded: bool
) -> None:
    update = api.parse_query(ok(raw))
    assert (update.status, update.cost, update.refunded) == (status, Decimal(cost), refunded)
    callback = api.parse_callback(raw).update
    assert (callback.status, callback.cost, callback.refunded) == (status, Decimal(cost), refunded)


def test_a_refund_without_a_reason_says_refunded(api: ShortAPI) -> None:
    assert api.parse_query(query({"status": 3, "refunded": True})).error == "refunded"
    assert api.parse_query(query({"status": 3})).error == "generation failed"


def test_callback_url_is_hidden_in_error_payloads(api: ShortAPI) -> None:
    token_url = "https://me.example/flux/shortapi/tok-SECRET-123"
    body = {"code": 1, "info": "bad", "data": {"callback_url": token_url}}
    for response in (ok(body), ok(body, 400), ok(json.dumps(body).encode()[:-3])):
        with pytest.raises(Exception) as info:
            api.parse_query(response)
        assert "tok-SECRET-123" not in repr(info.value.payload)  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", [-1, "weird", None, 2.5, True, [2], {"s": 2}])
def test_unknown_status_is_a_typed_error_with_the_payload(api: ShortAPI, status: Any) -> None:
    with pytest.raises(UnknownStatusError) as info:
        api.parse_query(query({"status": status, "id": "j"}))
    assert info.value.phase is Phase.DEFINITIVE
    assert info.value.payload == {"code": 0, "data": {"status": status, "id": "j"}}


@pytest.mark.parametrize(
    "response",
    [
        ok({"code": 0, "data": {"status": 2, "result": {"images": []}}}),
        ok({"code": 0, "data": {"status": 2}}),
        ok({"code": 0}),
        ok(b"[]"),
        ok({"code": 0, "data": "nope"}),
    ],
)
def test_unusable_query_answers_are_typed(api: ShortAPI, response: HTTPResponse) -> None:
    with pytest.raises(UnexpectedResponseError):
        api.parse_query(response)


def test_query_nonzero_code(api: ShortAPI) -> None:
    with pytest.raises(BadRequestError, match="job not found"):
        api.parse_query(ok({"code": 1, "info": "job not found"}))


# -- callbacks (body undocumented: providers.md 1.6) -------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {
            "code": 0,
            "data": {
                "job_id": "j1",
                "status": 2,
                "result": {"images": [{"url": "https://x/1.png"}]},
            },
        },
        {"job_id": "j1", "status": 2, "result": {"images": [{"url": "https://x/1.png"}]}},
        {"id": "j1", "data": {"status": 2, "result": {"images": [{"url": "https://x/1.png"}]}}},
    ],
)
def test_callback_shapes(api: ShortAPI, body: dict[str, Any]) -> None:
    callback = api.parse_callback(json.dumps(body).encode())
    assert callback.job_id == "j1"
    assert callback.update.status is JobStatus.SUCCEEDED


# -- callbacks: the one-decode path reads every body as the general path does ------------------

_IMAGES = {"images": [{"url": "https://x/1.png"}]}
_CALLBACK_BODIES = st.sampled_from(
    [
        {"code": 0, "data": {"job_id": "j1", "status": 2, "result": _IMAGES, "amount": 0.02}},
        {"code": 0, "data": {"status": 3, "error": "nsfw", "refunded": True}, "job_id": "j1"},
        {"job_id": "j1", "status": "succeeded", "result": _IMAGES, "seed": 7},
        {"id": "j1", "data": {"status": 1, "amount": "0.01"}},
    ]
)


def _general_parse_callback(api: ShortAPI, body: bytes) -> CallbackUpdate:
    """The way every callback was read before the typed fast path (the reference)."""
    raw = decode_json(body)
    if not isinstance(raw, dict):
        raise ValueError("callback body is not a JSON object")
    inner = raw.get("data") if isinstance(raw.get("data"), dict) else raw
    data = convert(inner, _QueryData)
    job_id = None
    for candidate in (data.job_id, data.id, raw.get("job_id"), raw.get("id")):
        if isinstance(candidate, str) and candidate:
            job_id = candidate
            break
    update = api._update(data, HTTPResponse(200, {}, body))
    return CallbackUpdate(job_id=job_id, update=update)


def _outcome(parse: Any, api: ShortAPI, body: bytes) -> Any:
    try:
        return parse(api, body)
    except Exception as exc:  # the same refusal, with the same words and payload
        payload = getattr(exc, "payload", None)
        return type(exc), str(exc), payload


def _same_reading(api: ShortAPI, body: bytes) -> None:
    fast = _outcome(ShortAPI.parse_callback, api, body)
    assert fast == _outcome(_general_parse_callback, api, body)


@FUZZ
@given(document=spoiled(_CALLBACK_BODIES) | JSON_VALUES)
def test_callbacks_read_in_one_decode_as_the_general_path_reads_them(document: Any) -> None:
    api = ShortAPI(KEY, base_url="https://api.example.test/")
    _same_reading(api, json.dumps(document).encode())


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": "x", "data": {"job_id": "j1", "status": 2, "result": {"images": []}}}',
        b'{"data": {"status": 2, "result": {"images": [{"url": "https://x/1.png"}]}},'
        b' "data": null, "job_id": "j1"}',
        b'{"data": {"status": 2, "status": 9}, "job_id": 5, "job_id": "j2"}',
        b'{"data": {"status": 2}',
        b"[1, 2]",
        b"not json",
        b"",
        b"[" * 5000 + b"]" * 5000,
        b'{"data": ' * 3000 + b"1" + b"}" * 3000,
    ],
)
def test_odd_callback_bodies_read_as_the_general_path_reads_them(body: bytes) -> None:
    _same_reading(ShortAPI(KEY, base_url="https://api.example.test/"), body)
