"""Deliver ShortAPI callbacks and PiAPI webhooks, with the scheduled callback faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import aiohttp

from ._state import CallbackRecord, FakeJob, FakeState

__all__ = ["CallbackDispatcher", "Payload", "PayloadBuilder"]

#: (status value as sent, JSON body, extra headers)
Payload = tuple[str | int, bytes, Mapping[str, str]]
#: Build one delivery for a job; kind is "progress", "terminal" or "stale".
#: Returns None when the provider sends no such delivery.
PayloadBuilder = Callable[[FakeJob, str], Payload | None]

# Generous, so a slow test receiver is recorded as slow rather than as a failure, but
# bounded, so a receiver that never answers cannot hold shutdown or an early callback.
_DELIVERY_TIMEOUT = aiohttp.ClientTimeout(total=10)


class CallbackDispatcher:
    """Schedule one delivery per job with a callback address and record every POST.

    Only jobs with a callback get a timer (``loop.call_later``); a task exists only
    while a delivery is in flight. Failed POSTs are recorded, never raised or retried.
    """

    def __init__(self, state: FakeState) -> None:
        self._state = state
        self._builders: dict[str, PayloadBuilder] = {}
        self._session: aiohttp.ClientSession | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending = 0
        self._idle: asyncio.Event | None = None

    def register(self, provider: str, builder: PayloadBuilder) -> None:
        """Set how a provider's deliveries are built."""
        self._builders[provider] = builder

    def start(self) -> None:
        """Open the HTTP session used for deliveries; call inside the running loop."""
        self._session = aiohttp.ClientSession(
            timeout=_DELIVERY_TIMEOUT, headers={"User-Agent": "flux-async-fake-provider"}
        )
        self._idle = asyncio.Event()
        self._idle.set()

    def schedule(self, job: FakeJob) -> None:
        """Arrange the job's deliveries at its ready time, if it gets any."""
        faults = job.callback_faults
        if job.callback_url is None or job.ready_at is None or "never" in faults:
            return
        if "early" in faults:
            return  # delivered by deliver_now() inside the create request
        when = job.ready_at
        if "late" in faults:
            when += self._state.faults.callback_late_delay
        delay = max(0.0, when - time.monotonic())
        self._begin()
        self._timers[job.id] = asyncio.get_running_loop().call_later(delay, self._fire, job)

    def reschedule(self, job: FakeJob) -> None:
        """Move a job's deliveries to its (changed) ready time, e.g. after a cancel."""
        handle = self._timers.pop(job.id, None)
        if handle is not None:
            handle.cancel()
            self._end()
        self.schedule(job)

    async def deliver_now(self, job: FakeJob) -> None:
        """Deliver the job's callbacks at once (the early-callback fault)."""
        if job.callback_url is None or job.ready_at is None or "never" in job.callback_faults:
            return
        self._begin()
        try:
            await self._deliver(job)
        finally:
            self._end()

    async def wait_idle(self) -> None:
        """Wait until no delivery is scheduled or in flight."""
        while self._pending and self._idle is not None:
            await self._idle.wait()

    async def aclose(self) -> None:
        """Cancel scheduled and running deliveries and close the HTTP session."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._pending = 0
        if self._idle is not None:
            self._idle.set()

    def _begin(self) -> None:
        self._pending += 1
        if self._idle is not None:
            self._idle.clear()

    def _end(self) -> None:
        self._pending -= 1
        if self._pending <= 0 and self._idle is not None:
            self._pending = 0
            self._idle.set()

    def _fire(self, job: FakeJob) -> None:
        self._timers.pop(job.id, None)
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job: FakeJob) -> None:
        try:
            await self._deliver(job)
        finally:
            self._end()

    async def _deliver(self, job: FakeJob) -> None:
        builder = self._builders[job.provider]
        faults = job.callback_faults
        kinds: list[tuple[str, str]] = []  # (record kind, payload kind)
        if "out_of_order" not in faults:
            kinds.append(("progress", "progress"))
        kinds.append(("terminal", "terminal"))
        if "duplicate" in faults:
            kinds.append(("duplicate", "terminal"))
        if "out_of_order" in faults:
            kinds.append(("stale", "stale"))
        for record_kind, payload_kind in kinds:
            payload = builder(job, payload_kind)
            if payload is not None:
                await self._post(job, record_kind, payload)

    async def _post(self, job: FakeJob, kind: str, payload: Payload) -> None:
        assert job.callback_url is not None
        status, body, extra_headers = payload
        headers = {"Content-Type": "application/json", **extra_headers}
        sent_at = time.monotonic()
        http_status: int | None = None
        error: str | None = None
        if self._session is None or self._session.closed:
            error = "SessionClosed"
        else:
            try:
                async with self._session.post(
                    job.callback_url, data=body, headers=headers
                ) as response:
                    await response.read()
                    http_status = response.status
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure is data for the test, never an error here
                error = type(exc).__name__
        self._state.callbacks_sent.append(
            CallbackRecord(
                job_id=job.id,
                provider=job.provider,
                url=job.callback_url,
                kind=kind,
                status=status,
                http_status=http_status,
                error=error,
                sent_at=sent_at,
            )
        )
