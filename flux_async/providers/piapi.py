"""PiAPI (https://piapi.ai): Qubico FLUX.1 tasks through PiAPI's unified task API.

Wire format: providers.md section 3. ``POST /api/v1/task`` with
``{"model", "task_type", "input", "config"?}`` and ``GET /api/v1/task/{task_id}`` both answer
``{"code": 200, "message", "data": {"task_id", "status", "output", "meta", "error", ...}}``;
a webhook delivers ``{"timestamp", "data": {...the same data...}}``.

PiAPI echoes the per-job webhook back in ``data.config.webhook_config``: its ``secret``, and its
``endpoint``, whose path holds the callback token. Every payload attached to an error here has
both removed first.
"""

from __future__ import annotations

import datetime
import urllib.parse
from decimal import Decimal
from typing import Any

import msgspec

from .._config import Limits
from .._errors import Phase, ProviderError, UnexpectedResponseError, UnknownStatusError
from .._http import phase_for_status
from .._models import GenerationRequest, Image, JobStatus
from ._base import (
    Accepted,
    CallbackUpdate,
    HistoryTask,
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
    OneOf,
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
    base64_image,
    convert,
    decode_json,
    error_kind,
    failure_reason,
    int_code,
    payload_of,
    provider_message,
    shown,
    to_decimal,
)

__all__ = ["PiAPI"]

SCHNELL = "Qubico/flux1-schnell"
DEV = "Qubico/flux1-dev"
DEV_ADVANCED = "Qubico/flux1-dev-advanced"
MODELS = (SCHNELL, DEV, DEV_ADVANCED)
MODEL_ALIASES = {"schnell": SCHNELL, "dev": DEV, "dev-advanced": DEV_ADVANCED}

MAX_PIXELS = 1_048_576
"""width * height may not exceed this (1024 * 1024), providers.md 3.3."""

ASPECT_RATIO_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "4:3": (1152, 896),
    "3:4": (896, 1152),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "21:9": (1536, 640),
    "9:21": (640, 1536),
}
"""PiAPI takes sizes, not ratios: each ratio maps to the common ~1 MP FLUX/SDXL bucket.

Both sides are multiples of 64, the area is at most `MAX_PIXELS`, and the ratio is within 4%
of the one asked for.
"""

GUIDANCE_RANGE = (1.5, 5.0)
MAX_BATCH = 4
# Step caps: Kontext max 40 is documented; the others come from PiAPI's own MCP server,
# which clamps schnell to 10 and dev/dev-advanced to 40 (providers.md 3.3, [I] S13).
_MAX_STEPS = {SCHNELL: 10, DEV: 40, DEV_ADVANCED: 40}
_MAX_KONTEXT_STEPS = 40
# seed: -1 means random (Kontext default). Non-Kontext seeds are [U] (3.3); any int64 is sent.
_SEED_RANGE = (-1, 2**63 - 1)
SERVICE_MODES = ("public", "private")

_LORA_KEYS = ("lora_type", "lora_image", "lora_strength")
_CONTROL_NET_KEYS = (
    "control_type",
    "control_image",
    "control_strength",
    "return_preprocessed_image",
)
_OUTPAINT_SIDES = ("outpaint_left", "outpaint_right", "outpaint_top", "outpaint_bottom")
_CUSTOM_SETTING_KEYS = ("setting_type", *_OUTPAINT_SIDES)
# How many LoRAs / ControlNets each task type takes (providers.md 3.2).
_LORA_COUNT = {"txt2img-lora": (1, 1), "img2img-lora": (1, 1), "controlnet-lora": (0, 1)}
_CONTROL_NET_COUNT = {"controlnet-lora": (1, 1)}

_KONTEXT = "kontext"
# width/height "can be used in txt2img ONLY"; the Kontext spec also takes them (3.3).
_SIZED = (1, None)
_GUIDANCE = Numbers(*GUIDANCE_RANGE, "guidance_scale")
# denoise is for the task types that start from an image (3.3: "img2img and the others").
_DENOISE = Numbers(0, 1, "denoise", low_exclusive=True)
_SEED = Ints(*_SEED_RANGE, "seed")
_BATCH = Ints(1, MAX_BATCH, "batch_size")
_ONE_IMAGE = OneOf((1,), None, f"1 (batch_size works on {SCHNELL} only)")
"""What every model but schnell takes as num_images: 1, sent as nothing."""


