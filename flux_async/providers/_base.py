"""What every provider adapter is: sans-IO translation between requests and HTTP messages.

An adapter builds `HTTPRequest`s and decodes `HTTPResponse`s (bytes in, objects out). It
never opens a socket or sleeps; the client's transport does that.
"""

from __future__ import annotations

import abc
import math
import urllib.parse
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import msgspec

from .._config import Limits, env_api_key
from .._errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    InsufficientCreditsError,
    Phase,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    UnexpectedResponseError,
    ValidationError,
    phase_for_status,
)
from .._http import HTTPRequest, HTTPResponse, parse_retry_after
from .._models import GenerationRequest, Image, JobStatus

__all__ = [
    "Accepted",
    "CallbackUpdate",
    "HTTPRequest",
    "HTTPResponse",
    "Prepared",
    "Provider",
    "Update",
]


class Prepared(msgspec.Struct, frozen=True, kw_only=True):
    """A validated request: the model id and the provider's own argument mapping."""

    model: str
    args: dict[str, Any]


class Update(msgspec.Struct, frozen=True, kw_only=True):
    """What the provider says about a job now."""

    status: JobStatus
    images: tuple[Image, ...] = ()
    cost: Decimal | None = None
    error: str | None = None
    """The provider's own words on why the job failed."""
    seed: int | None = None


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    """The provider accepted a create: the job's id, its charge and, if known, its state."""

    job_id: str
    cost: Decimal | None = None
    update: Update | None = None


class CallbackUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """A decoded callback body: the job it names (when it names one) and its news."""

    job_id: str | None
    update: Update
    secret: str | None = None
    """The secret echoed inside the body, if any (never logged)."""

    def __repr__(self) -> str:
        shown = None if self.secret is None else "<hidden>"
        return f"CallbackUpdate(job_id={self.job_id!r}, update={self.update!r}, secret={shown})"


