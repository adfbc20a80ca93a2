"""PiAPI adapter: requests built and responses decoded, from bytes (providers.md 3)."""

from __future__ import annotations

import copy
import json
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
    ProviderUnavailableError,
    RateLimitedError,
    UnexpectedResponseError,
    UnknownStatusError,
    ValidationError,
)
from flux_async.providers._base import CallbackUpdate, HTTPResponse, Update
from flux_async.providers.piapi import ASPECT_RATIO_SIZES, MAX_PIXELS, PiAPI

from .hostile import FUZZ, spoiled

KEY = "pi-secret-key-123"
SECRET = "whsec-do-not-leak-42"
BASE = "https://api.example.test"

# providers.md 3.3 / seed 004: the image-to-image request and response examples, verbatim.
IMG2IMG_REQUEST = {
    "model": "Qubico/flux1-schnell",
    "task_type": "img2img",
    "input": {"prompt": "a bear", "image": "https://i.ibb.co/J7ZNgSG/01.jpg"},
    "config": {"webhook_config": {"endpoint": "https://webhook.site/xxxx", "secret": ""}},
}
IMG2IMG_RESPONSE = {
    "code": 200,
    "data": {
        "task_id": "1631d053-2352-4add-95cc-360fc52d5f89",
        "model": "Qubico/flux1-schnell",
        "task_type": "img2img",
        "status": "pending",
        "config": {"webhook_config": {"endpoint": "https://webhook.site/xxxx", "secret": ""}},
        "input": {
            "prompt": "a bear",
            "negative_prompt": "",
            "image": "https://i.ibb.co/J7ZNgSG/01.jpg",
            "width": 0,
            "height": 0,
            "steps": 0,
        },
        "output": None,
        "meta": {
            "created_at": "2024-09-25T07:40:08.333962391Z",
            "started_at": "0001-01-01T00:00:00Z",
            "ended_at": "0001-01-01T00:00:00Z",
            "usage": {"type": "quota", "frozen": 0, "consume": 20000},
            "is_using_private_pool": False,
        },
        "detail": None,
        "logs": [],
        "error": {"code": 0, "raw_message": "", "message": "", "detail": None},
    },
    "message": "success",
}


@pytest.fixture
def api() -> PiAPI:
    return PiAPI(KEY, base_url=BASE + "/")


def respond(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> HTTPResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HTTPResponse(status, headers or {}, raw)


def task(**changes: Any) -> dict[str, Any]:
    """The documented task object, with the webhook secret set and ``changes`` applied."""
    data = copy.deepcopy(IMG2IMG_RESPONSE["data"])
    data["config"]["webhook_config"]["secret"] = SECRET
    data.update(changes)
    return data


def envelope(**changes: Any) -> HTTPResponse:
    return respond({"code": 200, "message": "success", "data": task(**changes)})


def done(output: Any) -> HTTPResponse:
    return envelope(status="completed", output=output)


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


@pytest.mark.parametrize(("ratio", "size"), sorted(ASPECT_RATIO_SIZES.items()))
def test_aspect_ratios_map_to_sizes_under_one_megapixel(
    api: PiAPI, ratio: str, size: tuple[int, int]
) -> None:
    width, height = size
    assert width * height <= MAX_PIXELS and width % 64 == 0 and height % 64 == 0
    wanted_w, wanted_h = map(int, ratio.split(":"))
    assert abs((width / height) / (wanted_w / wanted_h) - 1) < 0.04
    for task_type in ("txt2img", "kontext"):
        image = "https://i/x.png" if task_type == "kontext" else None
        prepared = api.prepare(
            GenerationRequest(
                prompt="p", aspect_ratio=ratio, image_url=image, extra={"task_type": task_type}
            )
        )
        assert (prepared.args["input"]["width"], prepared.args["input"]["height"]) == size


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (None, "Qubico/flux1-dev"),
        ("schnell", "Qubico/flux1-schnell"),
        ("dev", "Qubico/flux1-dev"),
        ("dev-advanced", "Qubico/flux1-dev-advanced"),
        ("Qubico/flux1-schnell", "Qubico/flux1-schnell"),
        ("Qubico/flux1-dev-advanced", "Qubico/flux1-dev-advanced"),
    ],
)
def test_models_and_aliases(api: PiAPI, model: str | None, expected: str) -> None:
    assert api.prepare(GenerationRequest(prompt="p", model=model)).model == expected


