"""Speak AI/ML API's synchronous image endpoint (providers.md section 2)."""

from __future__ import annotations

import base64
import dataclasses
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from ._faults import JobFate
from ._protocol import JobSpec, ProtocolRoutes
from ._state import FakeJob
from ._wire import bearer_key, is_int, is_number, json_response, reset_connection, uuid_from

__all__ = ["MODELS", "AIMLAPIRoutes"]

PATH = "/v1/images/generations"
IMAGE_SIZE_PRESETS = {  # §2.2 presets; pixel sizes are the usual fal values (a guess)
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
DEFAULT_SIZE = (1024, 768)  # §2.2: landscape_4_3 and the object default are 1024x768
ASPECT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
MAX_PROMPT = 4000
# Credits are not priced per model in the docs; one credit per image keeps tests simple.
CREDITS_PER_IMAGE = 1.0


@dataclass(frozen=True)
class ModelSpec:
    """What one model id accepts (§2.2); fields a model lacks are ignored, not rejected."""

    size_range: tuple[int, int] | None = None  # image_size object bounds; None: no image_size
    steps: tuple[int, int | None] | None = None
    guidance: tuple[float, float] | None = None
    image_url: Literal["none", "one", "one_or_list"] = "none"
    image_urls: bool = False  # flux-2 edit: required array of 1-3
    strength: bool = False
    aspect_ratio: bool = False
    raw: bool = False
    safety_tolerance: bool = False
    output_formats: tuple[str, ...] = ()
    acceleration: bool = False
    fixed_size: tuple[int, int] | None = None


_PRO_FORMATS = ("jpeg", "png")
_FLUX2_FORMATS = ("jpeg", "png", "webp")
_KONTEXT = ModelSpec(
    aspect_ratio=True, guidance=(1, 20), safety_tolerance=True, output_formats=_PRO_FORMATS
)
_KONTEXT_I2I = dataclasses.replace(_KONTEXT, image_url="one_or_list")
_FLUX2 = ModelSpec(size_range=(512, 2048), output_formats=_FLUX2_FORMATS)
_FLUX2_EDIT = ModelSpec(image_urls=True, output_formats=_FLUX2_FORMATS)

MODELS: dict[str, ModelSpec] = {
    "flux/schnell": ModelSpec(size_range=(64, 1536), steps=(1, None)),
    "flux/dev": ModelSpec(size_range=(512, 1536), guidance=(1, 20), steps=(1, 50)),
    "flux/dev/image-to-image": ModelSpec(
        image_url="one", strength=True, guidance=(1, 20), steps=(1, 50)
    ),
    "flux-pro": ModelSpec(
        size_range=(256, 1440),
        steps=(1, 50),
        guidance=(1, 20),
        safety_tolerance=True,
        output_formats=_PRO_FORMATS,
    ),
    "flux-pro/v1.1": ModelSpec(
        size_range=(256, 1440), safety_tolerance=True, output_formats=_PRO_FORMATS
    ),
    "flux-pro/v1.1-ultra": ModelSpec(
        aspect_ratio=True,
        raw=True,
        safety_tolerance=True,
        output_formats=_PRO_FORMATS,
        fixed_size=(2752, 1536),  # §2.2: fixed output size per the README
    ),
    "flux-realism": ModelSpec(
        size_range=(512, 1536), guidance=(1, 20), steps=(1, 50), output_formats=_PRO_FORMATS
    ),
    "flux/kontext-pro/text-to-image": _KONTEXT,
    "flux/kontext-max/text-to-image": _KONTEXT,
    "flux/kontext-pro/image-to-image": _KONTEXT_I2I,
    "flux/kontext-max/image-to-image": _KONTEXT_I2I,
    # §2.2 gives no image_size bounds for srpo; 64-2048 is a guess.
    "flux/srpo": ModelSpec(size_range=(64, 2048), steps=(1, 50), acceleration=True),
    "flux/srpo/image-to-image": ModelSpec(
        image_url="one", strength=True, steps=(1, 50), acceleration=True
    ),
    "blackforestlabs/flux-2": dataclasses.replace(_FLUX2, guidance=(0, 20), steps=(4, 50)),
    "blackforestlabs/flux-2-pro": _FLUX2,
    "blackforestlabs/flux-2-max": _FLUX2,
    "blackforestlabs/flux-2-lora": _FLUX2,
    "blackforestlabs/flux-2-edit": _FLUX2_EDIT,
    "blackforestlabs/flux-2-pro-edit": _FLUX2_EDIT,
    "blackforestlabs/flux-2-lora-edit": _FLUX2_EDIT,
}

FAILURE_MESSAGES = (  # §2.4 documented 500 messages
    "Internal server error",
    "Something wrong with the server, please try again later",
    "The model is under maintenance. Please try again later",
)


def _enum(values: tuple[str, ...], received: Any) -> str:
    expected = " | ".join(f"'{v}'" for v in values)
    return f"Invalid enum value. Expected {expected}, received '{received}'"


def _range(name: str, value: Any, low: float, high: float | None, *, integer: bool) -> str | None:
    if not (is_int(value) if integer else is_number(value)):
        return f"{name}: Expected {'integer' if integer else 'number'}, received {value!r}"
    if value < low:
        return f"{name}: Number must be greater than or equal to {low}"
    if high is not None and value > high:
        return f"{name}: Number must be less than or equal to {high}"
    return None


def validate(body: Any) -> tuple[str, ModelSpec] | list[str]:
    """Check a body against §2.2.

    Returns:
        (model id, spec) when valid, else the detail lines of a 400 response.
    """
    if not isinstance(body, dict):
        return ["Expected object, received " + type(body).__name__]
    model = body.get("model")
    if not isinstance(model, str) or model not in MODELS:
        return [f"model: {_enum(tuple(MODELS), model)}"]
    spec = MODELS[model]
    problems: list[str] = []

    def check(problem: str | None) -> None:
        if problem is not None:
            problems.append(problem)

    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        problems.append("prompt: Required")
    elif len(prompt) > MAX_PROMPT:
        problems.append(f"prompt: String must contain at most {MAX_PROMPT} character(s)")
    if "num_images" in body:
        check(_range("num_images", body["num_images"], 1, 4, integer=True))
    if "seed" in body:
        check(_range("seed", body["seed"], 1, None, integer=True))
    if "enable_safety_checker" in body and not isinstance(body["enable_safety_checker"], bool):
        problems.append("enable_safety_checker: Expected boolean")
    if spec.size_range is not None and "image_size" in body:
        check(_check_image_size(body["image_size"], spec.size_range))
    if spec.steps is not None and "num_inference_steps" in body:
        low, high = spec.steps
        check(_range("num_inference_steps", body["num_inference_steps"], low, high, integer=True))
    if spec.guidance is not None and "guidance_scale" in body:
        low_g, high_g = spec.guidance
        check(_range("guidance_scale", body["guidance_scale"], low_g, high_g, integer=False))
    if spec.strength and "strength" in body:
        check(_range("strength", body["strength"], 0, 1, integer=False))
    if spec.image_url != "none":
        check(_check_image_url(body.get("image_url"), allow_list=spec.image_url == "one_or_list"))
    if spec.image_urls:
        urls = body.get("image_urls")
        if not isinstance(urls, list) or not 1 <= len(urls) <= 3:
            problems.append("image_urls: Required, an array of 1 to 3 images")
        elif not all(isinstance(u, str) and u for u in urls):
            problems.append("image_urls: Expected an array of strings")
    if spec.aspect_ratio and "aspect_ratio" in body and body["aspect_ratio"] not in ASPECT_RATIOS:
        problems.append(f"aspect_ratio: {_enum(ASPECT_RATIOS, body['aspect_ratio'])}")
    if spec.raw and "raw" in body and body["raw"] is not False:
        problems.append("raw: Invalid literal value, expected false")  # §2.2: enum [false]
    if spec.safety_tolerance and "safety_tolerance" in body:
        levels = ("1", "2", "3", "4", "5", "6")
        if body["safety_tolerance"] not in levels:  # §2.2: a *string* "1"-"6"
            problems.append(f"safety_tolerance: {_enum(levels, body['safety_tolerance'])}")
    if spec.output_formats and "output_format" in body:
        if body["output_format"] not in spec.output_formats:
            problems.append(f"output_format: {_enum(spec.output_formats, body['output_format'])}")
    if spec.acceleration and "acceleration" in body:
        modes = ("none", "regular", "high")
        if body["acceleration"] not in modes:
            problems.append(f"acceleration: {_enum(modes, body['acceleration'])}")
    return problems if problems else (model, spec)


def _check_image_size(size: Any, bounds: tuple[int, int]) -> str | None:
    if isinstance(size, str):
        if size not in IMAGE_SIZE_PRESETS:
            return f"image_size: {_enum(tuple(IMAGE_SIZE_PRESETS), size)}"
        return None
    if not isinstance(size, dict):
        return "image_size: Expected a preset string or an object {width, height}"
    low, high = bounds
    for name in ("width", "height"):
        value = size.get(name, 1024 if name == "width" else 768)
        problem = _range(f"image_size.{name}", value, low, high, integer=True)
        if problem is not None:
            return problem
        if value % 32:
            return f"image_size.{name}: Number must be a multiple of 32"
    return None


def _check_image_url(value: Any, *, allow_list: bool) -> str | None:
    if isinstance(value, str) and value:
        return None
    if allow_list and isinstance(value, list) and 1 <= len(value) <= 4:
        if all(isinstance(u, str) and u for u in value):
            return None
    return "image_url: Required" + (", a URL or an array of up to 4 URLs" if allow_list else "")


def _output_size(body: dict[str, Any], spec: ModelSpec) -> tuple[int, int]:
    if spec.fixed_size is not None:
        return spec.fixed_size
    if spec.aspect_ratio:
        across, down = (int(part) for part in str(body.get("aspect_ratio", "16:9")).split(":"))
        width = round(math.sqrt(1024 * 1024 * across / down) / 32) * 32
        return width, round(width * down / across / 32) * 32
    size = body.get("image_size")
    if isinstance(size, str):
        return IMAGE_SIZE_PRESETS[size]
    if isinstance(size, dict):
        return int(size.get("width", 1024)), int(size.get("height", 768))
    return DEFAULT_SIZE


class AIMLAPIRoutes(ProtocolRoutes):
    """Serve ``POST /v1/images/generations``, answering after the job's latency (§2.1)."""

    provider = "aimlapi"
    create_counter = "aimlapi.generate"
    has_status = False  # synchronous: no status field for an unknown-status fault

    def routes(self) -> list[web.RouteDef]:
        """Return the aiohttp route table."""
        return [web.post(PATH, self.create)]

    def error(self, status: int, message: str) -> web.Response:
        """Build the documented error body (§2.4); ``statusCode`` is a string there."""
        now = time.time()
        timestamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        body = {
            "message": message,
            "path": PATH,
            "requestId": uuid_from(self._state.rng),
            "statusCode": str(status),
            "timestamp": f"{timestamp}.{int(now % 1 * 1000):03d}Z",
        }
        return json_response(body, status=status)

    def key_of(self, request: web.Request) -> str | None:
        """Read the Bearer key (§2.1)."""
        return bearer_key(request)

    def prompt_of(self, body: Any) -> str | None:
        """Read the top-level ``prompt`` (§2.2)."""
        prompt = body.get("prompt") if isinstance(body, dict) else None
        return prompt if isinstance(prompt, str) else None

    def refuse(self, status: int) -> web.Response:
        """Build the §2.4 error body for 401, 429, 500 or 503."""
        messages = {
            401: "This request requires a valid API key. "
            "Provide it in the Authorization header as 'Bearer <key>'.",
            429: "Too Many Requests",
            500: "Internal server error",
            503: "Service unavailable",
        }
        return self.error(status, messages.get(status, "Error"))

    def new_id(self, rng: random.Random) -> str:
        """Draw a uuid (AI/ML API has no job id on the wire)."""
        return uuid_from(rng)

    def validate(self, body: Any) -> JobSpec | web.Response:
        """Check a body against §2.2."""
        checked = validate(body)
        if isinstance(checked, list):
            return self.error(400, "Body validation error!\n" + "\n".join(checked))
        model, spec = checked
        return JobSpec(
            model=model,
            prompt=body["prompt"],
            params=body,
            num_images=int(body.get("num_images", 1)),
            image_size=_output_size(body, spec),
            extra=spec,
        )

    def admit_job(self, spec: JobSpec) -> web.Response | None:
        """Charge the credits, or refuse with 403 when they run out (§2.4)."""
        state = self._state
        cost = CREDITS_PER_IMAGE * spec.num_images
        if state.credits_left is not None:
            if state.credits_left < cost:
                return self.error(
                    403, "You've run out of credits. Please top up your balance to continue."
                )
            state.credits_left -= cost
        return None

    async def answer(
        self, request: web.Request, job: FakeJob, spec: JobSpec, fate: JobFate
    ) -> web.StreamResponse:
        """Wait for the job's latency, then answer (§2.1: the call is synchronous)."""
        state = self._state
        if not await state.wait_until(job.ready_at):
            return reset_connection(request)  # the fake is closing: never-finish ends here
        if fate.drop_response:
            state.lost_responses += 1
            return reset_connection(request, hard=False)
        if job.outcome == "failed":
            return self.error(500, state.rng.choice(FAILURE_MESSAGES))
        return self._success(job, spec.params, spec.extra)

    def _success(self, job: FakeJob, body: dict[str, Any], spec: ModelSpec) -> web.Response:
        rng = self._state.rng
        urls = job.image_urls
        inference = (job.ready_at or job.created_at) - job.created_at
        # §2.3: success was documented as 200 and as 201, in two body shapes.
        status = rng.choice((200, 201))
        shape = rng.choice(("images", "data_url", "data_b64"))
        if shape == "images":
            width, height = job.image_size
            seed = body.get("seed")
            return json_response(
                {
                    "images": [
                        {"url": url, "width": width, "height": height, "content_type": "image/png"}
                        for url in urls
                    ],
                    "timings": {"inference": round(inference, 6)},
                    "seed": seed if is_int(seed) else rng.randrange(1, 2**32),
                    "has_nsfw_concepts": [False] * len(urls),
                    "prompt": body["prompt"],
                },
                status=status,
            )
        if shape == "data_url":
            items: list[dict[str, Any]] = [{"url": url, "b64_json": None} for url in urls]
        else:
            items = [
                {"url": None, "b64_json": base64.b64encode(self._state.image(_name(url))).decode()}
                for url in urls
            ]
        usage = {"credits_used": CREDITS_PER_IMAGE * len(urls)}
        return json_response({"data": items, "meta": {"usage": usage}}, status=status)


def _name(url: str) -> str:
    return url.rsplit("/", 1)[-1].removesuffix(".png")
