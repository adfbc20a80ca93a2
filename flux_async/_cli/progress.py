"""Live batch progress on stderr: a rich progress bar on a terminal, else plain lines."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Protocol

from flux_async import Event

from .manifest import FAILED_STATUSES

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Display", "PlainDisplay", "RichDisplay", "Tally", "choose_display", "format_seconds"]


def format_seconds(seconds: float) -> str:
    """Return a duration as ``4.2s``, ``42s``, ``3m05s`` or ``1h02m``."""
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f}s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Tally:
    """Counts of a running batch: outcomes by status, jobs in flight, money, retries, time.

    The progress display and the final summary both read their counts from here, through
    `failures`, so they always agree, also after Ctrl-C.

    Args:
        total: how many inputs the batch has, when known.
        clock: the time source (``time.monotonic``; tests pass their own).
    """

    #: No ETA before this many inputs are done: the first few finish early and alone.
    ETA_AFTER = 5
    #: What an interruption leaves behind, counted apart once interrupted (`set_apart`).
    stopped_statuses: tuple[str, ...] = ("cancelled", "not_started")
    #: Whether the status line shows jobs in flight (known only when this process runs them).
    shows_in_flight = True

    def __init__(self, total: int | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self._clock = clock
        self.statuses: Counter[str] = Counter()
        self.cost = Decimal(0)
        self.retries = 0
        self.interrupted = False
        self._jobs: set[str] = set()
        self.started = clock()
        self.finished_at: float | None = None

    @property
    def done(self) -> int:
        """Inputs that have their manifest line."""
        return sum(self.statuses.values())

    def failures(self) -> dict[str, int]:
        """Failed inputs by status; once interrupted, without ``cancelled`` and
        ``not_started`` (those are counted apart: the user stopped them)."""
        apart = self.set_apart()
        return {
            status: n
            for status, n in sorted(self.statuses.items())
            if n and status in FAILED_STATUSES and status not in apart
        }

    def set_apart(self) -> tuple[str, ...]:
        """The statuses shown on their own: what Ctrl-C stopped, once interrupted."""
        return self.stopped_statuses if self.interrupted else ()

    @property
    def failed(self) -> int:
        """Inputs that failed (see `failures`)."""
        return sum(self.failures().values())

    @property
    def in_flight(self) -> int:
        """Jobs the provider accepted that have not finished."""
        return 0 if self.finished_at is not None else len(self._jobs)

    @property
    def elapsed(self) -> float:
        """Seconds since the batch started (until it finished, once it has)."""
        return (self.finished_at or self._clock()) - self.started

    def count(self, status: str, cost: str | None) -> None:
        """Count one manifest record."""
        self.statuses[status] += 1
        if cost is not None:
            self.cost += Decimal(cost)

    def on_event(self, event: Event) -> None:
        """Follow jobs in flight and count retried requests (a `FluxClient.subscribe`
        callback)."""
        if event.kind == "retried":
            self.retries += 1
        elif event.local_id is None:
            return
        elif event.kind == "submitted":
            self._jobs.add(event.local_id)
        elif event.kind == "finished":
            self._jobs.discard(event.local_id)

    def stop(self) -> None:
        """Stop the clock."""
        self.finished_at = self._clock()

    def rate(self) -> float:
        """Inputs finished per second so far."""
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds until every input is done at the current rate, once that means something.

        None until `ETA_AFTER` inputs are done (or the total is unknown): the first jobs to
        finish are the quickest of their wave, and a rate from them is far off.
        """
        rate = self.rate()
        if self.total is None or rate <= 0 or self.done < min(self.ETA_AFTER, self.total):
            return None
        return max(0, self.total - self.done) / rate

    def stats(self) -> str:
        """Return the status line without the done/total count."""
        parts = [f"{self.statuses['succeeded']} ok", f"{self.failed} failed"]
        if self.shows_in_flight:
            parts.append(f"{self.in_flight} in flight")
        for status in ("skipped", "rejected", *self.set_apart()):
            if self.statuses[status]:
                parts.append(f"{self.statuses[status]} {status.replace('_', ' ')}")
        text = ", ".join(parts) + f" | {self.rate():.1f} jobs/s"
        eta = self.eta()
        if eta is not None and self.done < (self.total or 0) and not self.interrupted:
            text += f" | ETA {format_seconds(eta)}"
        text += f" | cost {format(self.cost, 'f')}"
        if self.retries:
            text += f" | {self.retries} retries"
        return text

    def status_line(self) -> str:
        """Return one line saying where the batch is."""
        total = f"/{self.total}" if self.total is not None else ""
        return f"{self.done}{total} done: {self.stats()} | {format_seconds(self.elapsed)}"


