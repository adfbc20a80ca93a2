"""Image inputs: a local file, raw bytes or a ``data:`` URL given as ``image_url``.

Before anything is sent (or paid for) the image is read without blocking the event loop,
size-checked against `Limits.max_upload_bytes` and recognised as PNG, JPEG, WebP or GIF from
its first bytes. It then goes inline where the provider documents an inline form for the
model, else to the client's ``uploader`` (an async callable that stores the bytes and
returns an http(s) URL); with neither, a `ValidationError` says how to fix it.

Provider facts this relies on (for providers.md's notes):

- ShortAPI, ``shortapi/flux-1.0/image-to-image``: ``args.image_url`` is "(`string`,
  _required_): The URL of the image to use for image-to-image generation or image
  editing" (/work/shared/seeds/000_d10cfe67845e832c.txt, the model's llms.txt, S1). No
  inline form is documented; data URLs in ``args.image`` appear only for other ShortAPI
  models in a third-party script (providers.md 1.2, [I]). So: URL only, uploader.
- AI/ML API, ``flux/dev/image-to-image``: ``image_url`` is "string · uri Required: The URL
  of the reference image." (/work/shared/seeds/003_5c7b5d7d19c497ed.txt; same field in
  002_35f115ed71811383.txt's OpenAPI). Kontext image-to-image: "a uri, or an array of up
  to 4 uris" (providers.md 2.2). No inline form: uploader.
- AI/ML API, ``blackforestlabs/flux-2-edit``, ``flux-2-pro-edit``, ``flux-2-lora-edit``:
  ``image_urls`` items are ``{"type": "string", "format": "uri"}`` with the description
  "List of URLs or local Base64 encoded images to edit." (aimlapi/api-docs OpenAPI
  ``docs/api-references/image-models/flux/flux-2-edit.json`` and ``flux-2-pro-edit.json``,
  providers.md 2.2 "array of 1-3 (URLs or base64)" [D]). A ``data:image/...;base64,`` URL
  is both a uri and base64, so that is the form sent.
- PiAPI, ``img2img`` (and the other image task types but kontext): ``input.image`` is
  "string required" with a URL in every example (/work/shared/seeds/004_1a09748b2bccaed4.txt,
  https://piapi.ai/docs/flux-api/image-to-image). No inline form: uploader.
- PiAPI, ``kontext`` (``Qubico/flux1-dev-advanced``): ``input.image`` is "url or base64
  string" (providers.md 3.3 [D], from PiAPI's apidog export of the Kontext spec; the
  rendered https://piapi.ai/docs/flux-api/kontext shows only "image string required").
  The bare base64 text (no ``data:`` prefix) is sent, as the words say.
- No provider documents a size limit for input images [U]; `Limits.max_upload_bytes`
  (10 MiB by default) is this library's own cap. An inline image makes the create body
  about 4/3 of the image's size.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import msgspec

from ._errors import ValidationError

if TYPE_CHECKING:
    from ._config import Limits
    from ._models import GenerationRequest
    from .providers._base import Provider

__all__ = [
    "IMAGE_TYPES",
    "UploadError",
    "Uploader",
    "image_url_text",
    "load_image",
    "resolve_image_input",
    "sniff_image_type",
]

Uploader = Callable[[bytes, str], Awaitable[str]]
"""``async def upload(data: bytes, content_type: str) -> str``: store an image, return its
http(s) URL (one the provider can fetch, e.g. a signed URL to your bucket)."""

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
_KINDS = "a PNG, JPEG, WebP or GIF image"
_FORMS = "an http(s) URL, a data: URL, a local image file path, or the image's bytes"
_PLACEHOLDER = "https://image.invalid/flux-async-placeholder.png"
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_WHITESPACE = re.compile(rb"\s+")


class UploadError(ValidationError):
    """The client's ``uploader`` failed or returned something other than an http(s) URL.

    Nothing was sent to the provider; ``__cause__`` holds the uploader's own exception.
    """


def sniff_image_type(data: bytes) -> str | None:
    """Return the content type of PNG, JPEG, WebP or GIF bytes, from their magic bytes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_url_text(provider: str, value: Any) -> Any:
    """Turn an ``image_url`` argument into the string `GenerationRequest` carries.

    ``None`` and strings are returned as they are; an ``os.PathLike`` becomes its path;
    bytes become a ``data:`` URL (checked to be an image). Anything else is returned
    unchanged for the request's own type check to refuse.

    Raises:
        ValidationError: bytes that are not a PNG, JPEG, WebP or GIF image.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
        return path if isinstance(path, str) else os.fsdecode(path)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        content_type = _image_type(provider, data, f"<{len(data)} bytes>")
        return _data_url(content_type, data)
    return value


async def load_image(value: Any, *, provider: str, max_bytes: int) -> tuple[bytes, str]:
    """Return the bytes and content type of a local image: a path, bytes or a data: URL.

    A file is read in a worker thread, and never more than ``max_bytes + 1`` of it.

    Raises:
        ValidationError: naming ``image_url``: the file is missing, a directory or not
            readable, the data is bigger than ``max_bytes`` or not an image.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        shown = f"<{len(data)} bytes>"
        _check_size(provider, len(data), max_bytes, shown)
    elif isinstance(value, os.PathLike):
        return await load_image(
            image_url_text(provider, value), provider=provider, max_bytes=max_bytes
        )
    elif isinstance(value, str):
        if value[:5].lower() == "data:":
            shown = _short(value)
            data = _decode_data_url(provider, value, max_bytes)
        elif _URL_SCHEME.match(value):
            raise _invalid(provider, value, f"{_FORMS}; {value.split(':', 1)[0]}: URLs are not")
        elif not value.strip():
            raise _invalid(provider, value, _FORMS)
        else:
            shown = repr(value)
            data = await _read_file(provider, value, max_bytes)
    else:
        raise _invalid(provider, value, _FORMS)
    return data, _image_type(provider, data, shown)


