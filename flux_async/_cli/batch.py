"""``flux-async batch``: run a file of prompts through `FluxClient.generate_many`.

`batch_command` checks the input, the output directory and the manifest before the client
opens (nothing is sent for a command that cannot work), then `run_batch` runs it.

Every input line gets exactly one manifest record, whatever happens: its outcome, or, when
the run is interrupted, ``cancelled`` (handed to the client, unfinished) or
``not_started`` (never handed over).

The batch is journaled (`SQLiteJournal`, ``DIR/journal.sqlite`` by default): every job is
recorded before its create is sent, so ``--resume`` settles each line from its record (a
finished line is not sent again, an accepted job is followed to its end, a lost create is
found again or ends ``unknown``). The manifest of a resumed run is appended to, then
rewritten with one line per input (`Manifest.close`); resumed lines say ``"resumed": true``.
Saved image files are recorded in the journal too, so a resume does not download them again.

Images are saved here (`FluxClient.download`) rather than by ``generate_many``, so that an
interruption can stop the downloads first and then close the client.

Ctrl-C is handled inside the event loop. The first one stops feeding new lines, cancels
the downloads under way, and closes the client, which cancels the jobs in flight; their
outcomes still arrive, with the provider's job ids (those jobs may have been paid for),
and are recorded. A second Ctrl-C, or a close that takes longer than a few seconds, cancels
the run outright: the lines still open are then recorded without their job ids.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from flux_async import (
    FluxClient,
    FluxError,
    JobStore,
    JournalError,
    JournalMismatchError,
    Outcome,
    PromptLine,
    SQLiteJournal,
)

from .client import client_opener
from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, PROG, UsageError, one_line
from .inputs import STDIN, BadLine, open_prompts
from .manifest import Manifest, Record, outcome_record, record
from .progress import Display, Tally, choose_display, format_seconds

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "BatchResult",
    "Feed",
    "JournalOptions",
    "batch_command",
    "print_summary",
    "resume_command",
    "run_batch",
    "set_aside",
]

#: Seconds the first Ctrl-C waits for the client to close before cancelling outright.
CLOSE_GRACE = 5.0
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


@dataclass
class BatchResult:
    """How a batch run ended."""

    tally: Tally
    interrupted: bool
    manifest: Path
    out: Path
    journal: Path | None = None
    #: After an interruption: jobs left unfinished whose provider ids the journal holds,
    #: and creates left without an answer (the provider may have created them).
    left_with_ids: int = 0
    left_unanswered: int = 0


@dataclass
class JournalOptions:
    """The batch's journal: where, and how to treat what it already holds."""

    path: Path
    resubmit_unknown: bool = False
    new_batch: bool = False


class _Run:
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


class _Interrupter:
    """Turns SIGINT into a clean stop inside the event loop (see the module docstring).

    Once the run is winding down (`finishing`), what is left is quick and bounded: a
    further Ctrl-C only says so, and the one after that is Python's own KeyboardInterrupt.
    """

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._main = task
        self.client: FluxClient | None = None
        self.signals = 0
        self.closing: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._installed = False
        self._finishing = False

    def install(self) -> None:
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            return  # e.g. a background job of a shell script: Ctrl-C is not meant for us
        try:
            self._loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        except (NotImplementedError, RuntimeError, ValueError):
            # No loop signal handlers here (Windows, or not the main thread): asyncio.run
            # cancels the main task on Ctrl-C instead, and the lines left open are
            # recorded without their job ids.
            return
        self._installed = True

    def uninstall(self) -> None:
        self.finishing()
        if self._installed:
            self._loop.remove_signal_handler(signal.SIGINT)
            self._installed = False

    def finishing(self) -> None:
        """Note that the run is winding down: Ctrl-C no longer cancels anything."""
        self._finishing = True
        if self._watchdog is not None:
            self._watchdog.cancel()

    def _on_sigint(self) -> None:
        self.signals += 1
        run = self._run
        run.interrupted = run.tally.interrupted = True
        run.feed.stop()
        if self._finishing:
            run.display.note("finishing the manifest (Ctrl-C again to abandon it)")
            self.uninstall()
        elif self.signals == 1 and self.client is not None:
            run.display.note(
                f"interrupted: cancelling {run.tally.in_flight} jobs in flight and "
                f"{len(run.feed.pending)} lines in all (press Ctrl-C again to stop at once)"
            )
            self.closing = self._loop.create_task(self._close(self.client))
            self._watchdog = self._loop.call_later(CLOSE_GRACE, self._main.cancel)
        else:
            run.display.note("stopping now")
            self.finishing()
            self._main.cancel()

    async def _close(self, client: FluxClient) -> None:
        # Downloads first: a download still running when the client closes could outlive it.
        await self._run.stop_saving("interrupted")
        await client.aclose()

    async def wait_closed(self) -> None:
        """Wait (a little) for a close started by Ctrl-C, to leave the client closed."""
        if self.closing is not None:
            await asyncio.wait({self.closing}, timeout=CLOSE_GRACE)
            if not self.closing.done():
                self.closing.cancel()
            elif not self.closing.cancelled():
                self.closing.exception()  # retrieved: a failed close is not this run's error