# The request bodies of "Flux with LoRA and Controlnet" and "Flux API with Redux Variation,
# Fill, Inpaint and Outpaint" (providers.md 3.3, S11), built from GenerationRequests.
ADVANCED_EXAMPLES: list[tuple[GenerationRequest, dict[str, Any]]] = [
    (
        GenerationRequest(
            prompt="spiderman",
            extra={
                "task_type": "controlnet-lora",
                "control_net_settings": [
                    {
                        "control_type": "depth",
                        "control_image": "https://example.com/control_image2.png",
                    }
                ],
                "lora_settings": [{"lora_type": "mjv6"}],
            },
        ),
        {
            "task_type": "controlnet-lora",
            "input": {
                "prompt": "spiderman",
                "control_net_settings": [
                    {
                        "control_type": "depth",
                        "control_image": "https://example.com/control_image2.png",
                    }
                ],
                "lora_settings": [{"lora_type": "mjv6"}],
            },
        },
    ),
    (
        GenerationRequest(
            prompt="a girl in blue and red skirt",
            image_url="https://i.ibb.co/TH7xMvd/girl-mask.png",
            extra={"task_type": "fill-inpaint"},
        ),
        {
            "task_type": "fill-inpaint",
            "input": {
                "prompt": "a girl in blue and red skirt",
                "image": "https://i.ibb.co/TH7xMvd/girl-mask.png",
            },
        },
    ),
    (
        GenerationRequest(
            prompt="a girl in a great grass sea",
            image_url="https://i.ibb.co/TH7xMvd/girl-mask.png",
            extra={
                "task_type": "fill-outpaint",
                "custom_settings": [
                    {
                        "setting_type": "outpaint",
                        "outpaint_left": 500,
                        "outpaint_right": 500,
                        "outpaint_top": 0,
                        "outpaint_bottom": 0,
                    }
                ],
            },
        ),
        {
            "task_type": "fill-outpaint",
            "input": {
                "prompt": "a girl in a great grass sea",
                "image": "https://i.ibb.co/TH7xMvd/girl-mask.png",
                "custom_settings": [
                    {
                        "setting_type": "outpaint",
                        "outpaint_left": 500,
                        "outpaint_right": 500,
                        "outpaint_top": 0,
                        "outpaint_bottom": 0,
                    }
                ],
            },
        },
    ),
    (
        GenerationRequest(
            prompt="a superman",
            image_url="https://i.ibb.co/TH7xMvd/girl-mask.png",
            extra={"task_type": "redux-variation"},
        ),
        {
            "task_type": "redux-variation",
            "input": {"prompt": "a superman", "image": "https://i.ibb.co/TH7xMvd/girl-mask.png"},
        },
    ),
    (
        GenerationRequest(
            prompt="furnish the room",
            image_url="https://r/empty-room.jpg",
            width=1024,
            height=1024,
            seed=-1,
            steps=28,
            extra={"task_type": "kontext"},
        ),
        {
            "task_type": "kontext",
            "input": {
                "prompt": "furnish the room",
                "image": "https://r/empty-room.jpg",
                "width": 1024,
                "height": 1024,
                "steps": 28,
                "seed": -1,
            },
        },
    ),
    (
        GenerationRequest(
            prompt="a cat",
            strength=0.7,
            image_url="https://i/x.png",
            extra={
                "task_type": "img2img-lora",
                "lora_settings": [
                    {"lora_type": "realism", "lora_image": "https://i/l.png", "lora_strength": 0.8}
                ],
            },
        ),
        {
            "task_type": "img2img-lora",
            "input": {
                "prompt": "a cat",
                "image": "https://i/x.png",
                "denoise": 0.7,
                "lora_settings": [
                    {"lora_type": "realism", "lora_image": "https://i/l.png", "lora_strength": 0.8}
                ],
            },
        },
    ),
    (
        GenerationRequest(
            prompt="a cat",
            width=512,
            height=512,
            extra={"task_type": "txt2img", "negative_prompt": ""},
        ),
        {
            "task_type": "txt2img",
            "input": {"prompt": "a cat", "width": 512, "height": 512, "negative_prompt": ""},
        },
    ),
]


@pytest.mark.parametrize(("request_", "args"), ADVANCED_EXAMPLES)
def test_advanced_task_types(api: PiAPI, request_: GenerationRequest, args: dict[str, Any]) -> None:
    prepared = api.prepare(request_)
    expected_model = (
        "Qubico/flux1-dev" if args["task_type"] == "txt2img" else "Qubico/flux1-dev-advanced"
    )
    assert prepared.model == expected_model
    assert prepared.args == args
    body = json.loads(
        api.build_create(prepared, callback_url=None, webhook_secret=None).body or b""
    )
    assert body == {"model": expected_model, **args}


# -- validation ----------------------------------------------------------------------------------


def lora(**item: Any) -> dict[str, Any]:
    return {"task_type": "txt2img-lora", "lora_settings": [item]}