async def resolve_image_input(
    request: GenerationRequest,
    provider: Provider,
    uploader: Uploader | None,
    limits: Limits,
) -> GenerationRequest:
    """Return ``request`` with a local ``image_url`` turned into what the provider takes.

    An http(s) URL (or no image) is returned as it is. A path, bytes or ``data:`` URL is
    checked (everything else in the request first, with the provider's own rules), then
    sent inline where the provider documents an inline form for the model, else given to
    ``uploader`` and replaced by the URL it returns.

    Raises:
        ValidationError: the request is invalid, the image is missing, too big or not an
            image, or it needs an uploader and there is none. Nothing was sent.
        UploadError: the uploader failed or did not return an http(s) URL.
    """
    value: Any = request.image_url
    if value is None or (isinstance(value, str) and _is_http_url(value)):
        return request
    name = provider.name
    shown = _describe(value)
    # The rest of the request first, with a stand-in URL: a model that takes no image, or
    # any other mistake, is reported before a file is read or anything is uploaded.
    try:
        provider.prepare(msgspec.structs.replace(request, image_url=_PLACEHOLDER))
    except ValidationError as exc:
        if _PLACEHOLDER not in exc.message:
            raise
        raise ValidationError(
            exc.message.replace(repr(_PLACEHOLDER), shown).replace(_PLACEHOLDER, shown),
            provider=exc.provider,
            field=exc.field,
            value=value,
            allowed=exc.allowed,
        ) from None
    form = provider.inline_image(request)
    if form is None and uploader is None:
        where = f" ({provider.inline_images})" if provider.inline_images else ""
        raise ValidationError(
            f"{name}: image_url={shown} is a local image, but {type(provider).__name__} takes "
            f"only URLs for this model{where}. Pass FluxClient(..., uploader=upload), where "
            "`async def upload(data: bytes, content_type: str) -> str` stores the image "
            "(e.g. in your bucket) and returns an http(s) URL the provider can fetch; or "
            "give image_url as an http(s) URL",
            provider=name,
            field="image_url",
            value=value,
            allowed="an http(s) URL (or a local image with uploader=...)",
        )
    data, content_type = await load_image(value, provider=name, max_bytes=limits.max_upload_bytes)
    if form == "data_url":
        text = _data_url(content_type, data)
    elif form == "base64":
        text = base64.b64encode(data).decode("ascii")
    else:
        assert uploader is not None
        text = await _upload(name, uploader, data, content_type, shown)
    return msgspec.structs.replace(request, image_url=text)


