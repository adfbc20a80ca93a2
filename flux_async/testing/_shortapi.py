"""Speak ShortAPI's job API (providers.md section 1): create, query and callbacks."""

from __future__ import annotations

import random
import time
from typing import Any

import msgspec
from aiohttp import web

from ._callbacks import CallbackDispatcher, Payload
from ._core import (
    FakeJob,
    FakeState,
    Phase,
    admit_create,
    admit_query,
    bearer_key,
    decode_json,
    is_http_url,
    json_response,
    reset_connection,
)

__all__ = ["ShortAPIRoutes"]

# §1.2: the two FLUX model ids and their documented args.
MODELS = frozenset({"shortapi/flux-1.0/text-to-image", "shortapi/flux-1.0/image-to-image"})
IMAGE_TO_IMAGE = "shortapi/flux-1.0/image-to-image"
ASPECT_RATIOS = ("1:1", "9:16", "16:9", "4:3", "3:4", "3:2", "2:3", "21:9")
NUM_IMAGES = (1, 2, 4, 8)  # §1.2: the doc lists them as strings "1","2","4","8"; accept both
PERFORMANCES = ("dev", "schnell")
# §1.2 pricing: per request, echoed as a string.
AMOUNT = {"dev": "0.02", "schnell": "0.002"}

# §1.4 [I]: 0 queued, 1 processing, 2 succeeded, 3/4 failed.
QUEUED, PROCESSING, SUCCEEDED = 0, 1, 2
FAILED_CODES = (3, 4)
# Values outside the documented set, for the unknown-status fault.
UNKNOWN_STATUSES: tuple[int | str, ...] = (-1, 7, "weird")

FAILURE_MESSAGE = "generation failed: the upstream model returned an error (fake)"


def _job_id(rng: random.Random) -> str:
    # §1.3 [I]: observed ids are 24 hex characters (ObjectId-like).
    return f"{rng.getrandbits(96):024x}"


def _error(message: str, *, code: int = 1, status: int = 200) -> web.Response:
    # §1.5 [I]: errors may come as HTTP 200 with a non-zero code; the text is read from
    # `info` first, then `message`, so send both.
    return json_response({"code": code, "info": message, "message": message}, status=status)


def _refuse(status: int) -> web.Response:
    # §1.5: the HTTP status and body for auth, rate-limit and overload errors are [U];
    # these are guesses in the same envelope. 3000 is the "upstream unavailable" code [I].
    if status == 401:
        return _error("unauthorized: invalid or missing api key", code=401, status=401)
    if status == 429:
        return _error("too many requests, please retry later", code=429, status=429)
    if status == 503:
        return _error("upstream model provider is unavailable, please retry", code=3000, status=503)
    return _error("internal server error", code=500, status=status)


def _validate(body: Any) -> tuple[str, dict[str, Any], str | None] | str:
    """Check a create body against §1.2.

    Returns:
        (model, args, callback_url) when valid, else the error message.
    """
    if not isinstance(body, dict):
        return "invalid request body: expected a JSON object"
    model = body.get("model")
    if not isinstance(model, str) or model not in MODELS:
        return f"invalid model: {model}"  # §1.5 [I]: "invalid model: <id>"
    args = body.get("args")
    if not isinstance(args, dict):
        return "args is required and must be an object"
    prompt = args.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "args.prompt is required and must be a non-empty string"
    aspect_ratio = args.get("aspect_ratio")
    if aspect_ratio is None:
        return "args.aspect_ratio is required"
    if aspect_ratio not in ASPECT_RATIOS:
        return f"args.aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}, got {aspect_ratio!r}"
    if _num_images(args) is None:
        return f"args.num_images must be one of 1, 2, 4, 8, got {args.get('num_images')!r}"
    performance = args.get("performance", "dev")
    if performance not in PERFORMANCES:
        return f"args.performance must be one of dev, schnell, got {performance!r}"
    if model == IMAGE_TO_IMAGE:
        image_url = args.get("image_url")
        if not isinstance(image_url, str) or not image_url.strip():
            return "args.image_url is required for image-to-image"
    callback_url = body.get("callback_url")
    if callback_url in (None, ""):
        return model, args, None
    if not isinstance(callback_url, str) or not is_http_url(callback_url):
        return f"callback_url must be an http(s) URL, got {callback_url!r}"
    return model, args, callback_url


