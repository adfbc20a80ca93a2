"""AI/ML API models: which model a request picks, what each takes, how sizes map onto its
``image_size`` presets or ``aspect_ratio`` enum, and the errors that name the field
(providers.md 2.2)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from flux_async import (
    GenerationRequest,
    ValidationError,
)
from flux_async.providers.aimlapi import AIMLAPI, ASPECT_RATIO_PRESETS, ASPECT_RATIOS, MODELS

from .aimlapi_examples import (
    BASE,
    KEY,
    body_of,
)


@pytest.fixture
def api() -> AIMLAPI:
    return AIMLAPI(KEY, base_url=BASE + "/")


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
