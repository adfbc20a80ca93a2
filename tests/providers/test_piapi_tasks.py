"""PiAPI task types: what each takes, the model it runs on and the errors that name the field
(providers.md 3.2, 3.3)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from flux_async import (
    GenerationRequest,
    ValidationError,
)
from flux_async.providers.piapi import ASPECT_RATIO_SIZES, MAX_PIXELS, PiAPI

from .piapi_examples import (
    BASE,
    KEY,
)


@pytest.fixture
def api() -> PiAPI:
    return PiAPI(KEY, base_url=BASE + "/")


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
