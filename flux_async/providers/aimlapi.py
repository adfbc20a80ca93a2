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
from typing import Any

import msgspec

from .._config import Limits
from .._errors import Phase, ProviderError
from .._models import GenerationRequest, Image, JobStatus
from ._base import (
    Accepted,
    HTTPRequest,
    HTTPResponse,
    InlineImage,
    Prepared,
    Provider,
    Update,
)
from ._validate import (
    Ints,
    Numbers,
    Takes,
    check_bool,
    check_choice,
    check_extra_keys,
    check_image,
    check_int,
    check_number,
    check_objects,
    check_prompt,
    check_request,
    check_url,
    invalid,
)
from ._wire import (
    WireImage,
    base64_image,
    images_from,
    int_code,
    is_int,
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


def _takes(
    *,
    image: str | None = None,
    max_images: int = 0,
    sizes: tuple[int, int] | None = None,
    aspect_ratio: bool = False,
    guidance: Numbers | None = None,
    steps: Ints | None = None,
    strength: bool = False,
    output_formats: tuple[str, ...] = (),
    extras: frozenset[str] = frozenset(),
) -> Takes:
    """Return what one model id takes (providers.md 2.2, from the per-model OpenAPI files, S4).

    Args:
        image: ``image_url`` or ``image_urls``: where reference images go.
        sizes: bounds of ``image_size`` width and height.
        aspect_ratio: takes ``aspect_ratio`` from `ASPECT_RATIOS` (and no image_size).
        extras: provider-specific keys taken through ``extra`` (besides image_size,
            output_format and image_urls, which follow from the other arguments).
    """
    keys = sorted(extras)
    if sizes is not None:
        keys.append("image_size")
    if output_formats:
        keys.append("output_format")
    if max_images > 1:
        keys.append("image_urls")
    return Takes(
        image=image,
        max_images=max_images,
        sizes=sizes,
        aspect_ratios=ASPECT_RATIOS if aspect_ratio else (),
        # Common to every model (2.2): num_images 1-4, seed >= 1.
        num_images=Ints(*NUM_IMAGES, "num_images"),
        seed=Ints(1, None, "seed"),
        guidance=guidance,
        steps=steps,
        # srpo/image-to-image documents 0-1; flux/dev/image-to-image gives no range.
        strength=Numbers(0, 1, "strength") if strength else None,
        output_formats=output_formats,
        extras=tuple(keys),
    )


_SAFETY = frozenset({"enable_safety_checker"})
_TOLERANCE = frozenset({"safety_tolerance"})
_SRPO = frozenset({"enable_safety_checker", "sync_mode", "acceleration"})
_FLUX2 = frozenset({"enable_safety_checker", "enable_prompt_expansion", "acceleration"})
_FLUX2_PRO = frozenset({"enable_safety_checker", "safety_tolerance"})
_GUIDANCE = Numbers(1.0, 20.0, "guidance_scale")
_STEPS = Ints(1, 50, "num_inference_steps")

_KONTEXT: dict[str, Any] = {
    "aspect_ratio": True,
    "guidance": _GUIDANCE,
    "output_formats": _FLUX1_FORMATS,
    "extras": _TOLERANCE,
}
_FLUX2_BASE: dict[str, Any] = {
    "sizes": (512, 2048),
    "guidance": Numbers(0.0, 20.0, "guidance_scale"),
    "steps": Ints(4, 50, "num_inference_steps"),
    "output_formats": _FLUX2_FORMATS,
    "extras": _FLUX2,
}
_FLUX2_PRO_BASE: dict[str, Any] = {
    "sizes": (512, 2048),
    "output_formats": _FLUX2_FORMATS,
    "extras": _FLUX2_PRO,
}
_EDIT: dict[str, Any] = {"image": "image_urls", "max_images": 3}

MODELS: dict[str, Takes] = {
    # flux/schnell's step maximum is not given at the docs' HEAD (2.2); older versions said 12.
    "flux/schnell": _takes(
        sizes=(64, 1536), steps=Ints(1, None, "num_inference_steps"), extras=_SAFETY
    ),
    "flux/dev": _takes(sizes=(512, 1536), guidance=_GUIDANCE, steps=_STEPS, extras=_SAFETY),
    "flux/dev/image-to-image": _takes(
        image="image_url",
        max_images=1,
        guidance=_GUIDANCE,
        steps=_STEPS,
        strength=True,
        extras=_SAFETY,
    ),
    "flux-pro": _takes(
        sizes=(256, 1440),
        guidance=_GUIDANCE,
        steps=_STEPS,
        output_formats=_FLUX1_FORMATS,
        extras=_TOLERANCE,
    ),
    "flux-pro/v1.1": _takes(
        sizes=(256, 1440), output_formats=_FLUX1_FORMATS, extras=_TOLERANCE | _SAFETY
    ),
    "flux-pro/v1.1-ultra": _takes(
        aspect_ratio=True,
        output_formats=_FLUX1_FORMATS,
        extras=_TOLERANCE | _SAFETY | {"raw"},
    ),
    "flux-realism": _takes(
        sizes=(512, 1536),
        guidance=_GUIDANCE,
        steps=_STEPS,
        output_formats=_FLUX1_FORMATS,
        extras=_SAFETY,
    ),
    "flux/kontext-pro/text-to-image": _takes(**_KONTEXT),
    "flux/kontext-max/text-to-image": _takes(**_KONTEXT),
    "flux/kontext-pro/image-to-image": _takes(**_KONTEXT, image="image_url", max_images=4),
    "flux/kontext-max/image-to-image": _takes(**_KONTEXT, image="image_url", max_images=4),
    "flux/srpo": _takes(
        sizes=(512, 1536),
        guidance=_GUIDANCE,
        steps=_STEPS,
        output_formats=_FLUX1_FORMATS,
        extras=_SRPO,
    ),
    "flux/srpo/image-to-image": _takes(
        image="image_url",
        max_images=1,
        guidance=_GUIDANCE,
        steps=_STEPS,
        strength=True,
        output_formats=_FLUX1_FORMATS,
        extras=_SRPO,
    ),
    "blackforestlabs/flux-2": _takes(**_FLUX2_BASE),
    "blackforestlabs/flux-2-lora": _takes(**{**_FLUX2_BASE, "extras": _FLUX2 | {"loras"}}),
    "blackforestlabs/flux-2-pro": _takes(**_FLUX2_PRO_BASE),
    "blackforestlabs/flux-2-max": _takes(**_FLUX2_PRO_BASE),
    "blackforestlabs/flux-2-edit": _takes(**_FLUX2_BASE, **_EDIT),
    # The lora-edit schema spells the field "loars"; "loras" (as on flux-2-lora) is sent.
    "blackforestlabs/flux-2-lora-edit": _takes(
        **{**_FLUX2_BASE, "extras": _FLUX2 | {"loras"}}, **_EDIT
    ),
    "blackforestlabs/flux-2-pro-edit": _takes(**_FLUX2_PRO_BASE, **_EDIT),
}
TEXT_TO_IMAGE = "flux/dev"
IMAGE_TO_IMAGE = "flux/dev/image-to-image"
_ALIASES = {"schnell": ("flux/schnell", None), "dev": (TEXT_TO_IMAGE, IMAGE_TO_IMAGE)}
_IMAGE_MODELS = tuple(model for model, takes in MODELS.items() if takes.image)


# Wire structs declare only the fields read; unknown fields are ignored.
class _WireDatum(msgspec.Struct):
    url: Any = None
    b64_json: Any = None


class _Usage(msgspec.Struct):
    credits_used: Any = None
    tokens_used: Any = None


class _Meta(msgspec.Struct):
    usage: _Usage | None = None


class _Generation(msgspec.Struct):
    images: list[WireImage] | None = None
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
    # No ceilings: the client discovers the provider's limits (429s shrink them).
    default_limits = Limits()
    synchronous = True
    supports_callbacks = False
    # The host of the documented example responses (flux/dev/image-to-image pages, S4);
    # b64_json results are data: URLs and have none.
    result_hosts = ("cdn.aimlapi.com",)
    inline_images = (
        "the FLUX.2 edit models (blackforestlabs/flux-2-edit, flux-2-pro-edit, "
        "flux-2-lora-edit) take a local image inline"
    )

    def prepare(self, request: GenerationRequest) -> Prepared:
        """Validate a request against the chosen model's OpenAPI schema (providers.md 2.2)."""
        extra = dict(request.extra)
        model = self._model(request)
        takes = MODELS[model]
        check_extra_keys(self.name, extra, takes.extras, f" (for {model})")
        args: dict[str, Any] = {
            "prompt": check_prompt(self.name, request.prompt, max_length=PROMPT_MAX_LENGTH)
        }
        self._images(request.image_url, extra.pop("image_urls", None), model, takes, args)
        self._size(request, extra.pop("image_size", None), model, takes, args)

        def refused(field: str) -> str:
            if field == "strength":
                return (
                    f"nothing: {model} takes none (flux/dev/image-to-image and "
                    "flux/srpo/image-to-image do)"
                )
            return f"nothing: {model} takes none"

        check_request(self.name, takes, request, args, refused=refused)
        for key, value in extra.items():
            args[key] = self._extra_value(key, value, takes)
        return Prepared(model=model, args=args)

    def inline_image(self, request: GenerationRequest) -> InlineImage | None:
        """A data: URL for the FLUX.2 edit models, whose ``image_urls`` are documented as
        "List of URLs or local Base64 encoded images to edit" (items of format uri, S4);
        every other image model documents a URL (2.2)."""
        return "data_url" if MODELS[self._model(request)].image == "image_urls" else None

    def _model(self, request: GenerationRequest) -> str:
        with_image = request.image_url is not None
        if request.model is None:
            return IMAGE_TO_IMAGE if with_image else TEXT_TO_IMAGE
        if request.model in _ALIASES:
            text_model, image_model = _ALIASES[request.model]
            if not with_image:
                return text_model
            if image_model is None:
                raise invalid(
                    self.name,
                    "image_url",
                    request.image_url,
                    f"no image for {text_model}; image models: {', '.join(_IMAGE_MODELS)}",
                )
            return image_model
        if request.model not in MODELS:
            raise invalid(
                self.name, "model", request.model, f"{', '.join(MODELS)} (or {', '.join(_ALIASES)})"
            )
        return request.model

    def _images(
        self, image_url: str | None, more: Any, model: str, takes: Takes, args: dict[str, Any]
    ) -> None:
        urls: list[str] = []
        if image_url is not None:
            if takes.image is None:
                raise invalid(
                    self.name,
                    "image_url",
                    image_url,
                    f"no image for {model}; image models: {', '.join(_IMAGE_MODELS)}",
                )
            inline = "data_url" if takes.image == "image_urls" else None
            urls.append(check_image(self.name, "image_url", image_url, inline))
        if more is not None:
            if not isinstance(more, (list, tuple)) or not more:
                raise invalid(self.name, "extra['image_urls']", more, "a non-empty list of URLs")
            urls.extend(
                check_url(self.name, f"extra['image_urls'][{index}]", url)
                for index, url in enumerate(more)
            )
        if takes.image is None:
            return
        if not urls:
            raise invalid(self.name, "image_url", None, f"an http(s) URL (required by {model})")
        if len(urls) > takes.max_images:
            raise invalid(
                self.name,
                "extra['image_urls']",
                more,
                f"at most {takes.max_images} images in all for {model}, image_url included",
            )
        if takes.image == "image_urls":
            args["image_urls"] = urls
        else:
            # Kontext image-to-image takes a uri or a list of up to 4 (2.2).
            args["image_url"] = urls[0] if len(urls) == 1 else urls

    def _size(
        self,
        request: GenerationRequest,
        image_size: Any,
        model: str,
        takes: Takes,
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
            raise invalid(
                self.name,
                given[-1],
                _one_of(request, image_size, given[-1]),
                f"only one of {', '.join(given)}",
            )
        if takes.aspect_ratios:
            if request.aspect_ratio is None:
                raise invalid(
                    self.name,
                    given[0],
                    _one_of(request, image_size, given[0]),
                    f"aspect_ratio ({', '.join(ASPECT_RATIOS)}): {model} takes no image_size",
                )
            args["aspect_ratio"] = check_choice(
                self.name, "aspect_ratio", request.aspect_ratio, takes.aspect_ratios
            )
            return
        sizes = takes.sizes
        if sizes is None:
            raise invalid(
                self.name,
                given[0],
                _one_of(request, image_size, given[0]),
                f"nothing: {model} makes an image the size of its input image",
            )
        if request.aspect_ratio is not None:
            if request.aspect_ratio not in ASPECT_RATIO_PRESETS:
                raise invalid(
                    self.name,
                    "aspect_ratio",
                    request.aspect_ratio,
                    f"{', '.join(ASPECT_RATIO_PRESETS)} (the image_size presets of {model}), "
                    "or width/height",
                )
            args["image_size"] = ASPECT_RATIO_PRESETS[request.aspect_ratio]
        elif sized:
            args["image_size"] = self._dimensions("", request.width, request.height, sizes)
        elif isinstance(image_size, str):
            args["image_size"] = check_choice(
                self.name, "extra['image_size']", image_size, SIZE_PRESETS
            )
        elif isinstance(image_size, Mapping) and set(image_size) <= {"width", "height"}:
            args["image_size"] = self._dimensions(
                "extra['image_size']",
                image_size.get("width"),
                image_size.get("height"),
                sizes,
            )
        else:
            raise invalid(
                self.name,
                "extra['image_size']",
                image_size,
                f"one of {', '.join(SIZE_PRESETS)} or {{'width': w, 'height': h}}",
            )

    def _dimensions(
        self, prefix: str, width: Any, height: Any, bounds: tuple[int, int | None]
    ) -> dict[str, int]:
        low, high = bounds
        sides = {}
        for name, value in (("width", width), ("height", height)):
            field = f"{prefix}[{name!r}]" if prefix else name
            side = check_int(self.name, field, value, low, high)
            if side % SIZE_STEP:
                raise invalid(
                    self.name, field, value, f"a multiple of {SIZE_STEP} in [{low}, {high}]"
                )
            sides[name] = side
        return sides

    def _extra_value(self, key: str, value: Any, takes: Takes) -> Any:
        field = f"extra[{key!r}]"
        if key in ("enable_safety_checker", "sync_mode", "enable_prompt_expansion", "raw"):
            # raw's schema enum is [false] (2.2); true is passed on and left to the provider.
            # What sync_mode=false returns is [U] (2.5).
            return check_bool(self.name, field, value)
        if key == "safety_tolerance":
            # A string "1"-"6" on the wire (2.2); an int is accepted and converted.
            text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
            return check_choice(self.name, field, text, SAFETY_TOLERANCES)
        if key == "output_format":
            return check_choice(self.name, field, value, takes.output_formats)
        if key == "acceleration":
            return check_choice(self.name, field, value, ACCELERATIONS)
        assert key == "loras"
        return self._loras(value)

    def _loras(self, value: Any) -> list[dict[str, Any]]:
        field = "extra['loras']"
        loras = []
        items = check_objects(
            self.name, field, value, (0, _MAX_LORAS), ("path", "scale"), "{path, scale?}"
        )
        for index, item in enumerate(items):
            where = f"{field}[{index}]"
            path = item.get("path")
            if not isinstance(path, str) or not path.strip():
                raise invalid(
                    self.name,
                    f"{where}['path']",
                    path,
                    "a URL or a HuggingFace repo id (owner/repo)",
                )
            lora: dict[str, Any] = {"path": path}
            if "scale" in item:
                lora["scale"] = check_number(
                    self.name, f"{where}['scale']", item["scale"], *_LORA_SCALE
                )
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
        # The generation ran (and was billed) if its 2xx answer cannot be read.
        generation = self._decode_answer(
            _generation_decoder, response, "create", phase=Phase.AMBIGUOUS
        )
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
            seed=seed if is_int(seed) else None,
        )
        return Accepted(job_id=_job_id(response, generation), cost=cost, update=update)

    def _http_error(self, response: HTTPResponse, operation: str) -> ProviderError:
        # {"message", "path", "requestId", "statusCode", "timestamp"} (2.4); statusCode is a
        # string in the doc's example. The status decides the kind and phase: 403 is out of
        # credits, 429 and 503 did no work, 500/502/504 may have generated (and billed).
        payload = self._payload(response.body)
        code = payload.get("statusCode") if isinstance(payload, dict) else None
        return self._error(
            response,
            operation,
            message=provider_message(payload, "message", "error"),
            code=int_code(code),
            payload=payload,
        )


def _one_of(request: GenerationRequest, image_size: Any, field: str) -> Any:
    if field == "extra['image_size']":
        return image_size
    if field == "aspect_ratio":
        return request.aspect_ratio
    return f"{request.width}x{request.height}"


def _images(generation: _Generation) -> tuple[Image, ...]:
    # images[].url first (the .md examples), else data[] (the OpenAPI schema), url before
    # b64_json (2.3).
    images = images_from(generation.images)
    if images:
        return images
    found: list[Image] = []
    for datum in generation.data or ():
        if isinstance(datum.url, str) and datum.url.strip():
            found.append(Image(url=datum.url))
        elif isinstance(datum.b64_json, str) and datum.b64_json.strip():
            # The response does not repeat the request's output_format.
            found.append(base64_image(datum.b64_json))
    return tuple(found)


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

