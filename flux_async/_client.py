"""`FluxClient`: configuration, lifecycle, and the public verbs; the lanes do the work."""

from __future__ import annotations

import contextlib
import enum
import os
import random
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Collection, Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from ._batch import generate_many
from ._batch_inputs import check_batch_arguments, journal_options
from ._callbacks import NOT_FOUND, WebhookResponse, check_webhooks
from ._config import Limits, PollPolicy, RetryPolicy, Timeouts, Webhooks
from ._errors import ClientStateError, ConfigurationError
from ._events import EventBus
from ._images import Uploader, resolve_image_input
from ._job import Job
from ._latency import LatencyEstimate
from ._models import (
    Event,
    EventKind,
    Generation,
    GenerationRequest,
    Image,
    Outcome,
    SubmitParams,
    build_request,
)
from ._registry import Entry, Registry
from ._store import JobStore
from ._wiring import Parts, Settings, open_parts
from .providers._base import Provider

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # annotations only: typing_extensions is not a runtime dependency
    from typing_extensions import Unpack

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["FluxClient", "Job"]


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


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
        timeouts: network timeouts, and the grace `aclose` gives creates already sent.
        session: an `aiohttp.ClientSession` to use; the client never closes one passed in.
        webhooks: receive provider callbacks (ShortAPI, PiAPI) instead of polling; see
            `Webhooks`. AI/ML API answers synchronously and takes none.
        seed: seeds the jitter, for reproducible schedules in tests.
        uploader: ``async def upload(data: bytes, content_type: str) -> str`` storing a
            local image (a path, bytes or ``data:`` URL given as ``image_url``) and
            returning its http(s) URL, for models that take no inline image.
        store: a job store (`MemoryStore`, `SQLiteJournal`, ...) recording every job this
            client submits outside a journaled batch, and where `attach` looks ids up.
            Default: none (jobs live in memory only, and nothing is kept once they end).
            The learned latencies are loaded from it when the client opens and saved in it
            when it closes.
        latency: learned latencies to start from (`latency_state` of an earlier client),
            so polling is well placed from the first job.
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
        uploader: Uploader | None = None,
        store: JobStore | None = None,
        latency: Mapping[str, bytes] | None = None,
    ) -> None:
        if not isinstance(provider, Provider):
            raise TypeError(f"provider must be a flux_async Provider, got {provider!r}")
        if webhooks is not None:
            check_webhooks(provider, webhooks)
        if uploader is not None and not callable(uploader):
            raise ConfigurationError(f"uploader must be an async callable, got {uploader!r}")
        self._provider = provider
        self._settings = Settings(
            provider=provider,
            limits=limits or provider.default_limits,
            poll=poll or PollPolicy(),
            retry=retry or RetryPolicy(),
            timeouts=timeouts or Timeouts(),
            webhooks=webhooks,
            session=session,
            rng=random.Random(seed),
            store=store,
        )
        self._uploader = uploader
        self._latency = dict(latency or {})
        self._state = _State.UNOPENED
        self._events = EventBus(provider.name)
        self._registry = Registry(
            clock=time.time, on_finished=self._on_finished, on_change=self._events.on_change
        )
        self._total_cost = Decimal(0)
        self._stack = contextlib.AsyncExitStack()
        self._parts: Parts | None = None  # built in __aenter__: they need a running loop

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
        try:
            self._parts = await open_parts(
                self._stack,
                self._settings,
                registry=self._registry,
                events=self._events,
                latency=self._latency,
                report_limits=self._report_limits,
                download=self._download_for_batch,
                is_open=lambda: self._state is _State.OPEN,
                handle_webhook=self.handle_webhook,
            )
        except BaseException:
            self._state = _State.CLOSED
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client: settle creates already sent, cancel the rest, close the session.

        Creates already on the wire get up to `Timeouts.close_grace` seconds to be answered,
        so a job the provider created is known by its id; then every job not finished ends
        ``cancelled`` (its `JobCancelledError` and snapshot carry the provider id when
        known). Calling it again does nothing.
        """
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        await self._stack.aclose()

    def _require_open(self) -> Parts:
        if self._state is not _State.OPEN or self._parts is None:
            raise ClientStateError(
                "the client is not open: use `async with FluxClient(...) as client:`"
                if self._state is _State.UNOPENED
                else "the client is closed",
                provider=self._provider.name,
            )
        return self._parts

    # -- public operations ----------------------------------------------------------------------

    async def generate(self, prompt: str, /, **params: Unpack[SubmitParams]) -> Generation:
        """Submit a job and wait for its result (see `submit` for the parameters)."""
        job = await self.submit(prompt, **params)
        return await job.result()

    async def submit(self, prompt: str, /, **params: Unpack[SubmitParams]) -> Job:
        """Submit one generation job; return once the provider accepted it.

        Args:
            prompt: what to draw.
            params: the keywords of `SubmitParams`: ``image_url`` (an http(s) URL, a
                ``data:`` URL, a local file path, or the image's bytes; local images are
                size-checked and sent inline or through ``uploader=``), ``aspect_ratio``,
                ``width``, ``height``, ``num_images``, ``seed``, ``steps``, ``guidance``,
                ``strength``, ``model``, ``extra``. Type checkers flag a misspelt or
                mistyped one; each provider validates what it supports before anything
                is sent.

        Raises:
            ValidationError: a parameter is unknown, of the wrong type, or not allowed by
                the provider. Nothing was sent.
            RequestError: the provider refused the create (no job exists).
            JobUnknownError: the create may or may not have reached the provider; it was
                not resent.
        """
        parts = self._require_open()
        provider = self._provider
        request = build_request(provider.name, prompt, dict(params))
        request = await resolve_image_input(
            request, provider, self._uploader, self._settings.limits
        )
        return Job(await parts.creates.start(request, provider.prepare(request)))

    def subscribe(
        self, callback: Callable[[Event], None], *, kinds: Collection[EventKind] | None = None
    ) -> Callable[[], None]:
        """Call ``callback`` with progress `Event`s; return a function that stops it.

        Args:
            callback: called with each event.
            kinds: only these kinds (e.g. ``{"finished"}``). Without it, every per-job
                kind; ``"limits"`` (a discovered limit changed, no job attached) is
                delivered only to subscribers that name it.

        Callbacks run synchronously in the event loop: keep them quick. An exception in
        one is logged and does not reach the client.
        """
        return self._events.subscribe(callback, kinds=kinds)

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
        paths = await self._require_open().downloader.save(generation, directory, prefix=prefix)
        if self._events:
            for path in paths:
                self._events.emit("downloaded", None, str(path))
        return paths

    async def read(self, image: Image) -> bytes:
        """Fetch one image and return its bytes (``Image.read`` over the client's session).

        Checked like `download`: no credentials sent, an image content type, at most
        `Limits.max_download_bytes`, transient failures retried; a ``data:`` URL is decoded
        locally. ``image.with_size(data)`` then fills in a size the provider left out.

        Raises:
            DownloadError: the image could not be fetched, is not an image, or is too big.
        """
        return await self._require_open().downloader.read(image.url, self._provider.name)

    async def _download_for_batch(
        self, generation: Generation, directory: str | os.PathLike[str], prefix: str
    ) -> tuple[Path, ...]:
        return await self.download(generation, directory, prefix=prefix)

    def generate_many(
        self,
        requests: Iterable[str | GenerationRequest | Any] | AsyncIterable[Any],
        *,
        concurrency: int | None = None,
        budget: Decimal | float | str | None = None,
        download_to: str | os.PathLike[str] | None = None,
        price_per_job: Decimal | float | str | None = None,
        journal: str | os.PathLike[str] | JobStore | None = None,
        resubmit_unknown: bool = False,
        new_batch: bool = False,
        batch_id: str | None = None,
        repoll_timed_out: bool = True,
    ) -> AsyncGenerator[Outcome, None]:
        """Generate many images; yield an `Outcome` per input as each finishes.

        Args:
            requests: prompts, mappings of `submit` parameters (with ``"prompt"``), or
                `GenerationRequest`s, from any iterable or async iterable. It is read
                lazily, one item at a time.
            concurrency: jobs outstanding at once (default `Limits.max_jobs_in_flight`, or
                1,000 without that ceiling; the discovered limit admits them).
            budget: committed charges (finished jobs plus a price for each job in flight,
                ambiguous creates counted as paid) never exceed this; the remaining inputs
                yield ``skipped`` outcomes carrying `BudgetExceededError`.
            download_to: save each job's images into this directory as soon as it
                finishes (see `download`); the paths are in `Outcome.files`.
            price_per_job: what one job costs, for providers without a published price
                (PiAPI, AI/ML API); without it, such a budgeted batch sends one job at a
                time until the first charge is reported.
            journal: a file path (a `SQLiteJournal` is opened there) or a `JobStore`. Every
                job is recorded before its create is sent, so a batch killed at any moment
                can be resumed: run it again over the same inputs with the same journal.
                Inputs that finished are yielded from the journal (``Outcome.resumed``)
                and not sent; jobs the provider accepted are polled to their end (their
                images downloaded if they were not); creates whose answer was lost are
                found again where the provider allows it (a callback to the recorded
                address, PiAPI's task history) and otherwise end ``unknown``.
            resubmit_unknown: send again the inputs whose earlier create may or may not
                have reached the provider (``unknown``). This can pay for a job twice.
            new_batch: start a new batch in the journal instead of resuming its latest.
            batch_id: the batch to run or resume (default: the journal's latest batch).
            repoll_timed_out: with a journal, jobs an earlier run gave up on
                (``timed_out``: accepted, so paid) are polled again by their provider id;
                False yields them as they ended.

        Raises (from the first step of the loop, before anything is sent):
            JournalError: the journal cannot be opened (corrupt, newer schema, in use).
            JournalMismatchError: an input differs from the one the journal recorded at
                its index (``.index`` names it); nothing was sent.

        Every input yields exactly one outcome, failures included; nothing raises for one
        input. Leaving the loop early (``break``, an exception, cancellation) cancels the
        jobs still outstanding; wrap it in `contextlib.aclosing` to have that happen
        before the ``async for`` statement ends rather than shortly after.
        """
        parts = self._require_open()
        limits = self._settings.limits
        concurrency, limit, price = check_batch_arguments(
            concurrency, budget, price_per_job, limits.max_jobs_in_flight or 1000
        )
        options = journal_options(journal, batch_id, new_batch, resubmit_unknown, repoll_timed_out)
        return generate_many(
            parts.creates,
            requests,
            concurrency=concurrency,
            budget=limit,
            download_to=download_to,
            price_per_job=price,
            uploader=self._uploader,
            limits=limits,
            journal=options,
        )

    async def attach(self, job_id: str, *, model: str | None = None) -> Job:
        """Return a `Job` for a job the provider knows as ``job_id`` (one you kept).

        It is polled (its callbacks cannot reach this client: they went to the address of
        the client that created it) and awaited like any other: ``await job``,
        ``job.cancel()``. A job this client already tracks returns the same handle's job.
        With a ``store`` holding the job's record, its model and callback address come
        back too.

        Args:
            model: the model to report in the `Generation` (default: recorded, else "").

        Raises:
            ConfigurationError: the provider answers synchronously (AI/ML API): there is
                no job to attach to.
            ValidationError: ``job_id`` is not a non-empty string.
        """
        return Job(await self._require_open().creates.attach(job_id, model=model))

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
        answers 5xx, except 503 when a store shared by replicas (`RedisStore`) is
        unreachable and the callback may be another replica's.
        """
        parts = self._parts
        if parts is None or parts.router is None or self._state is not _State.OPEN:
            return NOT_FOUND
        answer = parts.router.handle(method, path, headers, body)
        if answer is NOT_FOUND and parts.replica is not None:
            # Perhaps another replica's job (a shared RedisStore): route it to its owner.
            answer = await parts.replica.handle_webhook(method, path, headers, body)
        return answer

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
        if self._settings.webhooks is None:
            raise ConfigurationError(
                "this client has no webhooks: pass webhooks=Webhooks(...)",
                provider=self._provider.name,
            )
        return self._settings.webhooks

    # -- internals --------------------------------------------------------------------------------

    def latency_state(self) -> dict[str, bytes]:
        """What the client learned about its jobs' latencies, per model, as bytes.

        Pass it as ``FluxClient(..., latency=...)`` to a later client (or keep it in a job
        store: a client with ``store=`` does so itself) so its polls are well placed from
        the first job. Keys are ``latency:{provider}:{model}``.
        """
        return self._parts.poll_lane.latency_state() if self._parts is not None else {}

    def latency_estimate(self, model: str) -> LatencyEstimate | None:
        """The client's latency estimate for ``model`` (its quantiles, `repr`), if any."""
        return self._parts.poll_lane.estimate(model) if self._parts is not None else None

    @property
    def limits(self) -> dict[str, float | None]:
        """The limits the client discovered and applies now (``None``: not limited):
        ``jobs_in_flight``, ``connections``, ``requests_per_second`` (the discovered rate
        shared by creates and polls), ``creates_per_second`` and ``polls_per_second`` (what
        each kind may use: the shared rate under its `Limits` ceiling).
        A ``limits`` event reports each notable change to subscribers asking for that kind."""
        return self._parts.lane.current_limits() if self._parts is not None else {}

    def _report_limits(self, detail: str) -> None:
        # Only to subscribers that asked for the kind: an event with no job (no status)
        # would surprise a subscriber written for per-job events.
        if self._events.wants("limits"):
            self._events.emit("limits", None, detail)

    def _on_finished(self, entry: Entry) -> None:
        if entry.cost is not None:
            self._total_cost += entry.cost
        parts = self._parts
        if parts is not None:
            parts.poll_lane.learn(entry)
            parts.lane.job_slots.release()
        self._registry.release(entry)
        if parts is not None and parts.router is not None:
            parts.router.remember_finished(entry)
