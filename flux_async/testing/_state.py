"""Hold the fake's shared state: jobs, counters, limits and the seeded RNG."""

from __future__ import annotations

import asyncio
import collections
import hmac
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ._faults import CallbackFault, FaultDice, Faults, JobFate, Outcome
from ._latency import LatencyLike, as_latency
from ._png import DEFAULT_MAX_SIDE, render_png
from ._token_bucket import TokenBucket

__all__ = [
    "CallbackRecord",
    "FakeJob",
    "FakeState",
    "Phase",
    "Provider",
    "retry_after_header",
]

Phase = Literal["queued", "running", "done"]
Provider = Literal["shortapi", "piapi", "aimlapi"]

# Share of a job's latency spent queued before it starts running; only shapes status values.
_QUEUED_SHARE = 0.3
# The nominal size of an image whose job is unknown (fake.image_bytes of a made-up URL).
_UNKNOWN_SIZE = (1024, 1024)


@dataclass(slots=True, eq=False)
class FakeJob:
    """One job the fake accepted.

    Times are ``time.monotonic()`` values. Status is computed from them when asked,
    so the fake keeps no timer or task per job.

    Attributes:
        id: The provider job id (ShortAPI ``job_id``, PiAPI ``task_id``; a uuid for
            AI/ML API, which has no job id on the wire).
        provider: ``"shortapi"``, ``"piapi"`` or ``"aimlapi"``.
        prompt: The prompt as sent.
        model: The model id as sent.
        params: The decoded provider input (ShortAPI ``args``, PiAPI ``input``, the whole
            AI/ML API body).
        created_at: When the create was accepted.
        started_at: When the job leaves its queued phase.
        ready_at: When the job reaches its final state; None if it never does.
        outcome: ``"succeeded"``, ``"failed"``, ``"never"``, ``"unknown_status"`` or
            ``"cancelled"`` (PiAPI cancel).
        image_urls: Result URLs (empty unless the job succeeds).
        created_wall: ``time.time()`` at creation, for wall-clock fields on the wire.
        variant: A seeded number fixing per-job choices (failure code, odd status value,
            output shape).
        callback_url: Where the callback or webhook goes, if one was given.
        callback_secret: PiAPI ``webhook_config.secret``, if one was given.
        callback_faults: Callback faults applied to this job.
        task_type: PiAPI ``task_type``; None for other providers.
        service_mode: PiAPI ``config.service_mode`` as sent, or ``""``.
        image_size: The (width, height) the request asked for, as the wire format
            carries it (ShortAPI: an aspect ratio at 1024 px on the long side; PiAPI:
            width and height, default 1024x1024; AI/ML API: ``image_size`` or
            ``aspect_ratio``). Served PNGs keep this aspect ratio, scaled down to the
            fake's ``image_max_side``.
        cancelled_at: When a cancel request ended the job (PiAPI), else None.
    """

    id: str
    provider: Provider
    prompt: str
    model: str
    params: dict[str, Any]
    created_at: float
    started_at: float
    ready_at: float | None
    outcome: Outcome
    image_urls: tuple[str, ...]
    created_wall: float
    variant: int = 0
    callback_url: str | None = None
    callback_secret: str | None = None
    callback_faults: frozenset[CallbackFault] = frozenset()
    task_type: str | None = None
    service_mode: str = ""
    image_size: tuple[int, int] = (1024, 1024)
    cancelled_at: float | None = None

    def phase(self, now: float) -> Phase:
        """Return the job's phase at a monotonic time."""
        if self.ready_at is not None and now >= self.ready_at:
            return "done"
        return "running" if now >= self.started_at else "queued"

    def wall_time(self, monotonic_time: float) -> float:
        """Convert a monotonic time of this job into unix seconds."""
        return self.created_wall + (monotonic_time - self.created_at)

    def cancel(self, now: float) -> None:
        """End the job as cancelled at a monotonic time: no image, no charge."""
        self.outcome = "cancelled"
        self.ready_at = now
        self.started_at = min(self.started_at, now)
        self.image_urls = ()
        self.cancelled_at = now