def _task(*, image: bool, extras: tuple[str, ...] = (), **rules: Any) -> Takes:
    # num_images and steps depend on the model too; `PiAPI.prepare` fills them in.
    keys = ("task_type", "service_mode", "negative_prompt", *extras)
    return Takes(image="image" if image else None, max_images=int(image), extras=keys, **rules)


# The task types and what each takes (providers.md 3.2, 3.3). The names are spelled again, on
# purpose, in testing/_piapi.py: both sides are written from providers.md, not from each other
# (DESIGN), so a wrong name cannot pass every test.
TASK_TYPES: dict[str, Takes] = {
    "txt2img": _task(image=False, sizes=_SIZED, guidance=_GUIDANCE, seed=_SEED),
    "img2img": _task(image=True, guidance=_GUIDANCE, strength=_DENOISE, seed=_SEED),
    "txt2img-lora": _task(
        image=False, guidance=_GUIDANCE, seed=_SEED, extras=("lora_settings",)
    ),
    "img2img-lora": _task(
        image=True, guidance=_GUIDANCE, strength=_DENOISE, seed=_SEED, extras=("lora_settings",)
    ),
    "fill-inpaint": _task(image=True, guidance=_GUIDANCE, strength=_DENOISE, seed=_SEED),
    "fill-outpaint": _task(
        image=True,
        guidance=_GUIDANCE,
        strength=_DENOISE,
        seed=_SEED,
        extras=("custom_settings",),
    ),
    "redux-variation": _task(image=True, guidance=_GUIDANCE, strength=_DENOISE, seed=_SEED),
    "controlnet-lora": _task(
        image=False,
        guidance=_GUIDANCE,
        seed=_SEED,
        extras=("lora_settings", "control_net_settings"),
    ),
    # The Kontext input is prompt, image, width, height, steps and seed only (3.3, [I] S13):
    # no guidance, no denoise, no negative_prompt.
    _KONTEXT: Takes(
        image="image",
        max_images=1,
        sizes=_SIZED,
        steps=Ints(1, _MAX_KONTEXT_STEPS, "steps"),
        seed=_SEED,
        extras=("task_type", "service_mode"),
    ),
}
# Only flux1-dev-advanced runs LoRA, ControlNet, fill, redux and kontext (providers.md 3.2).
_ADVANCED_ONLY = frozenset(list(TASK_TYPES)[2:])
_NEEDS_IMAGE = tuple(sorted(name for name, takes in TASK_TYPES.items() if takes.image))
_TAKES_DENOISE = tuple(sorted(name for name, takes in TASK_TYPES.items() if takes.strength))
# The order PiAPI's number fields are checked in.
_NUMBER_ORDER = ("guidance", "strength", "num_images", "steps", "seed")

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
# config.webhook_config echoes the secret and the endpoint (whose path is the callback token).
_HIDDEN = ("secret", "endpoint")


# Wire structs declare only the fields read; unknown fields are ignored. Leaves are Any
# because PiAPI's schemas disagree between pages: types are checked where they are used.
class _Output(msgspec.Struct):
    image_url: Any = None
    image_urls: Any = None
    image_base64: Any = None


class _Usage(msgspec.Struct):
    consume: Any = None


class _Meta(msgspec.Struct):
    usage: _Usage | None = None


class _TaskData(msgspec.Struct):
    task_id: Any = None
    status: Any = None
    output: _Output | None = None
    meta: _Meta | None = None
    error: Any = None
    config: Any = None


class _Envelope(msgspec.Struct):
    code: Any = None
    message: Any = None
    data: _TaskData | None = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)


class _HistoryItem(msgspec.Struct):
    task_id: Any = None
    model: Any = None
    input: Any = None
    config: Any = None
    meta: Any = None


class _HistoryData(msgspec.Struct):
    total: Any = None
    list: Any = None


class _HistoryEnvelope(msgspec.Struct):
    code: Any = None
    message: Any = None
    data: _HistoryData | None = None


_history_decoder = msgspec.json.Decoder(_HistoryEnvelope)
# providers.md 7.2: GET {base_manager_url}/api/open/tasks/histories, page_size at most 100,
# model "flux" for Flux tasks.
HISTORY_PATH = "/api/open/tasks/histories"
HISTORY_MAX_PAGE_SIZE = 100
_encoder = msgspec.json.Encoder()


