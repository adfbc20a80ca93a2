"""HTTP helpers every protocol module of the fake uses; no provider constants live here."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from aiohttp import web

__all__ = [
    "Refuse",
    "bearer_key",
    "decode_json",
    "is_http_url",
    "is_int",
    "is_number",
    "json_response",
    "reset_connection",
    "uuid_from",
]

Refuse = Callable[[int], web.Response]
"""Build a provider's error response for an HTTP status (401, 429, 500 or 503)."""


def json_response(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Encode a JSON response."""
    return web.Response(
        body=msgspec.json.encode(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def decode_json(raw: bytes) -> Any:
    """Decode a request body, returning None when it is not JSON."""
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None


def reset_connection(request: web.Request, *, hard: bool = True) -> web.Response:
    """Close the request's connection without answering.

    With ``hard``, linger 0 makes the kernel send a TCP RST, so the client sees
    "connection reset by peer"; otherwise an orderly FIN makes it see a disconnect.

    Returns:
        A placeholder response for the handler to return; aiohttp finds the transport
        closed and writes nothing.
    """
    transport = request.transport
    if transport is not None:
        if hard:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()
    return web.Response(status=499)


def bearer_key(request: web.Request) -> str | None:
    """Return the key of an ``Authorization: Bearer <key>`` header, if any."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return None
    return key


def uuid_from(rng: random.Random) -> str:
    """Draw a version-4 UUID string from a seeded RNG (the same seed gives the same ids)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def is_number(value: Any) -> bool:
    """Return whether a decoded JSON value is a number (JSON booleans are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    """Return whether a decoded JSON value is a whole number, such as 2 or 2.0."""
    return is_number(value) and float(value).is_integer()


def is_http_url(text: str) -> bool:
    """Return whether text is an absolute http(s) URL with a host."""
    try:
        parts = urllib.parse.urlsplit(text)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host)
