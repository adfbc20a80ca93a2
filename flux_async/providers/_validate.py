"""Checking a request against what a provider documents, before anything is sent.

Each check raises `ValidationError` naming the provider, the field, the value and what is
allowed. What a model (or task type) takes is data: one `Takes` row per model, read by
`check_request`; the geometry of each provider (ratios, sizes, presets) stays in its adapter.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from .._errors import ValidationError
from .._models import GenerationRequest
from ._wire import shown

__all__ = [
    "Ints",
    "Numbers",
    "OneOf",
    "Takes",
    "check_bool",
    "check_choice",
    "check_extra_keys",
    "check_image",
    "check_int",
    "check_number",
    "check_objects",
    "check_prompt",
    "check_request",
    "check_text",
    "check_url",
    "invalid",
]


def invalid(provider: str, field: str, value: Any, allowed: str) -> ValidationError:
    """Return the error for ``field=value``, saying what is allowed instead."""
    return ValidationError(
        f"{provider}: {field}={shown(value)} is not allowed; allowed: {allowed}",
        provider=provider,
        field=field,
        value=value,
        allowed=allowed,
    )


def check_prompt(provider: str, prompt: Any, *, max_length: int | None = None) -> str:
    """Return ``prompt`` if it is a non-empty string of at most ``max_length`` characters."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid(provider, "prompt", prompt, "a non-empty string")
    if max_length is not None and len(prompt) > max_length:
        raise invalid(provider, "prompt", prompt, f"at most {max_length} characters")
    return prompt


def check_url(provider: str, field: str, value: Any) -> str:
    """Return ``value`` if it is an http(s) URL with a host."""
    if isinstance(value, str):
        parsed = urllib.parse.urlsplit(value)
        if parsed.scheme in ("http", "https") and parsed.netloc:
            return value
    raise invalid(provider, field, value, "an http:// or https:// URL")


_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_DATA_URL = re.compile(r"data:image/(?:png|jpeg|webp|gif);base64,")


def check_image(provider: str, field: str, value: Any, inline: str | None) -> str:
    """Return ``value`` if it is an http(s) URL or, with ``inline``, that inline form.

    Args:
        inline: ``"data_url"`` (``data:image/<png|jpeg|webp|gif>;base64,<base64>``),
            ``"base64"`` (bare base64 text) or ``None`` (URLs only).
    """
    if inline is None:
        return check_url(provider, field, value)
    if isinstance(value, str):
        parsed = urllib.parse.urlsplit(value)
        if parsed.scheme in ("http", "https") and parsed.netloc:
            return value
        if inline == "data_url":
            prefix = _DATA_URL.match(value)
            if prefix and value[prefix.end() :] and _BASE64.fullmatch(value, prefix.end()):
                return value
        elif inline == "base64" and value and _BASE64.fullmatch(value):
            return value
    form = "a data:image/...;base64 URL" if inline == "data_url" else "base64 text"
    raise invalid(provider, field, value, f"an http:// or https:// URL, or {form}")


