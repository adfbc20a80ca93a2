"""What `generate_many` is given: its arguments (checked before anything runs) and its
inputs, read one at a time and each turned into a request or a rejection."""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from ._config import Limits
from ._errors import ConfigurationError, ValidationError
from ._images import Uploader, resolve_image_input
from ._models import GenerationRequest, build_request
from ._resume import BatchJournal, Plan
from ._store import JobStore, JournalMismatchError
from .providers._base import Prepared, Provider

__all__ = [
    "BatchInput",
    "JournalOptions",
    "Taken",
    "check_batch_arguments",
    "items_of",
    "journal_options",
    "read_recorded",
    "take_up",
    "to_request",
]

BatchInput = str | Mapping[str, Any] | GenerationRequest


class JournalOptions(NamedTuple):
    """`generate_many`'s journal arguments."""

    journal: str | os.PathLike[str] | JobStore
    batch_id: str | None = None
    new_batch: bool = False
    resubmit_unknown: bool = False
    repoll_timed_out: bool = True
    """Poll again, by provider id, jobs an earlier run gave up on (``timed_out``)."""


def check_batch_arguments(
    concurrency: Any, budget: Any, price_per_job: Any, default_concurrency: int
) -> tuple[int, Decimal | None, Decimal | None]:
    """Validate `generate_many`'s arguments; return (concurrency, budget, price_per_job).

    Raises:
        ConfigurationError: naming the argument and what it accepts.
    """
    if concurrency is None:
        concurrency = default_concurrency
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    return concurrency, _money("budget", budget), _money("price_per_job", price_per_job)


def journal_options(
    journal: Any, batch_id: Any, new_batch: Any, resubmit_unknown: Any, repoll_timed_out: Any
) -> JournalOptions | None:
    """Validate `generate_many`'s journal arguments; ``None`` without a journal.

    Raises:
        ConfigurationError: a bad ``batch_id``, or journal-only arguments without a journal.
    """
    if journal is None:
        if resubmit_unknown or new_batch or batch_id is not None:
            raise ConfigurationError(
                "resubmit_unknown, new_batch and batch_id need a journal: pass journal=..."
            )
        return None
    if batch_id is not None and (not isinstance(batch_id, str) or not batch_id):
        raise ConfigurationError(f"batch_id must be a non-empty string, got {batch_id!r}")
    return JournalOptions(
        journal, batch_id, bool(new_batch), bool(resubmit_unknown), bool(repoll_timed_out)
    )


def _money(name: str, value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(str(value))
    except ArithmeticError as exc:
        raise ConfigurationError(f"{name} must be a number, got {value!r}") from exc
    if not amount.is_finite() or amount < 0:
        raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")
    return amount


def to_request(provider: str, item: Any) -> GenerationRequest:
    """An input (a prompt, a mapping with ``"prompt"``, a request) as a `GenerationRequest`.

    Raises:
        ValidationError: the input is none of these.
    """
    name = provider
    if isinstance(item, GenerationRequest):
        return item
    if isinstance(item, str):
        return build_request(name, item, {})
    if isinstance(item, Mapping):
        params = dict(item)
        if "prompt" not in params:
            raise ValidationError(
                f"{name}: a request mapping needs a 'prompt'", provider=name, field="prompt"
            )
        return build_request(name, params.pop("prompt"), params)
    raise ValidationError(
        f"{name}: each input must be a prompt string, a mapping with 'prompt', or a "
        f"GenerationRequest; got {type(item).__name__}",
        provider=name,
        field="request",
        value=item,
    )


class Taken:
    """An input read and checked: its request (before and after image resolution), or why
    it was rejected, and its resume plan."""

    __slots__ = ("original", "plan", "prepared", "rejected", "request")

    def __init__(self) -> None:
        self.original: GenerationRequest | None = None
        self.request: GenerationRequest | None = None
        self.prepared: Prepared | None = None
        self.rejected: ValidationError | None = None
        self.plan: Plan | None = None


async def take_up(
    provider: Provider, item: Any, uploader: Uploader | None, limits: Limits
) -> Taken:
    """Read one input: build its request, resolve its image input, prepare it for
    ``provider``; a `ValidationError` is kept as the input's rejection."""
    taken = Taken()
    try:
        taken.original = request = to_request(provider.name, item)
        taken.request = request = await resolve_image_input(request, provider, uploader, limits)
        taken.prepared = provider.prepare(request)
    except ValidationError as exc:
        taken.rejected = exc
        taken.prepared = None
    return taken


async def items_of(requests: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    """Iterate over the inputs, from an iterable or an async iterable alike."""
    if isinstance(requests, AsyncIterable):
        async for item in requests:
            yield item
    else:
        for item in requests:
            yield item


async def read_recorded(
    source: AsyncIterator[Any],
    book: BatchJournal,
    provider: Provider,
    uploader: Uploader | None,
    limits: Limits,
) -> list[tuple[Any, Taken]]:
    """Read the inputs a resumed batch's journal holds records of (indexes 0 to
    ``book.last_index``), each with its resume plan, before anything is sent.

    Raises:
        JournalMismatchError: the input is shorter than the journal's records, or one of
            its inputs is not the one recorded.
    """
    ahead: list[tuple[Any, Taken]] = []
    index = -1
    while index < book.last_index:
        try:
            item = await source.__anext__()
        except StopAsyncIteration:
            raise JournalMismatchError(
                f"the journal holds inputs up to index {book.last_index} of batch "
                f"{book.batch_id!r}, but this input has only {index + 1}: give "
                "the same inputs to resume, or start a new batch",
                batch_id=book.batch_id,
                index=index + 1,
            ) from None
        index += 1
        taken = await take_up(provider, item, uploader, limits)
        taken.plan = book.plan(index, taken.original, taken.prepared)
        ahead.append((item, taken))
    return ahead
