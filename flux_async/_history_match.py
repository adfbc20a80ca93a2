"""Pairing the creates a crash left without an answer with the tasks of the provider's
task history (PiAPI), so that a resume follows them instead of sending them again."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

import msgspec

from ._errors import FluxError
from ._record import JobRecord
from .providers._base import HistoryTask, Provider

__all__ = ["HISTORY_SKEW", "match_tasks"]

HISTORY_SKEW = 120.0
"""Seconds of clock difference allowed between our ``created_at`` and the provider's."""


def match_tasks(
    tasks: list[HistoryTask],
    records: list[JobRecord],
    provider: Provider,
    provider_name: str,
) -> dict[str, str]:
    """Return local id -> provider job id for the ``records`` found among ``tasks`` (tasks
    no other record claims).

    A task is a record's when its webhook endpoint names the record's local id, or when its
    model and input are the record's (records with the same input are interchangeable:
    they are paired with tasks in creation order, and a task created well before a record
    is not its).
    """
    tasks = sorted(tasks, key=lambda task: task.created_at or 0.0)
    found: dict[str, str] = {}
    by_local = {_local_id_of(task, provider_name): task for task in tasks}
    for record in records:
        task = by_local.get(record.local_id)
        if task is not None:
            found[record.local_id] = task.job_id
    taken = set(found.values())
    for record in sorted(records, key=lambda record: record.created_at):
        if record.local_id in found:
            continue
        expected = _expected_input(provider, record)
        if expected is None:
            continue
        model, wanted = expected
        for task in tasks:
            if task.job_id in taken or _local_id_of(task, provider_name) is not None:
                continue
            if task.model not in (None, model) or not _contains(task.input, wanted):
                continue
            if task.created_at is not None and task.created_at < (record.created_at - HISTORY_SKEW):
                continue
            found[record.local_id] = task.job_id
            taken.add(task.job_id)
            break
    return found


def _local_id_of(task: HistoryTask, provider: str) -> str | None:
    """The local id a task's webhook endpoint names (``.../{provider}/{local_id}/{token}``)."""
    if task.callback_url is None:
        return None
    parts = urllib.parse.urlsplit(task.callback_url).path.rstrip("/").split("/")
    if len(parts) >= 3 and parts[-3] == provider:
        return parts[-2]
    return None


def _expected_input(provider: Provider, record: JobRecord) -> tuple[str, Mapping[str, Any]] | None:
    try:
        prepared = provider.prepare(record.generation_request())
    except (FluxError, ValueError, msgspec.ValidationError):
        return None
    args = prepared.args
    wanted = args.get("input")
    return prepared.model, wanted if isinstance(wanted, Mapping) else args


def _contains(echo: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return all(key in echo and echo[key] == value for key, value in wanted.items())
