"""Speak PiAPI's unified task API for Flux (providers.md section 3): tasks and webhooks.

What a create body may hold, and its check, are in ``_piapi_validate.py``."""

from __future__ import annotations

import random
import time
from typing import Any

import msgspec
from aiohttp import web

from ._callbacks import Payload
from ._piapi_validate import ADVANCED, DEV, SCHNELL, size_of, validate
from ._protocol import JobSpec, ProtocolRoutes, admit_keyed
from ._state import FakeJob, Phase
from ._wire import json_response, uuid_from

__all__ = ["PiAPIRoutes", "rfc3339"]

# §7.2 task history: GET /api/open/tasks/histories, page from 1, page_size default 10 and
# max 100 ("returns error if exceeded"), model filter, start_time/end_time in unix s.
HISTORY_PATH = "/api/open/tasks/histories"
HISTORY_DEFAULT_PAGE_SIZE = 10
HISTORY_MAX_PAGE_SIZE = 100
HISTORY_MODEL = "flux"  # §7.2: the history's model filter value for Flux tasks

# §3.4: the Go zero time stands for "not yet".
GO_ZERO_TIME = "0001-01-01T00:00:00Z"
# §3.4 example usage.consume is 20000 for a schnell task; the other prices are guesses.
CONSUME = {SCHNELL: 20_000, DEV: 150_000, ADVANCED: 150_000}

# §3.6: PiAPI's own docs spell statuses several ways; the fake rotates through them.
QUEUED_SPELLINGS = ("pending", "Pending", "staged", "starting")
RUNNING_SPELLINGS = ("processing", "Processing", "starting", "retry")
SUCCESS_SPELLINGS = ("completed", "Completed", "success")
FAILED_SPELLINGS = ("failed", "Failed")
UNKNOWN_STATUSES = ("exploded", "quarantined")  # not in any documented set
# §7.2: a cancelled task's status is [U]; the fake reports it "failed" (the one failure
# status every client knows) with CANCELLED_ERROR.
CANCELLED_STATUS = "failed"

NO_ERROR: dict[str, Any] = {"code": 0, "raw_message": "", "message": "", "detail": None}
FAILURE_ERROR: dict[str, Any] = {
    "code": 10000,
    "raw_message": "fake upstream failure: the model returned no image",
    "message": "failed to generate image",
    "detail": None,
}
CANCELLED_ERROR: dict[str, Any] = {
    "code": 10001,
    "raw_message": "task canceled by user",
    "message": "task canceled",
    "detail": None,
}


def _envelope_error(status: int, message: str) -> web.Response:
    # §3.7: HTTP-level errors for /api/v1/task are [U]; this shape is the unverified
    # third-party claim (S15): {"code": <http>, "data": null, "message": "..."}.
    return json_response({"code": status, "data": None, "message": message}, status=status)


def _refuse(status: int) -> web.Response:
    messages = {
        401: "Unauthorized: the API key is missing or incorrect",
        429: "too many requests",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }
    return _envelope_error(status, messages.get(status, "error"))


