"""AI/ML API (https://aimlapi.com): FLUX models behind one synchronous endpoint.

Wire format: providers.md section 2. ``POST /v1/images/generations`` with ``{"model", "prompt",
...}`` answers with the images themselves, in one of two documented shapes: fal-style
``{"images": [{"url", "width", "height", "content_type"}], "seed"}`` or OpenAI-style
``{"data": [{"url" | "b64_json"}], "meta": {"usage": {"credits_used"}}}``. There is no job id,
no query endpoint and no webhook for images (2.5).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NamedTuple

import msgspec

from .._config import Limits
from .._errors import Phase, ProviderError
from .._models import GenerationRequest, Image, JobStatus
from ._base import (
    Accepted,
    HTTPRequest,
    HTTPResponse,
    Prepared,
    Provider,
    Update,
    base64_image,
    decode_json,
    provider_message,
    to_decimal,
)

__all__ = ["AIMLAPI"]

PROMPT_MAX_LENGTH = 4000
SIZE_PRESETS = (
    "square_hd",
    "square",
    "portrait_4_3",
    "portrait_16_9",
    "landscape_4_3",
    "landscape_16_9",
)
ASPECT_RATIO_PRESETS = {
    "1:1": "square_hd",
    "4:3": "landscape_4_3",
    "16:9": "landscape_16_9",
    "3:4": "portrait_4_3",
    "9:16": "portrait_16_9",
}
"""How ``aspect_ratio`` maps onto ``image_size`` presets, for models that take image_size."""
ASPECT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
"""The ``aspect_ratio`` enum of flux-pro/v1.1-ultra and the Kontext models."""
SIZE_STEP = 32
NUM_IMAGES = (1, 4)
SAFETY_TOLERANCES = ("1", "2", "3", "4", "5", "6")
ACCELERATIONS = ("none", "regular", "high")
_FLUX1_FORMATS = ("jpeg", "png")
_FLUX2_FORMATS = ("jpeg", "png", "webp")
_MAX_LORAS = 3
_LORA_SCALE = (0.0, 4.0)


class _Spec(NamedTuple):
    """What one model id takes (providers.md 2.2, from the per-model OpenAPI files, S4)."""

    image_field: str | None = None
    """``image_url`` or ``image_urls``: where reference images go; ``None`` for text only."""
    max_images: int = 0
    sizes: tuple[int, int] | None = None
    """Bounds of ``image_size`` width and height; ``None`` when the model takes no image_size."""
    aspect_ratio: bool = False
    """Takes ``aspect_ratio`` from `ASPECT_RATIOS` (and no image_size)."""
    guidance: tuple[float, float] | None = None
    steps: tuple[int, int | None] | None = None
    strength: bool = False
    output_formats: tuple[str, ...] = ()
    extras: frozenset[str] = frozenset()
    """Provider-specific keys taken through ``extra`` (besides image_size/output_format)."""


_SAFETY = frozenset({"enable_safety_checker"})
_TOLERANCE = frozenset({"safety_tolerance"})
_SRPO = frozenset({"enable_safety_checker", "sync_mode", "acceleration"})
_FLUX2 = frozenset({"enable_safety_checker", "enable_prompt_expansion", "acceleration"})
_FLUX2_PRO = frozenset({"enable_safety_checker", "safety_tolerance"})
_GUIDANCE = (1.0, 20.0)
_STEPS = (1, 50)

_KONTEXT_T2I = _Spec(
    aspect_ratio=True, guidance=_GUIDANCE, output_formats=_FLUX1_FORMATS, extras=_TOLERANCE
)
_KONTEXT_I2I = _KONTEXT_T2I._replace(image_field="image_url", max_images=4)
_FLUX2_T2I = _Spec(
    sizes=(512, 2048),
    guidance=(0.0, 20.0),
    steps=(4, 50),
    output_formats=_FLUX2_FORMATS,
    extras=_FLUX2,
)
_FLUX2_PRO_T2I = _Spec(sizes=(512, 2048), output_formats=_FLUX2_FORMATS, extras=_FLUX2_PRO)

MODELS: dict[str, _Spec] = {
    # flux/schnell's step maximum is not given at the docs' HEAD (2.2); older versions said 12.
    "flux/schnell": _Spec(sizes=(64, 1536), steps=(1, None), extras=_SAFETY),
    "flux/dev": _Spec(sizes=(512, 1536), guidance=_GUIDANCE, steps=_STEPS, extras=_SAFETY),
    "flux/dev/image-to-image": _Spec(
        image_field="image_url",
        max_images=1,
        guidance=_GUIDANCE,
        steps=_STEPS,
        strength=True,
        extras=_SAFETY,
    ),
    "flux-pro": _Spec(
        sizes=(256, 1440),
        guidance=_GUIDANCE,
        steps=_STEPS,
        output_formats=_FLUX1_FORMATS,
        extras=_TOLERANCE,
    ),
    "flux-pro/v1.1": _Spec(
        sizes=(256, 1440), output_formats=_FLUX1_FORMATS, extras=_TOLERANCE | _SAFETY
    ),
    "flux-pro/v1.1-ultra": _Spec(
        aspect_ratio=True,
        output_formats=_FLUX1_FORMATS,
        extras=_TOLERANCE | _SAFETY | {"raw"},
    ),
    "flux-realism": _Spec(
        sizes=(512, 1536),
        guidance=_GUIDANCE,
        steps=_STEPS,
        output_formats=_FLUX1_FORMATS,
        extras=_SAFETY,
    ),
    "flux/kontext-pro/text-to-image": _KONTEXT_T2I,
    "flux/kontext-max/text-to-image": _KONTEXT_T2I,
    "flux/kontext-pro/image-to-image": _KONTEXT_I2I,
    "flux/kontext-max/image-to-image": _KONTEXT_I2I,
    "flux/srpo": _Spec(
        sizes=(512, 1536),
        guidance=_GUIDANCE,
        steps=_STEPS,
        output_formats=_FLUX1_FORMATS,
        extras=_SRPO,
    ),
    "flux/srpo/image-to-image": _Spec(
        image_field="image_url",
        max_images=1,
        guidance=_GUIDANCE,
        steps=_STEPS,
        strength=True,
        output_formats=_FLUX1_FORMATS,
        extras=_SRPO,
    ),
    "blackforestlabs/flux-2": _FLUX2_T2I,
    "blackforestlabs/flux-2-lora": _FLUX2_T2I._replace(extras=_FLUX2 | {"loras"}),
    "blackforestlabs/flux-2-pro": _FLUX2_PRO_T2I,
    "blackforestlabs/flux-2-max": _FLUX2_PRO_T2I,
    "blackforestlabs/flux-2-edit": _FLUX2_T2I._replace(image_field="image_urls", max_images=3),
    # The lora-edit schema spells the field "loars"; "loras" (as on flux-2-lora) is sent.
    "blackforestlabs/flux-2-lora-edit": _FLUX2_T2I._replace(
        image_field="image_urls", max_images=3, extras=_FLUX2 | {"loras"}
    ),
    "blackforestlabs/flux-2-pro-edit": _FLUX2_PRO_T2I._replace(
        image_field="image_urls", max_images=3
    ),
}
TEXT_TO_IMAGE = "flux/dev"
IMAGE_TO_IMAGE = "flux/dev/image-to-image"
_ALIASES = {"schnell": ("flux/schnell", None), "dev": (TEXT_TO_IMAGE, IMAGE_TO_IMAGE)}
_IMAGE_MODELS = tuple(model for model, spec in MODELS.items() if spec.image_field)


# Wire structs declare only the fields read; unknown fields are ignored.
class _WireImage(msgspec.Struct):
    url: Any = None
    width: Any = None
    height: Any = None
    content_type: Any = None


class _WireDatum(msgspec.Struct):
    url: Any = None
    b64_json: Any = None


class _Usage(msgspec.Struct):
    credits_used: Any = None
    tokens_used: Any = None


class _Meta(msgspec.Struct):
    usage: _Usage | None = None


class _Generation(msgspec.Struct):
    images: list[_WireImage] | None = None
    data: list[_WireDatum] | None = None
    meta: _Meta | None = None
    seed: Any = None
    request_id: Any = msgspec.field(default=None, name="requestId")


_generation_decoder = msgspec.json.Decoder(_Generation)
_encoder = msgspec.json.Encoder()


class AIMLAPI(Provider):
    """AI/ML API's FLUX models (FLUX.1 schnell/dev/pro/realism/Kontext/SRPO and FLUX.2).

    ``model`` is one of `MODELS` (or ``schnell``/``dev``); the default is ``flux/dev``, or
    ``flux/dev/image-to-image`` when ``image_url`` is given. Each model's own ranges are checked
    before sending. ``extra`` takes the model's documented keys: ``image_size`` (a preset such
    as ``"square"`` or ``{"width", "height"}``), ``image_urls`` (more reference images for the
    Kontext and FLUX.2 edit models), ``enable_safety_checker``, ``safety_tolerance``,
    ``output_format``, ``raw``, ``acceleration``, ``sync_mode``, ``enable_prompt_expansion``,
    ``loras``.

    The call is synchronous: `parse_create` returns the images. ``Generation.cost`` is
    ``meta.usage.credits_used`` in AI/ML API credits, when the response says.

    Args:
        api_key: the key; when omitted, read from the ``AIMLAPI_KEY`` environment variable.
        base_url: the API's address (a FakeProvider's ``url`` in tests).
    """

    name = "aimlapi"
    env_var = "AIMLAPI_KEY"
    default_base_url = "https://api.aimlapi.com"
    typical_latency = 10.0
    # Each job holds its connection until the image is ready, so jobs in flight and
    # connections are the same number. Rate limits are undocumented (2.4).
    default_limits = Limits(max_jobs_in_flight=32, max_connections=32, polls_per_second=1.0)
    synchronous = True
    supports_callbacks = False

    def prepare(self, request: GenerationRequest) -> Prepared:
        """Validate a request against the chosen model's OpenAPI schema (providers.md 2.2)."""
        extra = dict(request.extra)
        model = self._model(request)
        spec = MODELS[model]
        allowed_extra = _extra_keys(spec)
        for key, value in extra.items():
            if key not in allowed_extra:
                allowed = ", ".join(allowed_extra) if allowed_extra else "no extra keys"
                raise self._invalid(f"extra[{key!r}]", value, f"{allowed} (for {model})")

        args: dict[str, Any] = {
            "prompt": self._check_prompt(request.prompt, max_length=PROMPT_MAX_LENGTH)
        }
        self._images(request.image_url, extra.pop("image_urls", None), model, spec, args)
        self._size(request, extra.pop("image_size", None), model, spec, args)
        self._numbers(request, model, spec, args)
        for key, value in extra.items():
            args[key] = self._extra_value(key, value, spec)
        return Prepared(model=model, args=args)

    def _model(self, request: GenerationRequest) -> str:
        with_image = request.image_url is not None
        if request.model is None:
            return IMAGE_TO_IMAGE if with_image else TEXT_TO_IMAGE
        if request.model in _ALIASES:
            text_model, image_model = _ALIASES[request.model]
            if not with_image:
                return text_model
            if image_model is None:
                raise self._invalid(
                    "image_url",
                    request.image_url,
                    f"no image for {text_model}; image models: {', '.join(_IMAGE_MODELS)}",
                )
            return image_model
        if request.model not in MODELS:
            raise self._invalid(
                "model", request.model, f"{', '.join(MODELS)} (or {', '.join(_ALIASES)})"
            )
        return request.model

    def _images(
        self, image_url: str | None, more: Any, model: str, spec: _Spec, args: dict[str, Any]
    ) -> None:
        urls: list[str] = []
        if image_url is not None:
            if spec.image_field is None:
                raise self._invalid(
                    "image_url",
                    image_url,
                    f"no image for {model}; image models: {', '.join(_IMAGE_MODELS)}",
                )
            urls.append(self._check_url("image_url", image_url))
        if more is not None:
            if not isinstance(more, (list, tuple)) or not more:
                raise self._invalid("extra['image_urls']", more, "a non-empty list of URLs")
            urls.extend(
                self._check_url(f"extra['image_urls'][{index}]", url)
                for index, url in enumerate(more)
            )
        if spec.image_field is None:
            return
        if not urls:
            raise self._invalid("image_url", None, f"an http(s) URL (required by {model})")
        if len(urls) > spec.max_images:
            raise self._invalid(
                "extra['image_urls']",
                more,
                f"at most {spec.max_images} images in all for {model}, image_url included",
            )
        if spec.image_field == "image_urls":
            args["image_urls"] = urls
        else:
            # Kontext image-to-image takes a uri or a list of up to 4 (2.2).
            args["image_url"] = urls[0] if len(urls) == 1 else urls

    def _size(
        self,
        request: GenerationRequest,
        image_size: Any,
        model: str,
        spec: _Spec,
        args: dict[str, Any],
    ) -> None:
        sized = request.width is not None or request.height is not None
        given = [
            name
            for name, present in (
                ("extra['image_size']", image_size is not None),
                ("width/height", sized),
                ("aspect_ratio", request.aspect_ratio is not None),
            )
            if present
        ]
        if not given:
            return
        if len(given) > 1:
            raise self._invalid(
                given[-1],
                _one_of(request, image_size, given[-1]),
                f"only one of {', '.join(given)}",
            )
        if spec.aspect_ratio:
            if request.aspect_ratio is None:
                raise self._invalid(
                    given[0],
                    _one_of(request, image_size, given[0]),
                    f"aspect_ratio ({', '.join(ASPECT_RATIOS)}): {model} takes no image_size",
                )
            args["aspect_ratio"] = self._check_choice(
                "aspect_ratio", request.aspect_ratio, ASPECT_RATIOS
            )
            return
        if spec.sizes is None:
            raise self._invalid(
                given[0],
                _one_of(request, image_size, given[0]),
                f"nothing: {model} makes an image the size of its input image",
            )
        if request.aspect_ratio is not None:
            if request.aspect_ratio not in ASPECT_RATIO_PRESETS:
                raise self._invalid(
                    "aspect_ratio",
                    request.aspect_ratio,
                    f"{', '.join(ASPECT_RATIO_PRESETS)} (the image_size presets of {model}), "
                    "or width/height",
                )
            args["image_size"] = ASPECT_RATIO_PRESETS[request.aspect_ratio]
        elif sized:
            args["image_size"] = self._dimensions("", request.width, request.height, spec.sizes)
        elif isinstance(image_size, str):
            args["image_size"] = self._check_choice("extra['image_size']", image_size, SIZE_PRESETS)
        elif isinstance(image_size, Mapping) and set(image_size) <= {"width", "height"}:
            args["image_size"] = self._dimensions(
                "extra['image_size']",
                image_size.get("width"),
                image_size.get("height"),
                spec.sizes,
            )
        else:
            raise self._invalid(
                "extra['image_size']",
                image_size,
                f"one of {', '.join(SIZE_PRESETS)} or {{'width': w, 'height': h}}",
            )

    def _dimensions(
        self, prefix: str, width: Any, height: Any, bounds: tuple[int, int]
    ) -> dict[str, int]:
        low, high = bounds
        sides = {}
        for name, value in (("width", width), ("height", height)):
            field = f"{prefix}[{name!r}]" if prefix else name
            side = self._check_int(field, value, low, high)
            if side % SIZE_STEP:
                raise self._invalid(field, value, f"a multiple of {SIZE_STEP} in [{low}, {high}]")
            sides[name] = side
        return sides

    def _numbers(
        self, request: GenerationRequest, model: str, spec: _Spec, args: dict[str, Any]
    ) -> None:
        if request.num_images is not None:
            args["num_images"] = self._check_int("num_images", request.num_images, *NUM_IMAGES)
        if request.seed is not None:
            args["seed"] = self._check_int("seed", request.seed, 1)
        if request.guidance is not None:
            if spec.guidance is None:
                raise self._invalid("guidance", request.guidance, f"nothing: {model} takes none")
            args["guidance_scale"] = self._check_number(
                "guidance", request.guidance, *spec.guidance
            )
        if request.steps is not None:
            if spec.steps is None:
                raise self._invalid("steps", request.steps, f"nothing: {model} takes none")
            args["num_inference_steps"] = self._check_int("steps", request.steps, *spec.steps)
        if request.strength is not None:
            if not spec.strength:
                raise self._invalid(
                    "strength",
                    request.strength,
                    f"nothing: {model} takes none (flux/dev/image-to-image and "
                    "flux/srpo/image-to-image do)",
                )
            # srpo/image-to-image documents 0-1; flux/dev/image-to-image gives no range.
            args["strength"] = self._check_number("strength", request.strength, 0, 1)

    def _extra_value(self, key: str, value: Any, spec: _Spec) -> Any:
        field = f"extra[{key!r}]"
        if key in ("enable_safety_checker", "sync_mode", "enable_prompt_expansion", "raw"):
            # raw's schema enum is [false] (2.2); true is passed on and left to the provider.
            # What sync_mode=false returns is [U] (2.5).
            if not isinstance(value, bool):
                raise self._invalid(field, value, "True or False")
            return value
        if key == "safety_tolerance":
            # A string "1"-"6" on the wire (2.2); an int is accepted and converted.
            text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
            return self._check_choice(field, text, SAFETY_TOLERANCES)
        if key == "output_format":
            return self._check_choice(field, value, spec.output_formats)
        if key == "acceleration":
            return self._check_choice(field, value, ACCELERATIONS)
        assert key == "loras"
        return self._loras(value)

    def _loras(self, value: Any) -> list[dict[str, Any]]:
        field = "extra['loras']"
        shape = "{path, scale?}"
        if not isinstance(value, (list, tuple)) or len(value) > _MAX_LORAS:
            raise self._invalid(field, value, f"a list of at most {_MAX_LORAS} objects {shape}")
        loras = []
        for index, item in enumerate(value):
            where = f"{field}[{index}]"
            if not isinstance(item, Mapping):
                raise self._invalid(where, item, f"an object {shape}")
            for key in item:
                if key not in ("path", "scale"):
                    raise self._invalid(f"{where}[{key!r}]", item[key], "path, scale")
            path = item.get("path")
            if not isinstance(path, str) or not path.strip():
                raise self._invalid(
                    f"{where}['path']", path, "a URL or a HuggingFace repo id (owner/repo)"
                )
            lora: dict[str, Any] = {"path": path}
            if "scale" in item:
                lora["scale"] = self._check_number(f"{where}['scale']", item["scale"], *_LORA_SCALE)
            loras.append(lora)
        return loras

    def build_create(
        self, prepared: Prepared, *, callback_url: str | None, webhook_secret: str | None
    ) -> HTTPRequest:
        """Return ``POST /v1/images/generations``; AI/ML API has no webhooks for images."""
        return HTTPRequest(
            "POST",
            f"{self.base_url}/v1/images/generations",
            operation="create",
            headers={
                "Authorization": f"Bearer {self._api_key}",
                "Content-Type": "application/json",
            },
            body=_encoder.encode({"model": prepared.model, **prepared.args}),
        )

    def parse_create(self, response: HTTPResponse) -> Accepted:
        """Decode the images of a synchronous generation.

        The job id is the response's ``x-request-id`` header or body ``requestId`` when there
        is one. AI/ML API gives no job id of its own (2.3), so otherwise it is a local
        ``aimlapi-<uuid4 hex>``: it only has to name this generation in logs and snapshots,
        since nothing is ever queried with it.
        """
        if not 200 <= response.status < 300:
            raise self._http_error(response)
        try:
            generation = _generation_decoder.decode(response.body)
        except (msgspec.DecodeError, RecursionError) as exc:
            # The generation ran (and was billed) but its result cannot be read.
            raise self._undecodable(response, "create", str(exc), phase=Phase.AMBIGUOUS) from exc
        images = _images(generation)
        if not images:
            # The synchronous call was answered and nothing more will come for it: this is a
            # final "no image", not an unknown outcome, and resending would pay again.
            raise self._undecodable(
                response,
                "create",
                "no image in images[].url, data[].url or data[].b64_json",
                phase=Phase.DEFINITIVE,
            )
        cost = _cost(generation)
        seed = generation.seed
        update = Update(
            status=JobStatus.SUCCEEDED,
            images=images,
            cost=cost,
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        )
        return Accepted(job_id=_job_id(response, generation), cost=cost, update=update)

    def _http_error(self, response: HTTPResponse) -> ProviderError:
        # {"message", "path", "requestId", "statusCode", "timestamp"} (2.4); statusCode is a
        # string in the doc's example. The status decides the kind and phase: 403 is out of
        # credits, 429 and 503 did no work, 500/502/504 may have generated (and billed).
        try:
            payload: Any = decode_json(response.body)
        except (msgspec.DecodeError, RecursionError):
            payload = response.body[:2048]
        code = payload.get("statusCode") if isinstance(payload, dict) else None
        return self._error(
            response,
            "create",
            message=provider_message(payload, "message", "error"),
            code=_status_code(code),
            payload=payload,
        )