class PiAPI(Provider):
    """PiAPI's Qubico FLUX.1 models (schnell, dev, dev-advanced).

    ``model`` picks the model (``Qubico/flux1-dev`` by default; the aliases ``schnell``,
    ``dev`` and ``dev-advanced`` work too). The task type is ``img2img`` when ``image_url`` is
    given, else ``txt2img``; ``extra={"task_type": ...}`` picks another (``txt2img-lora``,
    ``img2img-lora``, ``fill-inpaint``, ``fill-outpaint``, ``redux-variation``,
    ``controlnet-lora``, ``kontext``), which runs on ``Qubico/flux1-dev-advanced`` only and is
    the default model for them. Their inputs (``lora_settings``, ``control_net_settings``,
    ``custom_settings``, ``negative_prompt``) and ``service_mode`` also go in ``extra``.

    ``Generation.cost`` is ``meta.usage.consume``: PiAPI quota points, not USD.

    Args:
        api_key: the key; when omitted, read from the ``PIAPI_KEY`` environment variable.
        base_url: the API's address (a FakeProvider's ``url`` in tests).
    """

    name = "piapi"
    env_var = "PIAPI_KEY"
    default_base_url = "https://api.piapi.ai"
    typical_latency = 10.0
    # Concurrency is capped per plan ("Pending"/"Processing" count, 3.6); the rest queue as
    # "staged". Modest defaults; rate limits are undocumented (3.7).
    # No ceilings: the client discovers the provider's limits (429s shrink them).
    default_limits = Limits()
    # §3.8: the webhook echoes config.webhook_config.secret in this header (not an HMAC).
    callback_secret_header = "x-webhook-secret"
    # The documented example output URL (providers.md 3.5); other hosts are unknown.
    result_hosts = ("img.theapi.app",)
    inline_images = "task_type kontext takes a local image inline"

    def prepare(self, request: GenerationRequest) -> Prepared:
        """Validate a request against PiAPI's documented Flux inputs (providers.md 3.2, 3.3).

        ``Prepared.args`` is ``{"task_type", "input", "config"?}``: the body without ``model``
        and without the webhook, which `build_create` adds per job.
        """
        extra = dict(request.extra)
        task_type = self._task_type(request, extra.pop("task_type", None))
        model = self._model(request.model, task_type)
        takes = TASK_TYPES[task_type]
        takes = takes._replace(
            num_images=_BATCH if model == SCHNELL else _ONE_IMAGE,
            steps=takes.steps or Ints(1, _MAX_STEPS[model], "steps"),
        )
        check_extra_keys(self.name, extra, takes.extras, f" (for task_type {task_type})")

        data: dict[str, Any] = {"prompt": check_prompt(self.name, request.prompt)}
        self._image(request.image_url, task_type, takes, data)
        self._size(request, task_type, takes, data)

        def refused(field: str) -> str:
            if field == "guidance":
                return f"nothing: task_type {task_type} takes no guidance"
            return (
                f"nothing for task_type {task_type}; strength (denoise) is for "
                f"{', '.join(_TAKES_DENOISE)}"
            )

        check_request(self.name, takes, request, data, fields=_NUMBER_ORDER, refused=refused)

        if "negative_prompt" in extra:
            negative = extra["negative_prompt"]
            if not isinstance(negative, str):
                raise invalid(self.name, "extra['negative_prompt']", negative, "a string")
            data["negative_prompt"] = negative
        if task_type in _LORA_COUNT:
            if "lora_settings" in extra or _LORA_COUNT[task_type][0]:
                data["lora_settings"] = self._lora_settings(
                    extra.get("lora_settings"), _LORA_COUNT[task_type]
                )
        if task_type in _CONTROL_NET_COUNT:
            data["control_net_settings"] = self._control_net_settings(
                extra.get("control_net_settings"), _CONTROL_NET_COUNT[task_type]
            )
        if task_type == "fill-outpaint":
            data["custom_settings"] = self._custom_settings(extra.get("custom_settings"))

        args: dict[str, Any] = {"task_type": task_type, "input": data}
        if "service_mode" in extra:
            mode = check_choice(
                self.name, "extra['service_mode']", extra["service_mode"], SERVICE_MODES
            )
            args["config"] = {"service_mode": mode}
        return Prepared(model=model, args=args)

    def inline_image(self, request: GenerationRequest) -> InlineImage | None:
        """Bare base64 for ``kontext``, whose ``image`` is a "url or base64 string" (3.3);
        the other task types document a URL."""
        task_type = self._task_type(request, request.extra.get("task_type"))
        return "base64" if task_type == _KONTEXT else None

    def _task_type(self, request: GenerationRequest, value: Any) -> str:
        if value is None:
            return "txt2img" if request.image_url is None else "img2img"
        return str(check_choice(self.name, "extra['task_type']", value, TASK_TYPES))

    def _model(self, value: str | None, task_type: str) -> str:
        if value is None:
            return DEV_ADVANCED if task_type in _ADVANCED_ONLY else DEV
        model = MODEL_ALIASES.get(value, value) if isinstance(value, str) else value
        if model not in MODELS:
            raise invalid(
                self.name, "model", value, f"{', '.join(MODELS)} (or {', '.join(MODEL_ALIASES)})"
            )
        if task_type in _ADVANCED_ONLY and model != DEV_ADVANCED:
            raise invalid(
                self.name,
                "model", value, f"{DEV_ADVANCED} (the only model that runs task_type {task_type})"
            )
        return str(model)

    def _image(
        self, image_url: str | None, task_type: str, takes: Takes, data: dict[str, Any]
    ) -> None:
        if takes.image is not None:
            if image_url is None:
                raise invalid(
                    self.name,
                    "image_url",
                    None,
                    f"an http(s) URL (task_type {task_type} needs an image)",
                )
            inline = "base64" if task_type == _KONTEXT else None
            data[takes.image] = check_image(self.name, "image_url", image_url, inline)
        elif image_url is not None:
            raise invalid(
                self.name,
                "image_url",
                image_url,
                f"no image for task_type {task_type}; these take one: {', '.join(_NEEDS_IMAGE)}",
            )

    def _size(
        self, request: GenerationRequest, task_type: str, takes: Takes, data: dict[str, Any]
    ) -> None:
        sized = request.width is not None or request.height is not None
        if not sized and request.aspect_ratio is None:
            return
        if takes.sizes is None:
            field = "width/height" if sized else "aspect_ratio"
            value = f"{request.width}x{request.height}" if sized else request.aspect_ratio
            raise invalid(
                self.name,
                field,
                value,
                f"nothing: PiAPI takes sizes for task_type txt2img and kontext only, "
                f"not {task_type}",
            )
        if sized:
            if request.aspect_ratio is not None:
                raise invalid(
                    self.name,
                    "aspect_ratio", request.aspect_ratio, "aspect_ratio or width/height, not both"
                )
            width = check_int(self.name, "width", request.width, *takes.sizes)
            height = check_int(self.name, "height", request.height, *takes.sizes)
            if width * height > MAX_PIXELS:
                raise invalid(
                    self.name,
                    "width/height",
                    f"{width}x{height}",
                    f"width * height <= {MAX_PIXELS:,} (e.g. 1024x1024)",
                )
        else:
            ratio = check_choice(
                self.name, "aspect_ratio", request.aspect_ratio, ASPECT_RATIO_SIZES
            )
            width, height = ASPECT_RATIO_SIZES[ratio]
        data["width"] = width
        data["height"] = height

    def _lora_settings(self, value: Any, count: tuple[int, int]) -> list[dict[str, Any]]:
        field = "extra['lora_settings']"
        shape = "{lora_type, lora_image?, lora_strength?}"
        settings = []
        items = check_objects(self.name, field, value, count, _LORA_KEYS, shape)
        for index, item in enumerate(items):
            where = f"{field}[{index}]"
            lora_type = item.get("lora_type")
            if not isinstance(lora_type, str) or not lora_type.strip():
                raise invalid(
                    self.name,
                    f"{where}['lora_type']", lora_type, "a LoRA name such as 'mjv6' or 'realism'"
                )
            setting: dict[str, Any] = {"lora_type": lora_type}
            if "lora_image" in item:
                setting["lora_image"] = check_url(
                    self.name, f"{where}['lora_image']", item["lora_image"]
                )
            if "lora_strength" in item:
                # The range is not documented (providers.md 3.3): any finite number.
                setting["lora_strength"] = check_number(
                    self.name, f"{where}['lora_strength']", item["lora_strength"]
                )
            settings.append(setting)
        return settings

    def _control_net_settings(self, value: Any, count: tuple[int, int]) -> list[dict[str, Any]]:
        field = "extra['control_net_settings']"
        shape = "{control_type, control_image, control_strength?, return_preprocessed_image?}"
        settings = []
        items = check_objects(self.name, field, value, count, _CONTROL_NET_KEYS, shape)
        for index, item in enumerate(items):
            where = f"{field}[{index}]"
            # control_type names live on a separate page (depth, canny, soft_edge, openpose,
            # ...); only the shape is checked so a newly added type is not refused.
            control_type = item.get("control_type")
            if not isinstance(control_type, str) or not control_type.strip():
                raise invalid(
                    self.name,
                    f"{where}['control_type']",
                    control_type,
                    "a ControlNet name such as 'depth' or 'canny'",
                )
            setting: dict[str, Any] = {
                "control_type": control_type,
                "control_image": check_url(
                    self.name, f"{where}['control_image']", item.get("control_image")
                ),
            }
            if "control_strength" in item:
                setting["control_strength"] = check_number(
                    self.name, f"{where}['control_strength']", item["control_strength"]
                )
            if "return_preprocessed_image" in item:
                flag = item["return_preprocessed_image"]
                where_flag = f"{where}['return_preprocessed_image']"
                setting["return_preprocessed_image"] = check_bool(self.name, where_flag, flag)
            settings.append(setting)
        return settings

    def _custom_settings(self, value: Any) -> list[dict[str, Any]]:
        field = "extra['custom_settings']"
        shape = "{setting_type: 'outpaint', outpaint_left/right/top/bottom?}"
        settings = []
        # The doc's example sends one entry; no maximum is documented.
        items = check_objects(self.name, field, value, (1, 16), _CUSTOM_SETTING_KEYS, shape)
        for index, item in enumerate(items):
            where = f"{field}[{index}]"
            setting: dict[str, Any] = {
                "setting_type": check_choice(
                    self.name, f"{where}['setting_type']", item.get("setting_type"), ("outpaint",)
                )
            }
            # "The total delta pixel size should be less than 1024*1024" is ambiguous without
            # the input image's size, so it is left to PiAPI.
            for side in _OUTPAINT_SIDES:
                if side in item:
                    setting[side] = check_int(self.name, f"{where}[{side!r}]", item[side], 0)
            settings.append(setting)
        return settings

    def build_create(
        self, prepared: Prepared, *, callback_url: str | None, webhook_secret: str | None
    ) -> HTTPRequest:
        """Return ``POST /api/v1/task``; the webhook goes in ``config.webhook_config``."""
        body: dict[str, Any] = {
            "model": prepared.model,
            "task_type": prepared.args["task_type"],
            "input": prepared.args["input"],
        }
        config = dict(prepared.args.get("config") or {})
        if callback_url is not None:
            webhook = {"endpoint": callback_url}
            if webhook_secret is not None:
                webhook["secret"] = webhook_secret
            config["webhook_config"] = webhook
        if config:
            body["config"] = config
        return HTTPRequest(
            "POST",
            f"{self.base_url}/api/v1/task",
            operation="create",
            headers={"X-API-Key": self._api_key, "Content-Type": "application/json"},
            body=_encoder.encode(body),
        )

    def parse_create(self, response: HTTPResponse) -> Accepted:
        """Decode ``{"code": 200, "data": {"task_id", "status", "meta": {"usage"}}}``.

        The job id is never lost once PiAPI gave one: a state that cannot be read leaves
        ``Accepted.update`` as ``None`` rather than raising.
        """
        try:
            envelope = self._decode_answer(
                _envelope_decoder, response, "create", phase=Phase.AMBIGUOUS
            )
        except UnexpectedResponseError:
            # A 2xx answer we cannot read may still mean a created (and paid) task; a body
            # that is JSON but not the documented shape may still name it.
            job_id = _loose_task_id(response.body)
            if job_id is not None:
                return Accepted(job_id=job_id)
            raise
        if not _is_ok(envelope.code):
            raise self._code_error(response, "create", envelope)
        data = envelope.data
        if data is None or not isinstance(data.task_id, str) or not data.task_id.strip():
            raise self._undecodable(response, "create", "no data.task_id", phase=Phase.AMBIGUOUS)
        job_id = data.task_id
        update: Update | None
        try:
            update = self._update(data, response, "create")
        except UnexpectedResponseError:
            update = None
        return Accepted(job_id=job_id, cost=_cost(data), update=update)

    def build_query(self, job_id: str) -> HTTPRequest:
        """Return ``GET /api/v1/task/{task_id}``."""
        return HTTPRequest(
            "GET",
            f"{self.base_url}/api/v1/task/{urllib.parse.quote(job_id, safe='')}",
            operation="query",
            headers={"X-API-Key": self._api_key},
        )

    def parse_query(self, response: HTTPResponse) -> Update:
        """Decode ``{"code": 200, "data": {"status", "output": {"image_url"|"image_urls"}}}``."""
        envelope = self._decode_answer(
            _envelope_decoder, response, "query", phase=Phase.DEFINITIVE
        )
        if not _is_ok(envelope.code):
            raise self._code_error(response, "query", envelope)
        if envelope.data is None:
            raise self._undecodable(response, "query", "no data", phase=Phase.DEFINITIVE)
        return self._update(envelope.data, response, "query")

    def build_cancel(self, job_id: str) -> HTTPRequest:
        """Return ``DELETE /api/v1/task/{task_id}`` (providers.md 7.2: pending tasks only;
        [D] for other models on the unified task path, [I] for Flux)."""
        return HTTPRequest(
            "DELETE",
            f"{self.base_url}/api/v1/task/{urllib.parse.quote(job_id, safe='')}",
            operation="cancel",
            headers={"X-API-Key": self._api_key},
        )

    def parse_cancel(self, response: HTTPResponse) -> Update:
        """Decode a cancel answer: 2xx with envelope code 200 means the task was cancelled.

        Raises:
            ProviderError: PiAPI refused (a processing or finished task: 4xx), or the task
                is unknown.
        """
        envelope = self._decode_answer(
            _envelope_decoder, response, "cancel", phase=Phase.DEFINITIVE
        )
        if not _is_ok(envelope.code):
            raise self._code_error(response, "cancel", envelope)
        cost = _cost(envelope.data) if envelope.data is not None else None
        return Update(status=JobStatus.CANCELLED, cost=cost)

    def build_history(
        self, *, start_time: int, end_time: int, page: int = 1, page_size: int = 100
    ) -> HTTPRequest:
        """Return ``GET /api/open/tasks/histories`` for Flux tasks created in the window
        (providers.md 7.2: ``page`` from 1, ``page_size`` at most 100, unix seconds)."""
        query = urllib.parse.urlencode(
            {
                "page": page,
                "page_size": min(max(page_size, 1), HISTORY_MAX_PAGE_SIZE),
                "model": "flux",
                "start_time": int(start_time),
                "end_time": int(end_time),
            }
        )
        return HTTPRequest(
            "GET",
            f"{self.base_url}{HISTORY_PATH}?{query}",
            operation="history",
            headers={"X-API-Key": self._api_key},
        )

    def parse_history(self, response: HTTPResponse) -> tuple[list[HistoryTask], int]:
        """Decode a history page. Its schema is undocumented ([U]): read as
        ``{"code": 200, "data": {"total", "list": [<task as GET returns it>]}}``; items
        without a task id are skipped."""
        envelope = self._decode_answer(
            _history_decoder, response, "history", phase=Phase.DEFINITIVE
        )
        if not _is_ok(envelope.code) or envelope.data is None:
            raise self._undecodable(response, "history", "no data", phase=Phase.DEFINITIVE)
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

    def parse_callback(self, body: bytes) -> CallbackUpdate:
        """Decode a webhook body ``{"timestamp", "data": {...task data...}}`` (3.8).

        Non-terminal deliveries are normal (PiAPI may post on every status change) and come
        back as queued/running updates. The envelope of a GET (``{"code", "data"}``) and a
        bare task object are accepted too.

        Raises:
            ValueError: the body is not a JSON object holding a task object.
            msgspec.DecodeError: a field has a type the task object cannot have.
            FluxError: an unknown status, or a completed task without an image.
        """
        raw = decode_json(body)
        if not isinstance(raw, dict):
            raise ValueError("piapi callback body is not a JSON object")
        inner = raw.get("data")
        if not isinstance(inner, dict):
            if "task_id" not in raw:
                raise ValueError("piapi callback body has no data object")
            inner = raw
        data = convert(inner, _TaskData)
        job_id = data.task_id if isinstance(data.task_id, str) and data.task_id else None
        update = self._update(data, HTTPResponse(200, {}, body), "callback")
        return CallbackUpdate(job_id=job_id, update=update, secret=_echoed_secret(data.config))

    def _update(self, data: _TaskData, response: HTTPResponse, operation: str) -> Update:
        status = _status(data.status)
        if status is None:
            raise UnknownStatusError(
                f"{self.name} {operation}: unknown task status {shown(data.status)}",
                provider=self.name,
                phase=Phase.DEFINITIVE,
                operation=operation,
                status=response.status,
                payload=self._payload(response.body),
            )
        error = None
        images: tuple[Image, ...] = ()
        if status is JobStatus.FAILED:
            error = _failure_reason(data.error) or "generation failed"
        elif status is JobStatus.SUCCEEDED:
            images = _images(data.output)
            if not images:
                raise self._undecodable(
                    response,
                    operation,
                    "status completed but output holds no image_url, image_urls or image_base64",
                    phase=Phase.DEFINITIVE,
                )
        return Update(status=status, images=images, cost=_cost(data), error=error)

    def _payload(self, body: bytes) -> Any:
        return payload_of(body, hide=_HIDDEN)

    def _http_error(self, response: HTTPResponse, operation: str) -> ProviderError:
        # The HTTP error body of the task API is undocumented (providers.md 3.7); a
        # third-party guide shows {"code", "data": null, "message"}. Anything is accepted.
        payload = self._payload(response.body)
        message = provider_message(payload, "message", "error", "detail")
        if message is None and isinstance(payload, dict):
            inner = payload.get("data")
            message = _failure_reason(inner.get("error")) if isinstance(inner, dict) else None
        code = payload.get("code") if isinstance(payload, dict) else None
        return self._error(
            response, operation, message=message, code=_plain_code(code), payload=payload
        )

    def _code_error(
        self, response: HTTPResponse, operation: str, envelope: _Envelope
    ) -> ProviderError:
        # A 2xx whose envelope code is not 200.
        message = None
        if isinstance(envelope.message, str) and envelope.message.strip():
            message = envelope.message.strip()[:500]
        elif envelope.data is not None:
            message = _failure_reason(envelope.data.error)
        code = _plain_code(envelope.code)
        # Codes shaped like HTTP statuses are read as such; others (their list is [U], 3.7)
        # are a definitive refusal, typed by the words said.
        status = code if isinstance(code, int) and 400 <= code < 600 else None
        return self._error(
            response,
            operation,
            message=message,
            code=code,
            payload=self._payload(response.body),
            phase=phase_for_status(status) if status is not None else Phase.DEFINITIVE,
            kind=error_kind(status, message or ""),
        )


