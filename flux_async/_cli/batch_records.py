"""A ``flux-async batch`` run's manifest records: `Feed` numbers the input lines it hands to
`FluxClient.generate_many`, and `BatchRun` turns each outcome into its line's record,
saving the images on the way; once the run is over, it records the lines left without an
outcome (``cancelled``, ``not_started``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flux_async import FluxClient, FluxError, JobStore, Outcome, PromptLine

from .common import one_line
from .inputs import BadLine
from .manifest import Manifest, Record, outcome_record, record
from .progress import Display, Tally

__all__ = ["SHOW_REJECTED", "BatchRun", "Feed"]

#: Rejected lines shown on stderr one by one; beyond that, only how many more there were.
SHOW_REJECTED = 20


class Feed:
    """The iterable given to `FluxClient.generate_many`: numbers the lines, stops on request.

    Each line handed out is kept in ``pending`` under its index until its record is
    written, so the manifest can say which line an outcome belongs to, and which lines
    never got one. Stopping leaves the underlying lines unread, for `rest`.
    """

    def __init__(self, lines: Iterator[PromptLine]) -> None:
        self._lines = lines
        self.pending: dict[int, PromptLine] = {}
        self.next_index = 0
        self.stopped = False

    def __iter__(self) -> Feed:
        return self

    def __next__(self) -> str | dict[str, Any] | BadLine:
        if self.stopped:
            raise StopIteration
        line = next(self._lines)
        self.pending[self.next_index] = line
        self.next_index += 1
        if line.problem is not None or line.item is None:
            return BadLine(line.problem or f"line {line.line}: unusable")
        return line.item

    def stop(self) -> None:
        """Hand out no more lines."""
        self.stopped = True

    def rest(self) -> Iterator[tuple[int, PromptLine]]:
        """Yield the lines never handed out, with the indexes they would have had."""
        for line in self._lines:
            yield self.next_index, line
            self.next_index += 1


class BatchRun:
    """One batch run: turns outcomes into manifest records, saving images on the way."""

    def __init__(
        self, feed: Feed, manifest: Manifest, tally: Tally, display: Display, out: Path
    ) -> None:
        self.feed = feed
        self.manifest = manifest
        self.tally = tally
        self.display = display
        self.out = out
        self.interrupted = False
        self.store: JobStore | None = None
        self.left_with_ids = 0
        self.left_unanswered = 0
        # Jobs that succeeded and whose images are being saved, by input index.
        self.saving: dict[int, tuple[Outcome, asyncio.Task[None]]] = {}

    def write(self, index: int, entry: Record) -> None:
        if self.interrupted and entry["status"] == "cancelled":
            if entry["job_id"] is not None:
                self.left_with_ids += 1
            elif "in flight" in (entry["error"] or ""):
                self.left_unanswered += 1
        self.feed.pending.pop(index, None)
        self.manifest.write(entry)
        self.tally.count(entry["status"], entry["cost"])
        if entry["status"] == "rejected":
            self._show_rejected(entry)
        self.display.update()

    def _show_rejected(self, entry: Record) -> None:
        rejected = self.tally.statuses["rejected"]
        if rejected <= SHOW_REJECTED:
            self.display.note(f"rejected {one_line(entry['error'], limit=300)}")

    def rejected_beyond_shown(self) -> None:
        """Say how many rejected lines were not shown one by one."""
        hidden = self.tally.statuses["rejected"] - SHOW_REJECTED
        if hidden > 0:
            self.display.note(
                f"... and {hidden} more rejected line{'s' * (hidden != 1)} "
                f"(see {self.manifest.path})"
            )

    def take(self, client: FluxClient, outcome: Outcome) -> None:
        """Record an outcome, or start saving its images and record it once they are."""
        line = self.feed.pending.get(outcome.index)
        if line is None:  # pragma: no cover - every index was handed out once
            return
        if (
            outcome.resumed
            and outcome.generation is not None
            and outcome.files
            and all(path.exists() for path in outcome.files)
        ):
            # Saved by an earlier run (the journal says where): not downloaded again.
            entry = outcome_record(outcome, line, interrupted=False, files=outcome.files)
            self.write(outcome.index, entry)
            return
        if outcome.generation is not None and line.problem is None and not self.interrupted:
            task = asyncio.get_running_loop().create_task(self._save(client, outcome, line))
            self.saving[outcome.index] = (outcome, task)
            return
        self.write(outcome.index, outcome_record(outcome, line, interrupted=self.interrupted))

    async def _save(self, client: FluxClient, outcome: Outcome, line: PromptLine) -> None:
        assert outcome.generation is not None
        try:
            files = await client.download(
                outcome.generation, self.out, prefix=f"{outcome.index:06d}-"
            )
        except FluxError as exc:
            entry = outcome_record(
                outcome, line, interrupted=self.interrupted, save_error=one_line(exc)
            )
        else:
            entry = outcome_record(outcome, line, interrupted=False, files=files)
            if self.store is not None and outcome.job is not None:
                self.store.put_files(outcome.job.local_id, files)
        del self.saving[outcome.index]
        self.write(outcome.index, entry)

    async def wait_saved(self) -> None:
        """Wait until every image being saved is.

        Raises:
            Exception: what a download task raised other than a `FluxError` (a bug, or a
                manifest that cannot be written).
        """
        while running := [task for _, task in self.saving.values() if not task.done()]:
            await asyncio.wait(running)
        for _, task in self.saving.values():
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def stop_saving(self, why: str) -> None:
        """Cancel the downloads under way and record their lines (their jobs succeeded)."""
        tasks = [task for _, task in self.saving.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for index, (outcome, _) in sorted(self.saving.items()):
            line = self.feed.pending[index]
            self.write(
                index,
                outcome_record(outcome, line, interrupted=self.interrupted, save_error=why),
            )
        self.saving.clear()

    def record_the_rest(self, why: str) -> None:
        """Record every line that has no record yet: ``cancelled`` or ``not_started``."""
        for index in sorted(self.feed.pending):
            line = self.feed.pending[index]
            self.write(
                index,
                record(
                    index=index,
                    line=line,
                    status="cancelled",
                    error=f"{why} before this line finished",
                ),
            )
        for index, line in self.feed.rest():
            self.manifest.write(
                record(
                    index=index,
                    line=line,
                    status="not_started",
                    error=f"{why} before this line started",
                )
            )
            self.tally.count("not_started", None)
