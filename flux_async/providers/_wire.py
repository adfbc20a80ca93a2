"""Reading provider answers: the small decoders every adapter shares.

Everything here is sans-IO and never raises on odd input except where it says so: a field of
the wrong type reads as absent, so one unreadable charge or size never loses a job.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import msgspec

from .._errors import (
    AuthenticationError,
    BadRequestError,
    InsufficientCreditsError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)
from .._models import Image

__all__ = [
    "REDACTED",
    "WireImage",
    "base64_image",
    "decode",
    "decode_json",
    "error_kind",
    "failure_reason",
    "images_from",
    "int_code",
    "is_int",
    "payload_of",
    "provider_message",
    "shown",
    "to_decimal",
]

T = TypeVar("T")

REDACTED = "<redacted>"
PAYLOAD_BYTES = 2048
"""An undecodable body is attached to errors cut to this many bytes."""
_CREDIT_WORDS = ("credit", "quota", "balance", "insufficient")


def decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """Decode ``body`` with a typed decoder; too-deep nesting is a `msgspec.DecodeError` too."""
    try:
        return decoder.decode(body)
    except RecursionError as exc:  # msgspec raises this for nesting deeper than ~1000
        raise msgspec.DecodeError("JSON nested too deeply") from exc


def decode_json(body: bytes) -> Any:
    """Decode JSON bytes into plain Python objects, or raise `msgspec.DecodeError`."""
    return decode(_json_decoder, body)


def convert(value: Any, kind: type[T]) -> T:
    """`msgspec.convert` a decoded value; too-deep nesting is a `msgspec.DecodeError` too."""
    try:
        return msgspec.convert(value, kind)
    except RecursionError as exc:
        raise msgspec.DecodeError("JSON nested too deeply") from exc


def payload_of(body: bytes, *, hide: Iterable[str] = ()) -> Any:
    """Return ``body`` for an error's ``payload``: decoded, else its first 2 KiB.

    Every value whose key is in ``hide`` (compared lower-cased, at any depth) is replaced by
    ``"<redacted>"``; in bytes that do not decode, ``"key": "value"`` pairs are cut the same
    way, a value cut off by the end of the body included.
    """
    keys = frozenset(key.lower() for key in hide)
    try:
        raw = decode_json(body)
    except msgspec.DecodeError:
        cut = body
        if keys:
            cut = _secret_pattern(keys).sub(rb'\1"' + REDACTED.encode() + rb'"', body)
        return cut[:PAYLOAD_BYTES]
    return _redacted(raw, keys) if keys else raw


def _secret_pattern(keys: frozenset[str]) -> re.Pattern[bytes]:
    names = b"|".join(re.escape(key.encode()) for key in sorted(keys))
    return re.compile(rb'(?i)("(?:' + names + rb')"\s*:\s*)"(?:[^"\\]|\\.)*"?')


def _redacted(root: Any, keys: frozenset[str]) -> Any:
    # Iterative: a decoded body may be nested deeper than Python's recursion limit allows.
    def copy(node: Any) -> Any:
        if isinstance(node, dict):
            return dict(node)
        if isinstance(node, list):
            return list(node)
        return node

    top = copy(root)
    stack = [top]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(items):
            if isinstance(key, str) and key.lower() in keys and value not in (None, ""):
                node[key] = REDACTED
            elif isinstance(value, (dict, list)):
                node[key] = child = copy(value)
                stack.append(child)
    return top


def to_decimal(value: Any) -> Decimal | None:
    """Read a charge given as a string or a number; ``None`` when absent or unreadable.

    A charge that cannot be read must never lose the job it belongs to, so this never raises.
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() else None


def is_int(value: Any) -> bool:
    """Whether ``value`` is an int (and not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def int_code(value: Any) -> int | None:
    """Read a code sent as an int or as a string of digits (``"429"``); else ``None``."""
    if is_int(value):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) < 10:
            return int(text)
    return None


def provider_message(body: Any, *keys: str) -> str | None:
    """Return the first non-empty string (or ``{message}``) among ``keys`` of ``body``."""
    if not isinstance(body, dict):
        return None
    for key in keys:
        value = body.get(key)
        if isinstance(value, dict):
            value = value.get("message")
        if isinstance(value, str) and value.strip():
            return value.strip()[:500]
    return None


def failure_reason(error: Any, *keys: str) -> str | None:
    """Read why a job failed: a string, or the first non-empty of ``keys`` of an object.

    ``keys`` defaults to ``message``. Empty strings mean "no error" (PiAPI sends them).
    """
    if isinstance(error, dict):
        for key in keys or ("message",):
            value = error.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()[:500]
        return None
    if isinstance(error, str):
        return error.strip()[:500] or None
    return None


def error_kind(status: int | None, message: str | None = None) -> type[ProviderError]:
    """Return the error type for an HTTP status (or an HTTP-shaped code) and the words said.

    A refusal that is not otherwise typed and speaks of credit, quota or balance is
    `InsufficientCreditsError`; the words are only consulted when ``message`` is given.
    """
    kind: type[ProviderError] = BadRequestError
    if status == 401:
        kind = AuthenticationError
    elif status in (402, 403):
        kind = InsufficientCreditsError
    elif status == 429:
        kind = RateLimitedError
    elif status is not None and status >= 500:
        kind = ProviderUnavailableError
    if kind is BadRequestError and message is not None:
        lowered = message.lower()
        if any(word in lowered for word in _CREDIT_WORDS):
            kind = InsufficientCreditsError
    return kind


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters with ``...``."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        return "<unprintable>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class WireImage(msgspec.Struct):
    """One entry of an ``images`` list: ``{url, width?, height?, content_type?}``."""

    url: Any = None
    width: Any = None
    height: Any = None
    content_type: Any = None


def images_from(images: Iterable[WireImage] | None) -> tuple[Image, ...]:
    """Return an `Image` per entry with a URL; a size or type of the wrong type is dropped."""
    return tuple(
        Image(
            url=image.url,
            width=image.width if is_int(image.width) else None,
            height=image.height if is_int(image.height) else None,
            content_type=image.content_type if isinstance(image.content_type, str) else None,
        )
        for image in images or ()
        if isinstance(image.url, str) and image.url.strip()
    )


def base64_image(encoded: str) -> Image:
    """Return an `Image` for inline base64 bytes, as a ``data:`` URL.

    Responses do not always say the format, so it is read from the first base64 characters
    of each format's magic bytes; PNG when unsure.
    """
    encoded = encoded.strip()
    if encoded.startswith("data:"):
        return Image(url=encoded)
    if encoded.startswith("/9j/"):
        content_type = "image/jpeg"
    elif encoded.startswith("UklGR"):
        content_type = "image/webp"
    else:
        content_type = "image/png"
    return Image(url=f"data:{content_type};base64,{encoded}", content_type=content_type)


_json_decoder = msgspec.json.Decoder()
