"""Public data types: the request, job snapshots, statuses and results."""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

import msgspec

from ._download import one_shot, read_url
from ._errors import ValidationError
from ._images import image_url_text
from ._imagesize import sniff_image

__all__ = [
    "Event",
    "Generation",
    "GenerationRequest",
    "Image",
    "JobSnapshot",
    "JobStatus",
    "Outcome",
    "OutcomeStatus",
    "SubmitParams",
    "build_request",
    "outcome_status",
]


_TERMINAL_VALUES = frozenset({"succeeded", "failed", "timed_out", "cancelled", "unknown"})
_RANK_OF_VALUE = {"allocated": 0, "submitted": 1, "queued": 2, "running": 3}


class JobStatus(str, enum.Enum):
    """Where a job is in its life.

    ``allocated → submitted → queued → running → (succeeded | failed | timed_out | cancelled |
    unknown)``. The last five are terminal and absorbing: nothing changes them afterwards.
    """

    is_terminal: bool
    """Whether the job has ended (nothing will change it any more)."""
    rank: int
    """Order of progress; a job never moves to a lower rank."""

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

    def __init__(self, value: str) -> None:
        # Plain attributes, not properties: read several times per poll and callback.
        self.is_terminal = value in _TERMINAL_VALUES
        self.rank = 4 if self.is_terminal else _RANK_OF_VALUE[value]


_TERMINAL = frozenset(status for status in JobStatus if status.is_terminal)
_RANK = {status: status.rank for status in JobStatus}


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


class SubmitParams(TypedDict, total=False):
    """The keyword parameters of `FluxClient.submit` and `FluxClient.generate`.

    Type checkers use it to flag a misspelt or mistyped parameter
    (``generate("x", aspect_ration="16:9")``); annotate your own request mappings with it
    for `FluxClient.generate_many`. At run time the provider still validates every value.
    """

    image_url: str | bytes | os.PathLike[str] | None
    """An http(s) URL, a ``data:`` URL, a local file path, or the image's bytes."""
    aspect_ratio: str | None
    width: int | None
    height: int | None
    num_images: int | None
    seed: int | None
    steps: int | None
    guidance: float | None
    strength: float | None
    model: str | None
    extra: Mapping[str, Any]


class Image(msgspec.Struct, frozen=True, kw_only=True):
    """One generated image.

    ``url`` is where the provider serves it (often for a limited time: download it soon), or
    a ``data:`` URL when the provider returned the bytes inline. ``width`` and ``height``
    are the provider's when it reported them; `with_size` fills them from the image's bytes.
    """

    url: str
    width: int | None = None
    height: int | None = None
    content_type: str | None = None

    async def read(self, *, max_bytes: int | None = None) -> bytes:
        """Fetch the image and return its bytes.

        The request carries no API key and no cookies (a session of its own, closed
        afterwards); the answer must have an image content type and at most ``max_bytes``
        bytes (default `Limits.max_download_bytes`); transient failures are retried. A
        ``data:`` URL is decoded locally. Inside a client, ``await client.read(image)``
        does the same over the client's download session and `Limits`.

        Raises:
            DownloadError: the image could not be fetched, is not an image, or is too big.
        """
        return await read_url(self.url, max_bytes=max_bytes)

    def with_size(self, data: bytes) -> Image:
        """Return this image with ``width``, ``height`` and ``content_type`` filled from
        ``data`` (its bytes, or their first few KB), where they are ``None``.

        PNG, JPEG, WebP and GIF headers are read; anything else returns the image as is::

            data = await image.read()
            image = image.with_size(data)
        """
        if self.width is not None and self.height is not None and self.content_type:
            return self
        found = sniff_image(data)
        if found is None:
            return self
        content_type, width, height = found
        if self.width is None or self.height is None:
            return msgspec.structs.replace(
                self,
                width=width,
                height=height,
                content_type=self.content_type or content_type,
            )
        return msgspec.structs.replace(self, content_type=content_type)


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

    async def save(
        self,
        directory: str | os.PathLike[str],
        *,
        prefix: str = "",
        max_bytes: int | None = None,
    ) -> tuple[Path, ...]:
        """Save the images into ``directory`` (created if needed); return their paths.

        Files are named ``{prefix}{job id}-{n}{ext}``, the extension from the content type,
        and written to a temporary file renamed into place, so a file that exists is
        complete. No credentials are sent to the image host; each image must be an image
        of at most ``max_bytes`` (default `Limits.max_download_bytes`). Inside a client,
        `FluxClient.download` does the same over the client's session and `Limits`.

        Raises:
            DownloadError: an image could not be fetched or saved.
        """
        async with one_shot(max_bytes) as downloader:
            return await downloader.save(self, directory, prefix=prefix)

    def to_dict(self) -> dict[str, Any]:
        """Return the generation as JSON-ready builtins (for ``json.dumps``).

        Field names as here; ``cost`` is a string (``"0.02"``, no float rounding) or
        ``None``; ``images`` a list of ``{"url", "width", "height", "content_type"}``.
        """
        return _builtins(self)


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
    status: OutcomeStatus
    """A `JobStatus` value (a plain string), ``"rejected"`` (invalid, never sent) or
    ``"skipped"`` (the budget was reached, never sent). Compare it with strings
    (``outcome.status == "succeeded"``); type checkers reject a misspelt one."""
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

    def to_dict(self) -> dict[str, Any]:
        """Return the outcome as JSON-ready builtins (for ``json.dumps``).

        Field names as here, plus ``ok``: money (``cost``) is a string or ``None``;
        ``files`` are path strings; ``generation`` and ``job`` are dicts (see
        `Generation.to_dict`); ``error`` is ``{"type": "JobFailedError", "message": ...}``
        or ``None``; ``request`` is the input (a `GenerationRequest` becomes a dict; a value
        JSON cannot hold becomes its ``str``).
        """
        data = _builtins(self)
        data["ok"] = self.ok
        return data


