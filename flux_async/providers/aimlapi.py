"""AI/ML API (https://aimlapi.com): FLUX models behind one synchronous endpoint.

Wire format: providers.md section 2. ``POST /v1/images/generations`` with ``{"model", "prompt",
...}`` answers with the images themselves, in one of two documented shapes: fal-style
``{"images": [{"url", "width", "height", "content_type"}], "seed"}`` or OpenAI-style
``{"data": [{"url" | "b64_json"}], "meta": {"usage": {"credits_used"}}}``. There is no job id,
no query endpoint and no webhook for images (2.5).

This module is the adapter: the request it builds and the answer it reads. What each model
takes, and the checks of a request, are in `_aimlapi_models`.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import msgspec

from .._config import Limits
from .._errors import Phase, ProviderError
from .._models import GenerationRequest, Image, JobStatus

# The tables stay importable from here, as they were before the split (re-exports).
from ._aimlapi_models import ACCELERATIONS as ACCELERATIONS
from ._aimlapi_models import ASPECT_RATIO_PRESETS as ASPECT_RATIO_PRESETS
from ._aimlapi_models import ASPECT_RATIOS as ASPECT_RATIOS
from ._aimlapi_models import IMAGE_TO_IMAGE as IMAGE_TO_IMAGE
from ._aimlapi_models import MODELS, model_of, prepare_model
from ._aimlapi_models import NUM_IMAGES as NUM_IMAGES
from ._aimlapi_models import PROMPT_MAX_LENGTH as PROMPT_MAX_LENGTH
from ._aimlapi_models import SAFETY_TOLERANCES as SAFETY_TOLERANCES
from ._aimlapi_models import SIZE_PRESETS as SIZE_PRESETS
from ._aimlapi_models import SIZE_STEP as SIZE_STEP
from ._aimlapi_models import TEXT_TO_IMAGE as TEXT_TO_IMAGE
from ._base import (
    Accepted,
    HTTPRequest,
    HTTPResponse,
    InlineImage,
    Prepared,
    Provider,
    Update,
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
        return prepare_model(self.name, request)

    def inline_image(self, request: GenerationRequest) -> InlineImage | None:
        """A data: URL for the FLUX.2 edit models, whose ``image_urls`` are documented as
        "List of URLs or local Base64 encoded images to edit" (items of format uri, S4);
        every other image model documents a URL (2.2)."""
        return "data_url" if MODELS[model_of(self.name, request)].image == "image_urls" else None

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
