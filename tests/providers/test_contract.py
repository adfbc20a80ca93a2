"""What every adapter promises, checked once for the three providers (bytes in, objects out)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flux_async import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    GenerationRequest,
    InsufficientCreditsError,
    Phase,
    ProviderUnavailableError,
    RateLimitedError,
    ValidationError,
)
from flux_async.providers import AIMLAPI, PiAPI, Provider, ShortAPI
from flux_async.providers._base import HTTPResponse

KEY = "contract-secret-key-123"
PROVIDERS: list[type[Provider]] = [ShortAPI, PiAPI, AIMLAPI]
# Where each provider expects its key (providers.md 1.1, 2.1, 3.1).
AUTH = {
    ShortAPI: ("Authorization", f"Bearer {KEY}"),
    PiAPI: ("X-API-Key", KEY),
    AIMLAPI: ("Authorization", f"Bearer {KEY}"),
}
by_name = pytest.mark.parametrize("kind", PROVIDERS, ids=lambda kind: kind.name)


@by_name
def test_key_from_environment_and_never_shown(
    kind: type[Provider], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(kind.env_var, KEY)
    api = kind()
    assert KEY not in repr(api) and KEY not in str(api)
    request = api.build_create(
        api.prepare(GenerationRequest(prompt="p")), callback_url=None, webhook_secret=None
    )
    header, value = AUTH[kind]
    assert request.headers[header] == value
    assert set(request.headers) & {"Authorization", "X-API-Key"} == {header}
    assert KEY not in repr(request)


@by_name
def test_missing_key_is_a_clear_error(
    kind: type[Provider], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(kind.env_var, raising=False)
    with pytest.raises(ConfigurationError, match=kind.env_var) as info:
        kind()
    assert info.value.provider == kind.name


@by_name
@pytest.mark.parametrize("key", ["", "   ", "abc\r\nX-Evil: 1"])
def test_unusable_keys_are_refused(kind: type[Provider], key: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        kind(key)
    assert "X-Evil" not in str(info.value)


@by_name
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"image_url": "ftp://x/y.png"}, "image_url"),
        ({"num_images": 99}, "num_images"),
        ({"aspect_ratio": "5:4"}, "aspect_ratio"),
        ({"model": "no-such-model"}, "model"),
        ({"extra": {"no_such_key": 1}}, "extra['no_such_key']"),
        ({"guidance": float("nan")}, "guidance"),
    ],
)
def test_validation_names_provider_field_value_and_allowed(
    kind: type[Provider], params: dict[str, Any], field: str
) -> None:
    api = kind(KEY)
    with pytest.raises(ValidationError) as info:
        api.prepare(GenerationRequest(**{"prompt": "p", **params}))
    error = info.value
    assert (error.provider, error.field) == (kind.name, field)
    assert error.allowed and error.allowed in str(error)
    assert str(error).startswith(f"{kind.name}: {field}=")
    assert isinstance(error, ValueError)


# (status, body) -> kind and phase. The bodies are each provider's documented error shape
# (providers.md 1.5, 2.4, 3.7); the status decides, whatever the body says.
ERRORS = [
    (401, AuthenticationError, Phase.DEFINITIVE),
    (403, InsufficientCreditsError, Phase.DEFINITIVE),
    (400, BadRequestError, Phase.DEFINITIVE),
    (429, RateLimitedError, Phase.REFUSED),
    (503, ProviderUnavailableError, Phase.REFUSED),
    (500, ProviderUnavailableError, Phase.AMBIGUOUS),
]
BODIES = {
    ShortAPI: lambda status: {"code": status, "info": "said so"},
    PiAPI: lambda status: {"code": status, "data": None, "message": "said so"},
    AIMLAPI: lambda status: {"message": "said so", "statusCode": str(status)},
}


@by_name
@pytest.mark.parametrize(("status", "error", "phase"), ERRORS)
def test_create_errors(kind: type[Provider], status: int, error: type, phase: Phase) -> None:
    api = kind(KEY)
    body = json.dumps(BODIES[kind](status)).encode()
    with pytest.raises(error) as info:
        api.parse_create(HTTPResponse(status, {"Retry-After": "3"}, body))
    assert info.value.phase is phase
    assert info.value.provider == kind.name and info.value.status == status
    assert info.value.provider_message == "said so"
    assert info.value.retry_after == (3.0 if status in (429, 503) else None)
    assert KEY not in repr(info.value)


@by_name
def test_result_hosts_are_host_names(kind: type[Provider]) -> None:
    for host in kind.result_hosts:
        assert host and "/" not in host and host == host.lower()


# Image sizes come from what the provider reports (ShortAPI's result.images[] and AI/ML API's
# fal-style images[] carry width/height; PiAPI's output does not); a size of the wrong type
# is unknown, never a guess.
SIZED = [
    (
        ShortAPI,
        "query",
        {
            "code": 0,
            "data": {
                "status": 2,
                "result": {"images": [{"url": "https://r/1.png", "width": 1344, "height": 768}]},
            },
        },
        (1344, 768),
    ),
    (
        ShortAPI,
        "query",
        {
            "code": 0,
            "data": {
                "status": 2,
                "result": {"images": [{"url": "https://r/1.png", "width": "1344", "height": True}]},
            },
        },
        (None, None),
    ),
    (
        AIMLAPI,
        "create",
        {"images": [{"url": "https://r/1.png", "width": 1024, "height": 768}]},
        (1024, 768),
    ),
    (AIMLAPI, "create", {"data": [{"url": "https://r/1.png"}]}, (None, None)),
    (
        PiAPI,
        "query",
        {
            "code": 200,
            "data": {
                "task_id": "t",
                "status": "completed",
                "output": {"image_url": "https://r/1.png"},
            },
        },
        (None, None),
    ),
]


@pytest.mark.parametrize(("kind", "operation", "body", "size"), SIZED)
def test_image_sizes_are_what_the_provider_reports(
    kind: type[Provider], operation: str, body: Any, size: tuple[Any, Any]
) -> None:
    api = kind(KEY)
    response = HTTPResponse(200, {}, json.dumps(body).encode())
    if operation == "query":
        update = api.parse_query(response)
    else:
        accepted = api.parse_create(response)
        assert accepted.update is not None
        update = accepted.update
    (image,) = update.images
    assert (image.width, image.height) == size


@pytest.mark.parametrize("kind", [ShortAPI, AIMLAPI])
def test_providers_without_a_documented_cancel_build_none(kind: type[Provider]) -> None:
    provider = kind(api_key="k")
    assert provider.build_cancel("abc") is None
    assert provider.build_history(start_time=0, end_time=1) is None
