"""The batch manifest: one JSON line per input line, written as each outcome arrives.

A run appends to the manifest as outcomes arrive (a resumed run appends to the earlier
run's file, never truncating it), and `Manifest.close` rewrites it consistently (a
temporary file renamed over it): one line per input index, in index order, the latest
record of each index winning, except that a placeholder left by an interruption
(``not_started``, or ``cancelled`` with no job id) never replaces an earlier real record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from flux_async import ClientStateError, Outcome, PromptLine

from .common import one_line

__all__ = [
    "FAILED_STATUSES",
    "Manifest",
    "Record",
    "is_placeholder",
    "merge_records",
    "outcome_record",
    "short_url",
]

Record = dict[str, Any]

#: Statuses counted as failures in the summary (``skipped`` and ``rejected`` have their own).
FAILED_STATUSES = frozenset(
    {"failed", "timed_out", "unknown", "cancelled", "download_failed", "not_started"}
)
_DATA_URL_KEEP = 64


def short_url(url: str) -> str:
    """Return ``url``, with a ``data:`` URL (the image itself, inline) cut short."""
    if url.startswith("data:") and len(url) > _DATA_URL_KEEP:
        return f"{url[:_DATA_URL_KEEP]}... ({len(url)} characters)"
    return url


def record(
    *,
    index: int,
    line: PromptLine,
    status: str,
    job_id: str | None = None,
    image_urls: Sequence[str] = (),
    files: Sequence[Path] = (),
    cost: Decimal | None = None,
    error: str | None = None,
    resumed: bool = False,
) -> Record:
    """Return one manifest record, with its keys in the documented order (plus
    ``"resumed": true`` for an input settled from the journal of an earlier run)."""
    entry: Record = {
        "index": index,
        "line": line.line,
        "prompt": line.prompt,
        "status": status,
        "job_id": job_id,
        "image_urls": [short_url(url) for url in image_urls],
        "files": [str(path) for path in files],
        "cost": None if cost is None else format(cost, "f"),
        "error": error,
    }
    if resumed:
        entry["resumed"] = True
    return entry


def outcome_record(
    outcome: Outcome,
    line: PromptLine,
    *,
    interrupted: bool,
    files: Sequence[Path] | None = None,
    save_error: str | None = None,
) -> Record:
    """Return the manifest record of a batch outcome.

    Args:
        outcome: what `FluxClient.generate_many` yielded for the line.
        line: the input line.
        interrupted: whether the run was interrupted (Ctrl-C).
        files: for a job that succeeded, where its images were saved, once they were.
        save_error: for a job that succeeded, why its images were not saved.

    A job that succeeded is ``succeeded`` once its images are saved; if they are not, it is
    ``download_failed``, or ``cancelled`` when the run was interrupted. After an
    interruption, inputs the closing client refused to start are ``not_started``.
    """
    generation = outcome.generation
    status: str = outcome.status
    error = None if outcome.error is None else one_line(outcome.error)
    if line.problem is not None:
        status, error = "rejected", line.problem
    elif generation is not None:
        if files is not None:
            status, error = "succeeded", None
        elif interrupted:
            status = "cancelled"
            error = "interrupted before its images were saved (the job succeeded: see image_urls)"
        else:
            status, error = "download_failed", save_error or error
    elif status == "rejected":
        error = f"line {line.line}: {error}"
    elif interrupted and isinstance(outcome.error, ClientStateError):
        status, error = "not_started", "interrupted before this line was started"
    elif interrupted and status == "cancelled":
        error = f"interrupted: {error}"
    if error is None and status != "succeeded":
        error = f"ended {status}"
    job_id = generation.job_id if generation is not None else None
    if job_id is None and outcome.job is not None:
        job_id = outcome.job.id
    cost = outcome.cost
    if cost is None and generation is not None:
        cost = generation.cost
    return record(
        index=outcome.index,
        line=line,
        status=status,
        job_id=job_id,
        image_urls=[image.url for image in generation.images] if generation else (),
        files=files or (),
        cost=cost,
        error=error,
        resumed=outcome.resumed,
    )


def is_placeholder(entry: Record) -> bool:
    """Whether a record only says an interruption came first (no job, nothing learned)."""
    status = entry.get("status")
    return status == "not_started" or (status == "cancelled" and entry.get("job_id") is None)


def _read_records(path: Path) -> list[Record]:
    """The records of a manifest file; a torn last line (a killed run) is skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("index"), int):
            records.append(entry)
    return records


def merge_records(records: Sequence[Record]) -> list[Record]:
    """One record per index, in index order: the latest, unless it is a placeholder and an
    earlier record of that index is not."""
    merged: dict[int, Record] = {}
    for entry in records:
        prior = merged.get(entry["index"])
        if prior is not None and is_placeholder(entry) and not is_placeholder(prior):
            continue
        merged[entry["index"]] = entry
    return [merged[index] for index in sorted(merged)]


class Manifest:
    """A JSONL file that receives one record per input, flushed as it is written.

    Args:
        path: the file.
        append: keep what the file holds (a resumed run); otherwise start it empty.

    Raises:
        OSError: the file or its directory cannot be created.
    """

    def __init__(self, path: Path, *, append: bool = False) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if append and path.exists() and path.stat().st_size:
            with path.open("rb") as existing:
                existing.seek(-1, os.SEEK_END)
                torn = existing.read(1) != b"\n"
        else:
            torn = False
        self._file: IO[str] = path.open("a" if append else "w", encoding="utf-8")
        if torn:  # the last line of a killed run: end it, so the next record stands alone
            self._file.write("\n")
        self.written = 0

    def write(self, entry: Record) -> None:
        """Append one record and flush it, so an interrupted run keeps what it did."""
        self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._file.flush()
        self.written += 1

    def close(self) -> None:
        """Close the file, then rewrite it with one line per input (see the module doc)."""
        self._file.close()
        records = merge_records(_read_records(self.path))
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        with temporary.open("w", encoding="utf-8") as file:
            for entry in records:
                file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