def _unix_time(value: Any) -> float | None:
    """Read an RFC 3339 time (``2024-05-01T10:00:00.123456789Z``, 3.4) as unix seconds."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    text = value.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _loose_task_id(body: bytes) -> str | None:
    try:
        raw = decode_json(body)
    except msgspec.DecodeError:
        return None
    if not isinstance(raw, dict) or not _is_ok(raw.get("code")):
        return None
    data = raw.get("data")
    task_id = data.get("task_id") if isinstance(data, dict) else None
    return task_id if isinstance(task_id, str) and task_id.strip() else None


def _is_ok(code: Any) -> bool:
    # A missing code is read as success: the rest of the body decides.
    return code is None or _plain_code(code) == _CODE_OK


def _plain_code(code: Any) -> int | str | None:
    """Return the envelope's ``code`` as an int when it is one (PiAPI sends ints), else text."""
    number = int_code(code)
    if number is not None or not isinstance(code, str):
        return number
    return code.strip()[:40] or None


def _status(value: Any) -> JobStatus | None:
    if not isinstance(value, str):
        return None
    return _STATUS.get(value.strip().lower())


def _images(output: _Output | None) -> tuple[Image, ...]:
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


def _cost(data: _TaskData) -> Decimal | None:
    # meta.usage.consume is in PiAPI quota points (usage.type "quota"), not USD (3.4).
    usage = data.meta.usage if data.meta is not None else None
    return to_decimal(usage.consume) if usage is not None else None


def _failure_reason(error: Any) -> str | None:
    # data.error {code, raw_message, message, detail}; empty strings mean "no error" (3.7).
    return failure_reason(error, "message", "raw_message")


def _echoed_secret(config: Any) -> str | None:
    webhook = config.get("webhook_config") if isinstance(config, dict) else None
    secret = webhook.get("secret") if isinstance(webhook, dict) else None
    return secret if isinstance(secret, str) and secret else None

