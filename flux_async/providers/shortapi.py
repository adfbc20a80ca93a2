"""ShortAPI (https://shortapi.ai): FLUX 1.0 text-to-image and image-to-image jobs.

Wire format: providers.md section 1. ``POST /api/v1/job/create`` with
``{"model", "args", "callback_url"?}`` answers ``{"code": 0, "data": {"amount", "job_id"}}``;
``GET /api/v1/job/query?id=`` answers ``{"code": 0, "data": {"status", "result"}}`` with
``status`` 2 once the images are ready.
"""

from __future__ import annotations

import re
import urllib.parse
from decimal import Decimal
from fractions import Fraction
from typing import Any

import msgspec

from .._config import Limits
from .._errors import Phase, ProviderError
from .._models import GenerationRequest, Image, JobStatus
from ._base import (
    Accepted,
    CallbackUpdate,
    HTTPRequest,
    HTTPResponse,
    Prepared,
    Provider,
    Update,
)
from ._validate import (
    OneOf,
    Takes,
    check_choice,
    check_extra_keys,
    check_int,
    check_prompt,
    check_request,
    check_url,
    invalid,
)
from ._wire import (
    WireImage,
    convert,
    decode,
    decode_json,
    failure_reason,
    images_from,
    is_int,
    payload_of,
    provider_message,
    to_decimal,
)

__all__ = ["ShortAPI"]

TEXT_TO_IMAGE = "shortapi/flux-1.0/text-to-image"
IMAGE_TO_IMAGE = "shortapi/flux-1.0/image-to-image"
ASPECT_RATIOS = ("1:1", "9:16", "16:9", "4:3", "3:4", "3:2", "2:3", "21:9")
NUM_IMAGES = (1, 2, 4, 8)
PERFORMANCES = ("schnell", "dev")
_RATIOS = {Fraction(*map(int, ratio.split(":"))): ratio for ratio in ASPECT_RATIOS}
_SIZE_TOLERANCE = Fraction(3, 100)
# Pricing per request (providers.md 1.2, the model pages).
_PRICES = {"schnell": Decimal("0.002"), "dev": Decimal("0.02")}
_SUPPORTED = ("prompt", "image_url", "aspect_ratio", "width/height", "num_images", "model")

# What each model takes (providers.md 1.2): prompt, num_images, aspect_ratio (geometry in
# `_aspect_ratio`), performance, and image_url for image-to-image. seed, steps, guidance and
# strength are not documented, so they are refused rather than silently dropped.
_TEXT = Takes(num_images=OneOf(NUM_IMAGES, "num_images"), extras=("performance",))
MODELS = {TEXT_TO_IMAGE: _TEXT, IMAGE_TO_IMAGE: _TEXT._replace(image="image_url", max_images=1)}
# The refused fields are checked before anything else, in this order.
_REFUSED_FIRST = ("seed", "steps", "guidance", "strength")

# Status values (providers.md 1.4): numeric 2 is documented; 0/1 running and >= 3 failed are
# inferred from third-party clients; ShortAPI's own skill says "succeeded". Strings are
# compared lower-cased. Anything else is an UnknownStatusError, never an endless poll.
_NUMERIC_STATUS = {0: JobStatus.QUEUED, 1: JobStatus.RUNNING, 2: JobStatus.SUCCEEDED}
_STRING_STATUS = {
    "succeeded": JobStatus.SUCCEEDED,
    "completed": JobStatus.SUCCEEDED,
    "success": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "refunded": JobStatus.FAILED,
    "pending": JobStatus.QUEUED,
    "queued": JobStatus.QUEUED,
    "processing": JobStatus.RUNNING,
    "running": JobStatus.RUNNING,
}
# "upstream model provider unstable" (providers.md 1.5, inferred): the job was not created,
# as after an HTTP 503.
_CODE_UPSTREAM_UNAVAILABLE = 3000


# Wire structs declare only the fields read; unknown fields are ignored.
class _CreateData(msgspec.Struct):
    job_id: str | None = None
    id: str | None = None  # some clients fall back to data.id (providers.md 1.3)
    amount: Any = None


class _CreateEnvelope(msgspec.Struct):
    code: Any = None
    data: _CreateData | None = None
    info: Any = None
    message: Any = None


class _WireResult(msgspec.Struct):
    images: list[WireImage] | None = None