def _extra_keys(spec: _Spec) -> tuple[str, ...]:
    keys = sorted(spec.extras)
    if spec.sizes is not None:
        keys.append("image_size")
    if spec.output_formats:
        keys.append("output_format")
    if spec.max_images > 1:
        keys.append("image_urls")
    return tuple(keys)


def _one_of(request: GenerationRequest, image_size: Any, field: str) -> Any:
    if field == "extra['image_size']":
        return image_size
    if field == "aspect_ratio":
        return request.aspect_ratio
    return f"{request.width}x{request.height}"


def _status_code(value: Any) -> int | None:
    """Read ``statusCode``, documented as a string ("429") but possibly an int."""
    if isinstance(value, str):
        text = value.strip()
        return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _images(generation: _Generation) -> tuple[Image, ...]:
    # images[].url first (the .md examples), else data[] (the OpenAPI schema), url before
    # b64_json (2.3).
    images = [
        Image(
            url=image.url,
            width=image.width if _is_int(image.width) else None,
            height=image.height if _is_int(image.height) else None,
            content_type=image.content_type if isinstance(image.content_type, str) else None,
        )
        for image in generation.images or ()
        if isinstance(image.url, str) and image.url.strip()
    ]
    if images:
        return tuple(images)
    for datum in generation.data or ():
        if isinstance(datum.url, str) and datum.url.strip():
            images.append(Image(url=datum.url))
        elif isinstance(datum.b64_json, str) and datum.b64_json.strip():
            # The response does not repeat the request's output_format.
            images.append(base64_image(datum.b64_json))
    return tuple(images)


def _cost(generation: _Generation) -> Decimal | None:
    # AI/ML API credits. flux-2 examples name the same counter tokens_used (2.3). usd_spent
    # (flux-2-edit only, next to credits_used) is not mixed in: one unit per provider.
    usage = generation.meta.usage if generation.meta is not None else None
    if usage is None:
        return None
    cost = to_decimal(usage.credits_used)
    return cost if cost is not None else to_decimal(usage.tokens_used)


def _job_id(response: HTTPResponse, generation: _Generation) -> str:
    candidates = [response.headers.get("x-request-id"), response.headers.get("X-Request-Id")]
    candidates.extend(
        value for key, value in response.headers.items() if key.lower() == "x-request-id"
    )
    candidates.append(generation.request_id)
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()[:200]
    return f"aimlapi-{uuid.uuid4().hex}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
