"""Progress events: one bus per client; logging is one of its subscribers.

Building an `Event` costs a little on every status change, so the bus builds one only when
someone listens for that kind: with no user subscriber, only the rare kinds the log
subscriber wants (retries, 429 pauses) are built.

Loggers (never a secret: no API key, callback address, token or webhook secret):

- ``flux_async.jobs``: each job's life at DEBUG (submitted, polled, status changes,
  finished) and create retries at INFO, every line naming the job by its local id and its
  provider id (``-`` until the provider gave one). With DEBUG off this costs one
  ``isEnabledFor`` check per status change or poll.
- ``flux_async``: 429 pauses at INFO; creates that may or may not have reached the
  provider at WARNING; a failing event subscriber at ERROR.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import get_args

from ._errors import ConfigurationError
from ._models import Event, EventKind, JobStatus
from ._registry import Entry

__all__ = ["EventBus", "log_event", "log_poll"]

logger = logging.getLogger("flux_async")
jobs_logger = logging.getLogger("flux_async.jobs")

Subscriber = Callable[[Event], None]

# The kinds worth a log line; the others (one per status change) would flood it.
LOGGED_KINDS: frozenset[EventKind] = frozenset({"retried", "rate_limited"})
_KINDS = frozenset(get_args(EventKind))
_CHANGE_KINDS = frozenset({"submitted", "status", "finished"})
_DEBUG = logging.DEBUG


def log_event(event: Event) -> None:
    """Log a retry or a 429 pause at INFO (the bus's default subscriber)."""
    if event.kind == "retried":
        jobs_logger.info(
            "job %s (%s %s): request failed (%s); retrying",
            event.local_id,
            event.provider,
            event.job_id or "-",
            event.detail,
        )
    elif event.kind == "rate_limited":
        logger.info("%s answered 429: %s", event.provider, event.detail)


def _log_change(entry: Entry, previous: JobStatus) -> None:
    """Log a job's status change at DEBUG on ``flux_async.jobs`` (the caller checked that
    DEBUG is on)."""
    status = entry.status
    if status.is_terminal:
        jobs_logger.debug(
            "job %s (%s %s): finished %s after %d polls%s%s",
            entry.local_id,
            entry.provider,
            entry.job_id or "-",
            status.value,
            entry.polls,
            "" if entry.cost is None else f", cost {entry.cost}",
            "" if entry.error is None else f": {entry.error}",
        )
    elif status is JobStatus.SUBMITTED:
        jobs_logger.debug(
            "job %s (%s %s): submitted (model %s)",
            entry.local_id,
            entry.provider,
            entry.job_id or "-",
            entry.model,
        )
    else:
        jobs_logger.debug(
            "job %s (%s %s): %s -> %s",
            entry.local_id,
            entry.provider,
            entry.job_id or "-",
            previous.value,
            status.value,
        )


def log_poll(entry: Entry, answer: JobStatus | BaseException) -> None:
    """Log one poll of a job at DEBUG on ``flux_async.jobs``: the status the provider
    answered, or why the query failed."""
    if not jobs_logger.isEnabledFor(_DEBUG):
        return
    if isinstance(answer, BaseException):
        jobs_logger.debug(
            "job %s (%s %s): poll %d failed: %s",
            entry.local_id,
            entry.provider,
            entry.job_id or "-",
            entry.polls,
            answer,
        )
    else:
        jobs_logger.debug(
            "job %s (%s %s): polled (%d): %s",
            entry.local_id,
            entry.provider,
            entry.job_id or "-",
            entry.polls,
            answer.value,
        )


#: Kinds with no job attached, delivered only to subscribers that name them: a subscriber
#: written for per-job events (``event.status`` set) never sees them unasked.
NAMED_ONLY = frozenset({"limits"})


class EventBus:
    """Delivers `Event`s to subscribers, synchronously, in subscription order.

    Args:
        provider: the provider name every event carries.
        clock: the ``Event.time`` source (``time.monotonic``).
        log: subscribe `log_event` for `LOGGED_KINDS` (the default).
    """

    __slots__ = ("_all", "_changes", "_clock", "_filtered", "_provider", "_wanted")

    def __init__(
        self, provider: str, *, clock: Callable[[], float] = time.monotonic, log: bool = True
    ) -> None:
        self._provider = provider
        self._clock = clock
        self._all: list[Subscriber] = []
        self._filtered: list[tuple[Subscriber, frozenset[str]]] = []
        self._wanted: frozenset[str] = frozenset()
        self._changes = False  # a filtered subscriber wants a status-change kind
        if log:
            self.subscribe(log_event, kinds=LOGGED_KINDS)

    def __bool__(self) -> bool:
        """Whether anyone listens to every kind (callers skip building details otherwise)."""
        return bool(self._all)

    def wants(self, kind: str) -> bool:
        """Whether a subscriber asked for ``kind`` by name."""
        return kind in self._wanted

    def subscribe(
        self, callback: Subscriber, *, kinds: Collection[str] | None = None
    ) -> Callable[[], None]:
        """Call ``callback`` with every event (or those of ``kinds``); return an unsubscriber.

        Raises:
            ConfigurationError: ``kinds`` names a kind that does not exist.
        """
        if kinds is not None:
            unknown = sorted(set(kinds) - _KINDS)
            if unknown:
                raise ConfigurationError(
                    f"subscribe(kinds=...): unknown event kind(s) {', '.join(map(repr, unknown))}"
                    f"; allowed: {', '.join(get_args(EventKind))}"
                )
        if kinds is None:
            self._all.append(callback)
        else:
            self._filtered.append((callback, frozenset(kinds)))
            self._refresh()

        def unsubscribe() -> None:
            if kinds is None:
                if callback in self._all:
                    self._all.remove(callback)
            else:
                self._filtered[:] = [item for item in self._filtered if item[0] is not callback]
                self._refresh()

        return unsubscribe

    def _refresh(self) -> None:
        self._wanted = frozenset().union(*(kinds for _, kinds in self._filtered))
        self._changes = bool(self._wanted & _CHANGE_KINDS)

    def emit(self, kind: EventKind, entry: Entry | None, detail: str | None = None) -> None:
        """Deliver one event; an exception in a subscriber is logged, never raised."""
        if kind not in self._wanted and (not self._all or kind in NAMED_ONLY):
            return
        event = Event(
            kind=kind,
            local_id=entry.local_id if entry is not None else None,
            job_id=entry.job_id if entry is not None else None,
            status=entry.status if entry is not None else None,
            provider=self._provider,
            time=self._clock(),
            detail=detail,
        )
        if kind not in NAMED_ONLY:
            for callback in list(self._all):
                _deliver(callback, event)
        for callback, kinds in list(self._filtered):
            if kind in kinds:
                _deliver(callback, event)

    def on_change(self, entry: Entry, previous: JobStatus) -> None:
        """The registry's status-change hook: ``submitted``, ``status`` or ``finished``
        (and the job's DEBUG log line)."""
        if jobs_logger.isEnabledFor(_DEBUG):
            _log_change(entry, previous)
        if not self._all and not self._changes:
            return
        if entry.status.is_terminal:
            self.emit("finished", entry, str(entry.error) if entry.error else None)
        elif entry.status is JobStatus.SUBMITTED:
            self.emit("submitted", entry)
        else:
            self.emit("status", entry, previous.value)


def _deliver(callback: Subscriber, event: Event) -> None:
    try:
        callback(event)
    except Exception:
        logger.exception("event subscriber %r failed", callback)