async def run_batch(
    open_client: Callable[[], AbstractAsyncContextManager[FluxClient]],
    lines: Iterator[PromptLine],
    *,
    total: int | None,
    manifest: Manifest,
    out: Path,
    concurrency: int | None,
    budget: Decimal | None,
    make_display: Callable[[Tally], Display],
    price_per_job: Decimal | None = None,
    journal: JournalOptions | None = None,
) -> BatchResult:
    """Run a batch and write its manifest; return the tally.

    Returns normally when interrupted (``BatchResult.interrupted``): the run is over and
    its manifest complete either way.

    Args:
        open_client: opens the client to run the batch with.
        lines: the input lines, read lazily.
        total: how many there are, when known (for progress).
        manifest: receives one record per input line; closed at the end.
        out: where images are saved.
        concurrency, budget, price_per_job: as for `FluxClient.generate_many`.
        make_display: builds the progress display.
        journal: the journal to record the batch in (and resume it from).

    Raises:
        OSError: the manifest cannot be written.
        FluxError: the client could not be opened.
        UsageError: the journal cannot be used, or holds another input (nothing was sent).
    """
    feed = Feed(lines)
    tally = Tally(total)
    run = _Run(feed, manifest, tally, make_display(tally), out)
    interrupter = _Interrupter(run)
    interrupter.install()
    failure: str | None = None
    store: SQLiteJournal | None = None
    journal_failed = False
    try:
        if journal is not None:
            store = SQLiteJournal(journal.path)
            await store.open()
            run.store = store
        run.display.start()
        async with open_client() as client:
            interrupter.client = client
            unsubscribe = client.subscribe(tally.on_event)
            try:
                # price_per_job only when given: the keyword is new in generate_many.
                options: dict[str, Any] = {}
                if price_per_job is not None:
                    options["price_per_job"] = price_per_job
                if journal is not None:
                    options.update(
                        journal=store,
                        resubmit_unknown=journal.resubmit_unknown,
                        new_batch=journal.new_batch,
                    )
                outcomes = client.generate_many(
                    feed, concurrency=concurrency, budget=budget, **options
                )
                async with contextlib.aclosing(outcomes):
                    async for outcome in outcomes:
                        run.take(client, outcome)
                await run.wait_saved()
            except asyncio.CancelledError:
                # Marked before the downloads under way are stopped, so that their lines
                # say "cancelled" (interrupted), not "download_failed".
                run.interrupted = tally.interrupted = True
                raise
            finally:
                interrupter.finishing()
                unsubscribe()
                try:
                    await interrupter.wait_closed()
                finally:
                    # Downloads still run here only after a failure or a second Ctrl-C;
                    # they must end before the client closes.
                    await run.stop_saving("interrupted" if run.interrupted else "the batch stopped")
    except asyncio.CancelledError:
        # Only Ctrl-C cancels the command's main task: the run is over, and what is
        # left to do is to record the lines still open.
        run.interrupted = tally.interrupted = True
    except KeyboardInterrupt:
        run.interrupted = tally.interrupted = True
        raise
    except JournalMismatchError as exc:
        # Raised before anything was sent: the manifest keeps what it held.
        journal_failed = True
        assert journal is not None
        raise UsageError(_mismatch_message(exc, feed, journal.path)) from exc
    except JournalError as exc:
        if manifest.written:
            failure = one_line(exc)
            raise
        journal_failed = True
        raise UsageError(one_line(exc)) from exc
    except Exception as exc:
        failure = one_line(exc)
        raise
    finally:
        interrupter.finishing()
        tally.stop()
        try:
            if journal_failed:
                pass
            elif failure is not None:
                why = f"the batch stopped ({failure})"
            elif run.interrupted:
                why = "interrupted"
            else:
                why = "the batch ended without an outcome for it"
            # When the run already failed, its error is the one to report, not a second
            # one from a manifest that cannot be written.
            if not journal_failed:
                with contextlib.suppress(*((OSError,) if failure is not None else ())):
                    run.record_the_rest(why)
                run.rejected_beyond_shown()
        finally:
            try:
                manifest.close()
            finally:
                if store is not None:
                    await store.aclose()
                await run.display.stop()
                interrupter.uninstall()
    return BatchResult(
        tally,
        run.interrupted,
        manifest.path,
        out,
        journal=journal.path if journal is not None else None,
        left_with_ids=run.left_with_ids,
        left_unanswered=run.left_unanswered,
    )


