"""How ``batch --redis`` turns the workers' outcome records (`flux_async.workers.collect`)
into manifest lines: one per input line, the same fields and statuses as a local batch, and
``pending`` for the lines not collected when it stopped.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from flux_async import PromptLine

from .batch_records import SHOW_REJECTED
from .common import one_line
from .manifest import Manifest, Record, record
from .progress import Display, Tally

__all__ = ["PENDING", "Collector"]

PENDING = "pending"


class Collector:
    """Turns the workers' outcome records into manifest records, one per input line."""

    def __init__(
        self, lines: list[PromptLine], manifest: Manifest, tally: Tally, display: Display
    ) -> None:
        self.lines = lines
        self.manifest = manifest
        self.tally = tally
        self.display = display
        # The usable lines, in queue order: the batch's input k is line queued[k].
        self.queued = [index for index, line in enumerate(lines) if line.problem is None]
        self.open = set(self.queued)

    def write(self, entry: Record) -> None:
        self.open.discard(entry["index"])
        self.manifest.write(entry)
        self.tally.count(entry["status"], entry["cost"])
        if entry["status"] == "rejected" and self.tally.statuses["rejected"] <= SHOW_REJECTED:
            self.display.note(f"rejected {one_line(entry['error'], limit=300)}")
        self.display.update()

    def reject_unusable(self) -> None:
        for index, line in enumerate(self.lines):
            if line.problem is not None:
                self.write(record(index=index, line=line, status="rejected", error=line.problem))

    def take(self, outcome: dict[str, Any]) -> None:
        position = outcome.get("index")
        if not isinstance(position, int) or not 0 <= position < len(self.queued):
            return  # not an input of this file (never written by a worker of this batch)
        index = self.queued[position]
        if index not in self.open:
            return
        line = self.lines[index]
        status = str(outcome.get("status"))
        error = outcome.get("error")
        error = None if error is None else one_line(error)
        if status == "rejected":
            error = f"line {line.line}: {error}"
        elif error is None and status != "succeeded":
            error = f"ended {status}"
        cost = outcome.get("cost")
        self.write(
            record(
                index=index,
                line=line,
                status=status,
                job_id=outcome.get("job_id"),
                image_urls=outcome.get("image_urls") or (),
                files=[Path(file) for file in outcome.get("files") or ()],
                cost=None if cost is None else Decimal(cost),
                error=error,
            )
        )

    def record_the_rest(self, why: str) -> None:
        for index in sorted(self.open):
            line = self.lines[index]
            self.manifest.write(record(index=index, line=line, status=PENDING, error=why))
            self.tally.count(PENDING, None)
        self.open.clear()
