"""Where each adapter takes an image inline, and that prepare accepts that form only there."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from flux_async import AIMLAPI, GenerationRequest, PiAPI, ShortAPI, ValidationError
from flux_async.providers._base import Provider

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
B64 = base64.b64encode(PNG).decode()
DATA_URL = f"data:image/png;base64,{B64}"


def request(image_url: str, **fields: Any) -> GenerationRequest:
    return GenerationRequest(prompt="a fox", image_url=image_url, **fields)


@pytest.mark.parametrize(
    ("provider", "fields", "form"),
    [
        (ShortAPI("k"), {}, None),
        (AIMLAPI("k"), {}, None),  # flux/dev/image-to-image: "The URL of the reference image"
        (AIMLAPI("k"), {"model": "flux/kontext-pro/image-to-image"}, None),
        (AIMLAPI("k"), {"model": "blackforestlabs/flux-2-edit"}, "data_url"),
        (AIMLAPI("k"), {"model": "blackforestlabs/flux-2-pro-edit"}, "data_url"),
        (AIMLAPI("k"), {"model": "blackforestlabs/flux-2-lora-edit"}, "data_url"),
        (PiAPI("k"), {}, None),  # img2img
        (PiAPI("k"), {"extra": {"task_type": "fill-inpaint"}}, None),
        (PiAPI("k"), {"extra": {"task_type": "kontext"}}, "base64"),
    ],
)
def test_inline_form_per_model(
    provider: Provider, fields: dict[str, Any], form: str | None
) -> None:
    assert provider.inline_image(request("photo.png", **fields)) == form


@pytest.mark.parametrize(
    ("provider", "fields", "value", "wire"),
    [
        (
            AIMLAPI("k"),
            {"model": "blackforestlabs/flux-2-edit"},
            DATA_URL,
            ("image_urls", [DATA_URL]),
        ),
        (PiAPI("k"), {"extra": {"task_type": "kontext"}}, B64, ("input", "image", B64)),
    ],
)
def test_prepare_carries_the_inline_form(
    provider: Provider, fields: dict[str, Any], value: str, wire: tuple[Any, ...]
) -> None:
    args = provider.prepare(request(value, **fields)).args
    *path, expected = wire
    for key in path:
        args = args[key]
    assert args == expected


@pytest.mark.parametrize(
    ("provider", "fields", "value"),
    [
        (ShortAPI("k"), {}, DATA_URL),
        (ShortAPI("k"), {}, B64),
        (AIMLAPI("k"), {}, DATA_URL),
        (AIMLAPI("k"), {"model": "blackforestlabs/flux-2-edit"}, B64),  # bare base64: not a uri
        (AIMLAPI("k"), {"model": "blackforestlabs/flux-2-edit"}, "data:text/plain;base64,QUJD"),
        (AIMLAPI("k"), {"model": "blackforestlabs/flux-2-edit"}, "data:image/png;base64,"),
        (PiAPI("k"), {}, B64),
        (PiAPI("k"), {"extra": {"task_type": "kontext"}}, DATA_URL),
        (PiAPI("k"), {"extra": {"task_type": "kontext"}}, "photo.png"),
    ],
)
def test_prepare_refuses_inline_forms_where_undocumented(
    provider: Provider, fields: dict[str, Any], value: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        provider.prepare(request(value, **fields))
    assert caught.value.field == "image_url"
    assert caught.value.allowed is not None and "URL" in caught.value.allowed
