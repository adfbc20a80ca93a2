"""The batch manifest: one JSON line per input line, written as each outcome arrives."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from flux_async import ClientStateError, Outcome, PromptLine

from .common import one_line

__all__ = ["FAILED_STATUSES", "Manifest", "Record", "outcome_record", "short_url"]

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
) -> Record:
    """Return one manifest record, with its keys in the documented order."""
    return {
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
    status = outcome.status
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
    )


class Manifest:
    """A JSONL file that receives one record per input, flushed as it is written.

    Raises:
        OSError: the file or its directory cannot be created.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("w", encoding="utf-8")
        self.written = 0

    def write(self, entry: Record) -> None:
        """Append one record and flush it, so an interrupted run keeps what it did."""
        self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._file.flush()
        self.written += 1

    def close(self) -> None:
        """Close the file."""
        self._file.close()
