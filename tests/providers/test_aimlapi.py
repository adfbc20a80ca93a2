"""AI/ML API adapter: requests built and responses decoded, from bytes (providers.md 2)."""

from __future__ import annotations

import ast
import json
import re
from decimal import Decimal
from typing import Any

import msgspec
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
    ValidationError,
)
from flux_async.providers._base import HTTPResponse
from flux_async.providers.aimlapi import AIMLAPI, ASPECT_RATIO_PRESETS, ASPECT_RATIOS, MODELS

from .hostile import FUZZ, spoiled

KEY = "aiml-secret-key-123"
BASE = "https://api.example.test"

# Seed 002/003 (flux/dev/image-to-image page): the Quick Example request, verbatim.
QUICK_EXAMPLE_REQUEST = {
    "prompt": "Add a bird to the foreground of the photo.",
    "model": "flux/dev/image-to-image",
    "image_url": "https://zovi0.github.io/public_misc/flux-dev-t-rex.png",
    "strength": 0.8,
}
# The same page's raw HTTP example (seed 003).
HTTP_EXAMPLE_REQUEST = {
    "model": "flux/dev/image-to-image",
    "guidance_scale": 1,
    "num_inference_steps": 1,
    "enable_safety_checker": True,
    "prompt": "text",
    "num_images": 1,
    "seed": 1,
    "image_url": "https://example.com",
    "strength": 0.95,
}
# The Quick Example's response as the page prints it (a Python repr), verbatim.
QUICK_EXAMPLE_RESPONSE = ast.literal_eval(
    "{'images': [{'url': 'https://cdn.aimlapi.com/eagle/files/lion/EyuGvQzlsBoVUB8qjV776.png', "
    "'width': 1024, 'height': 768, 'content_type': 'image/png'}], 'timings': {'inference': "
    "2.544010079000145}, 'seed': 2819715747, 'has_nsfw_concepts': [False], 'prompt': "
    "'Add a bird to the foreground of the photo.'}"
)
# The OpenAPI response schema's example (providers.md 2.3, flux-2 .json files).
SCHEMA_RESPONSE = {
    "data": [
        {
            "url": "https://cdn.aimlapi.com/generations/hedgehog/"
            "1749730923700-29fe35d2-4aef-4bc5-a911-6c39884d16a8.png",
            "b64_json": None,
        }
    ],
    "meta": {"usage": {"credits_used": 120000}},
}


@pytest.fixture
def api() -> AIMLAPI:
    return AIMLAPI(KEY, base_url=BASE + "/")


def respond(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> HTTPResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HTTPResponse(status, headers or {}, raw)


def body_of(api: AIMLAPI, **params: Any) -> dict[str, Any]:
    prepared = api.prepare(GenerationRequest(**{"prompt": "p", **params}))
    request = api.build_create(prepared, callback_url=None, webhook_secret=None)
    result: dict[str, Any] = json.loads(request.body or b"")
    return result


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


@pytest.mark.parametrize(
    ("params", "model"),
    [
        ({}, "flux/dev"),
        ({"image_url": "https://i/x.png"}, "flux/dev/image-to-image"),
        ({"model": "schnell"}, "flux/schnell"),
        ({"model": "dev"}, "flux/dev"),
        ({"model": "dev", "image_url": "https://i/x.png"}, "flux/dev/image-to-image"),
        *[({"model": model}, model) for model, takes in MODELS.items() if not takes.image],
    ],
)
def test_model_selection(api: AIMLAPI, params: dict[str, Any], model: str) -> None:
    assert body_of(api, **params)["model"] == model


@pytest.mark.parametrize(("ratio", "preset"), sorted(ASPECT_RATIO_PRESETS.items()))
def test_aspect_ratio_maps_to_an_image_size_preset(api: AIMLAPI, ratio: str, preset: str) -> None:
    for model, takes in MODELS.items():
        if takes.sizes is not None and not takes.image:
            assert body_of(api, model=model, aspect_ratio=ratio)["image_size"] == preset


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
@pytest.mark.parametrize(
    ("model", "image"),
    [
        ("flux-pro/v1.1-ultra", None),
        ("flux/kontext-pro/text-to-image", None),
        ("flux/kontext-max/image-to-image", "https://i/x.png"),
    ],
)
def test_aspect_ratio_passes_through_on_its_models(
    api: AIMLAPI, ratio: str, model: str, image: str | None
) -> None:
    body = body_of(api, model=model, aspect_ratio=ratio, image_url=image)
    assert body["aspect_ratio"] == ratio and "image_size" not in body


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"width": 1024, "height": 768}, {"width": 1024, "height": 768}),
        ({"extra": {"image_size": "square"}}, "square"),
        ({"extra": {"image_size": "landscape_4_3"}}, "landscape_4_3"),
        ({"extra": {"image_size": {"width": 512, "height": 1536}}}, {"width": 512, "height": 1536}),
    ],
)
def test_image_size(api: AIMLAPI, params: dict[str, Any], expected: Any) -> None:
    assert body_of(api, **params)["image_size"] == expected