class Display(Protocol):
    """Shows a batch's progress while it runs."""

    def start(self) -> None:
        """Start showing progress (in a running event loop)."""

    def update(self) -> None:
        """Show that the tally changed."""

    def note(self, message: str) -> None:
        """Print a message without breaking the progress display."""

    async def stop(self) -> None:
        """Stop showing progress."""


class NullDisplay:
    """Shows no progress (``--quiet``); notes (rejected lines, Ctrl-C) still go to stderr."""

    def start(self) -> None:
        """Do nothing."""

    def update(self) -> None:
        """Do nothing."""

    def note(self, message: str) -> None:
        """Print a message on stderr."""
        print(f"flux-async: {message}", file=sys.stderr, flush=True)

    async def stop(self) -> None:
        """Do nothing."""


class PlainDisplay:
    """Writes a status line to a stream about once a second, when something changed.

    Meant for logs and pipes: no cursor movement, one line at a time.

    Args:
        tally: the counts shown.
        stream: where the lines go (stderr when None).
        interval: seconds between status lines (`INTERVAL` when None).
    """

    #: Seconds between status lines by default.
    INTERVAL = 1.0

    def __init__(
        self, tally: Tally, stream: IO[str] | None = None, *, interval: float | None = None
    ) -> None:
        self._tally = tally
        self._stream = stream
        self._interval = self.INTERVAL if interval is None else interval
        self._task: asyncio.Task[None] | None = None
        self._last = ""

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stderr
        print(text, file=stream, flush=True)

    def start(self) -> None:
        """Start the once-a-second status lines."""
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self._show()

    def _show(self) -> None:
        # Rate, ETA and time change every second: compare the counts only.
        tally = self._tally
        key = f"{tally.done} {tally.failed} {tally.in_flight} {tally.retries}"
        if key != self._last:
            self._last = key
            self._write(f"flux-async: {tally.status_line()}")

    def update(self) -> None:
        """Nothing to do at once: the next tick shows it."""

    def note(self, message: str) -> None:
        """Print a message on its own line."""
        self._write(f"flux-async: {message}")

    async def stop(self) -> None:
        """Stop the status lines, after a last one if the counts changed since."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self._show()


class RichDisplay:
    """A rich progress bar over a status line, redrawn 4 times a second.

    The bar shows done/total and the time; the line under it the counts, rate, ETA and
    cost. Rich redraws from a thread of its own, so the status text is computed in the
    event loop and handed over as a finished string.
    """

    def __init__(self, tally: Tally, console: Console) -> None:
        from rich.console import RenderableType
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.text import Text

        display = self

        class _Progress(Progress):
            def get_renderables(self) -> Iterator[RenderableType]:
                yield self.make_tasks_table(self.tasks)
                yield Text(display.text, overflow="ellipsis", no_wrap=True)

        self._tally = tally
        self.text = tally.stats()
        self._progress = _Progress(
            SpinnerColumn(),
            TextColumn("batch"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=4,
            expand=True,
        )
        self._task = self._progress.add_task("batch", total=tally.total, start=False)
        self._refresher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Show the bar; it is redrawn in the background."""
        self._progress.start_task(self._task)
        self._progress.start()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        # Rate and ETA move with time even when no outcome arrives.
        while True:
            await asyncio.sleep(0.5)
            self.update()

    def update(self) -> None:
        """Redraw the counts."""
        self.text = self._tally.stats()
        self._progress.update(self._task, completed=self._tally.done)

    def note(self, message: str) -> None:
        """Print a message above the bar."""
        self._progress.console.print(f"flux-async: {message}", markup=False, highlight=False)

    async def stop(self) -> None:
        """Draw the bar one last time and stop."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        self.update()
        self._progress.stop()


def rich_console() -> Console | None:
    """Return a rich console on stderr when rich is installed and stderr is a terminal."""
    try:
        from rich.console import Console
    except ImportError:
        return None
    console = Console(stderr=True)
    return console if console.is_terminal else None


def choose_display(tally: Tally, *, quiet: bool, console: Console | None) -> Display:
    """Pick the display: nothing when quiet, rich on a terminal, else plain lines."""
    if quiet:
        return NullDisplay()
    if console is not None:
        return RichDisplay(tally, console)
    return PlainDisplay(tally)
