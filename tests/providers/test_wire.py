"""providers/_wire.py: the small readers every adapter shares, on odd input."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from flux_async import (
    AuthenticationError,
    BadRequestError,
    Image,
    InsufficientCreditsError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)
from flux_async.providers._wire import (
    REDACTED,
    WireImage,
    base64_image,
    decode_json,
    error_kind,
    failure_reason,
    images_from,
    int_code,
    payload_of,
    provider_message,
    shown,
    to_decimal,
)


def test_too_deep_json_is_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_json(b"[" * 100_000)


def test_payload_hides_keys_at_any_depth_and_keeps_the_rest() -> None:
    body = b'{"Secret": "s", "data": [{"endpoint": "https://x/tok"}, {"secret": ""}], "a": 1}'
    payload = payload_of(body, hide=("secret", "endpoint"))
    assert payload == {"Secret": REDACTED, "data": [{"endpoint": REDACTED}, {"secret": ""}], "a": 1}


def test_payload_of_undecodable_bytes_is_cut_and_scrubbed() -> None:
    body = b'<html>{"secret": "abc", "x": 1, "secret":"cut off by the end'
    assert payload_of(body, hide=("secret",)) == (
        b'<html>{"secret": "<redacted>", "x": 1, "secret":"<redacted>"'
    )
    assert payload_of(b"<" * 5000) == b"<" * 2048


@pytest.mark.parametrize(
    ("value", "amount"),
    [("0.02", Decimal("0.02")), (3, Decimal(3)), (True, None), ("n/a", None), ("inf", None)],
)
def test_to_decimal_never_raises(value: Any, amount: Decimal | None) -> None:
    assert to_decimal(value) == amount


@pytest.mark.parametrize(
    ("value", "code"),
    [(429, 429), (" 429 ", 429), (True, None), ("4e2", None), ("1" * 12, None), (None, None)],
)
def test_int_code(value: Any, code: int | None) -> None:
    assert int_code(value) == code


def test_provider_message_takes_the_first_non_empty_key() -> None:
    body = {"info": " ", "message": {"message": " said "}, "error": "later"}
    assert provider_message(body, "info", "message", "error") == "said"
    assert provider_message(["x"], "message") is None


@pytest.mark.parametrize(
    ("error", "keys", "reason"),
    [
        ({"message": "", "raw_message": " raw "}, ("message", "raw_message"), "raw"),
        ({"message": 5}, (), None),
        (" plain ", (), "plain"),
        ("", (), None),
        (7, (), None),
    ],
)
def test_failure_reason(error: Any, keys: tuple[str, ...], reason: str | None) -> None:
    assert failure_reason(error, *keys) == reason


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (401, None, AuthenticationError),
        (402, None, InsufficientCreditsError),
        (403, None, InsufficientCreditsError),
        (429, "insufficient quota", RateLimitedError),
        (500, None, ProviderUnavailableError),
        (400, None, BadRequestError),
        (400, "Insufficient balance", InsufficientCreditsError),
        (None, "no credit left", InsufficientCreditsError),
        (None, None, BadRequestError),
    ],
)
def test_error_kind(status: int | None, message: str | None, kind: type[ProviderError]) -> None:
    assert error_kind(status, message) is kind


def test_shown_cuts_long_values() -> None:
    assert shown("x" * 200, 20) == repr("x" * 200)[:17] + "..."
    assert shown(5) == "5"


def test_images_from_keeps_entries_with_a_url_and_drops_odd_sizes() -> None:
    images = images_from(
        [
            WireImage(url="https://x/a.png", width=64, height=True, content_type="image/png"),
            WireImage(url=" "),
            WireImage(url=5),
        ]
    )
    assert images == (Image(url="https://x/a.png", width=64, content_type="image/png"),)
    assert images_from(None) == ()


@pytest.mark.parametrize(
    ("encoded", "content_type"),
    [("iVBORw0KGgo", "image/png"), ("/9j/4AAQ", "image/jpeg"), ("UklGRg", "image/webp")],
)
def test_base64_image_reads_the_format_from_the_magic_bytes(
    encoded: str, content_type: str
) -> None:
    image = base64_image(f" {encoded} ")
    assert image.url == f"data:{content_type};base64,{encoded}"
    assert image.content_type == content_type
    assert base64_image("data:image/gif;base64,R0lG").url == "data:image/gif;base64,R0lG"