def test_reference_images(api: AIMLAPI) -> None:
    urls = [f"https://i/{n}.png" for n in range(4)]
    kontext = "flux/kontext-pro/image-to-image"
    assert body_of(api, model=kontext, image_url=urls[0])["image_url"] == urls[0]
    assert (
        body_of(api, model=kontext, image_url=urls[0], extra={"image_urls": urls[1:]})["image_url"]
        == urls
    )
    assert body_of(api, model=kontext, extra={"image_urls": urls})["image_url"] == urls
    edit = "blackforestlabs/flux-2-edit"
    assert body_of(api, model=edit, image_url=urls[0])["image_urls"] == urls[:1]
    assert body_of(api, model=edit, extra={"image_urls": urls[:3]})["image_urls"] == urls[:3]


def test_flux2_extras(api: AIMLAPI) -> None:
    body = body_of(
        api,
        model="blackforestlabs/flux-2-lora",
        guidance=0,
        steps=4,
        extra={
            "output_format": "webp",
            "acceleration": "high",
            "enable_prompt_expansion": False,
            "loras": [{"path": "owner/repo", "scale": 4}, {"path": "https://l/x.safetensors"}],
        },
    )
    assert body == {
        "model": "blackforestlabs/flux-2-lora",
        "prompt": "p",
        "guidance_scale": 0,
        "num_inference_steps": 4,
        "output_format": "webp",
        "acceleration": "high",
        "enable_prompt_expansion": False,
        "loras": [{"path": "owner/repo", "scale": 4}, {"path": "https://l/x.safetensors"}],
    }


@pytest.mark.parametrize(("given_", "sent"), [(1, "1"), (6, "6"), ("2", "2"), ("6", "6")])
def test_safety_tolerance_is_sent_as_a_string(api: AIMLAPI, given_: Any, sent: str) -> None:
    body = body_of(api, model="flux-pro/v1.1", extra={"safety_tolerance": given_})
    assert body["safety_tolerance"] == sent


# -- validation ----------------------------------------------------------------------------------

IMG = "https://i/x.png"
I2I = "flux/dev/image-to-image"
ULTRA = "flux-pro/v1.1-ultra"
KONTEXT_I2I = "flux/kontext-max/image-to-image"
EDIT = "blackforestlabs/flux-2-pro-edit"

ACCEPTED: list[dict[str, Any]] = [
    {"prompt": "x" * 4000},
    {"num_images": 1},
    {"num_images": 4},
    {"seed": 1},
    {"seed": 2819715747},
    {"guidance": 1},
    {"guidance": 20},
    {"guidance": 0, "model": "blackforestlabs/flux-2"},
    {"steps": 1},
    {"steps": 50},
    {"steps": 4, "model": "blackforestlabs/flux-2-edit", "image_url": IMG},
    {"steps": 500, "model": "flux/schnell"},
    {"strength": 0, "image_url": IMG},
    {"strength": 1, "image_url": IMG},
    {"strength": 1, "image_url": IMG, "model": "flux/srpo/image-to-image"},
    {"width": 512, "height": 1536},
    {"width": 64, "height": 1536, "model": "flux/schnell"},
    {"width": 256, "height": 1440, "model": "flux-pro"},
    {"width": 2048, "height": 512, "model": "blackforestlabs/flux-2-max"},
    {"extra": {"enable_safety_checker": False}},
    {"model": ULTRA, "extra": {"raw": False, "output_format": "png", "safety_tolerance": 6}},
    {"model": "flux/srpo", "extra": {"sync_mode": True, "acceleration": "none"}},
    {"model": KONTEXT_I2I, "extra": {"image_urls": [IMG] * 4}},
    {"model": EDIT, "image_url": IMG, "extra": {"image_urls": [IMG] * 2}},
    {"model": "blackforestlabs/flux-2-lora", "extra": {"loras": []}},
]