@dataclass(frozen=True, slots=True)
class CallbackRecord:
    """One callback or webhook POST the fake attempted.

    Attributes:
        job_id: The provider job id.
        provider: ``"shortapi"`` or ``"piapi"``.
        url: The receiver address.
        kind: ``"progress"`` (non-terminal), ``"terminal"``, ``"duplicate"`` (a repeated
            terminal delivery) or ``"stale"`` (a running status sent after the terminal one).
        status: The status value sent, as it appeared in the body.
        http_status: The receiver's HTTP status, or None if the POST failed.
        error: The exception class name when the POST failed, else None.
        sent_at: ``time.monotonic()`` when the POST started.
    """

    job_id: str
    provider: str
    url: str
    kind: str
    status: str | int
    http_status: int | None
    error: str | None
    sent_at: float


class FakeState:
    """Own the jobs, the counters and the seeded randomness shared by every route."""

    def __init__(
        self,
        *,
        latency: LatencyLike,
        faults: Faults,
        seed: int,
        api_key: str | None,
        credits: float | None,
        image_max_side: int | None = DEFAULT_MAX_SIDE,
    ) -> None:
        self._latency = as_latency(latency)
        if image_max_side is not None and image_max_side < 1:
            raise ValueError(f"image_max_side must be >= 1 or None, got {image_max_side!r}")
        self.image_max_side = image_max_side
        self.rng = random.Random(seed)
        self.dice = FaultDice(faults, self.rng)
        self.faults = faults
        self.api_key = api_key
        self.credits_left = credits
        self.base_url = ""
        self.create_attempts = 0
        self.lost_responses = 0
        self.creates_per_prompt: collections.Counter[str] = collections.Counter()
        self.polls_per_job: collections.Counter[str] = collections.Counter()
        self.requests: collections.Counter[str] = collections.Counter()
        self.jobs: dict[str, FakeJob] = {}
        self.served_files: dict[str, bytes] = {}
        self.callbacks_sent: list[CallbackRecord] = []
        self.rejected_429 = 0
        self.rate_limited = 0
        self.held_creates = 0
        self.abandoned_responses = 0
        self.cancels = 0
        self._buckets: dict[str, TokenBucket] = {}
        self._closing = False
        self._sleepers: set[asyncio.Future[bool]] = set()

    # -- lifecycle of held requests ---------------------------------------------------

    def mark_closing(self) -> None:
        """Wake every request the fake is holding so that shutdown is quick."""
        self._closing = True
        for sleeper in self._sleepers:
            if not sleeper.done():
                sleeper.set_result(False)
        self._sleepers.clear()

    @property
    def closing(self) -> bool:
        """Return whether the fake is shutting down."""
        return self._closing

    async def wait_until(self, deadline: float | None) -> bool:
        """Sleep until a monotonic deadline (None: forever) or until the fake closes.

        Returns:
            True if the deadline was reached, False if the fake is closing.
        """
        if self._closing:
            return False
        delay = None if deadline is None else deadline - time.monotonic()
        if delay is not None and delay <= 0:
            return True
        # One future per sleeper (rather than many waiters on one shared future) keeps
        # both waking on time and waking everyone at close O(1) per held request.
        loop = asyncio.get_running_loop()
        sleeper: asyncio.Future[bool] = loop.create_future()
        timer = None if delay is None else loop.call_later(delay, _wake, sleeper)
        self._sleepers.add(sleeper)
        try:
            return await sleeper
        finally:
            if timer is not None:
                timer.cancel()
            self._sleepers.discard(sleeper)

    # -- randomness ----------------------------------------------------------------

    def draw_latency(self) -> float:
        """Draw the next job's create-to-ready latency in seconds."""
        return self._latency.draw(self.rng, len(self.jobs))

    def draw_create_delay(self) -> float:
        """Draw how long the next create's answer is held (``Faults.create_delay``)."""
        return self.dice.create_delay(len(self.jobs))

    # -- auth --------------------------------------------------------------------

    def key_accepted(self, key: str | None) -> bool:
        """Check a presented API key: any non-empty key, or exactly the configured one."""
        if not key:
            return False
        if self.api_key is None:
            return True
        return hmac.compare_digest(key.encode(), self.api_key.encode())

    def rate_limit_wait(self, key: str) -> float | None:
        """Take a token of the hidden rate limit for an API key.

        Returns:
            None if the request may go on, else the seconds until a token is free.
        """
        rate = self.faults.rate_limit
        if rate <= 0:
            return None
        bucket = self._buckets.get(key)
        if bucket is None:
            burst = self.faults.rate_limit_burst
            bucket = self._buckets[key] = TokenBucket(rate, rate if burst is None else burst)
        wait = bucket.take(time.monotonic())
        if wait is not None:
            self.rate_limited += 1
        return wait

    # -- jobs ----------------------------------------------------------------------

    def new_job_id(self, make: Callable[[random.Random], str]) -> str:
        """Draw a fresh job id with a provider-specific generator."""
        while True:
            job_id = make(self.rng)
            if job_id not in self.jobs:
                return job_id

    def add_job(
        self,
        *,
        job_id: str,
        provider: Provider,
        prompt: str,
        model: str,
        params: dict[str, Any],
        fate: JobFate,
        num_images: int,
        image_size: tuple[int, int] = (1024, 1024),
        callback_url: str | None = None,
        callback_secret: str | None = None,
        task_type: str | None = None,
        service_mode: str = "",
    ) -> FakeJob:
        """Create and register a job; count it against its prompt."""
        now = time.monotonic()
        latency = self.draw_latency()
        if "early" in fate.callback_faults:
            # The callback is delivered before the create response, so the job must be
            # finished by then.
            latency = 0.0
        succeeded = fate.outcome == "succeeded"
        job = FakeJob(
            id=job_id,
            provider=provider,
            prompt=prompt,
            model=model,
            params=params,
            created_at=now,
            started_at=now + latency * _QUEUED_SHARE,
            ready_at=None if fate.outcome == "never" else now + latency,
            outcome=fate.outcome,
            image_urls=tuple(
                f"{self.base_url}/files/{job_id}-{index}.png" for index in range(num_images)
            )
            if succeeded
            else (),
            created_wall=time.time(),
            variant=self.rng.getrandbits(30),
            callback_url=callback_url,
            callback_secret=callback_secret,
            callback_faults=fate.callback_faults if callback_url else frozenset(),
            task_type=task_type,
            service_mode=service_mode,
            image_size=image_size,
        )
        self.jobs[job_id] = job
        self.creates_per_prompt[prompt] += 1
        return job

    # -- images ----------------------------------------------------------------------

    def image(self, name: str) -> bytes:
        """Return the PNG for a result name (``<job id>-<index>``), served or not."""
        job_id, _, _ = name.rpartition("-")
        job = self.jobs.get(job_id)
        width, height = job.image_size if job is not None else _UNKNOWN_SIZE
        return render_png(name, width, height, max_side=self.image_max_side)

    # -- stats -----------------------------------------------------------------------

    def stats(self, *, detail: bool = True) -> dict[str, Any]:
        """Return the counters as JSON-ready data (the ``/_fake/stats`` body)."""
        outcomes: collections.Counter[str] = collections.Counter(
            job.outcome for job in self.jobs.values()
        )
        data: dict[str, Any] = {
            "url": self.base_url,
            "monotonic_now": time.monotonic(),
            "create_attempts": self.create_attempts,
            "jobs_created": len(self.jobs),
            "lost_responses": self.lost_responses,
            "abandoned_responses": self.abandoned_responses,
            "held_creates": self.held_creates,
            "rejected_429": self.rejected_429,
            "rate_limited": self.rate_limited,
            "cancels": self.cancels,
            "callbacks_sent": len(self.callbacks_sent),
            "outcomes": dict(outcomes),
            "requests": dict(self.requests),
            "creates_per_prompt": dict(self.creates_per_prompt),
            "polls_per_job": dict(self.polls_per_job),
        }
        if detail:
            data["jobs"] = {
                job.id: {
                    "provider": job.provider,
                    "prompt": job.prompt,
                    "model": job.model,
                    "outcome": job.outcome,
                    "created_at": job.created_at,
                    "ready_at": job.ready_at,
                    "image_size": list(job.image_size),
                    "image_urls": list(job.image_urls),
                }
                for job in self.jobs.values()
            }
            data["callbacks"] = [
                {
                    "job_id": record.job_id,
                    "provider": record.provider,
                    "url": record.url,
                    "kind": record.kind,
                    "status": record.status,
                    "http_status": record.http_status,
                    "error": record.error,
                    "sent_at": record.sent_at,
                }
                for record in self.callbacks_sent
            ]
        return data


def retry_after_header(seconds: float) -> str:
    """Format a wait as whole ``Retry-After`` seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


def _wake(sleeper: asyncio.Future[bool]) -> None:
    if not sleeper.done():
        sleeper.set_result(True)