def _mismatch_message(exc: JournalMismatchError, feed: Feed, path: Path) -> str:
    line = feed.pending.get(exc.index)
    if line is None:
        what = f"the journal {path} records input {exc.index}, which this input does not have"
    else:
        what = (
            f"line {line.line} (input {exc.index}) is not the one the journal {path} "
            "recorded for it (another prompt, parameters or provider)"
        )
    return (
        f"{what}: give the same FILE and options with --resume, or pass --new-batch "
        "to start a new batch"
    )


# -- the command -------------------------------------------------------------------------------


def batch_command(args: argparse.Namespace, console: Console | None) -> int:
    """Run ``flux-async batch``; return the exit status.

    Raises:
        UsageError: the options, the input, the output directory or the manifest cannot
            work (checked before anything is sent).
    """
    if args.price_per_job is not None and args.budget is None:
        raise UsageError("--price-per-job only applies with --budget")
    if args.resume and args.new_batch:
        raise UsageError(
            "--resume continues the batch in the journal and --new-batch starts another: "
            "pass one of them"
        )
    out = Path(args.out)
    manifest_path = Path(args.manifest) if args.manifest else out / "manifest.jsonl"
    journal = JournalOptions(
        Path(args.journal) if args.journal else out / "journal.sqlite",
        resubmit_unknown=args.resubmit_unknown,
        new_batch=args.new_batch,
    )
    earlier = [path for path in (journal.path, manifest_path) if _holds_something(path)]
    if earlier and not (args.resume or args.new_batch):
        raise UsageError(
            f"{earlier[0]} already exists (an earlier batch): pass --resume to continue it, "
            "or choose another --out"
        )
    opener, _ = client_opener(args)
    source = open_prompts(args.file, format=args.format)
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
            if args.new_batch and _holds_something(manifest_path):
                aside = set_aside(manifest_path)
                print(f"{PROG}: the earlier manifest is now {aside}", file=sys.stderr)
            manifest = Manifest(manifest_path, append=args.resume)
        except OSError as exc:
            where = exc.filename or manifest_path
            raise UsageError(f"cannot write {where}: {exc.strerror or exc}") from exc
        result = asyncio.run(
            run_batch(
                opener,
                source.lines(),
                total=source.count,
                manifest=manifest,
                out=out,
                concurrency=args.concurrency,
                budget=args.budget,
                price_per_job=args.price_per_job,
                make_display=lambda tally: choose_display(tally, quiet=args.quiet, console=console),
                journal=journal,
            )
        )
    finally:
        source.close()
    print_summary(result, sys.stdout)
    if result.interrupted:
        print_resume_hint(result, getattr(args, "argv", None), args.file, sys.stdout)
        return EXIT_INTERRUPTED
    tally = result.tally
    return EXIT_OK if tally.statuses["succeeded"] == tally.done else EXIT_FAILED


