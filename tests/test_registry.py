"""Property tests of the job registry's state machine (plain synchronous code)."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from flux_async import Image, JobStatus
from flux_async._errors import JobFailedError, JobTimeoutError
from flux_async._registry import Entry, Registry
from flux_async.providers._base import Update

STATUSES = list(JobStatus)


class RegistryMachine(RuleBasedStateMachine):
    """Drives a Registry with arbitrary, duplicated and out-of-order updates."""

    entries = Bundle("entries")

    def __init__(self) -> None:
        super().__init__()
        self.ticks = itertools.count()
        self.finished: list[str] = []
        self.registry = Registry(clock=lambda: float(next(self.ticks)), on_finished=self._done)
        self.history: dict[str, list[JobStatus]] = {}
        self.first_terminal: dict[str, JobStatus] = {}
        self.job_ids = itertools.count()

    def _done(self, entry: Entry) -> None:
        self.finished.append(entry.local_id)

    @rule(target=entries)
    def allocate(self) -> Entry:
        entry = self.registry.allocate("fake", "model")
        assert entry.status is JobStatus.ALLOCATED
        self.history[entry.local_id] = [entry.status]
        return entry

    @rule(entry=entries)
    def accept(self, entry: Entry) -> None:
        had_id = entry.job_id
        self.registry.accept(entry, f"job-{next(self.job_ids)}", Decimal("0.02"))
        if had_id is not None:
            assert entry.job_id == had_id  # the provider id never changes once known
        self._record(entry)

    @rule(entry=entries, status=st.sampled_from(STATUSES))
    def advance(self, entry: Entry, status: JobStatus) -> None:
        before = entry.status
        changed = self.registry.advance(
            entry,
            status,
            images=(Image(url="https://x/1.png"),),
            error=None if status is JobStatus.SUCCEEDED else JobFailedError("x"),
        )
        if before.is_terminal:
            assert not changed and entry.status is before
        assert changed == (entry.status is not before)
        self._record(entry)

    @rule(entry=entries, status=st.sampled_from(STATUSES), refunded=st.booleans())
    def apply(self, entry: Entry, status: JobStatus, refunded: bool) -> None:
        """A provider update, as a poll, a callback or a create's answer brings it."""
        before = entry.status
        self.registry.apply(
            entry, Update(status=status, error="the model said no", refunded=refunded)
        )
        if before.is_terminal:
            assert entry.status is before
        elif status is JobStatus.FAILED and entry.status is JobStatus.FAILED:
            # the provider's words reach the error, with the job's final snapshot
            assert isinstance(entry.error, JobFailedError)
            assert entry.error.reason == "the model said no"
            assert entry.error.job is not None and entry.error.job.status is JobStatus.FAILED
        self._record(entry)

    @rule(entry=entries)
    def finish(self, entry: Entry) -> None:
        """A deadline or a cancel ends the job from the client's side."""
        was_open = not entry.status.is_terminal
        assert self.registry.finish(entry, JobStatus.TIMED_OUT, JobTimeoutError("late")) is was_open
        if was_open:
            assert entry.status is JobStatus.TIMED_OUT
            assert isinstance(entry.error, JobTimeoutError) and entry.error.job is not None
        self._record(entry)

    @rule(entry=entries)
    def release_if_done(self, entry: Entry) -> None:
        if entry.status.is_terminal:
            self.registry.release(entry)
            assert self.registry.get(entry.local_id) is None
            if entry.job_id is not None:
                assert self.registry.by_job_id("fake", entry.job_id) is None
        else:
            with pytest.raises(ValueError):
                self.registry.release(entry)

    def _record(self, entry: Entry) -> None:
        self.history[entry.local_id].append(entry.status)
        if entry.status.is_terminal:
            self.first_terminal.setdefault(entry.local_id, entry.status)

    @invariant()
    def statuses_never_move_backwards(self) -> None:
        for history in self.history.values():
            ranks = [status.rank for status in history]
            assert ranks == sorted(ranks)

    @invariant()
    def terminal_states_are_absorbing(self) -> None:
        for local_id, history in self.history.items():
            if local_id in self.first_terminal:
                first = self.first_terminal[local_id]
                assert history[-1] is first

    @invariant()
    def on_finished_runs_exactly_once_per_terminal_job(self) -> None:
        assert sorted(self.finished) == sorted(self.first_terminal)
        assert len(set(self.finished)) == len(self.finished)

    @invariant()
    def active_counts_unfinished_jobs(self) -> None:
        assert self.registry.active == len(self.history) - len(self.first_terminal)

    @invariant()
    def indexes_agree(self) -> None:
        for entry in self.registry.entries():
            assert self.registry.get(entry.local_id) is entry
            if entry.job_id is not None:
                assert self.registry.by_job_id("fake", entry.job_id) is entry


TestRegistry = RegistryMachine.TestCase
TestRegistry.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def test_terminal_entry_records_result_and_wakes_waiter() -> None:
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        registry = Registry(clock=lambda: 5.0)
        entry = registry.allocate("fake", "m")
        entry.waiter = loop.create_future()
        registry.accept(entry, "abc", Decimal("0.02"))
        assert entry.status is JobStatus.SUBMITTED and not entry.waiter.done()
        assert registry.by_job_id("fake", "abc") is entry
        image = Image(url="https://x/y.png")
        assert registry.advance(entry, JobStatus.SUCCEEDED, images=(image,), seed=7)
        assert entry.waiter.done() and entry.images == (image,) and entry.seed == 7
        assert entry.finished_at == 5.0 and entry.cost == Decimal("0.02")
        # a late failure changes nothing
        assert not registry.advance(entry, JobStatus.FAILED, error=JobFailedError("late"))
        assert entry.status is JobStatus.SUCCEEDED and entry.error is None
        snap = entry.snapshot()
        assert snap.id == "abc" and snap.status is JobStatus.SUCCEEDED
    finally:
        loop.close()