def rfc3339(unix_seconds: float) -> str:
    """Format unix seconds like Go's RFC3339Nano (UTC, trailing zeros trimmed)."""
    nanos_total = round(unix_seconds * 1_000_000_000)
    seconds, nanos = divmod(nanos_total, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{base}.{fraction}Z" if fraction else f"{base}Z"


class PiAPIRoutes(ProtocolRoutes):
    """Serve PiAPI's Flux task routes (§3.1, §7.2).

    ``POST /api/v1/task`` and ``GET /api/v1/task/{task_id}``, plus
    ``DELETE /api/v1/task/{task_id}`` (cancel a pending task) and
    ``GET /api/open/tasks/histories`` (task history).
    """

    provider = "piapi"
    create_counter = "piapi.create"
    query_counter = "piapi.query"

    def routes(self) -> list[web.RouteDef]:
        """Return the aiohttp route table."""
        return [
            web.post("/api/v1/task", self.create),
            web.get("/api/v1/task/{task_id}", self.query),
            web.delete("/api/v1/task/{task_id}", self.cancel),
            web.get(HISTORY_PATH, self.history),
        ]

    def key_of(self, request: web.Request) -> str | None:
        """Read ``X-API-Key`` (§3.1; header names are case-insensitive)."""
        return request.headers.get("X-API-Key")

    def prompt_of(self, body: Any) -> str | None:
        """Read ``input.prompt`` (§3.3)."""
        return _prompt_of(body)

    def refuse(self, status: int) -> web.Response:
        """Build the error envelope for 401, 429, 500 or 503 (§3.7: [U], S15's shape)."""
        return _refuse(status)

    def new_id(self, rng: random.Random) -> str:
        """Draw a uuid task id (§3.4)."""
        return uuid_from(rng)

    def validate(self, body: Any) -> JobSpec | web.Response:
        """Check a create body against §3.2 and §3.3."""
        problem = validate(body)
        if problem is not None:
            return _envelope_error(400, problem)
        config = body.get("config") or {}
        webhook = config.get("webhook_config") or {}
        task_input = body["input"]
        return JobSpec(
            model=body["model"],
            prompt=task_input["prompt"],
            params=task_input,
            num_images=int(task_input.get("batch_size") or 1),
            image_size=size_of(task_input),
            callback_url=webhook.get("endpoint") or None,
            callback_secret=webhook.get("secret") or None,
            task_type=body["task_type"],
            service_mode=config.get("service_mode", ""),
        )

    def accepted_response(self, job: FakeJob, spec: JobSpec) -> web.StreamResponse:
        """Answer with the §3.4 envelope: the task as first stored, always "pending"."""
        data = _task_data(job, "queued", "pending")
        return json_response({"code": 200, "data": data, "message": "success"})

    def job_id_of(self, request: web.Request) -> str:
        """Read the ``{task_id}`` path segment (§3.1)."""
        return request.match_info["task_id"]

    def not_found(self, job_id: str) -> web.Response:
        """Answer 404 with the error envelope (§3.7: [U])."""
        return _envelope_error(404, "task not found")

    def query_response(self, job: FakeJob, phase: Phase) -> web.StreamResponse:
        """Return a task (§3.4-§3.6) with a seeded choice of status spelling."""
        data = _task_data(job, phase, _status(job, phase, self._state.rng))
        return json_response({"code": 200, "data": data, "message": "success"})

    def callback_payload(self, job: FakeJob, kind: str) -> Payload | None:
        """Build a webhook delivery (§3.8): ``{"timestamp", "data"}`` plus the secret header."""
        rng = self._state.rng
        phase: Phase = "done" if kind == "terminal" else "running"
        status = _status(job, phase, rng)
        body = {"timestamp": int(time.time()), "data": _task_data(job, phase, status)}
        headers = {"x-webhook-secret": job.callback_secret} if job.callback_secret else {}
        return status, msgspec.json.encode(body), headers

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        """Cancel a pending task (§7.2: ``DELETE /api/v1/task/{task_id}``, pending only).

        Only the route and "pending only" are documented; the rest is the fake's choice:
        a pending (queued) task ends at once with status ``failed`` and `CANCELLED_ERROR`,
        no image and no charge (``meta.usage.consume`` 0), its webhook (if any) is sent
        now, and the answer is 200 with the §3.4 envelope of the cancelled task. A task
        that is running or finished is refused with 400 ``{"code": 400, "data": null,
        "message": ...}`` and left alone; an unknown id gets 404.
        """
        state = self._state
        state.requests["piapi.cancel"] += 1
        refused = admit_keyed(state, self.key_of(request), self.refuse)
        if refused is not None:
            return refused
        job = state.jobs.get(request.match_info["task_id"])
        if job is None or job.provider != self.provider:
            return self.not_found("")
        now = time.monotonic()
        phase = job.phase(now)
        if phase != "queued":
            state_name = "finished" if phase == "done" else "processing"
            return _envelope_error(400, f"task is {state_name}: only pending tasks can be canceled")
        job.cancel(now)
        state.cancels += 1
        if self._callbacks is not None:
            self._callbacks.reschedule(job)
        data = _task_data(job, "done", CANCELLED_STATUS)
        return json_response({"code": 200, "data": data, "message": "success"})

    async def history(self, request: web.Request) -> web.StreamResponse:
        """List tasks, newest first (§7.2 "User Task History").

        Documented: ``page`` (from 1, default 1), ``page_size`` (default 10, max 100,
        an error above), ``model`` (empty: all; ``flux`` for these tasks),
        ``start_time``/``end_time`` (unix seconds, no limit by default), header
        ``x-api-key``. The response schema is [U]; the fake answers
        ``{"code": 200, "message": "success", "data": {"total": N, "page": P,
        "page_size": S, "list": [<task data as GET /api/v1/task/{id} returns it>]}}``
        and refuses bad parameters with 400 and the error envelope. Times compare with
        the task's ``meta.created_at``, both bounds inclusive.
        """
        state = self._state
        state.requests["piapi.history"] += 1
        refused = admit_keyed(state, self.key_of(request), self.refuse)
        if refused is not None:
            return refused
        query = request.query
        try:
            page = int(query.get("page") or 1)
            page_size = int(query.get("page_size") or HISTORY_DEFAULT_PAGE_SIZE)
            start = float(query["start_time"]) if query.get("start_time") else None
            end = float(query["end_time"]) if query.get("end_time") else None
        except ValueError:
            return _envelope_error(400, "page, page_size, start_time and end_time are integers")
        if page < 1:
            return _envelope_error(400, f"page must be >= 1, got {page}")
        if not 1 <= page_size <= HISTORY_MAX_PAGE_SIZE:
            return _envelope_error(
                400, f"page_size must be from 1 to {HISTORY_MAX_PAGE_SIZE}, got {page_size}"
            )
        model = query.get("model", "")
        tasks = [
            job
            for job in state.jobs.values()
            if job.provider == self.provider
            and model in ("", HISTORY_MODEL)
            and (start is None or job.created_wall >= start)
            and (end is None or job.created_wall <= end)
        ]
        tasks.reverse()  # jobs are kept in creation order; the newest come first
        now = time.monotonic()
        chosen = tasks[(page - 1) * page_size : page * page_size]
        items = []
        for job in chosen:
            phase = job.phase(now)
            items.append(_task_data(job, phase, _status(job, phase, state.rng)))
        data = {"total": len(tasks), "page": page, "page_size": page_size, "list": items}
        return json_response({"code": 200, "data": data, "message": "success"})


def _prompt_of(body: Any) -> str | None:
    if isinstance(body, dict):
        task_input = body.get("input")
        if isinstance(task_input, dict):
            prompt = task_input.get("prompt")
            if isinstance(prompt, str):
                return prompt
    return None


def _status(job: FakeJob, phase: Phase, rng: random.Random) -> str:
    if phase == "queued":
        return rng.choice(QUEUED_SPELLINGS)
    if phase == "running":
        return rng.choice(RUNNING_SPELLINGS)
    if job.outcome == "succeeded":
        return rng.choice(SUCCESS_SPELLINGS)
    if job.outcome == "failed":
        return rng.choice(FAILED_SPELLINGS)
    if job.outcome == "cancelled":
        return CANCELLED_STATUS
    return UNKNOWN_STATUSES[job.variant % len(UNKNOWN_STATUSES)]


def _output(job: FakeJob) -> dict[str, Any]:
    urls = list(job.image_urls)
    if len(urls) == 1:
        return {"image_url": urls[0], "image_base64": ""}
    # §3.5: several images come as image_urls; image_url may be absent, empty or the first.
    shape = job.variant % 3
    if shape == 0:
        return {"image_urls": urls, "image_base64": ""}
    return {"image_url": "" if shape == 1 else urls[0], "image_urls": urls, "image_base64": ""}


def _task_data(job: FakeJob, phase: Phase, status: str) -> dict[str, Any]:
    """Build the ``data`` object shared by create, get and webhook (§3.4)."""
    finished = phase == "done" and job.outcome in ("succeeded", "failed", "cancelled")
    batch_size = int(job.params.get("batch_size") or 1)
    consume = 0 if job.outcome == "cancelled" else CONSUME[job.model] * batch_size
    echo = {"prompt": "", "negative_prompt": "", "width": 0, "height": 0, "steps": 0}
    echo.update(job.params)
    return {
        "task_id": job.id,
        "model": job.model,
        "task_type": job.task_type,
        "status": status,
        "config": {
            "service_mode": job.service_mode,
            "webhook_config": {
                "endpoint": job.callback_url or "",
                "secret": job.callback_secret or "",  # §3.4: the secret is echoed back
            },
        },
        "input": echo,
        "output": _output(job) if finished and job.outcome == "succeeded" else None,
        "meta": {
            "created_at": rfc3339(job.created_wall),
            "started_at": GO_ZERO_TIME
            if phase == "queued"
            else rfc3339(job.wall_time(job.started_at)),
            "ended_at": rfc3339(job.wall_time(job.ready_at))
            if finished and job.ready_at is not None
            else GO_ZERO_TIME,
            "usage": {"type": "quota", "frozen": 0, "consume": consume},
            "is_using_private_pool": False,
        },
        "detail": None,
        "logs": [],
        "error": _error_of(job) if finished else NO_ERROR,
    }


def _error_of(job: FakeJob) -> dict[str, Any]:
    if job.outcome == "failed":
        return FAILURE_ERROR
    if job.outcome == "cancelled":
        return CANCELLED_ERROR
    return NO_ERROR
