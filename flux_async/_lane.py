"""`Lane`: admission for one provider — HTTP and job slots, create pacing, the 429 pause, retries.

Every number that limits how hard a client presses on its provider lives here (read from
`Limits` and `RetryPolicy` once), so an adaptive limiter can later change them in one place.
`Tasks` is the set of background tasks a client owns (creates, verifications).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ._config import Limits, RetryPolicy
from ._http import HTTPRequest, HTTPResponse
from ._retry import RetryBudget, TokenBucket, wait_table
from ._transport import Transport

__all__ = ["Lane", "Tasks"]


class Lane:
    """The shared admission state of one provider's requests.

    Args:
        provider: the provider's name (for errors).
        limits: connection, job and create-rate caps.
        retry: the retry policy (its budget and backoff table are built here).
        transport: sends the requests; ``None`` for tests that never `send`.
        clock: the event loop's clock by default; tests pass a fake one.
        sleep: ``asyncio.sleep`` by default; tests pass one that advances their clock.
    """

    def __init__(
        self,
        *,
        provider: str,
        limits: Limits,
        retry: RetryPolicy,
        transport: Transport | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.provider = provider
        self.limits = limits
        self.retry = retry
        self._transport = transport
        self._clock = clock or asyncio.get_running_loop().time
        self._sleep = sleep
        # Semaphores, not CapacityLimiters: a poll's slot is taken by the scheduler's task
        # and given back by the poll's own task. asyncio's, not anyio's, on this per-request
        # path: anyio's acquire always yields to the event loop, an extra loop turn and
        # ~11 us per request even when a slot is free (benchmarks/README.md).
        self.http_slots = asyncio.Semaphore(limits.max_connections)
        self.job_slots = asyncio.Semaphore(limits.max_jobs_in_flight)
        self.retry_budget = RetryBudget(ratio=retry.budget_ratio, reserve=retry.budget_reserve)
        self.retry_table = wait_table(retry.wait_initial, retry.wait_exp_base, retry.wait_max)
        self._create_rate = (
            TokenBucket(limits.creates_per_second) if limits.creates_per_second else None
        )
        self._creates_paused_until = -float("inf")

    @property
    def creates_paused_until(self) -> float:
        """The clock time before which no create is sent (after a 429)."""
        return self._creates_paused_until

    def now(self) -> float:
        """The lane's clock."""
        return self._clock()

    async def send(self, request: HTTPRequest, *, long_read: bool = False) -> HTTPResponse:
        """Send ``request`` in one of the provider's HTTP slots."""
        async with self.http_slots:
            return await self.send_in_slot(request, long_read=long_read)

    async def send_in_slot(
        self, request: HTTPRequest, *, long_read: bool = False
    ) -> HTTPResponse:
        """Send ``request`` when the caller already holds an HTTP slot (the poll scheduler)."""
        assert self._transport is not None, "this lane has no transport"
        return await self._transport.send(request, provider=self.provider, long_read=long_read)

    async def wait_for_create_turn(self) -> None:
        """Wait out a 429 pause, then take this create's place in the create rate."""
        while True:
            pause = self._creates_paused_until - self._clock()
            if pause <= 0:
                break
            await self._sleep(pause)
        if self._create_rate is not None:
            delay = self._create_rate.reserve(self._clock())
            if delay > 0:
                await self._sleep(delay)

    def pause_creates(self, seconds: float | None) -> float:
        """Hold every create of this provider for ``seconds`` (the first backoff step when
        ``None``); a longer pause already running is kept. Returns the pause applied."""
        pause = seconds if seconds is not None else self.retry_table[0]
        self._creates_paused_until = max(self._creates_paused_until, self._clock() + pause)
        return pause


class Tasks:
    """Background tasks owned by a client; `aclose` cancels them and waits for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coroutine`` in a task kept until it ends."""
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        """Cancel every task and return when all have ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