def check_choice(provider: str, field: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices`` (a bool never is)."""
    options = tuple(choices)
    if isinstance(value, bool) or value not in options:
        raise invalid(provider, field, value, ", ".join(str(option) for option in options))
    return value


def check_bool(provider: str, field: str, value: Any) -> bool:
    """Return ``value`` if it is True or False."""
    if not isinstance(value, bool):
        raise invalid(provider, field, value, "True or False")
    return value


def check_int(
    provider: str, field: str, value: Any, low: int | None = None, high: int | None = None
) -> int:
    """Return ``value`` if it is an int (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(provider, field, value, _range_text("an integer", low, high))
    if (low is not None and value < low) or (high is not None and value > high):
        raise invalid(provider, field, value, _range_text("an integer", low, high))
    return value


def check_number(
    provider: str,
    field: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_exclusive: bool = False,
) -> float:
    """Return ``value`` if it is a finite number in ``[low, high]`` (``(low, high]``)."""
    allowed = _range_text("a number", low, high, low_exclusive)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(provider, field, value, allowed)
    too_low = low is not None and (value <= low if low_exclusive else value < low)
    too_high = high is not None and value > high
    if not math.isfinite(value) or too_low or too_high:
        raise invalid(provider, field, value, allowed)
    return value


def check_objects(
    provider: str,
    field: str,
    value: Any,
    count: tuple[int, int],
    keys: tuple[str, ...],
    shape: str,
) -> list[tuple[str, Mapping[Any, Any]]]:
    """Return each object of ``value`` with its field path (``field[index]``), if ``value`` is
    a list of ``count`` objects whose keys are all in ``keys``.

    The fields inside each object are the caller's to check.
    """
    low, high = count
    if low == high:
        many = f"exactly {low}"
    elif low == 0:
        many = f"at most {high}"
    else:
        many = f"{low} to {high}"
    if not isinstance(value, (list, tuple)) or not low <= len(value) <= high:
        raise invalid(provider, field, value, f"a list of {many} objects {shape}")
    objects = []
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(item, Mapping):
            raise invalid(provider, where, item, f"an object {shape}")
        for key in item:
            if key not in keys:
                raise invalid(provider, f"{where}[{key!r}]", item[key], ", ".join(keys))
        objects.append((where, item))
    return objects


def check_text(provider: str, field: str, value: Any, allowed: str) -> str:
    """Return ``value`` if it is a string with more than white space; ``allowed`` says what."""
    if not isinstance(value, str) or not value.strip():
        raise invalid(provider, field, value, allowed)
    return value


class Ints(NamedTuple):
    """An integer field: its bounds and the name it is sent under."""

    low: int | None
    high: int | None
    wire: str

    def check(self, provider: str, field: str, value: Any) -> Any:
        return check_int(provider, field, value, self.low, self.high)


class Numbers(NamedTuple):
    """A number field: its bounds and the name it is sent under."""

    low: float | None
    high: float | None
    wire: str
    low_exclusive: bool = False

    def check(self, provider: str, field: str, value: Any) -> Any:
        return check_number(
            provider, field, value, self.low, self.high, low_exclusive=self.low_exclusive
        )


class OneOf(NamedTuple):
    """A field with a list of values; ``wire=None`` checks it and sends nothing."""

    options: tuple[Any, ...]
    wire: str | None
    allowed: str | None = None
    """What the error says is allowed, when the plain list of options says too little."""

    def check(self, provider: str, field: str, value: Any) -> Any:
        if self.allowed is None:
            return check_choice(provider, field, value, self.options)
        if isinstance(value, bool) or value not in self.options:
            raise invalid(provider, field, value, self.allowed)
        return value


Rule = Ints | Numbers | OneOf

NUMBER_FIELDS = ("num_images", "seed", "guidance", "steps", "strength")
"""The `GenerationRequest` fields a `Takes` row rules on."""


class Takes(NamedTuple):
    """What one model (or task type) takes (the provider's documented input schema).

    A ``None`` rule means the field is refused; ``check_request`` asks the adapter how to
    say so. Images and sizes are data here, but their provider-specific geometry and wording
    stay in each adapter.
    """

    image: str | None = None
    """The wire field for reference images (``image_url``, ``image_urls``, ``image``), or
    ``None`` when the model takes no image. A model with one requires it."""
    max_images: int = 0
    sizes: tuple[int, int | None] | None = None
    """Bounds of a width or height; ``None`` when the model takes no size."""
    aspect_ratios: tuple[str, ...] = ()
    """The ``aspect_ratio`` values sent as they are (no size then)."""
    num_images: Rule | None = None
    seed: Rule | None = None
    guidance: Rule | None = None
    steps: Rule | None = None
    strength: Rule | None = None
    output_formats: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    """Keys taken through ``GenerationRequest.extra``, in the order errors list them."""


def check_request(
    provider: str,
    takes: Takes,
    request: GenerationRequest,
    args: dict[str, Any],
    *,
    fields: Iterable[str] = NUMBER_FIELDS,
    refused: Callable[[str], str],
) -> None:
    """Check ``fields`` of ``request`` against ``takes`` and put the accepted ones in ``args``.

    Args:
        fields: which `NUMBER_FIELDS` to check, in the order the provider reports them.
        refused: the "allowed" text for a field the row does not take.

    Raises:
        ValidationError: the first field given that the row refuses or whose value is out
            of its range.
    """
    for field in fields:
        value = getattr(request, field)
        if value is None:
            continue
        rule: Rule | None = getattr(takes, field)
        if rule is None:
            raise invalid(provider, field, value, refused(field))
        checked = rule.check(provider, field, value)
        if rule.wire is not None:
            args[rule.wire] = checked


def check_extra_keys(
    provider: str, extra: Mapping[str, Any], allowed: tuple[str, ...], note: str = ""
) -> None:
    """Refuse the first key of ``extra`` not in ``allowed``; ``note`` ends the allowed text."""
    for key, value in extra.items():
        if key not in allowed:
            listed = ", ".join(allowed) if allowed else "no extra keys"
            raise invalid(provider, f"extra[{key!r}]", value, f"{listed}{note}")


def _range_text(
    kind: str, low: float | None, high: float | None, low_exclusive: bool = False
) -> str:
    if low is not None and high is not None:
        return f"{kind} in {'(' if low_exclusive else '['}{low}, {high}]"
    if low is not None:
        return f"{kind} {'>' if low_exclusive else '>='} {low}"
    if high is not None:
        return f"{kind} <= {high}"
    return kind
