"""Distributed batches on Redis (extra ``flux-async[redis]``): queue inputs, run workers on any
number of machines, collect one outcome per input.

::

    from flux_async import ShortAPI
    from flux_async.workers import collect, enqueue, run_worker

    url = "redis://redis:6379/0"
    batch_id = await enqueue(url, ["a red fox", {"prompt": "a cat", "aspect_ratio": "16:9"}])
    # on each worker machine (returns once nothing was queued or in hand for 5 s):
    await run_worker(url, ShortAPI(), download_to="out/", exit_when_idle=5)
    # wherever the results are wanted:
    async for record in collect(url, batch_id):
        print(record["index"], record["status"], record["files"])

`SharedLimits` makes every worker of one provider account take its requests' turns from
limits kept in Redis (``run_worker(..., shared_limits=SharedLimits(creates_per_second=10))``).
How inputs are claimed, re-attached and never created twice is described in
`flux_async._worker` and `flux_async._worker_input`, the Redis keys in
`flux_async._batch_queue`. The command line does the same: ``flux-async worker`` and
``flux-async batch FILE --redis URL``.
"""

from __future__ import annotations

from ._batch_queue import batch_info, collect, enqueue
from ._worker import run_worker
from ._worker_input import WorkerStats
from .stores.redis_limits import SharedLimits

__all__ = ["SharedLimits", "WorkerStats", "batch_info", "collect", "enqueue", "run_worker"]
