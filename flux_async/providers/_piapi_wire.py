"""PiAPI's wire format read: the task envelope, task data and history pages (providers.md 3).

Structs declare only the fields read and ignore the rest. Their leaves are ``Any`` because
PiAPI's schemas disagree between pages: each reader here checks the type where it uses a
value, and a value of the wrong type reads as absent.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import msgspec

from .._models import Image, JobStatus
from ._base import HistoryTask
from ._wire import base64_image, convert, decode_json, failure_reason, int_code, to_decimal

__all__ = [
    "HIDDEN",
    "Envelope",
    "HistoryEnvelope",
    "TaskData",
    "cost_of",
    "echoed_secret",
    "envelope_decoder",
    "failure_of",
    "history_decoder",
    "history_tasks",
    "images_of",
    "is_ok",
    "loose_task_id",
    "plain_code",
    "status_of",
]

# Status values (providers.md 3.6) differ between PiAPI's own pages, and the enum is
# capitalised; values are compared lower-cased and trimmed. Anything else is an
# UnknownStatusError, never an endless poll.
_STATUS = {
    "completed": JobStatus.SUCCEEDED,
    "success": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "pending": JobStatus.QUEUED,
    "staged": JobStatus.QUEUED,
    "starting": JobStatus.RUNNING,
    "processing": JobStatus.RUNNING,
    "retry": JobStatus.RUNNING,
}
_CODE_OK = 200  # the envelope's success code (3.4), not 0
HIDDEN = ("secret", "endpoint")
"""Keys hidden in every payload attached to an error: ``config.webhook_config`` echoes the
secret and the endpoint (whose path is the callback token)."""


class _Output(msgspec.Struct):
    image_url: Any = None
    image_urls: Any = None
    image_base64: Any = None


class _Usage(msgspec.Struct):
    consume: Any = None


class _Meta(msgspec.Struct):
    usage: _Usage | None = None


class TaskData(msgspec.Struct):
    """``data`` of a task answer, and of a webhook body."""

    task_id: Any = None
    status: Any = None
    output: _Output | None = None
    meta: _Meta | None = None
    error: Any = None
    config: Any = None


class Envelope(msgspec.Struct):
    """``{"code", "message", "data"}``: every task API answer (create, get, cancel)."""

    code: Any = None
    message: Any = None
    data: TaskData | None = None


envelope_decoder = msgspec.json.Decoder(Envelope)


class _HistoryItem(msgspec.Struct):
    task_id: Any = None
    model: Any = None
    input: Any = None
    config: Any = None
    meta: Any = None


class _HistoryData(msgspec.Struct):
    total: Any = None
    list: Any = None


class HistoryEnvelope(msgspec.Struct):
    """A task history page: ``{"code", "message", "data": {"total", "list"}}``."""

    code: Any = None
    message: Any = None
    data: _HistoryData | None = None


history_decoder = msgspec.json.Decoder(HistoryEnvelope)


def is_ok(code: Any) -> bool:
    """Whether an envelope's ``code`` says success; a missing code leaves it to the body."""
    return code is None or plain_code(code) == _CODE_OK


def plain_code(code: Any) -> int | str | None:
    """Return the envelope's ``code`` as an int when it is one (PiAPI sends ints), else text."""
    number = int_code(code)
    if number is not None or not isinstance(code, str):
        return number
    return code.strip()[:40] or None


def status_of(value: Any) -> JobStatus | None:
    """Return the `JobStatus` a task's ``status`` names, or ``None`` when it is unknown."""
    if not isinstance(value, str):
        return None
    return _STATUS.get(value.strip().lower())


def images_of(output: _Output | None) -> tuple[Image, ...]:
    """Return the images of a task's ``output``: its URLs, else its inline base64."""
    if output is None:
        return ()
    urls: list[str] = []
    if isinstance(output.image_url, str):
        urls.append(output.image_url.strip())
    if isinstance(output.image_urls, list):
        urls.extend(url.strip() for url in output.image_urls if isinstance(url, str))
    images = [Image(url=url) for url in dict.fromkeys(url for url in urls if url)]
    # image_base64 is "" in every example (3.5); when filled it is most likely the same
    # image as the URL, so it is used only when there is no URL.
    encoded = output.image_base64
    if not images and isinstance(encoded, str) and encoded.strip():
        images.append(base64_image(encoded))
    return tuple(images)


def cost_of(data: TaskData) -> Decimal | None:
    """Return ``meta.usage.consume``: PiAPI quota points (usage.type "quota"), not USD (3.4)."""
    usage = data.meta.usage if data.meta is not None else None
    return to_decimal(usage.consume) if usage is not None else None


def failure_of(error: Any) -> str | None:
    """Read ``data.error`` ``{code, raw_message, message, detail}``; empty strings mean "no
    error" (3.7)."""
    return failure_reason(error, "message", "raw_message")


def echoed_secret(config: Any) -> str | None:
    """Return the webhook secret a task's ``config.webhook_config`` echoes, if any."""
    webhook = config.get("webhook_config") if isinstance(config, dict) else None
    secret = webhook.get("secret") if isinstance(webhook, dict) else None
    return secret if isinstance(secret, str) and secret else None


def loose_task_id(body: bytes) -> str | None:
    """Return ``data.task_id`` of a success envelope that is JSON but not the documented shape."""
    try:
        raw = decode_json(body)
    except msgspec.DecodeError:
        return None
    if not isinstance(raw, dict) or not is_ok(raw.get("code")):
        return None
    data = raw.get("data")
    task_id = data.get("task_id") if isinstance(data, dict) else None
    return task_id if isinstance(task_id, str) and task_id.strip() else None


def history_tasks(envelope: HistoryEnvelope) -> tuple[list[HistoryTask], int] | None:
    """Return a history page's tasks and the total, or ``None`` when it holds no data.

    Its schema is undocumented ([U]): read as ``{"code": 200, "data": {"total", "list":
    [<task as GET returns it>]}}``; items without a task id are skipped.
    """
    if not is_ok(envelope.code) or envelope.data is None:
        return None
    items = envelope.data.list if isinstance(envelope.data.list, list) else []
    tasks: list[HistoryTask] = []
    for raw in items:
        if not isinstance(raw, dict):
            continue
        item = convert(raw, _HistoryItem)
        if not isinstance(item.task_id, str) or not item.task_id:
            continue
        config = item.config if isinstance(item.config, dict) else {}
        webhook = config.get("webhook_config")
        endpoint = webhook.get("endpoint") if isinstance(webhook, dict) else None
        meta = item.meta if isinstance(item.meta, dict) else {}
        tasks.append(
            HistoryTask(
                job_id=item.task_id,
                model=item.model if isinstance(item.model, str) else None,
                created_at=_unix_time(meta.get("created_at")),
                input=item.input if isinstance(item.input, dict) else {},
                callback_url=endpoint if isinstance(endpoint, str) and endpoint else None,
            )
        )
    total = envelope.data.total
    return tasks, total if isinstance(total, int) and total >= 0 else len(tasks)


def _unix_time(value: Any) -> float | None:
    """Read an RFC 3339 time (``2024-05-01T10:00:00.123456789Z``, 3.4) as unix seconds."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    text = value.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()