class Provider(abc.ABC):
    """A hosted FLUX API: its credentials, its endpoints and its wire format.

    Subclasses read their key from one environment variable when ``api_key`` is not given.
    The key is kept out of ``repr``, error messages and logs.
    """

    name: ClassVar[str]
    """Short lower-case name, used in callback paths and error messages."""
    env_var: ClassVar[str]
    default_base_url: ClassVar[str]
    typical_latency: ClassVar[float]
    """Seconds a job usually takes; the first poll comes about then."""
    synchronous: ClassVar[bool] = False
    """Whether the create response already carries the result (no polling)."""
    supports_callbacks: ClassVar[bool] = True
    callback_secret_header: ClassVar[str | None] = None
    """The header carrying a per-job secret on callbacks, when the provider sends one."""
    default_limits: ClassVar[Limits] = Limits()
    """Admission defaults for this provider (used when the client is given none)."""

    def __init__(self, api_key: str | None = None, *, base_url: str | None = None) -> None:
        key = api_key if api_key is not None else env_api_key(self.env_var)
        if not key or not key.strip():
            raise ConfigurationError(
                f"{type(self).__name__} needs an API key: pass api_key=... "
                f"or set the {self.env_var} environment variable",
                provider=self.name,
            )
        if any(ch in key for ch in "\r\n"):
            raise ConfigurationError("the API key contains a line break", provider=self.name)
        self._api_key = key.strip()
        base = (base_url or self.default_base_url).rstrip("/")
        parsed = urllib.parse.urlsplit(base)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigurationError(
                f"base_url must be an http(s) URL, got {base!r}", provider=self.name
            )
        self.base_url = base

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, api_key=<hidden>)"

    # -- the adapter contract -------------------------------------------------------------

    @abc.abstractmethod
    def prepare(self, request: GenerationRequest) -> Prepared:
        """Validate ``request`` against what the provider documents and map it.

        Raises:
            ValidationError: naming the field, the value and what is allowed.
        """

    @abc.abstractmethod
    def build_create(
        self, prepared: Prepared, *, callback_url: str | None, webhook_secret: str | None
    ) -> HTTPRequest:
        """Return the create request for a prepared job."""

    @abc.abstractmethod
    def parse_create(self, response: HTTPResponse) -> Accepted:
        """Decode a create response.

        Raises:
            ProviderError: with the phase that says whether resending is safe.
        """

    def estimate_cost(self, prepared: Prepared) -> Decimal | None:
        """Return what a job will likely cost, from a published price list; else ``None``."""
        return None

    def build_query(self, job_id: str) -> HTTPRequest:
        """Return the request that asks for a job's state."""
        raise NotImplementedError(f"{self.name} has no query endpoint")

    def parse_query(self, response: HTTPResponse) -> Update:
        """Decode a query response into an `Update`."""
        raise NotImplementedError(f"{self.name} has no query endpoint")

    def parse_callback(self, body: bytes) -> CallbackUpdate:
        """Decode a callback body (already authenticated by its URL token)."""
        raise NotImplementedError(f"{self.name} sends no callbacks")

    # -- helpers for subclasses -------------------------------------------------------------

    def _invalid(self, field: str, value: Any, allowed: str) -> ValidationError:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return ValidationError(
            f"{self.name}: {field}={shown} is not allowed; allowed: {allowed}",
            provider=self.name,
            field=field,
            value=value,
            allowed=allowed,
        )

    def _unsupported(self, field: str, value: Any, supported: Iterable[str]) -> ValidationError:
        return self._invalid(
            field, value, f"{self.name} does not take {field}; it takes {', '.join(supported)}"
        )

    def _check_prompt(self, prompt: Any, *, max_length: int | None = None) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise self._invalid("prompt", prompt, "a non-empty string")
        if max_length is not None and len(prompt) > max_length:
            raise self._invalid("prompt", prompt, f"at most {max_length} characters")
        return prompt

    def _check_url(self, field: str, value: Any) -> str:
        if isinstance(value, str):
            parsed = urllib.parse.urlsplit(value)
            if parsed.scheme in ("http", "https") and parsed.netloc:
                return value
        raise self._invalid(field, value, "an http:// or https:// URL")

    def _check_choice(self, field: str, value: Any, choices: Iterable[Any]) -> Any:
        options = tuple(choices)
        if isinstance(value, bool) or value not in options:
            raise self._invalid(field, value, ", ".join(str(option) for option in options))
        return value

    def _check_int(
        self, field: str, value: Any, low: int | None = None, high: int | None = None
    ) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._invalid(field, value, _range_text("an integer", low, high))
        if (low is not None and value < low) or (high is not None and value > high):
            raise self._invalid(field, value, _range_text("an integer", low, high))
        return value

    def _check_number(
        self,
        field: str,
        value: Any,
        low: float | None = None,
        high: float | None = None,
        *,
        low_exclusive: bool = False,
    ) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._invalid(field, value, _range_text("a number", low, high, low_exclusive))
        too_low = low is not None and (value <= low if low_exclusive else value < low)
        too_high = high is not None and value > high
        if not math.isfinite(value) or too_low or too_high:
            raise self._invalid(field, value, _range_text("a number", low, high, low_exclusive))
        return value

    def _error(
        self,
        response: HTTPResponse,
        operation: str,
        *,
        message: str | None,
        code: Any = None,
        payload: Any = None,
        phase: Phase | None = None,
        kind: type[ProviderError] | None = None,
    ) -> ProviderError:
        """Build the typed error for a non-success answer, with the provider's words."""
        status = response.status
        if kind is None:
            kind = _kind_for_status(status)
        if phase is None:
            phase = phase_for_status(status) if status >= 300 else Phase.DEFINITIVE
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        said = f": {message}" if message else ""
        return kind(
            f"{self.name} {operation} failed (HTTP {status}"
            f"{f', code {code!r}' if code is not None else ''}){said}",
            provider=self.name,
            phase=phase,
            operation=operation,
            status=status,
            code=code,
            provider_message=message,
            payload=payload,
            retry_after=retry_after,
        )

    def _undecodable(
        self,
        response: HTTPResponse,
        operation: str,
        detail: str,
        *,
        phase: Phase,
        payload: Any = None,
    ) -> UnexpectedResponseError:
        """Build the error for an answer that cannot be used.

        ``payload`` defaults to the first 2 KiB of the raw body; pass a scrubbed one when
        the body may echo a secret.
        """
        return UnexpectedResponseError(
            f"{self.name} {operation}: unexpected response (HTTP {response.status}): {detail}",
            provider=self.name,
            phase=phase,
            operation=operation,
            status=response.status,
            payload=response.body[:2048] if payload is None else payload,
        )


def _kind_for_status(status: int) -> type[ProviderError]:
    if status == 401:
        return AuthenticationError
    if status in (402, 403):
        return InsufficientCreditsError
    if status == 429:
        return RateLimitedError
    if status >= 500:
        return ProviderUnavailableError
    return BadRequestError


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


def decode_json(body: bytes) -> Any:
    """Decode JSON bytes into plain Python objects, or raise `msgspec.DecodeError`."""
    try:
        return _json_decoder.decode(body)
    except RecursionError as exc:  # msgspec raises this for nesting deeper than ~1000
        raise msgspec.DecodeError("JSON nested too deeply") from exc


_json_decoder = msgspec.json.Decoder()
