"""What every provider adapter is: sans-IO translation between requests and HTTP messages.

An adapter builds `HTTPRequest`s and decodes `HTTPResponse`s (bytes in, objects out). It
never opens a socket or sleeps; the client's transport does that.
"""

from __future__ import annotations

import abc
import urllib.parse
from decimal import Decimal
from typing import Any, ClassVar, Literal, TypeVar

import msgspec

from .._config import Limits, env_api_key
from .._errors import (
    ConfigurationError,
    Phase,
    ProviderError,
    UnexpectedResponseError,
    UnknownStatusError,
)
from .._http import HTTPRequest, HTTPResponse, parse_retry_after, phase_for_status
from .._models import GenerationRequest, Image, JobStatus
from ._wire import decode, error_kind, payload_of, provider_message

T = TypeVar("T")

InlineImage = Literal["data_url", "base64"]
"""How a model takes an image inline: a ``data:image/...;base64,...`` URL, or bare base64."""

__all__ = [
    "Accepted",
    "CallbackUpdate",
    "HTTPRequest",
    "HTTPResponse",
    "HistoryTask",
    "InlineImage",
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
    refunded: bool = False
    """The provider says it did not charge for this (failed) job: ``cost`` is then 0."""


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    """The provider accepted a create: the job's id, its charge and, if known, its state."""

    job_id: str
    cost: Decimal | None = None
    update: Update | None = None


class HistoryTask(msgspec.Struct, frozen=True, kw_only=True):
    """One task from a provider's task history (PiAPI), as far as it identifies the task."""

    job_id: str
    model: str | None = None
    created_at: float | None = None
    """Unix seconds, when the provider said."""
    input: dict[str, Any] = msgspec.field(default_factory=dict)
    """The task's input as the provider echoes it."""
    callback_url: str | None = None
    """The webhook endpoint the task was created with (it names our local id)."""

    def __repr__(self) -> str:
        # The callback URL holds the job's token: never shown.
        return f"HistoryTask(job_id={self.job_id!r}, model={self.model!r})"


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
    result_hosts: ClassVar[tuple[str, ...]] = ()
    """Hosts the provider serves result images from, where documented; empty when unknown."""
    inline_images: ClassVar[str] = ""
    """Which models take an image inline (for error messages); empty when none does."""

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

    def inline_image(self, request: GenerationRequest) -> InlineImage | None:
        """Return how the request's model takes an image inline, where that is documented.

        ``None`` (the default) means URLs only: a local image then goes through the
        client's uploader. `prepare` accepts the form returned here in ``image_url``.
        """
        return None

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

    def build_cancel(self, job_id: str) -> HTTPRequest | None:
        """Return the request that cancels a job, or ``None``: the provider documents no
        cancel (the default), so a job can only be abandoned locally."""
        return None

    def parse_cancel(self, response: HTTPResponse) -> Update:
        """Decode a cancel answer: the job's state after it (``cancelled`` when it worked).

        Raises:
            ProviderError: the provider refused (e.g. the job is already running).
        """
        raise NotImplementedError(f"{self.name} has no cancel endpoint")

    def build_history(
        self, *, start_time: int, end_time: int, page: int = 1, page_size: int = 100
    ) -> HTTPRequest | None:
        """Return a request listing the account's tasks created in ``[start_time,
        end_time]`` (unix seconds), or ``None`` when the provider documents no history."""
        return None

    def parse_history(self, response: HTTPResponse) -> tuple[list[HistoryTask], int]:
        """Decode one page of task history: (its tasks, the total number of tasks)."""
        raise NotImplementedError(f"{self.name} has no task history")

    # -- helpers for subclasses -------------------------------------------------------------

    def _payload(self, body: bytes) -> Any:
        """Return ``body`` as an error's ``payload``; adapters hide the secrets it echoes."""
        return payload_of(body)

    def _http_error(self, response: HTTPResponse, operation: str) -> ProviderError:
        """Build the error for a non-2xx answer (adapters read their own error bodies)."""
        payload = self._payload(response.body)
        return self._error(
            response,
            operation,
            message=provider_message(payload, "message", "error"),
            payload=payload,
        )

    def _decode_answer(
        self,
        decoder: msgspec.json.Decoder[T],
        response: HTTPResponse,
        operation: str,
        *,
        phase: Phase,
    ) -> T:
        """Check for a 2xx and decode the body, or raise the error that says what went wrong.

        Args:
            phase: what an unreadable 2xx means: `Phase.AMBIGUOUS` for a create (the job may
                exist and be paid), `Phase.DEFINITIVE` for a query.

        Raises:
            ProviderError: from `_http_error` for a non-2xx answer.
            UnexpectedResponseError: the body does not decode.
        """
        if not 200 <= response.status < 300:
            raise self._http_error(response, operation)
        try:
            return decode(decoder, response.body)
        except msgspec.DecodeError as exc:
            raise self._undecodable(response, operation, str(exc), phase=phase) from exc

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
            kind = error_kind(status)
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

    def _code_error(
        self,
        response: HTTPResponse,
        operation: str,
        *,
        code: Any,
        message: str | None,
        status: int | None = None,
    ) -> ProviderError:
        """Build the error for a 2xx answer whose envelope ``code`` says no.

        Args:
            status: the HTTP status ``code`` stands for, when the provider's codes are shaped
                like statuses; ``None`` makes it a definitive refusal typed by the words said
                (`error_kind`: credit, quota and balance are `InsufficientCreditsError`).
        """
        return self._error(
            response,
            operation,
            message=message,
            code=code,
            payload=self._payload(response.body),
            phase=phase_for_status(status) if status is not None else Phase.DEFINITIVE,
            kind=error_kind(status, message or ""),
        )

    def _unknown_status(
        self, response: HTTPResponse, operation: str, detail: str
    ) -> UnknownStatusError:
        """Build the error for a job status the adapter does not know (never an endless poll)."""
        return UnknownStatusError(
            f"{self.name} {operation}: {detail}",
            provider=self.name,
            phase=Phase.DEFINITIVE,
            operation=operation,
            status=response.status,
            payload=self._payload(response.body),
        )

    def _undecodable(
        self, response: HTTPResponse, operation: str, detail: str, *, phase: Phase
    ) -> UnexpectedResponseError:
        """Build the error for an answer that cannot be used, its payload from `_payload`."""
        return UnexpectedResponseError(
            f"{self.name} {operation}: unexpected response (HTTP {response.status}): {detail}",
            provider=self.name,
            phase=phase,
            operation=operation,
            status=response.status,
            payload=self._payload(response.body),
        )