@pytest.mark.parametrize("params", ACCEPTED)
def test_accepted_at_the_boundary(api: AIMLAPI, params: dict[str, Any]) -> None:
    prepared = api.prepare(GenerationRequest(**{"prompt": "p", **params}))
    msgspec.json.encode(prepared.args)  # whatever was accepted can be sent


REJECTED: list[tuple[dict[str, Any], str]] = [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "x" * 4001}, "prompt"),
    ({"num_images": 0}, "num_images"),
    ({"num_images": 5}, "num_images"),
    ({"num_images": 2.0}, "num_images"),
    ({"seed": 0}, "seed"),
    ({"seed": -1}, "seed"),
    ({"guidance": 0.99}, "guidance"),
    ({"guidance": 20.01}, "guidance"),
    ({"guidance": -0.01, "model": "blackforestlabs/flux-2"}, "guidance"),
    ({"guidance": 3, "model": "flux/schnell"}, "guidance"),
    ({"guidance": 3, "model": "flux-pro/v1.1"}, "guidance"),
    ({"guidance": 3, "model": "blackforestlabs/flux-2-pro"}, "guidance"),
    ({"steps": 0}, "steps"),
    ({"steps": 51}, "steps"),
    ({"steps": 3, "model": "blackforestlabs/flux-2"}, "steps"),
    ({"steps": 10, "model": ULTRA}, "steps"),
    ({"strength": 1.01, "image_url": IMG}, "strength"),
    ({"strength": -0.1, "image_url": IMG}, "strength"),
    ({"strength": 0.5}, "strength"),
    ({"strength": 0.5, "model": KONTEXT_I2I, "image_url": IMG}, "strength"),
    ({"width": 480, "height": 512}, "width"),
    ({"width": 512, "height": 1568}, "height"),
    ({"width": 1000, "height": 512}, "width"),
    ({"width": 32, "height": 64, "model": "flux/schnell"}, "width"),
    ({"width": 1472, "height": 256, "model": "flux-pro"}, "width"),
    ({"width": 2080, "height": 512, "model": "blackforestlabs/flux-2"}, "width"),
    ({"width": 1024}, "height"),
    ({"width": 1024, "height": 768, "model": ULTRA}, "width/height"),
    ({"width": 1024, "height": 768, "image_url": IMG}, "width/height"),
    ({"aspect_ratio": "16:9", "image_url": IMG}, "aspect_ratio"),
    ({"aspect_ratio": "21:9"}, "aspect_ratio"),
    ({"aspect_ratio": "5:4", "model": ULTRA}, "aspect_ratio"),
    ({"aspect_ratio": "16:9", "width": 1024, "height": 576}, "aspect_ratio"),
    ({"aspect_ratio": "16:9", "extra": {"image_size": "square"}}, "aspect_ratio"),
    ({"extra": {"image_size": "huge"}}, "extra['image_size']"),
    ({"extra": {"image_size": {"width": 1000, "height": 512}}}, "extra['image_size']['width']"),
    ({"extra": {"image_size": {"width": 512}}}, "extra['image_size']['height']"),
    ({"extra": {"image_size": {"w": 512, "h": 512}}}, "extra['image_size']"),
    ({"extra": {"image_size": "square"}, "model": ULTRA}, "extra['image_size']"),
    ({"model": "flux/pro"}, "model"),
    ({"model": "schnell", "image_url": IMG}, "image_url"),
    ({"model": "flux/dev", "image_url": IMG}, "image_url"),
    ({"model": I2I}, "image_url"),
    ({"model": KONTEXT_I2I}, "image_url"),
    ({"model": "blackforestlabs/flux-2-edit"}, "image_url"),
    ({"image_url": "ftp://x/y.png"}, "image_url"),
    (
        {"model": KONTEXT_I2I, "image_url": IMG, "extra": {"image_urls": [IMG] * 4}},
        "extra['image_urls']",
    ),
    ({"model": EDIT, "extra": {"image_urls": [IMG] * 4}}, "extra['image_urls']"),
    ({"model": EDIT, "extra": {"image_urls": []}}, "extra['image_urls']"),
    ({"model": EDIT, "extra": {"image_urls": IMG}}, "extra['image_urls']"),
    ({"model": EDIT, "extra": {"image_urls": [IMG, "nope"]}}, "extra['image_urls'][1]"),
    ({"image_url": IMG, "extra": {"image_urls": [IMG]}}, "extra['image_urls']"),
    ({"extra": {"negative_prompt": "x"}}, "extra['negative_prompt']"),
    ({"extra": {"safety_tolerance": "2"}}, "extra['safety_tolerance']"),
    (
        {"model": "flux-pro", "extra": {"enable_safety_checker": True}},
        "extra['enable_safety_checker']",
    ),
    ({"extra": {"enable_safety_checker": "yes"}}, "extra['enable_safety_checker']"),
    ({"model": "flux-pro", "extra": {"safety_tolerance": 7}}, "extra['safety_tolerance']"),
    ({"model": "flux-pro", "extra": {"safety_tolerance": "0"}}, "extra['safety_tolerance']"),
    ({"model": "flux-pro", "extra": {"safety_tolerance": True}}, "extra['safety_tolerance']"),
    ({"model": "flux-pro", "extra": {"output_format": "webp"}}, "extra['output_format']"),
    ({"extra": {"output_format": "png"}}, "extra['output_format']"),
    ({"model": ULTRA, "extra": {"raw": 1}}, "extra['raw']"),
    ({"model": "flux/srpo", "extra": {"acceleration": "max"}}, "extra['acceleration']"),
    ({"model": "flux/srpo", "extra": {"sync_mode": None}}, "extra['sync_mode']"),
    (
        {"model": "blackforestlabs/flux-2-pro", "extra": {"acceleration": "high"}},
        "extra['acceleration']",
    ),
    (
        {"model": "blackforestlabs/flux-2-lora", "extra": {"loras": [{"path": "a"}] * 4}},
        "extra['loras']",
    ),
    (
        {"model": "blackforestlabs/flux-2-lora", "extra": {"loras": [{"scale": 1}]}},
        "extra['loras'][0]['path']",
    ),
    (
        {"model": "blackforestlabs/flux-2-lora", "extra": {"loras": [{"path": "a", "scale": 4.1}]}},
        "extra['loras'][0]['scale']",
    ),
    (
        {"model": "blackforestlabs/flux-2-lora", "extra": {"loras": [{"path": "a", "w": 1}]}},
        "extra['loras'][0]['w']",
    ),
    ({"model": "blackforestlabs/flux-2-lora", "extra": {"loras": ["a"]}}, "extra['loras'][0]"),
    ({"model": "blackforestlabs/flux-2", "extra": {"loras": []}}, "extra['loras']"),
]


@pytest.mark.parametrize(("params", "field"), REJECTED)
def test_validation_names_the_field(api: AIMLAPI, params: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        api.prepare(GenerationRequest(**{"prompt": "p", **params}))
    assert info.value.field == field
    assert info.value.provider == "aimlapi"
    assert field in str(info.value) and "allowed" in str(info.value)


def test_unknown_extra_lists_the_keys_of_the_model(api: AIMLAPI) -> None:
    with pytest.raises(ValidationError) as info:
        api.prepare(GenerationRequest(prompt="p", model="flux/srpo", extra={"steps": 3}))
    assert info.value.allowed is not None
    for key in (
        "acceleration",
        "enable_safety_checker",
        "image_size",
        "output_format",
        "sync_mode",
    ):
        assert key in info.value.allowed


def test_unsupported_aspect_ratio_lists_the_presets(api: AIMLAPI) -> None:
    with pytest.raises(ValidationError) as info:
        api.prepare(GenerationRequest(prompt="p", aspect_ratio="3:2"))
    assert info.value.allowed is not None
    for ratio in ASPECT_RATIO_PRESETS:
        assert ratio in info.value.allowed


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