def print_summary(result: BatchResult, stream: IO[str], *, images: str | None = None) -> None:
    """Print how the batch ended: the same counts as the progress display (``images``: what
    to say instead of the image directory)."""
    tally = result.tally
    statuses = tally.statuses
    failures = tally.failures()
    failed = f"{sum(failures.values())} failed"
    if set(failures) - {"failed"}:
        failed += f" ({', '.join(f'{n} {status}' for status, n in failures.items())})"
    parts = [
        f"{statuses['succeeded']} succeeded",
        failed,
        f"{statuses['skipped']} skipped",
        f"{statuses['rejected']} rejected",
    ]
    parts += [f"{statuses[status]} {status.replace('_', ' ')}" for status in tally.set_apart()]
    when = (
        f"interrupted after {format_seconds(tally.elapsed)}"
        if result.interrupted
        else f"{tally.done} lines in {format_seconds(tally.elapsed)}"
    )
    print(f"{PROG}: {when}: {', '.join(parts)}; cost {format(tally.cost, 'f')}", file=stream)
    print(f"manifest: {result.manifest}", file=stream)
    print(f"images:   {images or f'{result.out}{os.sep}'}", file=stream)


def print_resume_hint(
    result: BatchResult, argv: list[str] | None, file: str, stream: IO[str]
) -> None:
    """After Ctrl-C: what was left in flight, and the command that resumes the batch."""
    left = result.left_with_ids
    if left:
        print(
            f"{left} job{'s were' if left != 1 else ' was'} left in flight; "
            f"{'their provider ids are' if left != 1 else 'its provider id is'} recorded in "
            f"the journal {result.journal} (the provider may still finish and charge "
            f"{'them' if left != 1 else 'it'}: --resume collects the results)",
            file=stream,
        )
    if result.left_unanswered:
        unanswered = result.left_unanswered
        print(
            f"{unanswered} create{'s' * (unanswered != 1)} had no answer yet; the journal "
            "records them, and --resume looks for them before sending anything again",
            file=stream,
        )
    if argv is None:
        return
    command, hidden = resume_command(argv)
    notes = []
    if hidden:
        notes.append("add your API key: it is not shown here")
    if file == STDIN:
        notes.append("with the same input on standard input")
    suffix = f"  ({'; '.join(notes)})" if notes else ""
    print(f"to resume: {command}{suffix}", file=stream)


def resume_command(argv: list[str]) -> tuple[str, bool]:
    """Return the command line that resumes this batch, and whether an API key was left out.

    ``--new-batch`` is dropped (the batch it started is now the journal's latest) and
    ``--resume`` added; a key given with ``--api-key`` is never printed.
    """
    words: list[str] = []
    hidden = False
    skip = False
    for word in argv:
        if skip:
            skip = False
            continue
        name, equals, _ = word.partition("=")
        # argparse accepts any unambiguous prefix of an option (--api-k KEY).
        if len(name) > 4 and "--api-key".startswith(name):
            hidden = True
            skip = not equals
            continue
        if len(name) > 4 and any(option.startswith(name) for option in ("--new-batch", "--resume")):
            continue
        words.append(word)
    return shlex.join([PROG, *words, "--resume"]), hidden


def _holds_something(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def set_aside(path: Path) -> Path:
    """Rename an earlier manifest to a free ``NAME.N.jsonl``; return its new path."""
    number = 1
    while (aside := path.with_name(f"{path.stem}.{number}{path.suffix}")).exists():
        number += 1
    path.rename(aside)
    return aside
