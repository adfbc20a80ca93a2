"""PiAPI (https://piapi.ai): Qubico FLUX.1 tasks through PiAPI's unified task API.

Wire format: providers.md section 3. ``POST /api/v1/task`` with
``{"model", "task_type", "input", "config"?}`` and ``GET /api/v1/task/{task_id}`` both answer
``{"code": 200, "message", "data": {"task_id", "status", "output", "meta", "error", ...}}``;
a webhook delivers ``{"timestamp", "data": {...the same data...}}``.

PiAPI echoes the per-job webhook back in ``data.config.webhook_config``: its ``secret``, and its
``endpoint``, whose path holds the callback token. Every payload attached to an error here has
both removed first.

This module is the adapter: the requests it builds and the answers it turns into updates and
errors. What each task type takes, and the checks of a request, are in `_piapi_tasks`; the
wire structs and their readers (status, images, cost, history items) in `_piapi_wire`.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import msgspec

from .._config import Limits
from .._errors import Phase, ProviderError, UnexpectedResponseError
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

# The tables stay importable from here, as they were before the split (re-exports).
from ._piapi_tasks import ASPECT_RATIO_SIZES as ASPECT_RATIO_SIZES
from ._piapi_tasks import DEV as DEV
from ._piapi_tasks import DEV_ADVANCED as DEV_ADVANCED
from ._piapi_tasks import GUIDANCE_RANGE as GUIDANCE_RANGE
from ._piapi_tasks import KONTEXT, prepare_task, task_type_of
from ._piapi_tasks import MAX_BATCH as MAX_BATCH
from ._piapi_tasks import MAX_PIXELS as MAX_PIXELS
from ._piapi_tasks import MODEL_ALIASES as MODEL_ALIASES
from ._piapi_tasks import MODELS as MODELS
from ._piapi_tasks import SCHNELL as SCHNELL
from ._piapi_tasks import SERVICE_MODES as SERVICE_MODES
from ._piapi_tasks import TASK_TYPES as TASK_TYPES
from ._piapi_wire import (
    HIDDEN,
    Envelope,
    TaskData,
    cost_of,
    echoed_secret,
    envelope_decoder,
    failure_of,
    history_decoder,
    history_tasks,
    images_of,
    is_ok,
    loose_task_id,
    plain_code,
    status_of,
)
from ._wire import convert, decode_json, payload_of, provider_message, shown

__all__ = ["PiAPI"]

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
        return prepare_task(self.name, request)

    def inline_image(self, request: GenerationRequest) -> InlineImage | None:
        """Bare base64 for ``kontext``, whose ``image`` is a "url or base64 string" (3.3);
        the other task types document a URL."""
        task_type = task_type_of(self.name, request, request.extra.get("task_type"))
        return "base64" if task_type == KONTEXT else None

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
                envelope_decoder, response, "create", phase=Phase.AMBIGUOUS
            )
        except UnexpectedResponseError:
            # A 2xx answer we cannot read may still mean a created (and paid) task; a body
            # that is JSON but not the documented shape may still name it.
            job_id = loose_task_id(response.body)
            if job_id is not None:
                return Accepted(job_id=job_id)
            raise
        if not is_ok(envelope.code):
            raise self._envelope_error(response, "create", envelope)
        data = envelope.data
        if data is None or not isinstance(data.task_id, str) or not data.task_id.strip():
            raise self._undecodable(response, "create", "no data.task_id", phase=Phase.AMBIGUOUS)
        job_id = data.task_id
        update: Update | None
        try:
            update = self._update(data, response, "create")
        except UnexpectedResponseError:
            update = None
        return Accepted(job_id=job_id, cost=cost_of(data), update=update)

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
        envelope = self._decode_answer(envelope_decoder, response, "query", phase=Phase.DEFINITIVE)
        if not is_ok(envelope.code):
            raise self._envelope_error(response, "query", envelope)
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
        envelope = self._decode_answer(envelope_decoder, response, "cancel", phase=Phase.DEFINITIVE)
        if not is_ok(envelope.code):
            raise self._envelope_error(response, "cancel", envelope)
        cost = cost_of(envelope.data) if envelope.data is not None else None
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
        envelope = self._decode_answer(history_decoder, response, "history", phase=Phase.DEFINITIVE)
        page = history_tasks(envelope)
        if page is None:
            raise self._undecodable(response, "history", "no data", phase=Phase.DEFINITIVE)
        return page

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
        data = convert(inner, TaskData)
        job_id = data.task_id if isinstance(data.task_id, str) and data.task_id else None
        update = self._update(data, HTTPResponse(200, {}, body), "callback")
        return CallbackUpdate(job_id=job_id, update=update, secret=echoed_secret(data.config))

    def _update(self, data: TaskData, response: HTTPResponse, operation: str) -> Update:
        status = status_of(data.status)
        if status is None:
            detail = f"unknown task status {shown(data.status)}"
            raise self._unknown_status(response, operation, detail)
        error = None
        images: tuple[Image, ...] = ()
        if status is JobStatus.FAILED:
            error = failure_of(data.error) or "generation failed"
        elif status is JobStatus.SUCCEEDED:
            images = images_of(data.output)
            if not images:
                raise self._undecodable(
                    response,
                    operation,
                    "status completed but output holds no image_url, image_urls or image_base64",
                    phase=Phase.DEFINITIVE,
                )
        return Update(status=status, images=images, cost=cost_of(data), error=error)

    def _payload(self, body: bytes) -> Any:
        return payload_of(body, hide=HIDDEN)

    def _http_error(self, response: HTTPResponse, operation: str) -> ProviderError:
        # The HTTP error body of the task API is undocumented (providers.md 3.7); a
        # third-party guide shows {"code", "data": null, "message"}. Anything is accepted.
        payload = self._payload(response.body)
        message = provider_message(payload, "message", "error", "detail")
        if message is None and isinstance(payload, dict):
            inner = payload.get("data")
            message = failure_of(inner.get("error")) if isinstance(inner, dict) else None
        code = payload.get("code") if isinstance(payload, dict) else None
        return self._error(
            response, operation, message=message, code=plain_code(code), payload=payload
        )

    def _envelope_error(
        self, response: HTTPResponse, operation: str, envelope: Envelope
    ) -> ProviderError:
        # A 2xx whose envelope code is not 200.
        message = None
        if isinstance(envelope.message, str) and envelope.message.strip():
            message = envelope.message.strip()[:500]
        elif envelope.data is not None:
            message = failure_of(envelope.data.error)
        code = plain_code(envelope.code)
        # Codes shaped like HTTP statuses are read as such; others (their list is [U], 3.7)
        # are a definitive refusal, typed by the words said.
        status = code if isinstance(code, int) and 400 <= code < 600 else None
        return self._code_error(response, operation, code=code, message=message, status=status)
