"""The one error tree of flux_async.

Every error the client raises on purpose is a ``FluxError``; foreign exceptions (aiohttp,
msgspec, OSError) are translated at one boundary and chained with ``from``.

::

    FluxError
    ├── ValidationError (ValueError)          bad arguments; raised before any request is sent
    ├── ConfigurationError (ValueError)       missing API key, impossible policy values
    ├── ClientStateError (RuntimeError)       client used before open or after close, or reopened
    ├── RequestError                          one HTTP exchange went wrong; carries its ``phase``
    │   ├── TransportError                    no usable response: connect, reset, read timeout
    │   └── ProviderError                     the provider answered, and not with success
    │       ├── AuthenticationError           401, or a key the provider refuses
    │       ├── InsufficientCreditsError      403 out of credits, balance too low
    │       ├── RateLimitedError              429 (``retry_after`` when the provider said)
    │       ├── ProviderUnavailableError      5xx, "upstream unstable" codes
    │       ├── BadRequestError               the provider rejected the arguments (4xx or a code)
    │       └── UnexpectedResponseError       undecodable body or an undocumented value
    │           └── UnknownStatusError        a status value outside the documented set
    ├── DownloadError                         an image could not be saved (status, type, size)
    ├── BudgetExceededError                   generate_many's budget stopped new submissions
    └── JobError                              a job ended in a state other than ``succeeded``
        ├── JobFailedError                    the provider reports the generation failed
        ├── JobTimeoutError (TimeoutError)    the job's deadline passed; provider id kept
        ├── JobCancelledError                 cancelled, e.g. the client closed with it in flight
        └── JobUnknownError                   the create may or may not have reached the provider

``RequestError.phase`` tells how far the request got (see ``Phase``), which decides whether
resending it could pay for a second job. ``JobError.job`` is a snapshot of the job and its
``__cause__`` the error that ended it, when there is one.

No error message, ``repr`` or attribute holds an API key, callback token or webhook secret.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import JobSnapshot

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "ClientStateError",
    "ConfigurationError",
    "DownloadError",
    "FluxError",
    "InsufficientCreditsError",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobTimeoutError",
    "JobUnknownError",
    "Phase",
    "ProviderError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "RequestError",
    "TransportError",
    "UnexpectedResponseError",
    "UnknownStatusError",
    "ValidationError",
]


class Phase(enum.Enum):
    """How far a failed request got: the fact that decides whether resending is safe."""

    NOT_SENT = "not_sent"
    """The request provably never reached the provider (connect failure, pool timeout)."""
    REFUSED = "refused"
    """The provider answered that it did no work (429, 503, an "unavailable" code)."""
    DEFINITIVE = "definitive"
    """The provider answered with a final no (400, 401, 403, 404, a rejection code)."""
    AMBIGUOUS = "ambiguous"
    """The request may have been acted on: read timeout, disconnect, 500/502/504."""


class FluxError(Exception):
    """Base class of every error flux_async raises on purpose."""

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider

    def __str__(self) -> str:
        return self.message


class ValidationError(FluxError, ValueError):
    """An argument is wrong; raised before any request is sent, so nothing was paid for."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        field: str | None = None,
        value: Any = None,
        allowed: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider)
        self.field = field
        self.value = value
        self.allowed = allowed


class ConfigurationError(FluxError, ValueError):
    """The client or a provider is configured in a way that cannot work."""


class ClientStateError(FluxError, RuntimeError):
    """The client was used before it was opened, after it was closed, or opened twice."""


class RequestError(FluxError):
    """One HTTP exchange with a provider failed.

    Attributes:
        phase: how far the request got; see `Phase`.
        operation: ``"create"`` or ``"query"`` (or ``"download"``).
        status: the HTTP status, when a response arrived.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        phase: Phase,
        operation: str = "",
        status: int | None = None,
    ) -> None:
        super().__init__(message, provider=provider)
        self.phase = phase
        self.operation = operation
        self.status = status


class TransportError(RequestError):
    """No usable response arrived: the connection failed, was reset, or timed out."""


class ProviderError(RequestError):
    """The provider answered, and not with success.

    Attributes:
        code: the provider's own error code from the body, when it gave one.
        provider_message: the provider's own message, verbatim.
        payload: the decoded body (secrets removed) or the raw bytes when undecodable.
        retry_after: seconds the provider asked to wait, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        phase: Phase,
        operation: str = "",
        status: int | None = None,
        code: Any = None,
        provider_message: str | None = None,
        payload: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, provider=provider, phase=phase, operation=operation, status=status
        )
        self.code = code
        self.provider_message = provider_message
        self.payload = payload
        self.retry_after = retry_after


class AuthenticationError(ProviderError):
    """The provider refused the API key."""


class InsufficientCreditsError(ProviderError):
    """The account has no credit left for this request."""


class RateLimitedError(ProviderError):
    """The provider asked the client to slow down (HTTP 429)."""


class ProviderUnavailableError(ProviderError):
    """The provider is failing or overloaded (5xx, or an "upstream unavailable" code)."""


class BadRequestError(ProviderError):
    """The provider rejected the request's arguments."""


class UnexpectedResponseError(ProviderError):
    """The provider's answer could not be understood: bad JSON or an undocumented shape."""


class UnknownStatusError(UnexpectedResponseError):
    """A job reported a status value outside the documented set (``payload`` holds it all)."""


class DownloadError(FluxError):
    """An image could not be downloaded and saved.

    Attributes:
        url: the image's address (``data:`` URLs are shortened).
        status: the HTTP status, when a response arrived.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        url: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider)
        self.url = url if len(url) <= 120 else url[:117] + "..."
        self.status = status
        self.retry_after = retry_after


class BudgetExceededError(FluxError):
    """The batch's budget would be exceeded, so this input was not submitted (nothing paid)."""


class JobError(FluxError):
    """A job ended in a state other than ``succeeded``.

    Attributes:
        job: a snapshot of the job when it ended (local id, provider id, status, cost).
    """

    def __init__(
        self, message: str, *, provider: str | None = None, job: JobSnapshot | None = None
    ) -> None:
        super().__init__(message, provider=provider)
        self.job = job


class JobFailedError(JobError):
    """The provider reports that the generation failed; ``reason`` is its own message."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        job: JobSnapshot | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, job=job)
        self.reason = reason


class JobTimeoutError(JobError, TimeoutError):
    """The job's deadline passed before it finished; ``job.id`` still names it."""


class JobCancelledError(JobError):
    """The job was cancelled, for example because the client closed while it was running."""


class JobUnknownError(JobError):
    """The create request may or may not have reached the provider.

    It was not resent, because that could pay for the job twice. ``evidence`` says what was
    observed (e.g. "server disconnected after the request body was sent").
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        job: JobSnapshot | None = None,
        evidence: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, job=job)
        self.evidence = evidence
