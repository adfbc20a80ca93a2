"""Test against a fake FLUX provider: a real loopback HTTP server with fault injection.

`FakeProvider` speaks the wire formats of ShortAPI, PiAPI and AI/ML API at once, as
``providers.md`` documents them (their paths do not overlap), serves small real PNG
results, sends callbacks and webhooks, and counts everything a test may want to check::

    from flux_async.testing import FakeProvider, Faults

    async with FakeProvider(latency=(0.01, 0.05), faults=Faults(create_429=0.1)) as fake:
        ...  # point a client at fake.url
        assert max(fake.creates_per_prompt.values()) == 1  # nothing was paid for twice

Routes
    ShortAPI:   ``POST /api/v1/job/create``, ``GET /api/v1/job/query?id=<job_id>`` (Bearer)
    PiAPI:      ``POST /api/v1/task``, ``GET /api/v1/task/{task_id}`` (``X-API-Key``)
    AI/ML API:  ``POST /v1/images/generations`` (Bearer; answers after the job's latency)
    images:     ``GET /files/<job id>-<n>.png`` (16x16 PNG, distinct per image)
    counters:   ``GET /_fake/stats`` (``?detail=0`` leaves out per-job and per-callback data)

A job's status is computed when asked from its times: queued for the first 30% of its
latency, running until ``ready_at``, then final. Times are ``time.monotonic()`` values,
which are system-wide on Linux, so a benchmark process can compare them with its own.

Choices the docs leave open (all marked [U] or [I] in ``providers.md``)
    ShortAPI errors are HTTP 200 with ``{"code": 1, "info": ..., "message": ...}`` for
    validation and unknown job ids; 401/429/500 carry the same envelope with the HTTP
    status as ``code``, and 503 carries ``code: 3000`` (upstream unavailable). The
    callback body is the query envelope with ``data.job_id`` added, sent on success,
    failure and unknown status. PiAPI errors are ``{"code": <http>, "data": null,
    "message": ...}`` (400 invalid, 401, 404 unknown task, 429, 5xx). Each PiAPI webhook
    job gets one "processing" delivery right before its terminal one. AI/ML API charges
    one credit per image.

Faults
    `Faults` holds probabilities drawn from the seeded RNG (``create_429``,
    ``create_5xx``, ``query_5xx``, ``create_reset``, ``query_reset``,
    ``drop_after_accept``, ``never_finish``, ``fail``, ``unknown_status``, and the
    ``callback_*`` faults) plus ``rate_limit_first_creates``, which answers the first N
    creates 429. 429s and 503s carry ``Retry-After: ceil(retry_after)``.

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
    ``piapi.query``, ``aimlapi.generate``, ``files``, ``stats``), ``jobs`` (`FakeJob`
    by provider id), ``served_files`` (PNG bytes served, by URL path),
    ``callbacks_sent`` (`CallbackRecord` list), ``lost_responses``; and
    ``await fake.wait_callbacks_idle()`` to wait for pending deliveries.

From a shell, ``python -m flux_async.testing --port 8123`` serves until SIGINT/SIGTERM
and prints its URL on the first line; ``--help`` lists the options.
"""

from ._faults import Faults
from ._latency import Latency
from ._server import FakeProvider
from ._state import CallbackRecord, FakeJob

__all__ = ["CallbackRecord", "FakeJob", "FakeProvider", "Faults", "Latency"]