class _QueryData(msgspec.Struct):
    status: Any = None
    result: _WireResult | None = None
    refunded: Any = None
    error: Any = None
    job_id: Any = None
    id: Any = None
    amount: Any = None
    seed: Any = None


class _QueryEnvelope(msgspec.Struct):
    code: Any = None
    data: _QueryData | None = None
    info: Any = None
    message: Any = None


class _CallbackEnvelope(msgspec.Struct):
    """The usual callback body: the query envelope, the job id inside ``data`` or beside it."""

    data: _QueryData
    job_id: Any = None
    id: Any = None


# The answer of most polls, built once: the job is still going and nothing else was said.
_PLAIN_UPDATES = {status: Update(status=status) for status in (JobStatus.QUEUED, JobStatus.RUNNING)}
# An id that `urllib.parse.quote` would leave as it is (the usual case): not quoted again.
_PLAIN_ID = re.compile(r"[A-Za-z0-9_.~-]*")
_create_decoder = msgspec.json.Decoder(_CreateEnvelope)
_query_decoder = msgspec.json.Decoder(_QueryEnvelope)
_callback_decoder = msgspec.json.Decoder(_CallbackEnvelope)
_encoder = msgspec.json.Encoder()


class ShortAPI(Provider):
    """ShortAPI's FLUX 1.0 models.

    The model is chosen by the request: ``shortapi/flux-1.0/image-to-image`` when
    ``image_url`` is given, else ``shortapi/flux-1.0/text-to-image``. ``model="schnell"``
    (or ``extra={"performance": "schnell"}``) picks the cheaper mode; the default is ``dev``.

    Args:
        api_key: the key; when omitted, read from the ``SHORTAPI_KEY`` environment variable.
        base_url: the API's address (a FakeProvider's ``url`` in tests).
    """

    name = "shortapi"
    env_var = "SHORTAPI_KEY"
    default_base_url = "https://api.shortapi.ai"
    typical_latency = 8.0
    # Rate limits are undocumented (providers.md 1.5): modest defaults, 429s pace the rest.
    # No ceilings: the client discovers the provider's limits (429s shrink them).
    default_limits = Limits()
    # Result image hosts are unknown: no result URL appears in ShortAPI's docs (1.4), and
    # file.shortapi.ai in its examples serves the example inputs.
    result_hosts = ()

    def __init__(self, api_key: str | None = None, *, base_url: str | None = None) -> None:
        super().__init__(api_key, base_url=base_url)
        # Built once: every poll sends the same headers to the same path.
        self._query_url = f"{self.base_url}/api/v1/job/query?id="
        self._query_headers = {"Authorization": f"Bearer {self._api_key}"}
        self._create_url = f"{self.base_url}/api/v1/job/create"
        self._create_headers = {**self._query_headers, "Content-Type": "application/json"}

    def prepare(self, request: GenerationRequest) -> Prepared:
        """Validate a request against ShortAPI's documented FLUX arguments (providers.md 1.2)."""
        name = self.name
        args: dict[str, Any] = {"prompt": check_prompt(name, request.prompt)}
        takes = MODELS[TEXT_TO_IMAGE if request.image_url is None else IMAGE_TO_IMAGE]
        check_request(name, takes, request, args, fields=_REFUSED_FIRST, refused=_refused)
        check_extra_keys(name, request.extra, takes.extras)
        performance = None
        if "performance" in request.extra:
            performance = check_choice(
                name, "extra['performance']", request.extra["performance"], PERFORMANCES
            )
        model = self._model(request, performance)
        if request.model in PERFORMANCES:
            performance = request.model
        if request.image_url is not None:
            args["image_url"] = check_url(name, "image_url", request.image_url)
        args["aspect_ratio"] = self._aspect_ratio(request)
        check_request(name, takes, request, args, fields=("num_images",), refused=_refused)
        if performance is not None:
            args["performance"] = performance
        return Prepared(model=model, args=args)

    def _model(self, request: GenerationRequest, performance: str | None) -> str:
        """Return the model id: chosen by ``image_url``; ``model`` may only agree with it."""
        model = TEXT_TO_IMAGE if request.image_url is None else IMAGE_TO_IMAGE
        if request.model is None or request.model == model:
            return model
        if request.model in PERFORMANCES:
            if performance is not None and performance != request.model:
                raise invalid(
                    self.name,
                    "model",
                    request.model,
                    f"the same as extra['performance'] ({performance})",
                )
            return model
        if request.model == IMAGE_TO_IMAGE:  # and no image_url
            raise invalid(
                self.name, "image_url", None, f"an http(s) URL (required by {IMAGE_TO_IMAGE})"
            )
        raise invalid(
            self.name,
            "model",
            request.model,
            f"{', '.join(PERFORMANCES)}, {TEXT_TO_IMAGE} (without image_url) "
            f"or {IMAGE_TO_IMAGE} (with image_url)",
        )

    def _aspect_ratio(self, request: GenerationRequest) -> str:
        if request.width is not None or request.height is not None:
            # ShortAPI takes only an aspect ratio; a size maps to the nearest documented one
            # within 3% (1344x768 is the usual "16:9" FLUX size, though it is 7:4).
            width = check_int(self.name, "width", request.width, 1)
            height = check_int(self.name, "height", request.height, 1)
            wanted = Fraction(width, height)
            nearest = min(_RATIOS, key=lambda known: abs(known - wanted) / known)
            ratio = _RATIOS[nearest] if abs(nearest - wanted) / nearest <= _SIZE_TOLERANCE else None
            if ratio is None:
                raise invalid(
                    self.name,
                    "width/height",
                    f"{width}x{height}",
                    f"a size whose ratio is one of {', '.join(ASPECT_RATIOS)} "
                    "(ShortAPI takes aspect_ratio, not sizes)",
                )
            if request.aspect_ratio is not None and request.aspect_ratio != ratio:
                raise invalid(
                    self.name,
                    "aspect_ratio",
                    request.aspect_ratio,
                    f"{ratio} (to match width/height)",
                )
            return ratio
        if request.aspect_ratio is None:
            return "1:1"  # documented as required; a square is the least surprising default
        return str(check_choice(self.name, "aspect_ratio", request.aspect_ratio, ASPECT_RATIOS))

    def estimate_cost(self, prepared: Prepared) -> Decimal:
        """Return the published price: $0.002 per schnell request, $0.02 per dev request."""
        return _PRICES[prepared.args.get("performance", "dev")]

    def build_create(
        self, prepared: Prepared, *, callback_url: str | None, webhook_secret: str | None
    ) -> HTTPRequest:
        """Return ``POST /api/v1/job/create`` for a prepared job."""
        body: dict[str, Any] = {"model": prepared.model, "args": prepared.args}
        if callback_url is not None:
            body["callback_url"] = callback_url
        return HTTPRequest(
            "POST",
            self._create_url,
            operation="create",
            headers=self._create_headers,
            body=_encoder.encode(body),
        )

    def parse_create(self, response: HTTPResponse) -> Accepted:
        """Decode ``{"code": 0, "data": {"amount", "job_id"}}``."""
        # A 2xx answer we cannot read may still mean a created (and paid) job.
        envelope = self._decode_answer(_create_decoder, response, "create", phase=Phase.AMBIGUOUS)
        if envelope.code not in (0, "0"):
            raise self._envelope_error(response, "create", envelope)
        data = envelope.data
        job_id = data and (data.job_id or data.id)
        if not job_id:
            raise self._undecodable(
                response, "create", "code 0 but no data.job_id", phase=Phase.AMBIGUOUS
            )
        return Accepted(job_id=job_id, cost=to_decimal(data.amount if data else None))

    def build_query(self, job_id: str) -> HTTPRequest:
        """Return ``GET /api/v1/job/query?id=<job_id>``."""
        if _PLAIN_ID.fullmatch(job_id) is None:
            job_id = urllib.parse.quote(job_id, safe="")
        return HTTPRequest(
            "GET",
            f"{self._query_url}{job_id}",
            operation="query",
            headers=self._query_headers,
        )

    def parse_query(self, response: HTTPResponse) -> Update:
        """Decode ``{"code": 0, "data": {"status", "result": {"images": [{"url"}]}}}``."""
        envelope = self._decode_answer(_query_decoder, response, "query", phase=Phase.DEFINITIVE)
        if envelope.code not in (0, "0"):
            raise self._envelope_error(response, "query", envelope)
        if envelope.data is None:
            raise self._undecodable(response, "query", "no data", phase=Phase.DEFINITIVE)
        return self._update(envelope.data, response)

    def parse_callback(self, body: bytes) -> CallbackUpdate:
        """Decode a callback body.

        Its shape is undocumented (providers.md 1.6), so this accepts the query envelope
        ``{code, data}`` or a bare data object, with the job id in ``job_id`` or ``id`` at
        either level.
        """
        try:
            # The usual shape, {"code", "data": {...}}, in one typed decode.
            envelope = decode(_callback_decoder, body)
        except msgspec.MsgspecError:
            # Anything else (a bare data object, odd types, bad JSON) the general way,
            # which also raises the errors a body that cannot be read deserves.
            raw = decode_json(body)
            if not isinstance(raw, dict):
                raise ValueError("callback body is not a JSON object") from None
            inner = raw.get("data") if isinstance(raw.get("data"), dict) else raw
            data = convert(inner, _QueryData)
            outer = (raw.get("job_id"), raw.get("id"))
        else:
            data = envelope.data
            outer = (envelope.job_id, envelope.id)
        job_id = None
        for candidate in (data.job_id, data.id, *outer):
            if isinstance(candidate, str) and candidate:
                job_id = candidate
                break
        return CallbackUpdate(job_id=job_id, update=self._update(data, None, body))

    def _update(self, data: _QueryData, response: HTTPResponse | None, body: bytes = b"") -> Update:
        """The update ``data`` says; errors carry ``response`` (a callback's: a 200 with
        ``body``, built only for an error)."""
        status = _status(data.status)
        if (
            status in _PLAIN_UPDATES
            and data.amount is None
            and data.seed is None
            and data.refunded is not True
        ):
            return _PLAIN_UPDATES[status]  # still going, nothing else said (most polls)
        if status is None:
            # The operation is "query" for callbacks too: the same answer, pushed.
            detail = f"unknown job status {data.status!r}"
            raise self._unknown_status(response or HTTPResponse(200, {}, body), "query", detail)
        # A failed job "is also flagged with refunded: true" (providers.md 1.4, [I]), and the
        # status string "refunded" says the same: ShortAPI gave the charge back, so the job
        # costs 0 whatever `amount` it still carries. A succeeded job is paid whatever flag
        # it has.
        said_refunded = isinstance(data.status, str) and data.status.strip().lower() == "refunded"
        refunded = status is not JobStatus.SUCCEEDED and (data.refunded is True or said_refunded)
        if refunded:
            status = JobStatus.FAILED
        error = None
        images: tuple[Image, ...] = ()
        if status is JobStatus.FAILED:
            error = failure_reason(data.error) or ("refunded" if refunded else "generation failed")
        elif status is JobStatus.SUCCEEDED:
            images = images_from(data.result.images if data.result else None)
            if not images:
                detail = "status succeeded but result.images holds no URL"
                raise self._undecodable(
                    response or HTTPResponse(200, {}, body), "query", detail, phase=Phase.DEFINITIVE
                )
        return Update(
            status=status,
            images=images,
            cost=Decimal(0) if refunded else to_decimal(data.amount),
            error=error,
            seed=data.seed if is_int(data.seed) else None,
            refunded=refunded,
        )

    def _payload(self, body: bytes) -> Any:
        # Whether answers echo callback_url (and its token) is undocumented (1.6): hide it.
        return payload_of(body, hide=("callback_url",))

    def _http_error(self, response: HTTPResponse, operation: str) -> ProviderError:
        body = self._payload(response.body)
        return self._error(
            response,
            operation,
            message=provider_message(body, "info", "message", "error"),
            code=body.get("code") if isinstance(body, dict) else None,
            payload=body,
        )

    def _envelope_error(
        self, response: HTTPResponse, operation: str, envelope: _CreateEnvelope | _QueryEnvelope
    ) -> ProviderError:
        code = envelope.code
        message = provider_message(
            {"info": envelope.info, "message": envelope.message}, "info", "message"
        )
        # ShortAPI's codes are not HTTP statuses (0 is success): the words decide, but for
        # 3000, which says what a 503 says (the job was not created).
        status = 503 if code == _CODE_UPSTREAM_UNAVAILABLE else None
        return self._code_error(response, operation, code=code, message=message, status=status)


def _refused(field: str) -> str:
    return f"shortapi does not take {field}; it takes {', '.join(_SUPPORTED)}"


def _status(value: Any) -> JobStatus | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text.lstrip("-").isdigit():
            value = int(text)
        else:
            return _STRING_STATUS.get(text)
    if isinstance(value, int):
        if value >= 3:
            return JobStatus.FAILED
        return _NUMERIC_STATUS.get(value)
    return None
