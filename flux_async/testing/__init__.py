"""Test against a fake FLUX provider: a real loopback HTTP server with fault injection.

`FakeProvider` speaks the wire formats of ShortAPI, PiAPI and AI/ML API at once, as
``providers.md`` documents them (their paths do not overlap), serves small real PNG
results, sends callbacks and webhooks, and counts everything a test may want to check::

    from flux_async.testing import FakeProvider, Faults, Latency

    async with FakeProvider(latency=(0.01, 0.05), faults=Faults(create_429=0.1)) as fake:
        ...  # point a client at fake.url
        assert max(fake.creates_per_prompt.values()) == 1  # nothing was paid for twice

Routes
    ShortAPI:   ``POST /api/v1/job/create``, ``GET /api/v1/job/query?id=<job_id>`` (Bearer)
    PiAPI:      ``POST /api/v1/task``, ``GET /api/v1/task/{task_id}``,
                ``DELETE /api/v1/task/{task_id}`` (cancel a pending task),
                ``GET /api/open/tasks/histories`` (task history) (``X-API-Key``)
    AI/ML API:  ``POST /v1/images/generations`` (Bearer; answers after the job's latency)
    images:     ``GET /files/<job id>-<n>.png``
    counters:   ``GET /_fake/stats`` (``?detail=0`` leaves out per-job and per-callback data)

A job's status is computed when asked from its times: queued for the first 30% of its
latency, running until ``ready_at``, then final. Times are ``time.monotonic()`` values,
which are system-wide on Linux, so a benchmark process can compare them with its own.
Jobs live as long as the fake: a client that restarts (a new session, a new process)
queries them by id as before.

Images
    Each PNG has the shape the request asked for: ShortAPI's ``aspect_ratio`` (taken at
    1024 px on the long side, e.g. 16:9 is 1024x576), PiAPI's ``width``/``height``
    (1024x1024 when absent), AI/ML API's ``image_size`` preset or object, its
    ``aspect_ratio`` (Kontext, about one megapixel) or a fixed model size. To stay cheap
    it is scaled down to ``image_max_side`` (default 256) pixels on the long side,
    keeping the aspect ratio; a size that fits is served as is, and
    ``image_max_side=None`` serves the requested size. ``FakeJob.image_size`` and AI/ML
    API's ``images[].width/height`` carry the requested size. The pixels are a gradient
    pattern derived from the result name (distinct per image), a few KB each.

Choices the docs leave open (all marked [U] or [I] in ``providers.md``)
    ShortAPI errors are HTTP 200 with ``{"code": 1, "info": ..., "message": ...}`` for
    validation and unknown job ids; 401/429/500 carry the same envelope with the HTTP
    status as ``code``, and 503 carries ``code: 3000`` (upstream unavailable). The
    callback body is the query envelope with ``data.job_id`` added, sent on success,
    failure and unknown status. PiAPI errors are ``{"code": <http>, "data": null,
    "message": ...}`` (400 invalid, 401, 404 unknown task, 429, 5xx). Each PiAPI webhook
    job gets one "processing" delivery right before its terminal one. AI/ML API charges
    one credit per image. The hidden rate limit answers 429 in each provider's error
    shape with ``Retry-After`` in whole seconds.

PiAPI cancel and task history (providers.md §7.2)
    Documented: ``DELETE /api/v1/task/{task_id}`` with ``x-api-key`` cancels a task
    that is still *pending*; a task that entered *processing* cannot be cancelled
    ([D] for Luma and Midjourney at https://piapi.ai/docs/dream-machine/cancel-task and
    https://piapi.ai/docs/midjourney-api/cancel-task, [I] for Flux). The fake's
    choices where nothing is documented: a pending task ends at once with status
    ``failed``, ``error.message`` "task canceled" (``code`` 10001), no output and
    ``meta.usage.consume`` 0, its webhook is sent at the cancel, and the answer is 200
    with the usual ``{"code": 200, "data": <task>, "message": "success"}``; a
    processing or finished task gets 400 ``{"code": 400, "data": null, "message":
    "... only pending tasks can be canceled"}`` and runs on; an unknown id gets 404.
    ShortAPI and AI/ML API document no cancel, so the fake has none.

    Documented: ``GET /api/open/tasks/histories`` with ``x-api-key`` and query
    parameters ``page`` (from 1, default 1), ``page_size`` (default 10, max 100, "returns
    error if exceeded"), ``model`` (empty for all; ``flux`` among the values),
    ``start_time``/``end_time`` (unix seconds) ([D] https://piapi.ai/docs/piapi-user-
    history-query; the doc writes the host as ``{{base_manager_url}}``). The response
    schema is not documented; the fake answers ``{"code": 200, "message": "success",
    "data": {"total", "page", "page_size", "list": [<task as GET returns it>]}}``, newest
    first, with both time bounds inclusive against ``meta.created_at``, and 400 with the
    error envelope for a bad parameter.

Faults
    `Faults` holds probabilities drawn from the seeded RNG (``create_429``,
    ``create_5xx``, ``query_5xx``, ``create_reset``, ``query_reset``,
    ``drop_after_accept``, ``never_finish``, ``fail``, ``unknown_status``, and the
    ``callback_*`` faults) plus ``rate_limit_first_creates``, which answers the first N
    creates 429. 429s and 503s carry ``Retry-After: ceil(retry_after)``.

Slowness and limits
    ``latency=`` takes seconds, a ``(low, high)`` range, or a seeded `Latency`:
    ``Latency.normal(mean, sd)``, ``Latency.lognormal(median, sigma)`` (a long tail),
    ``Latency.shift(first, then, after_jobs=N)`` (slows down mid-batch) or
    ``Latency.custom(draw)``. ``Faults(create_delay=...)`` (same forms) holds each
    create's answer after its job was made, so many creates can be "in flight" that the
    provider already created. ``Faults(rate_limit=N, rate_limit_burst=B)`` is a hidden
    limit of N requests per second per API key over all keyed routes (a token bucket of
    B, default N); beyond it 429 with ``Retry-After`` and no job.

Prompt markers apply a fault to one request or job with no probabilities involved:
    ``[fault:never-finish]``   the job runs forever (AI/ML API: no answer until close)
    ``[fault:fail]``           the job fails (ShortAPI 3/4 + refunded; PiAPI failed;
                               AI/ML API 500)
    ``[fault:unknown-status]`` once ready, an undocumented status (ShortAPI -1, 7 or
                               "weird"; PiAPI "exploded" or "quarantined"; AI/ML API:
                               ignored)
    ``[fault:drop]``           the job is created but the create's connection is closed
                               without an answer (``lost_responses`` counts it)
    ``[fault:429]``            the first create with this prompt gets 429, later ones pass
    ``[fault:5xx]``            every create with this prompt gets 503 (no job)
    ``[fault:reset]``          every create with this prompt has its connection reset
    ``[fault:no-callback]``    no callback/webhook is sent
    ``[fault:dup-callback]``   the terminal callback is sent twice
    ``[fault:early-callback]`` the job finishes at once and its callback is delivered
                               before the create response is sent
    ``[fault:late-callback]``  the callback comes ``callback_late_delay`` s after ready
    ``[fault:out-of-order-callback]`` the terminal callback, then a stale running one

Counters on a running fake
    ``url``, ``creates_per_prompt`` (creates that made a job, by prompt),
    ``create_attempts`` (every create request), ``polls_per_job`` (queries by job id),
    ``requests`` (by route: ``shortapi.create``, ``shortapi.query``, ``piapi.create``,
    ``piapi.query``, ``piapi.cancel``, ``piapi.history``, ``aimlapi.generate``,
    ``files``, ``stats``), ``jobs`` (`FakeJob` by provider id), ``served_files`` (PNG
    bytes served, by URL path), ``callbacks_sent`` (`CallbackRecord` list),
    ``lost_responses``, ``rejected_429`` (every 429: rate limit and faults),
    ``rate_limited`` (the hidden limit's share), ``held_creates`` (answers
    ``create_delay`` holds now), ``abandoned_responses`` (held creates whose client gave
    up; the job stays), ``cancels``; and ``await fake.wait_callbacks_idle()`` to wait
    for pending deliveries. ``/_fake/stats`` reports the same names.

From a shell, ``python -m flux_async.testing --port 8123`` serves until SIGINT/SIGTERM
and prints its URL on the first line. Besides ``--host``, ``--port``, ``--seed``,
``--fault-rate P``, ``--fault NAME=VALUE``, ``--api-key`` and ``--credits``:
``--latency SPEC`` (``SECONDS``, ``LOW,HIGH``, ``uniform:LOW,HIGH``, ``normal:MEAN,SD``,
``lognormal:MEDIAN,SIGMA``), ``--latency-after N=SPEC``, ``--create-delay SPEC``,
``--rate-limit N``, ``--rate-limit-burst B`` and ``--image-max-side PX`` (0: no cap);
``--help`` lists them.
"""

from ._faults import Faults
from ._latency import Latency
from ._server import FakeProvider
from ._state import CallbackRecord, FakeJob

__all__ = ["CallbackRecord", "FakeJob", "FakeProvider", "Faults", "Latency"]
