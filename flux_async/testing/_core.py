"""Hold the fake's shared state: jobs, counters, the seeded RNG and HTTP helpers."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import random
import socket
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from aiohttp import web
from yarl import URL

from ._faults import CallbackFault, FaultDice, Faults, JobFate, Outcome, prompt_triggers

__all__ = [
    "CallbackRecord",
    "FakeJob",
    "FakeState",
    "Latency",
    "Phase",
    "Provider",
    "Refuse",
    "admit_create",
    "admit_query",
    "bearer_key",
    "decode_json",
    "is_http_url",
    "is_int",
    "is_number",
    "json_response",
    "reset_connection",
]

Latency = float | tuple[float, float] | Callable[[random.Random], float]
Phase = Literal["queued", "running", "done"]
Provider = Literal["shortapi", "piapi", "aimlapi"]

# Share of a job's latency spent queued before it starts running; only shapes status values.
_QUEUED_SHARE = 0.3


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
        outcome: ``"succeeded"``, ``"failed"``, ``"never"`` or ``"unknown_status"``.
        image_urls: Result URLs (empty unless the job succeeds).
        created_wall: ``time.time()`` at creation, for wall-clock fields on the wire.
        variant: A seeded number fixing per-job choices (failure code, odd status value,
            output shape).
        callback_url: Where the callback or webhook goes, if one was given.
        callback_secret: PiAPI ``webhook_config.secret``, if one was given.
        callback_faults: Callback faults applied to this job.
        task_type: PiAPI ``task_type``; None for other providers.
        service_mode: PiAPI ``config.service_mode`` as sent, or ``""``.
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

    def phase(self, now: float) -> Phase:
        """Return the job's phase at a monotonic time."""
        if self.ready_at is not None and now >= self.ready_at:
            return "done"
        return "running" if now >= self.started_at else "queued"

    def wall_time(self, monotonic_time: float) -> float:
        """Convert a monotonic time of this job into unix seconds."""
        return self.created_wall + (monotonic_time - self.created_at)


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
        latency: Latency,
        faults: Faults,
        seed: int,
        api_key: str | None,
        credits: float | None,
    ) -> None:
        _check_latency(latency)
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
        self._latency = latency
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
        """Draw one job's create-to-ready latency in seconds."""
        latency = self._latency
        if isinstance(latency, (int, float)):
            value = float(latency)
        elif isinstance(latency, tuple):
            value = self.rng.uniform(latency[0], latency[1])
        else:
            value = float(latency(self.rng))
        return max(0.0, value)

    # -- auth --------------------------------------------------------------------

    def key_accepted(self, key: str | None) -> bool:
        """Check a presented API key: any non-empty key, or exactly the configured one."""
        if not key:
            return False
        if self.api_key is None:
            return True
        return hmac.compare_digest(key.encode(), self.api_key.encode())

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
        )
        self.jobs[job_id] = job
        self.creates_per_prompt[prompt] += 1
        return job

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


def _wake(sleeper: asyncio.Future[bool]) -> None:
    if not sleeper.done():
        sleeper.set_result(True)


def _check_latency(latency: Latency) -> None:
    if isinstance(latency, (int, float)):
        if latency < 0:
            raise ValueError(f"latency must be >= 0, got {latency!r}")
    elif isinstance(latency, tuple):
        if len(latency) != 2 or not 0 <= latency[0] <= latency[1]:
            raise ValueError(f"latency range must be (low, high) with 0 <= low <= high: {latency}")
    elif not callable(latency):
        raise TypeError(f"latency must be a float, a (low, high) tuple or a callable: {latency!r}")


def json_response(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Encode a JSON response."""
    return web.Response(
        body=msgspec.json.encode(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def decode_json(raw: bytes) -> Any:
    """Decode a request body, returning None when it is not JSON."""
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None


def reset_connection(request: web.Request, *, hard: bool = True) -> web.Response:
    """Close the request's connection without answering.

    With ``hard``, linger 0 makes the kernel send a TCP RST, so the client sees
    "connection reset by peer"; otherwise an orderly FIN makes it see a disconnect.

    Returns:
        A placeholder response for the handler to return; aiohttp finds the transport
        closed and writes nothing.
    """
    transport = request.transport
    if transport is not None:
        if hard:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()
    return web.Response(status=499)


Refuse = Callable[[int], web.Response]
"""Build a provider's error response for an HTTP status (401, 429, 500 or 503)."""


def admit_create(
    state: FakeState,
    request: web.Request,
    *,
    attempt: int,
    prompt: str | None,
    key: str | None,
    refuse: Refuse,
) -> tuple[web.Response | None, frozenset[str]]:
    """Apply the network, auth and refusal faults every provider's create shares.

    The order models a real server: a connection reset happens before the request is
    read by anything, authentication before rate limiting, and rate limiting and
    overload before any validation or work.

    Args:
        state: The fake's state.
        request: The create request.
        attempt: The request's 1-based arrival number among all creates.
        prompt: The prompt, if the body had one.
        key: The presented API key, if any.
        refuse: Builds the provider's error response for a status.

    Returns:
        The response that ends the request (None to go on), and the prompt's triggers.
    """
    triggers = prompt_triggers(prompt)
    if state.dice.create_reset(triggers):
        return reset_connection(request), triggers
    if not state.key_accepted(key):
        return refuse(401), triggers
    refusal = state.dice.create_refusal(triggers, attempt, prompt or "")
    if refusal is not None:
        response = refuse(refusal)
        if refusal in (429, 503):
            response.headers["Retry-After"] = state.faults.retry_after_header
        return response, triggers
    return None, triggers


def admit_query(
    state: FakeState, request: web.Request, *, key: str | None, refuse: Refuse
) -> web.Response | None:
    """Apply the reset, auth and 5xx faults every provider's query shares."""
    fault = state.dice.query_fault()
    if fault == "reset":
        return reset_connection(request)
    if not state.key_accepted(key):
        return refuse(401)
    if fault is not None:
        response = refuse(fault)
        if fault == 503:
            response.headers["Retry-After"] = state.faults.retry_after_header
        return response
    return None


def bearer_key(request: web.Request) -> str | None:
    """Return the key of an ``Authorization: Bearer <key>`` header, if any."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return None
    return key


def is_number(value: Any) -> bool:
    """Return whether a decoded JSON value is a number (JSON booleans are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    """Return whether a decoded JSON value is a whole number, such as 2 or 2.0."""
    return is_number(value) and float(value).is_integer()


def is_http_url(text: str) -> bool:
    """Return whether text is an absolute http(s) URL with a host."""
    try:
        url = URL(text)
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.host)
