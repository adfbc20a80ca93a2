"""The ``flux-async`` option types: argparse ``type=`` callables that convert an option's
text and check it, failing with a message that says what was wanted."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

__all__ = [
    "json_object",
    "latency",
    "money",
    "number_type",
    "per_second",
    "port",
    "positive_int",
    "rate",
    "seconds",
]


def number_type(
    convert: Callable[[str], Any], accept: Callable[[Any], bool], wanted: str
) -> Callable[[str], Any]:
    """Return an argparse type: ``convert`` the text, then check it with ``accept``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
            ok = accept(value)
        except (ValueError, ArithmeticError):  # Decimal raises InvalidOperation
            ok = False
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    return parse


positive_int = number_type(int, lambda v: v >= 1, "an integer >= 1")
port = number_type(int, lambda v: 0 <= v <= 65535, "a port number 0-65535")
money = number_type(Decimal, lambda v: v.is_finite() and v >= 0, "an amount >= 0 such as 2.50")
seconds = number_type(float, lambda v: v > 0 and math.isfinite(v), "a number of seconds > 0")
rate = number_type(float, lambda v: 0 <= v <= 1, "a rate from 0 to 1")
per_second = number_type(float, lambda v: v > 0 and math.isfinite(v), "a number per second > 0")


def latency(text: str) -> tuple[float, float]:
    """``SECONDS`` or ``LOW,HIGH`` (the fake's create-to-ready latency)."""
    try:
        parts = [float(part) for part in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not 0 <= parts[0] <= parts[1] or not math.isfinite(parts[1]):
        raise argparse.ArgumentTypeError(f"must be SECONDS or LOW,HIGH, got {text!r}")
    return parts[0], parts[1]


def json_object(text: str) -> dict[str, Any]:
    """A JSON object (``--extra``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object such as \'{"key": "value"}\'')
    return value
