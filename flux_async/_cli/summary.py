"""What ``flux-async batch`` prints once a run is over: `print_summary` (the counts, the
manifest, the images) and, after Ctrl-C, `print_resume_hint` (what was left in flight and
the command that resumes the batch, `resume_command`)."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .common import PROG
from .inputs import STDIN
from .progress import Tally, format_seconds

__all__ = ["BatchResult", "print_resume_hint", "print_summary", "resume_command"]


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