def controlnet(*items: Any) -> dict[str, Any]:
    return {"task_type": "controlnet-lora", "control_net_settings": list(items)}


def outpaint(*items: Any) -> dict[str, Any]:
    return {"task_type": "fill-outpaint", "custom_settings": list(items)}


IMG = "https://i/x.png"
CONTROL = {"control_type": "canny", "control_image": "https://i/c.png"}

ACCEPTED: list[dict[str, Any]] = [
    {"guidance": 1.5},
    {"guidance": 5},
    {"guidance": 3},
    {"strength": 1.0, "image_url": IMG},
    {"strength": 0.001, "image_url": IMG},
    {"num_images": 1, "model": "schnell"},
    {"num_images": 4, "model": "schnell"},
    {"num_images": 4, "model": "schnell", "image_url": IMG},
    {"num_images": 1, "model": "dev"},
    {"steps": 1},
    {"steps": 10, "model": "schnell"},
    {"steps": 40, "model": "dev"},
    {"steps": 40, "model": "dev-advanced"},
    {"steps": 40, "image_url": IMG, "extra": {"task_type": "kontext"}},
    {"seed": -1},
    {"seed": 0},
    {"seed": 2**63 - 1},
    {"width": 1024, "height": 1024},
    {"width": 2048, "height": 512},
    {"width": 1, "height": 1},
    {"extra": {"service_mode": "public"}},
    {"extra": {"negative_prompt": "x"}},
    {"extra": lora(lora_type="anime")},
    {
        "extra": {
            **controlnet({**CONTROL, "control_strength": 0.5, "return_preprocessed_image": True}),
            "lora_settings": [],
        }
    },
    {"image_url": IMG, "extra": outpaint({"setting_type": "outpaint"})},
    {"image_url": IMG, "extra": {"task_type": "img2img"}},
    {"prompt": "x" * 10_000},
]


@pytest.mark.parametrize("params", ACCEPTED)
def test_accepted_at_the_boundary(api: PiAPI, params: dict[str, Any]) -> None:
    prepared = api.prepare(GenerationRequest(**{"prompt": "p", **params}))
    msgspec.json.encode(prepared.args)  # whatever was accepted can be sent


