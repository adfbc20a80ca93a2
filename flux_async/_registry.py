"""The in-memory job registry: one entry per job, its state machine, and its indexes.

Plain synchronous code with no I/O: the client and the webhook receiver call it, and it
wakes whoever awaits a job when the job ends. States move forward only (see
`JobStatus.rank`); terminal states are absorbing.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ._errors import FluxError, JobError, JobFailedError
from ._models import Image, JobSnapshot, JobStatus

if TYPE_CHECKING:
    from ._store import JobStore
    from .providers._base import Update

__all__ = ["Entry", "Registry"]


class Entry:
    """Everything known about one job.

    Its status and outcome (``status``, ``job_id``, ``cost``, ``refunded``, ``images``,
    ``seed``, ``error``, ``finished_at``) are written only by `Registry` (`accept`,
    `advance`, `apply`, `finish`). The other fields belong to one component each:

    - the create lane: ``request``, ``token_hash`` and ``secret_hash`` (set at allocation),
      ``accepted`` (the future an orphaned create waits on; `Registry.accept` wakes it);
    - the poll lane and its scheduler (loop-clock seconds): ``deadline``, ``next_poll``,
      ``attempt``, ``polls``, ``running_age`` (seconds from the start of polling to the
      last poll that found the job running: the learned schedule's censoring bound),
      ``attached`` (polling started long after the create: attached by id, or again after
      a restart, so the job's age there is not its latency);
    - the callback side: ``hinted`` (a callback came before the create's answer) and
      ``verifying`` (a verifying query is in flight);
    - `Job` handles: ``waiter``, created by the first one that waits;
    - the create lane again: ``owner`` (what `Job.cancel` asks) and ``store`` (the job store
      its record lives in, or ``None``: the registry then writes nothing beyond memory).
    """

    __slots__ = (
        "accepted",
        "attached",
        "attempt",
        "cost",
        "created_at",
        "deadline",
        "error",
        "finished_at",
        "hinted",
        "images",
        "job_id",
        "local_id",
        "model",
        "next_poll",
        "owner",
        "polls",
        "provider",
        "refunded",
        "request",
        "running_age",
        "secret_hash",
        "seed",
        "status",
        "store",
        "token_hash",
        "verifying",
        "waiter",
    )

    def __init__(self, local_id: str, provider: str, model: str, created_at: float) -> None:
        self.local_id = local_id
        self.provider = provider
        self.model = model
        self.created_at = created_at
        self.status = JobStatus.ALLOCATED
        self.job_id: str | None = None
        self.cost: Decimal | None = None
        # The provider gave the money back (a failed ShortAPI job marked ``refunded``): the
        # job costs 0 whatever ``amount`` said.
        self.refunded = False
        self.images: tuple[Image, ...] = ()
        self.seed: int | None = None
        self.error: FluxError | None = None
        self.finished_at: float | None = None
        self.token_hash: bytes | None = None
        self.secret_hash: bytes | None = None
        self.request: Any = None
        self.waiter: asyncio.Future[None] | None = None
        # Set by a create waiting for its orphaned job to call home; woken by `accept`.
        self.accepted: asyncio.Future[None] | None = None
        # Webhook bookkeeping: a verifying query is in flight / a callback came too early.
        self.verifying = False
        self.hinted = False
        # Poll bookkeeping, owned by the scheduler (loop-clock seconds).
        self.deadline: float = float("inf")
        self.next_poll: float | None = None
        self.attempt = 0
        self.polls = 0
        self.running_age = 0.0
        self.attached = False
        # The job store holding this job's record (None: no durable record) and the
        # component that can cancel it (the create lane).
        self.store: JobStore | None = None
        self.owner: Any = None

    def __repr__(self) -> str:
        return f"<Entry {self.local_id} {self.provider} {self.status.value} id={self.job_id}>"

    def snapshot(self) -> JobSnapshot:
        """Return an immutable view of the entry now."""
        return JobSnapshot(
            local_id=self.local_id,
            provider=self.provider,
            model=self.model,
            status=self.status,
            id=self.job_id,
            cost=self.cost,
            refunded=self.refunded,
            created_at=self.created_at,
            finished_at=self.finished_at,
            polls=self.polls,
            error=str(self.error) if self.error is not None else None,
        )


class Registry:
    """All jobs of one client, indexed by local id and by provider job id.

    Args:
        on_finished: called once per job, synchronously, when it reaches a terminal state.
        on_change: called on every status change with the entry and its previous status
            (before ``on_finished`` for a terminal one).
        clock: wall-clock time for ``created_at``/``finished_at`` (``time.time``).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        on_finished: Callable[[Entry], None] | None = None,
        on_change: Callable[[Entry, JobStatus], None] | None = None,
    ) -> None:
        self._clock = clock
        self._on_finished = on_finished
        self._on_change = on_change
        self._by_local: dict[str, Entry] = {}
        self._by_job_id: dict[tuple[str, str], Entry] = {}
        self._active = 0
        self.on_accepted: list[Callable[[Entry], None]] = []
        """Called once per job when the provider's id is first recorded (e.g. a job store)."""

    def __len__(self) -> int:
        return len(self._by_local)

    @property
    def active(self) -> int:
        """Jobs not yet in a terminal state."""
        return self._active

    def allocate(
        self,
        provider: str,
        model: str,
        *,
        request: Any = None,
        token_hash: bytes | None = None,
        secret_hash: bytes | None = None,
        local_id: str | None = None,
    ) -> Entry:
        """Create the entry for a job about to be created (before any request is sent).

        ``local_id`` is drawn at random unless given (a caller that must know it before
        allocating, e.g. to build the callback address, draws it with `new_local_id`).
        """
        if local_id is None:
            local_id = self.new_local_id()
        entry = Entry(local_id, provider, model, self._clock())
        entry.request = request
        entry.token_hash = token_hash
        entry.secret_hash = secret_hash
        self._by_local[local_id] = entry
        self._active += 1
        return entry

    def new_local_id(self) -> str:
        """Return a random local id no held entry has."""
        local_id = secrets.token_hex(8)
        while local_id in self._by_local:  # pragma: no cover - 64 random bits
            local_id = secrets.token_hex(8)
        return local_id

    def get(self, local_id: str) -> Entry | None:
        """Return the entry with this local id, if the registry still holds it."""
        return self._by_local.get(local_id)

    def by_job_id(self, provider: str, job_id: str) -> Entry | None:
        """Return the entry the provider knows as ``job_id``."""
        return self._by_job_id.get((provider, job_id))

    def entries(self) -> Iterator[Entry]:
        """Iterate over a copy of the held entries."""
        return iter(list(self._by_local.values()))

    def accept(self, entry: Entry, job_id: str, cost: Decimal | None = None) -> bool:
        """Record the provider's id for a job; move it to ``submitted`` if it was allocated.

        The id is recorded even when the job already ended (a callback may have finished it
        first, or the client closed meanwhile), so the job can still be found and named.
        Returns whether the status changed.
        """
        if entry.job_id is None:
            entry.job_id = job_id
            if entry.local_id in self._by_local:
                self._by_job_id[(entry.provider, job_id)] = entry
            for hook in self.on_accepted:
                hook(entry)
            if entry.store is not None:
                entry.store.put_accepted(entry.local_id, job_id, cost)
        if cost is not None and entry.cost is None:
            entry.cost = cost
        _wake(entry.accepted)
        return self.advance(entry, JobStatus.SUBMITTED)

    def advance(
        self,
        entry: Entry,
        status: JobStatus,
        *,
        images: tuple[Image, ...] = (),
        cost: Decimal | None = None,
        seed: int | None = None,
        error: FluxError | None = None,
        refunded: bool = False,
    ) -> bool:
        """Move a job forward to ``status``; ignore anything that is not progress.

        Terminal states are absorbing and a job never moves to a lower rank, so duplicate,
        late and out-of-order updates are no-ops. A ``refunded`` job costs 0, whatever
        charge was reported before. Returns whether the status changed.
        """
        current = entry.status
        if current.is_terminal or status.rank <= current.rank:
            return False
        entry.status = status
        if refunded and status.is_terminal:
            entry.refunded = True
            entry.cost = Decimal(0)
        elif cost is not None:
            entry.cost = cost
        if not status.is_terminal:
            if entry.store is not None:
                entry.store.put_status(entry.local_id, status)
            if self._on_change is not None:
                self._on_change(entry, current)
        else:
            entry.images = images
            if seed is not None:
                entry.seed = seed
            entry.error = error
            entry.finished_at = self._clock()
            if isinstance(error, JobError) and error.job is None:
                # Before anyone is woken or told: the error names the job as it ended.
                error.job = entry.snapshot()
            self._active -= 1
            if entry.store is not None:
                entry.store.put_finished(
                    entry.local_id,
                    status,
                    images=entry.images,
                    cost=entry.cost,
                    refunded=entry.refunded,
                    seed=entry.seed,
                    polls=entry.polls,
                    error=error,
                )
            _wake(entry.waiter)
            _wake(entry.accepted)
            if self._on_change is not None:
                self._on_change(entry, current)
            if self._on_finished is not None:
                self._on_finished(entry)
        return True

    def apply(self, entry: Entry, update: Update) -> None:
        """Apply a provider update (from a poll, a callback or a create's answer).

        A ``failed`` update ends the job with a `JobFailedError` carrying the provider's
        words and the job's snapshot.
        """
        if update.status is entry.status:
            return  # no progress (a poll finding the job still running): `advance` ignores it
        error: FluxError | None = None
        if update.status is JobStatus.FAILED:
            error = JobFailedError(
                f"job {entry.local_id} (provider id {entry.job_id}) failed"
                + (f": {update.error}" if update.error else ""),
                provider=entry.provider,
                reason=update.error,
            )
        self.advance(
            entry,
            update.status,
            images=update.images,
            cost=update.cost,
            seed=update.seed,
            error=error,
            refunded=getattr(update, "refunded", False),
        )

    def finish(self, entry: Entry, status: JobStatus, error: FluxError) -> bool:
        """End a job with ``status`` and ``error`` (a `JobError` gets the final snapshot).

        Returns whether the job was still open (a finished job is left as it was).
        """
        return self.advance(entry, status, error=error)

    def release(self, entry: Entry) -> None:
        """Forget a finished job (its `Job` handle keeps working)."""
        if not entry.status.is_terminal:
            raise ValueError(f"cannot release job {entry.local_id}: it is still {entry.status}")
        if self._by_local.get(entry.local_id) is entry:
            del self._by_local[entry.local_id]
        if entry.job_id is not None:
            key = (entry.provider, entry.job_id)
            if self._by_job_id.get(key) is entry:
                del self._by_job_id[key]


def _wake(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)
