"""`FluxClient`: submits jobs, tracks them, and resolves them by polling or callbacks."""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import random
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Generator,
    Iterable,
    Mapping,
)
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import msgspec

from ._config import Limits, PollPolicy, RetryPolicy, Timeouts, Webhooks
from ._download import Downloader
from ._errors import (
    ClientStateError,
    ConfigurationError,
    FluxError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    JobUnknownError,
    Phase,
    RateLimitedError,
    RequestError,
    ValidationError,
)
from ._models import (
    Event,
    EventKind,
    Generation,
    GenerationRequest,
    JobSnapshot,
    JobStatus,
    Outcome,
)
from ._registry import Entry, Registry
from ._retry import RetryBudget, TokenBucket, retry_wait, wait_table
from ._scheduler import PollScheduler
from ._transport import Transport
from .providers._base import HTTPRequest, HTTPResponse, Prepared, Provider, Update

if TYPE_CHECKING:
    from aiohttp import web

    from ._webhooks import CallbackRouter, WebhookResponse

__all__ = ["FluxClient", "Job"]

logger = logging.getLogger("flux_async")

_REQUEST_FIELDS = tuple(
    name for name in GenerationRequest.__struct_fields__ if name != "prompt"
)


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class Job:
    """A handle on one submitted job: its ids, its state, and its result.

    ``await job`` (or ``await job.result(timeout=...)``) returns the `Generation` or raises
    the error that ended the job.
    """

    __slots__ = ("_entry",)

    def __init__(self, entry: Entry) -> None:
        self._entry = entry

    def __repr__(self) -> str:
        entry = self._entry
        return (
            f"<Job {entry.local_id} {entry.provider} {entry.status.value}"
            f"{f' id={entry.job_id}' if entry.job_id else ''}>"
        )

    @property
    def local_id(self) -> str:
        """The client's own id for the job (also in its callback address)."""
        return self._entry.local_id

    @property
    def id(self) -> str | None:
        """The provider's id for the job, once it accepted it."""
        return self._entry.job_id

    @property
    def status(self) -> JobStatus:
        """The job's status now."""
        return self._entry.status

    @property
    def cost(self) -> Any:
        """What the provider charged (a `Decimal` in its unit), when it said."""
        return self._entry.cost

    def done(self) -> bool:
        """Whether the job has reached a terminal state."""
        return self._entry.status.is_terminal

    def snapshot(self) -> JobSnapshot:
        """Return an immutable view of the job now."""
        return self._entry.snapshot()

    # The public API takes a timeout (as asyncio.Future.result-like handles do); it is
    # implemented with anyio.fail_after.
    async def result(self, timeout: float | None = None) -> Generation:  # noqa: ASYNC109
        """Wait for the job to end and return its `Generation`.

        Args:
            timeout: seconds to wait; on expiry `TimeoutError` is raised and the job goes on
                (its own deadline is `PollPolicy.timeout`).

        Raises:
            JobError: the job ended failed, timed out, cancelled or unknown.
            ProviderError: the provider's answer about the job could not be used (e.g.
                `UnknownStatusError`, carrying the raw payload); the job ended ``failed``.
        """
        entry = self._entry
        if not entry.status.is_terminal:
            if entry.waiter is None:
                entry.waiter = asyncio.get_running_loop().create_future()
            with anyio.fail_after(timeout):
                # shield: one waiter cancelled by its timeout must not cancel the others.
                await asyncio.shield(entry.waiter)
        return outcome_of(entry)

    def __await__(self) -> Generator[Any, None, Generation]:
        return self.result().__await__()


def outcome_of(entry: Entry) -> Generation:
    """Return the `Generation` of a finished entry, or raise the error that ended it."""
    if entry.status is JobStatus.SUCCEEDED:
        return Generation(
            images=entry.images,
            provider=entry.provider,
            model=entry.model,
            job_id=entry.job_id or "",
            local_id=entry.local_id,
            cost=entry.cost,
            seed=entry.seed,
        )
    if entry.error is not None:
        raise entry.error
    raise JobFailedError(  # pragma: no cover - every terminal path records an error
        f"job {entry.local_id} ended {entry.status.value}",
        provider=entry.provider,
        job=entry.snapshot(),
    )


