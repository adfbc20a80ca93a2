"""providers/_validate.py: the checks and the `Takes` table mechanism, apart from any adapter."""

from __future__ import annotations

from typing import Any

import pytest

from flux_async import GenerationRequest, ValidationError
from flux_async.providers._validate import (
    Ints,
    Numbers,
    OneOf,
    Takes,
    check_extra_keys,
    check_image,
    check_int,
    check_number,
    check_objects,
    check_prompt,
    check_request,
    check_text,
    invalid,
)


def test_invalid_names_provider_field_value_and_allowed() -> None:
    error = invalid("p", "width", "x" * 200, "an integer")
    assert error.provider == "p" and error.field == "width" and error.allowed == "an integer"
    assert str(error).startswith("p: width='xxx")
    assert str(error).endswith("x... is not allowed; allowed: an integer")


@pytest.mark.parametrize("prompt", ["", "  ", None, 5])
def test_check_prompt_refuses_blank_and_non_strings(prompt: Any) -> None:
    with pytest.raises(ValidationError, match="a non-empty string"):
        check_prompt("p", prompt)
    with pytest.raises(ValidationError, match="at most 3 characters"):
        check_prompt("p", "four", max_length=3)


@pytest.mark.parametrize(
    ("value", "ok"),
    [(3, True), (0, False), (11, False), (True, False), (3.0, False), ("3", False)],
)
def test_check_int_bounds_and_type(value: Any, ok: bool) -> None:
    if ok:
        assert check_int("p", "n", value, 1, 10) == value
    else:
        with pytest.raises(ValidationError, match=r"allowed: an integer in \[1, 10\]"):
            check_int("p", "n", value, 1, 10)


def test_check_number_exclusive_low_and_finite() -> None:
    assert check_number("p", "d", 1, 0, 1, low_exclusive=True) == 1
    for value in (0, float("inf"), float("nan"), True):
        with pytest.raises(ValidationError, match=r"a number in \(0, 1\]"):
            check_number("p", "d", value, 0, 1, low_exclusive=True)


def test_check_image_forms() -> None:
    assert check_image("p", "image_url", "https://x/a.png", None) == "https://x/a.png"
    assert check_image("p", "image_url", "iVBORw0KGgo=", "base64") == "iVBORw0KGgo="
    url = "data:image/png;base64,iVBORw0KGgo="
    assert check_image("p", "image_url", url, "data_url") == url
    with pytest.raises(ValidationError, match="or base64 text"):
        check_image("p", "image_url", url, "base64")
    with pytest.raises(ValidationError, match=r"an http:// or https:// URL$"):
        check_image("p", "image_url", "ftp://x", None)


def test_check_objects_returns_each_object_with_its_path() -> None:
    value = [{"a": 1}, {"b": 2}]
    assert check_objects("p", "f", value, (1, 2), ("a", "b"), "{a?, b?}") == [
        ("f[0]", {"a": 1}),
        ("f[1]", {"b": 2}),
    ]


@pytest.mark.parametrize(
    ("value", "field", "allowed"),
    [
        ([], "f", "a list of 1 to 2 objects {a}"),
        ("x", "f", "a list of 1 to 2 objects {a}"),
        ([{"a": 1}, 3], "f[1]", "an object {a}"),
        ([{"a": 1, "z": 2}], "f[0]['z']", "a"),
    ],
)
def test_check_objects_refusals(value: Any, field: str, allowed: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_objects("p", "f", value, (1, 2), ("a",), "{a}")
    assert info.value.field == field and info.value.allowed == allowed


@pytest.mark.parametrize("value", ["", "  ", None, 3])
def test_check_text(value: Any) -> None:
    with pytest.raises(ValidationError, match="allowed: a name"):
        check_text("p", "f", value, "a name")
    assert check_text("p", "f", " x ", "a name") == " x "


def test_check_extra_keys_lists_what_is_allowed() -> None:
    check_extra_keys("p", {"a": 1}, ("a", "b"))
    with pytest.raises(ValidationError, match=r"allowed: a, b \(for m\)$") as info:
        check_extra_keys("p", {"z": 1}, ("a", "b"), " (for m)")
    assert info.value.field == "extra['z']"
    with pytest.raises(ValidationError, match="allowed: no extra keys"):
        check_extra_keys("p", {"z": 1}, ())


def test_check_request_maps_to_wire_names_and_refuses_what_a_row_lacks() -> None:
    takes = Takes(
        guidance=Numbers(1.0, 5.0, "guidance_scale"),
        steps=Ints(1, 10, "num_inference_steps"),
        num_images=OneOf((1,), None, "1 only"),
    )
    args: dict[str, Any] = {}
    request = GenerationRequest(prompt="p", guidance=2.0, steps=4, num_images=1)
    check_request("p", takes, request, args, refused=lambda field: f"no {field}")
    assert args == {"guidance_scale": 2.0, "num_inference_steps": 4}
    with pytest.raises(ValidationError, match=r"allowed: no seed$"):
        check_request(
            "p", takes, GenerationRequest(prompt="p", seed=1), {}, refused=lambda f: f"no {f}"
        )
    with pytest.raises(ValidationError, match=r"allowed: 1 only$"):
        check_request(
            "p", takes, GenerationRequest(prompt="p", num_images=2), {}, refused=lambda f: f
        )