OutcomeStatus = Literal[
    "allocated",
    "submitted",
    "queued",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "unknown",
    "rejected",
    "skipped",
]
"""`Outcome.status`: a `JobStatus` value, or ``"rejected"``/``"skipped"`` for inputs never
sent. A `Literal` rather than an enum so that ``outcome.status == "succeded"`` is a type
error (``--strict-equality``) while comparing with strings keeps working."""


def outcome_status(status: JobStatus) -> OutcomeStatus:
    """Return a job status as an `Outcome.status` value."""
    return _OUTCOME_STATUSES[status]


_OUTCOME_STATUSES: dict[JobStatus, OutcomeStatus] = {
    status: cast("OutcomeStatus", status.value) for status in JobStatus
}


def _builtins(value: msgspec.Struct) -> dict[str, Any]:
    # Through JSON and back, so that tuples come out as lists: equal after json.dumps/loads.
    data = msgspec.json.decode(msgspec.json.encode(value, enc_hook=_encode_other))
    assert isinstance(data, dict)
    return data


def _encode_other(value: Any) -> Any:
    if isinstance(value, BaseException):
        return {"type": type(value).__name__, "message": str(value)}
    return str(value)  # paths, and anything else JSON cannot hold


EventKind = Literal[
    "submitted", "status", "finished", "retried", "rate_limited", "downloaded", "limits"
]


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """A progress event, for UIs, logs and metrics (see `FluxClient.subscribe`).

    Kinds: ``submitted`` (the provider accepted a job), ``status`` (a job's status moved
    on), ``finished`` (a job reached a terminal status), ``retried`` (a request is about to
    be resent; ``detail`` says why), ``rate_limited`` (the provider answered 429; ``detail``
    holds the pause), ``downloaded`` (an image was saved; ``detail`` is the path),
    ``limits`` (a discovered limit changed; ``detail`` holds the current ones, e.g.
    ``jobs_in_flight=256 connections=64 creates_per_second=none polls_per_second=181``;
    ``local_id``/``job_id``/``status`` are None).
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
    if not params and type(prompt) is str:
        return GenerationRequest(prompt=prompt)  # a bare prompt (most batch inputs)
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
    if "image_url" in params:
        # Paths and bytes become a string here (GenerationRequest.image_url is str | None).
        params = {**params, "image_url": image_url_text(provider, params["image_url"])}
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