class FluxClient:
    """An asyncio client for one hosted FLUX provider.

    Use it as an async context manager; nothing happens on the network until it is opened::

        async with FluxClient(ShortAPI()) as client:
            generation = await client.generate("a red fox", aspect_ratio="16:9")

    Args:
        provider: the provider to talk to (`ShortAPI`, ...), holding its API key.
        limits: caps on jobs in flight, connections, and poll and create rates.
        poll: when jobs are polled and their deadline.
        retry: how failed requests are retried (a create only when provably not acted on).
        timeouts: network timeouts.
        session: an `aiohttp.ClientSession` to use; the client never closes one passed in.
        webhooks: receive provider callbacks (ShortAPI, PiAPI) instead of polling; see
            `Webhooks`. AI/ML API answers synchronously and takes none.
        seed: seeds the jitter, for reproducible schedules in tests.
    """

    def __init__(
        self,
        provider: Provider,
        *,
        limits: Limits | None = None,
        poll: PollPolicy | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        session: aiohttp.ClientSession | None = None,
        webhooks: Webhooks | None = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(provider, Provider):
            raise TypeError(f"provider must be a flux_async Provider, got {provider!r}")
        if webhooks is not None:
            _check_webhooks(provider, webhooks)
        self._webhooks = webhooks
        self._receiver: Any = None
        self._callback_base: str | None = None
        self._router: CallbackRouter | None = None
        self._provider = provider
        self._limits = limits or provider.default_limits
        self._poll_policy = poll or PollPolicy()
        self._retry_policy = retry or RetryPolicy()
        self._timeouts = timeouts or Timeouts()
        self._session = session
        self._rng = random.Random(seed)
        self._state = _State.UNOPENED
        self._registry = Registry(
            clock=time.time, on_finished=self._on_finished, on_change=self._on_change
        )
        self._subscribers: list[Callable[[Event], None]] = []
        self._creates: dict[str, asyncio.Task[Any]] = {}
        if webhooks is not None:
            from ._webhooks import CallbackRouter

            self._router = CallbackRouter(
                provider=provider,
                registry=self._registry,
                config=webhooks,
                apply=self._apply,
                verify=self._request_verification,
            )
        self._retry_budget = RetryBudget(
            ratio=self._retry_policy.budget_ratio, reserve=self._retry_policy.budget_reserve
        )
        self._retry_table = wait_table(
            self._retry_policy.wait_initial,
            self._retry_policy.wait_exp_base,
            self._retry_policy.wait_max,
        )
        self._create_rate = (
            TokenBucket(self._limits.creates_per_second)
            if self._limits.creates_per_second
            else None
        )
        self._creates_paused_until = 0.0
        self._total_cost = Decimal(0)
        self._tasks: set[asyncio.Task[Any]] = set()
        # Built in __aenter__: they need a running event loop.
        self._transport: Transport | None = None
        self._scheduler: PollScheduler | None = None
        self._http_slots: asyncio.Semaphore | None = None
        self._job_slots: asyncio.Semaphore | None = None
        self._downloader: Downloader | None = None

    def __repr__(self) -> str:
        return f"<FluxClient {self._provider!r} {self._state.value}>"

    @property
    def provider(self) -> Provider:
        """The provider this client talks to."""
        return self._provider

    @property
    def total_cost(self) -> Decimal:
        """The running total of what the provider reported charging for finished jobs.

        In the provider's own unit (USD for ShortAPI, quota points for PiAPI, credits for
        AI/ML API); jobs whose charge was never reported add nothing.
        """
        return self._total_cost

    @property
    def outstanding(self) -> int:
        """Jobs submitted (or being submitted) and not yet finished."""
        return self._registry.active

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> FluxClient:
        if self._state is not _State.UNOPENED:
            raise ClientStateError(
                "a FluxClient can be opened only once; create a new one",
                provider=self._provider.name,
            )
        self._state = _State.OPEN
        # Semaphores, not CapacityLimiters: a poll's slot is taken by the scheduler's task
        # and given back by the poll's own task. asyncio's, not anyio's, on this per-request
        # path: anyio's acquire always yields to the event loop, an extra loop turn and
        # ~11 us per request even when a slot is free (benchmarks/README.md).
        self._http_slots = asyncio.Semaphore(self._limits.max_connections)
        self._job_slots = asyncio.Semaphore(self._limits.max_jobs_in_flight)
        self._transport = Transport(
            limits=self._limits, timeouts=self._timeouts, session=self._session
        )
        await self._transport.open()
        slots = self._http_slots
        self._scheduler = PollScheduler(
            policy=self._poll_policy,
            first_wait=self._poll_policy.wait_first or self._provider.typical_latency,
            polls_per_second=self._limits.polls_per_second,
            acquire_slot=slots.acquire,
            release_slot=slots.release,
            poll=self._poll,
            on_deadline=self._on_deadline,
            rng=self._rng if self._poll_policy.wait_jitter else None,
        )
        self._scheduler.start()
        self._downloader = Downloader(
            limits=self._limits, timeouts=self._timeouts, retry=self._retry_policy, rng=self._rng
        )
        if self._webhooks is not None:
            self._callback_base = self._webhooks.public_url
            if self._webhooks.serve:
                from ._webhooks import WebhookReceiver

                self._receiver = WebhookReceiver(self.handle_webhook, self._webhooks)
                try:
                    own_url = await self._receiver.start()
                except OSError as exc:
                    await self.aclose()
                    raise ConfigurationError(
                        f"the webhook receiver cannot listen on {self._webhooks.host}:"
                        f"{self._webhooks.port}: {exc}",
                        provider=self._provider.name,
                    ) from exc
                self._callback_base = self._callback_base or own_url
            self._callback_base = (self._callback_base or "").rstrip("/")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client: cancel jobs still in flight, stop polling, close the session.

        Jobs not finished end ``cancelled``. Calling it again does nothing.
        """
        if self._state is _State.CLOSED:
            return
        was_open = self._state is _State.OPEN
        self._state = _State.CLOSED
        if not was_open:
            return
        if self._receiver is not None:
            await self._receiver.stop()
        for entry in self._registry.entries():
            self.cancel_job(entry, "the client closed")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if self._scheduler is not None:
            await self._scheduler.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._downloader is not None:
            await self._downloader.close()
        if self._transport is not None:
            await self._transport.close()

    def _require_open(self) -> None:
        if self._state is not _State.OPEN:
            raise ClientStateError(
                "the client is not open: use `async with FluxClient(...) as client:`"
                if self._state is _State.UNOPENED
                else "the client is closed",
                provider=self._provider.name,
            )

    # -- public operations ----------------------------------------------------------------------

    async def generate(self, prompt: str, /, **params: Any) -> Generation:
        """Submit a job and wait for its result (see `submit` for the parameters)."""
        job = await self.submit(prompt, **params)
        return await job.result()

    async def submit(self, prompt: str, /, **params: Any) -> Job:
        """Submit one generation job; return once the provider accepted it.

        Args:
            prompt: what to draw.
            params: ``image_url``, ``aspect_ratio``, ``width``, ``height``, ``num_images``,
                ``seed``, ``steps``, ``guidance``, ``strength``, ``model``, ``extra``; each
                provider validates what it supports before anything is sent.

        Raises:
            ValidationError: a parameter is unknown, of the wrong type, or not allowed by
                the provider. Nothing was sent.
            RequestError: the provider refused the create (no job exists).
            JobUnknownError: the create may or may not have reached the provider; it was
                not resent.
        """
        self._require_open()
        request = make_request(self._provider.name, prompt, params)
        prepared = self._provider.prepare(request)
        return Job(await self.start_job(request, prepared))

    async def start_job(self, request: GenerationRequest, prepared: Prepared) -> Entry:
        """Allocate a job, send its create, and return once that settled.

        Cancelling the caller does not cancel the create: a request already on its way may
        create a paid job, so it runs to its end in a task of the client's and the job stays
        tracked.

        Raises:
            the error that ended the job before the provider accepted it.
        """
        entry = await self.begin_job(request, prepared)
        task = self._creates.get(entry.local_id)
        if task is not None and not self._provider.synchronous:
            # asyncio.wait, not shield: the caller's cancellation must not reach the create,
            # and the create's own cancellation (at close) must not surface as CancelledError.
            await asyncio.wait((task,))
        if entry.job_id is None and entry.status.is_terminal:
            assert entry.error is not None
            raise entry.error
        return entry

    async def begin_job(self, request: GenerationRequest, prepared: Prepared) -> Entry:
        """Allocate a job (waiting for a slot) and start its create; return at once.

        The entry, with its local id and callback token, exists before the create is sent.
        """
        assert self._job_slots is not None
        await self._job_slots.acquire()
        if self._state is not _State.OPEN:
            self._job_slots.release()
            self._require_open()
        entry = self._registry.allocate(self._provider.name, prepared.model)
        entry.request = request
        callback_url = webhook_secret = None
        if self._callback_base is not None:
            from ._webhooks import new_secret

            token, entry.token_hash = new_secret()
            callback_url = f"{self._callback_base}/{self._provider.name}/{entry.local_id}/{token}"
            if self._provider.callback_secret_header is not None:
                webhook_secret, entry.secret_hash = new_secret()
        task = self._spawn(self._create(entry, prepared, callback_url, webhook_secret))
        self._creates[entry.local_id] = task
        task.add_done_callback(lambda _: self._creates.pop(entry.local_id, None))
        if self._provider.synchronous:
            # The answer to a synchronous create is the image itself: the job counts as
            # submitted once sent, and its deadline runs from now.
            self._registry.advance(entry, JobStatus.SUBMITTED)
            assert self._scheduler is not None
            self._scheduler.add(entry, first_wait=float("inf"))
        return entry

    async def job_result(self, entry: Entry) -> Generation:
        """Wait for a job entry to end; see `Job.result`."""
        return await Job(entry).result()

    def cancel_job(self, entry: Entry, reason: str) -> bool:
        """End a job ``cancelled`` locally (providers offer no cancel for these jobs).

        A create still in flight is abandoned too. Returns whether the job was still open.
        """
        in_create = entry.status is JobStatus.ALLOCATED
        error = JobCancelledError(
            f"job {entry.local_id} cancelled: {reason}"
            + (
                " while its create request was in flight (the provider may have created it)"
                if in_create
                else f" (provider job id {entry.job_id})"
            ),
            provider=self._provider.name,
        )
        if not self._registry.advance(entry, JobStatus.CANCELLED, error=error):
            return False
        error.job = entry.snapshot()
        task = self._creates.pop(entry.local_id, None)
        if task is not None:
            task.cancel()
        return True

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback`` with every progress `Event`; return a function that stops it.

        Callbacks run synchronously in the event loop: keep them quick. An exception in
        one is logged and does not reach the client.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _emit(
        self, kind: EventKind, entry: Entry | None, detail: str | None = None
    ) -> None:
        if not self._subscribers:
            return
        event = Event(
            kind=kind,
            local_id=entry.local_id if entry is not None else None,
            job_id=entry.job_id if entry is not None else None,
            status=entry.status if entry is not None else None,
            provider=self._provider.name,
            time=time.monotonic(),
            detail=detail,
        )
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                logger.exception("event subscriber %r failed", callback)

    async def download(
        self,
        generation: Generation,
        directory: str | os.PathLike[str],
        *,
        prefix: str = "",
    ) -> tuple[Path, ...]:
        """Save a generation's images into ``directory`` and return their paths.

        Each image is streamed to a temporary file and renamed into place, so a file that
        exists is complete. The content type must be an image and the size at most
        `Limits.max_download_bytes`; transient failures are retried. No credentials are
        sent to the image host.

        Raises:
            DownloadError: an image could not be fetched or saved.
        """
        self._require_open()
        assert self._downloader is not None
        paths = await self._downloader.save(generation, directory, prefix=prefix)
        if self._subscribers:
            for path in paths:
                self._emit("downloaded", None, str(path))
        return paths

    def generate_many(
        self,
        requests: Iterable[str | GenerationRequest | Any] | AsyncIterable[Any],
        *,
        concurrency: int | None = None,
        budget: Decimal | float | str | None = None,
        download_to: str | os.PathLike[str] | None = None,
    ) -> AsyncGenerator[Outcome, None]:
        """Generate many images; yield an `Outcome` per input as each finishes.

        Args:
            requests: prompts, mappings of `submit` parameters (with ``"prompt"``), or
                `GenerationRequest`s, from any iterable or async iterable. It is read
                lazily, one item at a time.
            concurrency: jobs outstanding at once (default `Limits.max_jobs_in_flight`).
            budget: stop submitting once committed charges plus the next job's estimated
                cost would exceed this; the remaining inputs yield ``skipped`` outcomes
                carrying `BudgetExceededError`. Jobs already paid for still finish.
            download_to: save each job's images into this directory as soon as it
                finishes (see `download`); the paths are in `Outcome.files`.

        Every input yields exactly one outcome, failures included; nothing raises for one
        input. Leaving the loop early (``break``, an exception, cancellation) cancels the
        jobs still outstanding; wrap it in `contextlib.aclosing` to have that happen
        before the ``async for`` statement ends rather than shortly after.
        """
        from ._batch import generate_many

        self._require_open()
        if concurrency is None:
            concurrency = self._limits.max_jobs_in_flight
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        limit = None
        if budget is not None:
            try:
                limit = Decimal(str(budget))
            except ArithmeticError as exc:
                raise ConfigurationError(f"budget must be a number, got {budget!r}") from exc
            if not limit.is_finite() or limit < 0:
                raise ConfigurationError(f"budget must be a number >= 0, got {budget!r}")
        return generate_many(
            self, requests, concurrency=concurrency, budget=limit, download_to=download_to
        )

    # -- internals --------------------------------------------------------------------------------

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_finished(self, entry: Entry) -> None:
        if entry.cost is not None:
            self._total_cost += entry.cost
        if self._job_slots is not None:
            self._job_slots.release()
        self._registry.release(entry)
        if self._router is not None:
            self._router.remember_finished(entry)

    def _on_change(self, entry: Entry, previous: JobStatus) -> None:
        if not self._subscribers:
            return
        if entry.status.is_terminal:
            self._emit("finished", entry, str(entry.error) if entry.error else None)
        elif entry.status is JobStatus.SUBMITTED:
            self._emit("submitted", entry)
        else:
            self._emit("status", entry, previous.value)

    async def _send(self, request: HTTPRequest, *, long_read: bool = False) -> HTTPResponse:
        assert self._http_slots is not None and self._transport is not None
        async with self._http_slots:
            return await self._transport.send(
                request, provider=self._provider.name, long_read=long_read
            )

    async def _wait_for_create_lane(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pause = self._creates_paused_until - loop.time()
            if pause <= 0:
                break
            await asyncio.sleep(pause)
        if self._create_rate is not None:
            delay = self._create_rate.reserve(loop.time())
            if delay > 0:
                await asyncio.sleep(delay)

    async def _create(
        self,
        entry: Entry,
        prepared: Prepared,
        callback_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        provider = self._provider
        request = provider.build_create(
            prepared, callback_url=callback_url, webhook_secret=webhook_secret
        )
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            await self._wait_for_create_lane()
            if entry.status.is_terminal:
                return  # cancelled (client closing) before it was sent
            try:
                response = await self._send(request, long_read=provider.synchronous)
                accepted = provider.parse_create(response)
            except RequestError as error:
                if entry.status.is_terminal:
                    return
                wait = retry_wait(
                    error,
                    attempt=attempt,
                    policy=self._retry_policy,
                    table=self._retry_table,
                    rng=self._rng,
                )
                if isinstance(error, RateLimitedError):
                    # One 429 slows every create of this provider, not just this job.
                    pause = wait if wait is not None else self._retry_table[0]
                    self._creates_paused_until = max(
                        self._creates_paused_until, loop.time() + pause
                    )
                    self._emit("rate_limited", entry, f"creates paused for {pause:.2f}s")
                # A retry the provider scheduled itself (Retry-After, with the whole create
                # lane paused) is already paced; the budget guards the unpaced ones.
                paced = getattr(error, "retry_after", None) is not None
                if wait is not None and (paced or self._retry_budget.try_spend()):
                    logger.info(
                        "%s create of job %s failed (%s); retrying in %.2fs",
                        provider.name,
                        entry.local_id,
                        error,
                        wait,
                    )
                    self._emit("retried", entry, str(error))
                    await asyncio.sleep(wait)
                    continue
                if error.phase is Phase.AMBIGUOUS and callback_url is not None:
                    await self._await_orphan(entry, error)
                else:
                    self._fail_create(entry, error)
                return
            self._retry_budget.record_success()
            self._registry.accept(entry, accepted.job_id, accepted.cost)
            if accepted.update is not None:
                self._apply(entry, accepted.update)
            self._track(entry)
            return

    def _track(self, entry: Entry) -> None:
        """Start polling an accepted job (only as a safety net when callbacks will come)."""
        if entry.status.is_terminal:
            return
        assert self._scheduler is not None
        if self._webhooks is None:
            self._scheduler.add(entry)
            return
        self._scheduler.add(entry, first_wait=self._grace(), slow=True)
        if entry.hinted and not entry.verifying:
            # A callback beat the create response but named no job: check now.
            self._spawn(self._verify(entry))

    def _grace(self) -> float:
        assert self._webhooks is not None
        if self._webhooks.grace is not None:
            return self._webhooks.grace
        return max(60.0, 4 * self._provider.typical_latency)

    async def _await_orphan(self, entry: Entry, error: RequestError) -> None:
        """Give an ambiguous create's job the chance to call home before it ends unknown."""
        assert self._webhooks is not None
        window = self._webhooks.orphan_window
        if entry.job_id is None and not entry.status.is_terminal:
            entry.accepted = asyncio.get_running_loop().create_future()
            with anyio.move_on_after(window):
                await entry.accepted
        if entry.status.is_terminal:
            return
        if entry.job_id is not None:
            logger.info(
                "job %s: its create's answer was lost, but it called home as %s: adopted",
                entry.local_id,
                entry.job_id,
            )
            self._track(entry)
            return
        self._fail_create(entry, error, waited=window)

    def _fail_create(
        self, entry: Entry, error: RequestError, *, waited: float | None = None
    ) -> None:
        if error.phase is Phase.AMBIGUOUS:
            evidence = str(error)
            if waited is not None:
                evidence += f"; no callback came within {waited:g}s"
            unknown = JobUnknownError(
                f"job {entry.local_id}: the create may or may not have reached "
                f"{self._provider.name} ({evidence}); it was not resent, to avoid paying twice",
                provider=self._provider.name,
                evidence=evidence,
            )
            unknown.__cause__ = error
            self._registry.advance(entry, JobStatus.UNKNOWN, error=unknown)
            unknown.job = entry.snapshot()
            logger.warning("%s", unknown)
        else:
            self._registry.advance(entry, JobStatus.FAILED, error=error)

    def _apply(self, entry: Entry, update: Update) -> None:
        """Apply a provider update (from a poll or a callback) to an entry."""
        error: FluxError | None = None
        if update.status is JobStatus.FAILED:
            error = JobFailedError(
                f"job {entry.local_id} (provider id {entry.job_id}) failed"
                + (f": {update.error}" if update.error else ""),
                provider=entry.provider,
                reason=update.error,
            )
        self._registry.advance(
            entry,
            update.status,
            images=update.images,
            cost=update.cost,
            seed=update.seed,
            error=error,
        )
        if isinstance(error, JobFailedError):
            error.job = entry.snapshot()

    async def _poll(self, entry: Entry) -> None:
        assert self._transport is not None and self._scheduler is not None
        if entry.job_id is None or entry.status.is_terminal:
            return
        entry.polls += 1
        try:
            response = await self._transport.send(
                self._provider.build_query(entry.job_id), provider=self._provider.name
            )
            update = self._provider.parse_query(response)
        except RequestError as error:
            if entry.status.is_terminal:
                return
            if error.phase is Phase.DEFINITIVE:
                # e.g. an unknown status value: end the job rather than poll forever.
                self._registry.advance(entry, JobStatus.FAILED, error=error)
                return
            # A failed query is simply tried again later, by the job's backoff; beyond the
            # shared retry budget it waits the longest backoff step.
            at_least = float(getattr(error, "retry_after", None) or 0.0)
            if not self._retry_budget.try_spend():
                at_least = max(at_least, self._poll_policy.wait_max)
            self._scheduler.schedule_next(entry, at_least=at_least)
            return
        self._retry_budget.record_success()
        self._apply(entry, update)
        if not entry.status.is_terminal:
            self._scheduler.schedule_next(entry)

    # -- webhooks ---------------------------------------------------------------------------------

    async def handle_webhook(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> WebhookResponse:
        """Handle one callback request from any web framework; return (status, body).

        ``path`` is the request path ending in ``/{provider}/{local_id}/{token}``;
        ``headers`` any mapping (looked up case-insensitively); ``body`` the raw bytes
        (enforce `Webhooks.max_body_bytes` before reading it all, as the bundled receiver
        does). Answers: 200 (applied, duplicate or already finished), 404 (unknown job or
        wrong token, one uniform answer), 401 (PiAPI secret missing or wrong), 400
        (unreadable body), 409 (a valid token naming another job), 422 (an undocumented
        status: the job is checked with the provider), 405, 413. It never raises and never
        answers 5xx.
        """
        from ._webhooks import NOT_FOUND

        if self._router is None or self._state is not _State.OPEN:
            return NOT_FOUND
        return self._router.handle(method, path, headers, body)

    def _request_verification(self, entry: Entry) -> None:
        if entry.job_id is None:
            entry.hinted = True
        elif not entry.verifying and not entry.status.is_terminal:
            entry.verifying = True
            self._spawn(self._verify(entry))

    async def _verify(self, entry: Entry) -> None:
        """Ask the provider for a job's state after a callback (one authenticated query)."""
        assert self._http_slots is not None
        entry.verifying = True
        try:
            async with self._http_slots:
                await self._poll(entry)
        finally:
            entry.verifying = False

    def webhook_app(self) -> web.Application:
        """Return an aiohttp sub-application serving this client's callbacks.

        Mount it in your own app with ``app.add_subapp("/flux-webhooks", client.webhook_app())``
        and set `Webhooks.public_url` to where that prefix is reachable from outside.
        """
        from ._webhooks import make_app

        return make_app(self.handle_webhook, self._require_webhooks())

    def webhook_routes(self, prefix: str | None = None) -> list[web.RouteDef]:
        """Return routes for ``app.add_routes(...)`` under ``prefix`` (default the config's)."""
        from ._webhooks import make_routes

        config = self._require_webhooks()
        return make_routes(self.handle_webhook, config, prefix or config.prefix)

    def _require_webhooks(self) -> Webhooks:
        if self._webhooks is None:
            raise ConfigurationError(
                "this client has no webhooks: pass webhooks=Webhooks(...)",
                provider=self._provider.name,
            )
        return self._webhooks

    def _on_deadline(self, entry: Entry) -> None:
        error = JobTimeoutError(
            f"job {entry.local_id} (provider id {entry.job_id}) did not finish within "
            f"{self._poll_policy.timeout:g}s; it is no longer polled",
            provider=entry.provider,
        )
        if self._registry.advance(entry, JobStatus.TIMED_OUT, error=error):
            error.job = entry.snapshot()
            # A synchronous create still waiting for its answer is abandoned.
            task = self._creates.pop(entry.local_id, None)
            if task is not None:
                task.cancel()


def _check_webhooks(provider: Provider, webhooks: Webhooks) -> None:
    if not provider.supports_callbacks:
        raise ConfigurationError(
            f"{type(provider).__name__} answers synchronously and sends no callbacks; "
            "drop webhooks=",
            provider=provider.name,
        )
    if webhooks.trust_payload and provider.callback_secret_header is None:
        raise ConfigurationError(
            f"Webhooks.trust_payload needs a provider that signs each callback with a "
            f"per-job secret (PiAPI); {type(provider).__name__} callbacks carry none",
            provider=provider.name,
        )
    if not webhooks.serve and webhooks.public_url is None:
        raise ConfigurationError(
            "Webhooks(serve=False) needs public_url: the address where you mount the routes",
            provider=provider.name,
        )


def make_request(provider: str, prompt: Any, params: dict[str, Any]) -> GenerationRequest:
    """Build a `GenerationRequest`, turning unknown names and wrong types into errors."""
    unknown = sorted(set(params) - set(_REQUEST_FIELDS))
    if unknown:
        raise ValidationError(
            f"{provider}: unknown parameter {unknown[0]!r}; allowed: {', '.join(_REQUEST_FIELDS)} "
            "(provider-specific fields go in extra={...})",
            provider=provider,
            field=unknown[0],
            value=params[unknown[0]],
            allowed=", ".join(_REQUEST_FIELDS),
        )
    try:
        return msgspec.convert({"prompt": prompt, **params}, GenerationRequest)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = text.rsplit("$.", 1)[-1].split("[", 1)[0] if "$." in text else None
        raise ValidationError(
            f"{provider}: {text}",
            provider=provider,
            field=field,
            value=params.get(field) if field else prompt,
            allowed=None,
        ) from exc
