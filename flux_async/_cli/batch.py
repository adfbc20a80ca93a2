"""``flux-async batch``: run a file of prompts through `FluxClient.generate_many`.

`batch_command` checks the input, the output directory and the manifest before the client
opens (nothing is sent for a command that cannot work), then `run_batch` runs it.

Every input line gets exactly one manifest record, whatever happens: its outcome, or, when
the run is interrupted, ``cancelled`` (handed to the client, unfinished) or
``not_started`` (never handed over).

Its parts: `Feed` and `BatchRun` (``batch_records.py``) turn outcomes into manifest
records, `Interrupter` (``interrupt.py``) handles Ctrl-C, ``summary.py`` prints how the run
ended.

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
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flux_async import (
    FluxClient,
    JournalError,
    JournalMismatchError,
    PromptLine,
    SQLiteJournal,
)

from .batch_records import BatchRun, Feed
from .client import client_opener
from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, PROG, UsageError, one_line
from .inputs import open_prompts
from .interrupt import Interrupter
from .manifest import Manifest
from .progress import Display, Tally, choose_display
from .summary import BatchResult, print_resume_hint, print_summary

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "BatchResult",
    "JournalOptions",
    "batch_command",
    "print_summary",
    "run_batch",
    "set_aside",
]


@dataclass
class JournalOptions:
    """The batch's journal: where, and how to treat what it already holds."""

    path: Path
    resubmit_unknown: bool = False
    new_batch: bool = False


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
    run = BatchRun(feed, manifest, tally, make_display(tally), out)
    interrupter = Interrupter(run)
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
