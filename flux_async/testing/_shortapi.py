"""Speak ShortAPI's job API (providers.md section 1): create, query and callbacks."""

from __future__ import annotations

import random
from typing import Any

import msgspec
from aiohttp import web

from ._callbacks import Payload
from ._protocol import JobSpec, ProtocolRoutes
from ._state import FakeJob, Phase
from ._wire import bearer_key, is_http_url, json_response

__all__ = ["ShortAPIRoutes"]

# §1.2: the two FLUX model ids and their documented args.
MODELS = frozenset({"shortapi/flux-1.0/text-to-image", "shortapi/flux-1.0/image-to-image"})
IMAGE_TO_IMAGE = "shortapi/flux-1.0/image-to-image"
ASPECT_RATIOS = ("1:1", "9:16", "16:9", "4:3", "3:4", "3:2", "2:3", "21:9")
NUM_IMAGES = (1, 2, 4, 8)  # §1.2: the doc lists them as strings "1","2","4","8"; accept both
PERFORMANCES = ("dev", "schnell")
# §1.2 pricing: per request, echoed as a string.
AMOUNT = {"dev": "0.02", "schnell": "0.002"}
# §1.2 carries only an aspect ratio; the pixel size is [U]. The fake takes 1024 px on
# the long side as the nominal size (served PNGs are scaled down from it).
NOMINAL_LONG_SIDE = 1024

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


def nominal_size(aspect_ratio: str) -> tuple[int, int]:
    """Return the (width, height) the fake takes for an aspect ratio such as ``"16:9"``."""
    across, down = (int(part) for part in aspect_ratio.split(":"))
    if across >= down:
        return NOMINAL_LONG_SIDE, round(NOMINAL_LONG_SIDE * down / across)
    return round(NOMINAL_LONG_SIDE * across / down), NOMINAL_LONG_SIDE


class ShortAPIRoutes(ProtocolRoutes):
    """Serve ``POST /api/v1/job/create`` and ``GET /api/v1/job/query`` (§1.1)."""

    provider = "shortapi"
    create_counter = "shortapi.create"
    query_counter = "shortapi.query"

    def routes(self) -> list[web.RouteDef]:
        """Return the aiohttp route table."""
        return [
            web.post("/api/v1/job/create", self.create),
            web.get("/api/v1/job/query", self.query),
        ]

    def key_of(self, request: web.Request) -> str | None:
        """Read the Bearer key (§1.1)."""
        return bearer_key(request)

    def prompt_of(self, body: Any) -> str | None:
        """Read ``args.prompt`` (§1.2)."""
        return _prompt_of(body)

    def refuse(self, status: int) -> web.Response:
        """Build the error envelope for 401, 429, 500 or 503 (§1.5: [U], guessed)."""
        return _refuse(status)

    def new_id(self, rng: random.Random) -> str:
        """Draw a 24-hex-character job id (§1.3)."""
        return _job_id(rng)

    def validate(self, body: Any) -> JobSpec | web.Response:
        """Check a create body against §1.2."""
        checked = _validate(body)
        if isinstance(checked, str):
            return _error(checked)
        model, args, callback_url = checked
        return JobSpec(
            model=model,
            prompt=args["prompt"],
            params=args,
            num_images=_num_images(args) or 1,
            image_size=nominal_size(args["aspect_ratio"]),
            callback_url=callback_url,
        )

    def accepted_response(self, job: FakeJob, spec: JobSpec) -> web.StreamResponse:
        """Answer with the job id and the charge as a string (§1.3)."""
        amount = AMOUNT[spec.params.get("performance", "dev")]
        return json_response({"code": 0, "data": {"amount": amount, "job_id": job.id}})

    def job_id_of(self, request: web.Request) -> str:
        """Read the ``id`` query parameter (§1.1)."""
        return request.query.get("id", "")

    def not_found(self, job_id: str) -> web.Response:
        """Answer HTTP 200 with code 1 ([U] how an unknown id is reported; §1.5 [I])."""
        return _error("job not found" if job_id else "id is required")

    def query_response(self, job: FakeJob, phase: Phase) -> web.StreamResponse:
        """Report a job's status (§1.4)."""
        return json_response({"code": 0, "data": _data(job, phase)})

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
