"""AI/ML API adapter: requests built and responses decoded, from bytes (providers.md 2)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_async import (
    AuthenticationError,
    BadRequestError,
    GenerationRequest,
    Image,
    InsufficientCreditsError,
    JobStatus,
    Phase,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    UnexpectedResponseError,
)
from flux_async.providers.aimlapi import AIMLAPI

from .aimlapi_examples import (
    BASE,
    HTTP_EXAMPLE_REQUEST,
    KEY,
    QUICK_EXAMPLE_REQUEST,
    QUICK_EXAMPLE_RESPONSE,
    SCHEMA_RESPONSE,
    body_of,
    respond,
)
from .hostile import FUZZ, spoiled


@pytest.fixture
def api() -> AIMLAPI:
    return AIMLAPI(KEY, base_url=BASE + "/")


# -- configuration ---------------------------------------------------------------------------


def test_synchronous_without_query_or_callbacks(api: AIMLAPI) -> None:
    assert AIMLAPI.name == "aimlapi" and AIMLAPI.default_base_url == "https://api.aimlapi.com"
    assert AIMLAPI.synchronous is True and AIMLAPI.supports_callbacks is False
    assert AIMLAPI.typical_latency > 0
    with pytest.raises(NotImplementedError):
        api.build_query("x")
    with pytest.raises(NotImplementedError):
        api.parse_query(respond({}))
    with pytest.raises(NotImplementedError):
        api.parse_callback(b"{}")


# -- building requests -----------------------------------------------------------------------


def test_the_documented_quick_example(api: AIMLAPI) -> None:
    prepared = api.prepare(
        GenerationRequest(
            prompt="Add a bird to the foreground of the photo.",
            image_url="https://zovi0.github.io/public_misc/flux-dev-t-rex.png",
            strength=0.8,
        )
    )
    # The callback arguments are ignored: AI/ML API has no webhooks for images (2.5).
    request = api.build_create(prepared, callback_url="https://cb/x", webhook_secret="s")
    assert request.method == "POST" and request.operation == "create"
    assert request.url == f"{BASE}/v1/images/generations"
    assert request.headers == {
        "Authorization": f"Bearer {KEY}",
        "Content-Type": "application/json",
    }
    assert json.loads(request.body or b"") == QUICK_EXAMPLE_REQUEST


def test_the_documented_http_example(api: AIMLAPI) -> None:
    assert (
        body_of(
            api,
            prompt="text",
            model="flux/dev/image-to-image",
            guidance=1,
            steps=1,
            num_images=1,
            seed=1,
            image_url="https://example.com",
            strength=0.95,
            extra={"enable_safety_checker": True},
        )
        == HTTP_EXAMPLE_REQUEST
    )


# -- success responses ---------------------------------------------------------------------------


def test_the_documented_fal_style_response(api: AIMLAPI) -> None:
    accepted = api.parse_create(respond(QUICK_EXAMPLE_RESPONSE))
    assert accepted.update is not None
    assert accepted.update.status is JobStatus.SUCCEEDED
    assert accepted.update.images == (
        Image(
            url="https://cdn.aimlapi.com/eagle/files/lion/EyuGvQzlsBoVUB8qjV776.png",
            width=1024,
            height=768,
            content_type="image/png",
        ),
    )
    assert accepted.update.seed == 2819715747
    assert accepted.cost is None and accepted.update.cost is None


def test_the_documented_schema_response(api: AIMLAPI) -> None:
    accepted = api.parse_create(respond(SCHEMA_RESPONSE))
    assert accepted.update is not None
    assert [image.url for image in accepted.update.images] == [SCHEMA_RESPONSE["data"][0]["url"]]
    assert accepted.cost == Decimal(120000) == accepted.update.cost
    assert accepted.update.seed is None


@pytest.mark.parametrize("status", [200, 201, 202])
def test_any_2xx_is_success(api: AIMLAPI, status: int) -> None:
    for body in (QUICK_EXAMPLE_RESPONSE, SCHEMA_RESPONSE):
        accepted = api.parse_create(respond(body, status))
        assert accepted.update is not None and accepted.update.status is JobStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("data", "urls"),
    [
        (
            [{"url": None, "b64_json": "iVBORw0KGgoAAAANSUhEUg"}],
            ["data:image/png;base64,iVBORw0KGgoAAAANSUhEUg"],
        ),
        ([{"b64_json": "/9j/4AAQSkZJRg"}], ["data:image/jpeg;base64,/9j/4AAQSkZJRg"]),
        ([{"b64_json": "UklGRiQAAABXRUJQ"}], ["data:image/webp;base64,UklGRiQAAABXRUJQ"]),
        (
            [{"url": "https://x/1.png", "b64_json": "iVBOR"}, {"b64_json": "iVBOR2"}],
            ["https://x/1.png", "data:image/png;base64,iVBOR2"],
        ),
        (
            [{"url": ""}, {"url": None, "b64_json": None}, {"url": "https://x/2.png"}],
            ["https://x/2.png"],
        ),
    ],
)
def test_data_shape_with_urls_and_b64_json(api: AIMLAPI, data: list[Any], urls: list[str]) -> None:
    accepted = api.parse_create(respond({"data": data}))
    assert accepted.update is not None
    assert [image.url for image in accepted.update.images] == urls
    for image in accepted.update.images:
        if image.url.startswith("data:"):
            assert image.content_type == image.url[5:].split(";")[0]


def test_images_win_over_data(api: AIMLAPI) -> None:
    accepted = api.parse_create(
        respond({"images": [{"url": "https://x/a.png"}], "data": [{"url": "https://x/b.png"}]})
    )
    assert accepted.update is not None
    assert [image.url for image in accepted.update.images] == ["https://x/a.png"]


@pytest.mark.parametrize(
    ("usage", "cost"),
    [
        ({"credits_used": 120000}, Decimal(120000)),
        ({"credits_used": "2.5", "usd_spent": 0.003}, Decimal("2.5")),
        ({"tokens_used": 120000}, Decimal(120000)),
        ({"usd_spent": 0.003}, None),
        ({"credits_used": "n/a"}, None),
        (None, None),
    ],
)
def test_usage_is_the_cost_in_credits(api: AIMLAPI, usage: Any, cost: Decimal | None) -> None:
    accepted = api.parse_create(respond({**SCHEMA_RESPONSE, "meta": {"usage": usage}}))
    assert accepted.cost == cost


@pytest.mark.parametrize(
    ("seed", "expected"), [(2819715747, 2819715747), (None, None), ("7", None), (True, None)]
)
def test_seed(api: AIMLAPI, seed: Any, expected: int | None) -> None:
    accepted = api.parse_create(respond({**QUICK_EXAMPLE_RESPONSE, "seed": seed}))
    assert accepted.update is not None and accepted.update.seed == expected


@pytest.mark.parametrize(
    ("headers", "body", "job_id"),
    [
        ({"x-request-id": "req-1"}, {"requestId": "body-1"}, "req-1"),
        ({"X-Request-ID": "req-2"}, {}, "req-2"),
        ({}, {"requestId": "body-3"}, "body-3"),
    ],
)
def test_job_id_from_the_request_id(
    api: AIMLAPI, headers: dict[str, str], body: dict[str, Any], job_id: str
) -> None:
    accepted = api.parse_create(respond({**SCHEMA_RESPONSE, **body}, headers=headers))
    assert accepted.job_id == job_id


def test_job_id_generated_when_none_is_given(api: AIMLAPI) -> None:
    first = api.parse_create(respond(SCHEMA_RESPONSE)).job_id
    second = api.parse_create(respond(SCHEMA_RESPONSE)).job_id
    assert re.fullmatch(r"aimlapi-[0-9a-f]{32}", first) and first != second


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"data": []},
        {"data": None, "meta": {"usage": {"credits_used": 1}}},
        {"images": []},
        {"images": [{"url": None}], "data": [{"url": None, "b64_json": None}]},
        {"message": "ok", "statusCode": 200},
    ],
)
def test_a_2xx_without_an_image_is_definitive(api: AIMLAPI, body: dict[str, Any]) -> None:
    with pytest.raises(UnexpectedResponseError) as info:
        api.parse_create(respond(body))
    assert info.value.phase is Phase.DEFINITIVE and info.value.operation == "create"


@pytest.mark.parametrize(
    "raw", [b"", b"{not json", b"[]", b'{"images": {"url": "x"}}', b'{"data": "x"}', b"[" * 5000]
)
def test_an_unreadable_2xx_is_ambiguous(api: AIMLAPI, raw: bytes) -> None:
    with pytest.raises(UnexpectedResponseError) as info:
        api.parse_create(respond(raw, 201))
    assert info.value.phase is Phase.AMBIGUOUS


# -- error responses ------------------------------------------------------------------------------


def error_body(status: int, message: str, code: Any) -> dict[str, Any]:
    return {
        "message": message,
        "path": "/v1/images/generations",
        "requestId": "5d1b3b0e-8a9b-4c3d-9e3f-1a2b3c4d5e6f",
        "statusCode": code,
        "timestamp": "2025-01-01T00:00:00.000Z",
    }


ERRORS = [
    (
        400,
        "Body validation error!\nInvalid enum value. Expected 'square_hd', received 'huge'",
        BadRequestError,
        Phase.DEFINITIVE,
    ),
    (401, "This request requires a valid API key", AuthenticationError, Phase.DEFINITIVE),
    (403, "You've run out of credits. Please top up", InsufficientCreditsError, Phase.DEFINITIVE),
    (404, "Not found", BadRequestError, Phase.DEFINITIVE),
    (429, "Too Many Requests", RateLimitedError, Phase.REFUSED),
    (500, "The model is under maintenance", ProviderUnavailableError, Phase.AMBIGUOUS),
    (502, "Bad gateway", ProviderUnavailableError, Phase.AMBIGUOUS),
    (503, "Service unavailable", ProviderUnavailableError, Phase.REFUSED),
    (504, "Generation timeout", ProviderUnavailableError, Phase.AMBIGUOUS),
]


@pytest.mark.parametrize("as_string", [True, False])
@pytest.mark.parametrize(("status", "message", "kind", "phase"), ERRORS)
def test_documented_errors(
    api: AIMLAPI, status: int, message: str, kind: type, phase: Phase, as_string: bool
) -> None:
    code = str(status) if as_string else status
    with pytest.raises(kind) as info:
        api.parse_create(respond(error_body(status, message, code), status))
    error = info.value
    assert error.phase is phase and error.status == status and error.operation == "create"
    assert error.code == status
    assert error.provider_message == message[:500]
    assert message.splitlines()[0] in str(error)
    assert error.payload["requestId"] == "5d1b3b0e-8a9b-4c3d-9e3f-1a2b3c4d5e6f"
    assert KEY not in str(error)


@pytest.mark.parametrize(("header", "wait"), [("7", 7.0), (None, None)])
def test_rate_limit_honours_retry_after(
    api: AIMLAPI, header: str | None, wait: float | None
) -> None:
    headers = {"Retry-After": header} if header else {}
    with pytest.raises(RateLimitedError) as info:
        api.parse_create(respond(error_body(429, "Too Many Requests", "429"), 429, headers))
    assert info.value.retry_after == wait


@pytest.mark.parametrize("raw", [b"<html>502</html>", b"", b"[" * 5000, b'{"statusCode": "x"}'])
def test_odd_error_bodies(api: AIMLAPI, raw: bytes) -> None:
    with pytest.raises(ProviderUnavailableError) as info:
        api.parse_create(respond(raw, 502))
    assert info.value.phase is Phase.AMBIGUOUS and info.value.code is None


# The two documented shapes, each field there, one to three of them spoiled.
RESPONSEISH = spoiled(
    st.just(
        {
            "images": [
                {"url": " https://x/a.png ", "width": 1024, "height": 768, "content_type": "x"}
            ],
            "data": [{"url": "https://x/c.png", "b64_json": "iVBORw0KGgo"}],
            "meta": {"usage": {"credits_used": 2, "tokens_used": 3}},
            "seed": 42,
            "requestId": "req-1",
            "message": "ok",
            "statusCode": "200",
        }
    )
)


STATUSES = st.sampled_from([200, 201]) | st.sampled_from([400, 401, 403, 429, 500, 503])
"""Half the answers are 2xx (the images are read), half errors (the error body is)."""


def _parse_or_refuse(raw: bytes, status: int) -> None:
    api = AIMLAPI(KEY, base_url=BASE)
    try:
        accepted = api.parse_create(respond(raw, status))
    except ProviderError as error:
        # The provider's own status and name are on the error, whatever the body was.
        assert error.provider == "aimlapi" and error.status == status
        return
    assert 200 <= status < 300 and accepted.update is not None and accepted.update.images


@FUZZ
@given(RESPONSEISH, STATUSES)
def test_hostile_responses_raise_only_provider_errors(body: Any, status: int) -> None:
    _parse_or_refuse(json.dumps(body).encode(), status)


@FUZZ
@given(st.binary(max_size=300), STATUSES)
def test_hostile_bytes_raise_only_provider_errors(raw: bytes, status: int) -> None:
    _parse_or_refuse(raw, status)