REJECTED: list[tuple[dict[str, Any], str]] = [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "  "}, "prompt"),
    ({"guidance": 1.49}, "guidance"),
    ({"guidance": 5.01}, "guidance"),
    ({"guidance": float("nan")}, "guidance"),
    ({"guidance": 3, "image_url": IMG, "extra": {"task_type": "kontext"}}, "guidance"),
    ({"strength": 0, "image_url": IMG}, "strength"),
    ({"strength": 1.01, "image_url": IMG}, "strength"),
    ({"strength": 0.5}, "strength"),
    ({"strength": 0.5, "image_url": IMG, "extra": {"task_type": "kontext"}}, "strength"),
    ({"num_images": 5, "model": "schnell"}, "num_images"),
    ({"num_images": 0, "model": "schnell"}, "num_images"),
    ({"num_images": 2}, "num_images"),
    ({"num_images": 2, "model": "dev-advanced"}, "num_images"),
    ({"num_images": True, "model": "schnell"}, "num_images"),
    ({"steps": 0}, "steps"),
    ({"steps": 11, "model": "schnell"}, "steps"),
    ({"steps": 41, "model": "dev"}, "steps"),
    ({"steps": 41, "model": "dev-advanced"}, "steps"),
    ({"steps": 41, "image_url": IMG, "extra": {"task_type": "kontext"}}, "steps"),
    ({"seed": -2}, "seed"),
    ({"seed": 2**63}, "seed"),
    ({"width": 1025, "height": 1024}, "width/height"),
    ({"width": 1024}, "height"),
    ({"height": 1024}, "width"),
    ({"width": 0, "height": 1024}, "width"),
    ({"width": 512, "height": 512, "image_url": IMG}, "width/height"),
    ({"width": 512, "height": 512, "extra": lora(lora_type="anime")}, "width/height"),
    ({"aspect_ratio": "16:9", "image_url": IMG}, "aspect_ratio"),
    ({"aspect_ratio": "5:4"}, "aspect_ratio"),
    ({"aspect_ratio": "16:9", "width": 1344, "height": 768}, "aspect_ratio"),
    ({"model": "Qubico/flux1-pro"}, "model"),
    ({"model": "schnell", "extra": lora(lora_type="anime")}, "model"),
    ({"model": "dev", "image_url": IMG, "extra": {"task_type": "kontext"}}, "model"),
    ({"extra": {"task_type": "inpaint"}}, "extra['task_type']"),
    ({"extra": {"task_type": "img2img"}}, "image_url"),
    ({"extra": {"task_type": "kontext"}}, "image_url"),
    ({"extra": {**lora(lora_type="anime"), "task_type": "img2img-lora"}}, "image_url"),
    ({"image_url": IMG, "extra": {"task_type": "txt2img"}}, "image_url"),
    ({"image_url": IMG, "extra": controlnet(CONTROL)}, "image_url"),
    ({"image_url": "ftp://x/y.png"}, "image_url"),
    ({"image_url": "data:image/png;base64,AAAA"}, "image_url"),
    ({"extra": {"foo": 1}}, "extra['foo']"),
    ({"extra": {"lora_settings": [{"lora_type": "anime"}]}}, "extra['lora_settings']"),
    ({"extra": {"service_mode": "shared"}}, "extra['service_mode']"),
    ({"extra": {"negative_prompt": 3}}, "extra['negative_prompt']"),
    (
        {"image_url": IMG, "extra": {"task_type": "kontext", "negative_prompt": "x"}},
        "extra['negative_prompt']",
    ),
    ({"extra": {"task_type": "txt2img-lora"}}, "extra['lora_settings']"),
    ({"extra": {"task_type": "txt2img-lora", "lora_settings": []}}, "extra['lora_settings']"),
    ({"extra": {"task_type": "txt2img-lora", "lora_settings": "mjv6"}}, "extra['lora_settings']"),
    (
        {
            "extra": {
                "task_type": "txt2img-lora",
                "lora_settings": [{"lora_type": "a"}, {"lora_type": "b"}],
            }
        },
        "extra['lora_settings']",
    ),
    (
        {"extra": {"task_type": "txt2img-lora", "lora_settings": ["mjv6"]}},
        "extra['lora_settings'][0]",
    ),
    ({"extra": lora(lora_image="https://i/l.png")}, "extra['lora_settings'][0]['lora_type']"),
    ({"extra": lora(lora_type="")}, "extra['lora_settings'][0]['lora_type']"),
    ({"extra": lora(lora_type="a", lora_image="nope")}, "extra['lora_settings'][0]['lora_image']"),
    (
        {"extra": lora(lora_type="a", lora_strength="high")},
        "extra['lora_settings'][0]['lora_strength']",
    ),
    ({"extra": lora(lora_type="a", weight=1)}, "extra['lora_settings'][0]['weight']"),
    ({"extra": {"task_type": "controlnet-lora"}}, "extra['control_net_settings']"),
    ({"extra": controlnet(CONTROL, CONTROL)}, "extra['control_net_settings']"),
    (
        {"extra": controlnet({"control_type": "depth"})},
        "extra['control_net_settings'][0]['control_image']",
    ),
    (
        {"extra": controlnet({"control_image": "https://i/c.png"})},
        "extra['control_net_settings'][0]['control_type']",
    ),
    (
        {"extra": controlnet({**CONTROL, "return_preprocessed_image": "yes"})},
        "extra['control_net_settings'][0]['return_preprocessed_image']",
    ),
    (
        {"extra": {**controlnet(CONTROL), "lora_settings": [{"lora_type": "a"}] * 2}},
        "extra['lora_settings']",
    ),
    ({"image_url": IMG, "extra": {"task_type": "fill-outpaint"}}, "extra['custom_settings']"),
    (
        {"image_url": IMG, "extra": outpaint({"setting_type": "inpaint"})},
        "extra['custom_settings'][0]['setting_type']",
    ),
    (
        {"image_url": IMG, "extra": outpaint({"setting_type": "outpaint", "outpaint_left": -1})},
        "extra['custom_settings'][0]['outpaint_left']",
    ),
    (
        {"image_url": IMG, "extra": {"task_type": "fill-inpaint", "custom_settings": []}},
        "extra['custom_settings']",
    ),
]


@pytest.mark.parametrize(("params", "field"), REJECTED)
def test_validation_names_the_field(api: PiAPI, params: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        api.prepare(GenerationRequest(**{"prompt": "p", **params}))
    assert info.value.field == field
    assert info.value.provider == "piapi"
    assert field in str(info.value) and "allowed" in str(info.value)


def test_unknown_extra_lists_the_keys_of_the_task_type(api: PiAPI) -> None:
    with pytest.raises(ValidationError) as info:
        api.prepare(GenerationRequest(prompt="p", extra={**controlnet(CONTROL), "mask": 1}))
    assert info.value.allowed is not None
    for key in (
        "task_type",
        "service_mode",
        "negative_prompt",
        "lora_settings",
        "control_net_settings",
    ):
        assert key in info.value.allowed


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