def _num_images(args: dict[str, Any]) -> int | None:
    value = args.get("num_images", 1)
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return value if isinstance(value, int) and value in NUM_IMAGES else None


class ShortAPIRoutes:
    """Serve ``POST /api/v1/job/create`` and ``GET /api/v1/job/query`` (§1.1)."""

    def __init__(self, state: FakeState, callbacks: CallbackDispatcher) -> None:
        self._state = state
        self._callbacks = callbacks

    def routes(self) -> list[web.RouteDef]:
        """Return the aiohttp route table."""
        return [
            web.post("/api/v1/job/create", self.create),
            web.get("/api/v1/job/query", self.query),
        ]

    async def create(self, request: web.Request) -> web.StreamResponse:
        """Create a job (§1.2, §1.3)."""
        state = self._state
        state.requests["shortapi.create"] += 1
        state.create_attempts += 1
        attempt = state.create_attempts  # taken before any await, so arrival order counts
        body = decode_json(await request.read())
        prompt = _prompt_of(body)
        refused, triggers = admit_create(
            state, request, attempt=attempt, prompt=prompt, key=bearer_key(request), refuse=_refuse
        )
        if refused is not None:
            return refused
        checked = _validate(body)
        if isinstance(checked, str):
            return _error(checked)
        model, args, callback_url = checked
        fate = state.dice.job_fate(triggers, has_callback=callback_url is not None)
        job = state.add_job(
            job_id=state.new_job_id(_job_id),
            provider="shortapi",
            prompt=args["prompt"],
            model=model,
            params=args,
            fate=fate,
            num_images=_num_images(args) or 1,
            callback_url=callback_url,
        )
        if "early" in job.callback_faults:
            await self._callbacks.deliver_now(job)
        else:
            self._callbacks.schedule(job)
        if fate.drop_response:
            state.lost_responses += 1
            return reset_connection(request, hard=False)
        amount = AMOUNT[args.get("performance", "dev")]
        return json_response({"code": 0, "data": {"amount": amount, "job_id": job.id}})

    async def query(self, request: web.Request) -> web.StreamResponse:
        """Report a job's status (§1.4)."""
        state = self._state
        state.requests["shortapi.query"] += 1
        job_id = request.query.get("id", "")
        if job_id:
            state.polls_per_job[job_id] += 1
        refused = admit_query(state, request, key=bearer_key(request), refuse=_refuse)
        if refused is not None:
            return refused
        if not job_id:
            return _error("id is required")
        job = state.jobs.get(job_id)
        if job is None or job.provider != "shortapi":
            # [U] how an unknown id is reported; code 1 on query is an error (§1.5 [I]).
            return _error("job not found")
        return json_response({"code": 0, "data": _data(job, job.phase(time.monotonic()))})

    def callback_payload(self, job: FakeJob, kind: str) -> Payload | None:
        """Build a callback body (§1.6: shape [U]; the query envelope plus ``job_id``)."""
        if kind == "progress":
            return None  # nothing suggests ShortAPI calls back before the end
        data = _data(job, "running" if kind == "stale" else "done")
        data["job_id"] = job.id
        return data["status"], msgspec.json.encode({"code": 0, "data": data}), {}


def _prompt_of(body: Any) -> str | None:
    if isinstance(body, dict):
        args = body.get("args")
        if isinstance(args, dict):
            prompt = args.get("prompt")
            if isinstance(prompt, str):
                return prompt
    return None


def _data(job: FakeJob, phase: Phase) -> dict[str, Any]:
    status: int | str
    result: dict[str, Any] | None = None
    refunded = False
    error: str | None = None
    if phase == "queued":
        status = QUEUED
    elif phase == "running":
        status = PROCESSING
    elif job.outcome == "succeeded":
        status = SUCCEEDED
        result = {"images": [{"url": url} for url in job.image_urls]}
    elif job.outcome == "failed":
        status = FAILED_CODES[job.variant % len(FAILED_CODES)]
        refunded = True  # §1.4 [I]: failed jobs carry refunded: true
        error = FAILURE_MESSAGE
    else:
        status = UNKNOWN_STATUSES[job.variant % len(UNKNOWN_STATUSES)]
    # §1.4 [I]: third-party typings list id, status, result, refunded, error.
    return {"id": job.id, "status": status, "result": result, "refunded": refunded, "error": error}
