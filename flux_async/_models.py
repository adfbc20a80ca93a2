"""Public data types: the request, job snapshots, statuses and results."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import msgspec

from ._errors import ValidationError

__all__ = [
    "Event",
    "Generation",
    "GenerationRequest",
    "Image",
    "JobSnapshot",
    "JobStatus",
    "Outcome",
    "build_request",
]


class JobStatus(str, enum.Enum):
    """Where a job is in its life.

    ``allocated → submitted → queued → running → (succeeded | failed | timed_out | cancelled |
    unknown)``. The last five are terminal and absorbing: nothing changes them afterwards.
    """

    ALLOCATED = "allocated"
    """Known locally (local id, callback token); the create request may be on its way."""
    SUBMITTED = "submitted"
    """The provider accepted the job and gave it an id."""
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    """The job's deadline passed; it is no longer polled. Its provider id is kept."""
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"
    """The create may or may not have reached the provider; it was not resent."""

    @property
    def is_terminal(self) -> bool:
        """Whether the job has ended (nothing will change it any more)."""
        return self in _TERMINAL

    @property
    def rank(self) -> int:
        """Order of progress; a job never moves to a lower rank."""
        return _RANK[self]


_TERMINAL = frozenset(
    {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.TIMED_OUT,
        JobStatus.CANCELLED,
        JobStatus.UNKNOWN,
    }
)
_RANK = {
    JobStatus.ALLOCATED: 0,
    JobStatus.SUBMITTED: 1,
    JobStatus.QUEUED: 2,
    JobStatus.RUNNING: 3,
    **{status: 4 for status in _TERMINAL},
}


class GenerationRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One generation request, in the shape every provider understands.

    Each provider maps what it can and raises `ValidationError` for what it cannot; fields
    left as ``None`` take the provider's default. ``extra`` passes documented
    provider-specific fields through (still validated).
    """

    prompt: str
    image_url: str | None = None
    aspect_ratio: str | None = None
    width: int | None = None
    height: int | None = None
    num_images: int | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    model: str | None = None
    extra: Mapping[str, Any] = msgspec.field(default_factory=dict)


class Image(msgspec.Struct, frozen=True, kw_only=True):
    """One generated image.

    ``url`` is where the provider serves it (often for a limited time: download it soon), or
    a ``data:`` URL when the provider returned the bytes inline.
    """

    url: str
    width: int | None = None
    height: int | None = None
    content_type: str | None = None


class Generation(msgspec.Struct, frozen=True, kw_only=True):
    """The result of a succeeded job."""

    images: tuple[Image, ...]
    provider: str
    model: str
    job_id: str
    """The provider's id of the job."""
    local_id: str
    cost: Decimal | None = None
    """What the provider charged, in its own unit (USD for ShortAPI), when it said."""
    seed: int | None = None


class JobSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """An immutable view of a job at one moment."""

    local_id: str
    provider: str
    model: str
    status: JobStatus
    id: str | None
    """The provider's job id; ``None`` until the provider accepted the job."""
    cost: Decimal | None = None
    """What the provider charged, in its unit; ``0`` for a refunded job."""
    refunded: bool = False
    """The provider refunded the job (it failed and was not charged)."""
    created_at: float
    """``time.time()`` when the job was allocated."""
    finished_at: float | None = None
    polls: int = 0
    error: str | None = None
    """Why the job ended other than succeeded, in one line."""


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one input of `FluxClient.generate_many`.

    Every input yields exactly one outcome, failures included: ``error`` is then set and
    ``generation`` is ``None``.
    """

    index: int
    """The input's position in the iterable, from 0."""
    request: Any
    """The input as given (a prompt string, a mapping or a `GenerationRequest`)."""
    status: str
    """A `JobStatus` value, ``"rejected"`` (invalid, never sent) or ``"skipped"`` (the
    budget was reached, never sent)."""
    generation: Generation | None = None
    error: BaseException | None = None
    job: JobSnapshot | None = None
    cost: Decimal | None = None
    files: tuple[Path, ...] = ()
    """Where the images were saved, with ``download_to``."""
    resumed: bool = False
    """The input was settled by an earlier run of the batch (read back from its journal, or
    its job re-attached); nothing was sent again for it."""
    started_at: float
    """``time.monotonic()`` when the input was taken up."""
    finished_at: float

    @property
    def ok(self) -> bool:
        """Whether the generation succeeded (and, with ``download_to``, was saved)."""
        return self.generation is not None and self.error is None

    @property
    def refunded(self) -> bool:
        """Whether the provider refunded the job (its ``cost`` is then 0)."""
        return self.job is not None and self.job.refunded

    @property
    def elapsed(self) -> float:
        """Seconds from taking the input up to its outcome."""
        return self.finished_at - self.started_at


EventKind = Literal[
    "submitted", "status", "finished", "retried", "rate_limited", "downloaded"
]


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """A progress event, for UIs, logs and metrics (see `FluxClient.subscribe`).

    Kinds: ``submitted`` (the provider accepted a job), ``status`` (a job's status moved
    on), ``finished`` (a job reached a terminal status), ``retried`` (a request is about to
    be resent; ``detail`` says why), ``rate_limited`` (the provider answered 429; ``detail``
    holds the pause), ``downloaded`` (an image was saved; ``detail`` is the path).
    """

    kind: EventKind
    local_id: str | None
    job_id: str | None
    status: JobStatus | None
    provider: str
    time: float
    """``time.monotonic()`` when it happened."""
    detail: str | None = None


REQUEST_FIELDS = tuple(name for name in GenerationRequest.__struct_fields__ if name != "prompt")
"""The `submit` keyword parameters, in declaration order."""


def build_request(provider: str, prompt: Any, params: dict[str, Any]) -> GenerationRequest:
    """Build a `GenerationRequest`, turning unknown names and wrong types into errors."""
    unknown = sorted(set(params) - set(REQUEST_FIELDS))
    if unknown:
        raise ValidationError(
            f"{provider}: unknown parameter {unknown[0]!r}; allowed: {', '.join(REQUEST_FIELDS)} "
            "(provider-specific fields go in extra={...})",
            provider=provider,
            field=unknown[0],
            value=params[unknown[0]],
            allowed=", ".join(REQUEST_FIELDS),
        )
    try:
        return msgspec.convert({"prompt": prompt, **params}, GenerationRequest)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = text.rsplit("$.", 1)[-1].split("[", 1)[0] if "$." in text else None
        raise ValidationError(
            f"{provider}: {text}",
            provider=provider,
            field=field,
            value=params.get(field) if field else prompt,
            allowed=None,
        ) from exc