async def _upload(
    provider: str, uploader: Uploader, data: bytes, content_type: str, shown: str
) -> str:
    try:
        url = await uploader(data, content_type)
    except Exception as exc:
        raise UploadError(
            f"{provider}: the uploader failed for image_url={shown}: {type(exc).__name__}: {exc}",
            provider=provider,
            field="image_url",
            value=shown,
            allowed="an uploader that returns an http(s) URL",
        ) from exc
    if not isinstance(url, str) or not _is_http_url(url):
        raise UploadError(
            f"{provider}: the uploader returned {_short(url)} for image_url={shown}; "
            "allowed: an http(s) URL the provider can fetch",
            provider=provider,
            field="image_url",
            value=url,
            allowed="an http(s) URL",
        )
    return url


async def _read_file(provider: str, path: str, max_bytes: int) -> bytes:
    def read() -> bytes:
        full = os.path.expanduser(path)
        info = os.stat(full)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(info.st_mode):
            raise _invalid(provider, path, f"{_FORMS}; this path is not a regular file")
        _check_size(provider, info.st_size, max_bytes, repr(path))
        with open(full, "rb") as file:
            data = file.read(max_bytes + 1)
        _check_size(provider, len(data), max_bytes, repr(path))  # it grew meanwhile
        return data

    try:
        return await anyio.to_thread.run_sync(read)
    except FileNotFoundError:
        raise _invalid(provider, path, f"{_FORMS}; no file exists at this path") from None
    except IsADirectoryError:
        raise _invalid(provider, path, f"{_FORMS}; this path is a directory") from None
    except PermissionError:
        raise _invalid(provider, path, f"{_FORMS}; this file cannot be read") from None
    except OSError as exc:
        raise _invalid(
            provider, path, f"{_FORMS}; this file cannot be read ({exc.strerror})"
        ) from None


def _decode_data_url(provider: str, url: str, max_bytes: int) -> bytes:
    header, comma, payload = url[5:].partition(",")
    shown = _short(url)
    if not comma:
        raise _invalid(provider, url, "a data: URL of the form data:image/png;base64,<data>")
    if header.lower().endswith(";base64"):
        packed = _WHITESPACE.sub(b"", payload.encode("ascii", "replace"))
        # Checked before decoding: a huge data: URL is refused without copying it again.
        _check_size(provider, len(packed) // 4 * 3, max_bytes, shown)
        try:
            return base64.b64decode(packed, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(provider, url, "a data: URL whose data is valid base64") from None
    _check_size(provider, len(payload) // 3, max_bytes, shown)  # %XX: up to 3 chars a byte
    data = urllib.parse.unquote_to_bytes(payload)
    _check_size(provider, len(data), max_bytes, shown)
    return data


def _image_type(provider: str, data: bytes, shown: str) -> str:
    content_type = sniff_image_type(data)
    if content_type is None:
        raise ValidationError(
            f"{provider}: image_url={shown} is not {_KINDS} (it starts with "
            f"{data[:8]!r}); allowed: {_KINDS}",
            provider=provider,
            field="image_url",
            value=shown,
            allowed=_KINDS,
        )
    return content_type


def _check_size(provider: str, size: int, max_bytes: int, shown: str) -> None:
    if size > max_bytes:
        raise ValidationError(
            f"{provider}: image_url={shown} is {size} bytes; allowed: at most {max_bytes} "
            "bytes (Limits.max_upload_bytes)",
            provider=provider,
            field="image_url",
            value=shown,
            allowed=f"an image of at most {max_bytes} bytes",
        )


def _invalid(provider: str, value: Any, allowed: str) -> ValidationError:
    shown = _describe(value)
    return ValidationError(
        f"{provider}: image_url={shown} is not allowed; allowed: {allowed}",
        provider=provider,
        field="image_url",
        value=value if isinstance(value, str) and len(value) <= 300 else shown,
        allowed=allowed,
    )


def _data_url(content_type: str, data: bytes) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def _is_http_url(value: str) -> bool:
    parsed = urllib.parse.urlsplit(value)
    return parsed.scheme.lower() in ("http", "https") and bool(parsed.netloc)


def _describe(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, os.PathLike):
        return repr(os.fspath(value))
    return _short(value)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
