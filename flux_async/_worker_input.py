"""One input of a distributed batch, from taking its record to writing its outcome.

An input's record in the batch's jobs hash says how far a worker got with it. `InputRunner`
takes the record (atomically: it is this worker's, or the one a worker wrote before, when the
input was claimed from a worker that died), then:

- no record: the create was never sent: it is sent now;
- a provider job id: the job is re-attached (polled by its id, its images saved); nothing is
  created again;
- ``sending`` without a job id: the create may have reached the provider and nothing can tell:
  the input ends ``unknown``, never re-created;
- ``done``: the outcome is already written: the entry is only acknowledged (and deleted).

The outcome record, the ``done`` mark and the acknowledgement (the entry is then deleted) are
written together (`Batched.finish`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._batch_queue import Batched, batch_keys
from ._client import FluxClient
from ._errors import (
    AuthenticationError,
    BadRequestError,
    DownloadError,
    FluxError,
    JobCancelledError,
    JobTimeoutError,
    JobUnknownError,
    RequestError,
    ValidationError,
)
from ._models import Generation, JobStatus
from ._transport import Transport
from .stores.redis_limits import RedisLimiter

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .providers._base import Provider

__all__ = ["InputRunner", "WorkerStats"]

logger = logging.getLogger("flux_async")


class WorkerStats:
    """What a worker did: inputs finished, and how many were taken over from dead workers.

    ``working`` is how many inputs it holds right now (read it while the worker runs).
    """

    def __init__(self) -> None:
        self.working = 0
        self.finished = 0
        self.created = 0
        self.claimed = 0
        self.reattached = 0
        self.unknown = 0
        self.acknowledged_only = 0

    def __repr__(self) -> str:
        return (
            f"<WorkerStats finished={self.finished} created={self.created} "
            f"claimed={self.claimed} reattached={self.reattached} unknown={self.unknown}>"
        )


class InputRunner:
    """Works inputs to their outcome for one worker (its client, transport and counters).

    Args:
        leases: the worker's job-in-flight leases (`RedisLimiter`), renewed by its heartbeat.
        poll_timeout: seconds a re-attached job is followed before it ends ``timed_out``.
    """

    def __init__(
        self,
        *,
        redis: Redis,
        namespace: str,
        name: str,
        provider: Provider,
        client: FluxClient,
        transport: Transport,
        batched: Batched,
        stats: WorkerStats,
        limiter: RedisLimiter | None,
        leases: set[str],
        poll_timeout: float,
        download_to: str | os.PathLike[str] | None,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.name = name
        self.provider = provider
        self.queue = f"{namespace}:queue"
        self.stats = stats
        self.limiter = limiter
        self.download_to = download_to
        self._client = client
        self._transport = transport
        self._batched = batched
        self._leases = leases
        self._poll_timeout = poll_timeout

    async def process(self, entry_id: str, fields: Mapping[bytes, bytes]) -> None:
        batch = fields[b"batch"].decode()
        index = int(fields[b"index"])
        item = json.loads(fields[b"input"])
        keys = batch_keys(self.namespace, batch)
        mine = json.dumps({"state": "sending", "worker": self.name})
        # The record is ours now, or the one a worker wrote before (this input was claimed
        # from it), in one atomic step.
        raw = await self._batched.take(keys["jobs"], str(index), mine)
        prior = None if raw is None else json.loads(raw)
        if prior is not None:
            owner = prior.get("worker")
            if prior.get("state") == "done":
                await self._batched.drop(entry_id)
                self.stats.acknowledged_only += 1
                return
            if owner != self.name and await self.redis.exists(f"{self.namespace}:worker:{owner}"):
                # Its worker lives (it was only slow to renew): it writes the outcome.
                return
            await self.redis.hset(
                keys["jobs"], str(index), json.dumps({**prior, "worker": self.name})
            )
        lease = None
        if self.limiter is not None:
            lease = await self.limiter.lease()
            self._leases.add(lease)
        try:
            if prior is None:
                record = await self._create(batch, index, item, keys)
            elif prior.get("job_id"):
                self.stats.reattached += 1
                record = await self._reattach(batch, index, item, prior["job_id"])
            else:
                self.stats.unknown += 1
                record = _record(
                    index,
                    "unknown",
                    error=f"worker {owner} stopped while this input's create was in flight: the "
                    "provider may have created the job; it was not sent again, to avoid "
                    "paying twice",
                )
        finally:
            if lease is not None:
                self._leases.discard(lease)
                with contextlib.suppress(Exception):
                    await self.limiter.release(lease)  # type: ignore[union-attr]
        record["worker"] = self.name
        record["recovered"] = prior is not None
        done = json.dumps({"state": "done", "worker": self.name, "job_id": record["job_id"]})
        outcome = json.dumps(record)
        await self._batched.finish(keys, str(index), outcome, done, entry_id)
        self.stats.finished += 1

    async def _create(
        self, batch: str, index: int, item: Any, keys: dict[str, str]
    ) -> dict[str, Any]:
        client = self._client
        if isinstance(item, str):
            prompt, params = item, {}
        elif isinstance(item, dict) and isinstance(item.get("prompt"), str):
            params = dict(item)
            prompt = params.pop("prompt")
        else:
            return _record(index, "rejected", error="an input must be a prompt or have 'prompt'")
        try:
            job = await client.submit(prompt, **params)
        except ValidationError as exc:
            return _record(index, "rejected", error=str(exc))
        except FluxError as exc:
            return _record(index, _status_of(exc), error=str(exc))
        finally:
            self.stats.created += 1
        job_id = job.id
        # Not awaited: losing it to a crash costs no money (the input then ends unknown).
        accepted = json.dumps({"state": "accepted", "worker": self.name, "job_id": job_id})
        self._batched.accept(keys["jobs"], str(index), accepted).add_done_callback(_consume)
        try:
            generation = await job.result()
        except FluxError as exc:
            return _record(index, job.status.value, job_id=job_id, cost=job.cost, error=str(exc))
        return await self._save(batch, index, generation)

    async def _reattach(self, batch: str, index: int, item: Any, job_id: str) -> dict[str, Any]:
        """Follow a job another worker created, by its provider id, to its end."""
        provider, transport = self.provider, self._transport
        model = item.get("model", "") if isinstance(item, dict) else ""
        wait = min(0.5, provider.typical_latency / 4)
        deadline = time.monotonic() + self._poll_timeout
        while True:
            try:
                response = await transport.send(
                    provider.build_query(job_id), provider=provider.name
                )
                update = provider.parse_query(response)
            except (BadRequestError, AuthenticationError) as exc:
                # Retrying cannot help (e.g. a provider that does not know this job id).
                return _record(
                    index,
                    "unknown",
                    job_id=job_id,
                    error=f"job {job_id} could not be followed: {exc}",
                )
            except RequestError as exc:
                if time.monotonic() > deadline:
                    return _record(index, "timed_out", job_id=job_id, error=str(exc))
                await asyncio.sleep(wait)
                wait = min(wait * 2, 5.0)
                continue
            if update.status.is_terminal:
                break
            if time.monotonic() > deadline:
                return _record(
                    index,
                    "timed_out",
                    job_id=job_id,
                    error=f"job {job_id} did not finish before its deadline",
                )
            await asyncio.sleep(wait)
            wait = min(wait * 1.5, 5.0)
        if update.status is not JobStatus.SUCCEEDED:
            return _record(
                index,
                update.status.value,
                job_id=job_id,
                cost=update.cost,
                error=update.error or f"job {job_id} ended {update.status.value}",
            )
        generation = Generation(
            images=update.images,
            provider=provider.name,
            model=model,
            job_id=job_id,
            local_id=f"reattached-{job_id}",
            cost=update.cost,
            seed=update.seed,
        )
        return await self._save(batch, index, generation)

    async def _save(self, batch: str, index: int, generation: Generation) -> dict[str, Any]:
        files: tuple[Path, ...] = ()
        if self.download_to is not None:
            try:
                files = await self._client.download(
                    generation, self.download_to, prefix=f"{batch}-{index:06d}-"
                )
            except DownloadError as exc:
                return _record(index, "download_failed", generation=generation, error=str(exc))
        return _record(index, "succeeded", generation=generation, files=files)


def _status_of(error: BaseException) -> str:
    if isinstance(error, JobUnknownError):
        return JobStatus.UNKNOWN.value
    if isinstance(error, JobCancelledError):
        return JobStatus.CANCELLED.value
    if isinstance(error, JobTimeoutError):
        return JobStatus.TIMED_OUT.value
    return JobStatus.FAILED.value


def _record(
    index: int,
    status: str,
    *,
    job_id: str | None = None,
    generation: Generation | None = None,
    files: Iterable[Path] = (),
    cost: Decimal | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    if generation is not None:
        job_id = generation.job_id
        cost = generation.cost
    return {
        "index": index,
        "status": status,
        "job_id": job_id,
        "image_urls": [image.url for image in generation.images] if generation else [],
        "files": [str(path) for path in files],
        "cost": None if cost is None else format(cost, "f"),
        "error": error,
    }


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("a queued Redis write failed: %s", future.exception())
