"""How an open `FluxClient`'s parts are built and connected.

`open_parts` builds them in dependency order and pushes each one's close onto the client's
`AsyncExitStack`, so they close in reverse: the replica link, the webhook receiver, creates
(settled within `Timeouts.close_grace`), the jobs' tasks, polling, the latency save,
downloads, the session.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from ._callbacks import CallbackRouter, WebhookResponse
from ._config import Limits, PollPolicy, RetryPolicy, Timeouts, Webhooks
from ._create import CreateLane, Download
from ._download import Downloader
from ._errors import ConfigurationError
from ._events import EventBus
from ._lane import Lane, Tasks
from ._poll import PollLane, load_latency, save_latency
from ._registry import Registry
from ._store import JobStore
from ._transport import Transport
from .providers._base import Provider

__all__ = ["Parts", "Settings", "open_parts"]

WebhookHandler = Callable[[str, str, Mapping[str, str], bytes], Awaitable[WebhookResponse]]


@dataclass(frozen=True, slots=True)
class Settings:
    """A client's configuration, fixed when it is built."""

    provider: Provider
    limits: Limits
    poll: PollPolicy
    retry: RetryPolicy
    timeouts: Timeouts
    webhooks: Webhooks | None
    session: aiohttp.ClientSession | None
    rng: random.Random
    store: JobStore | None


@dataclass(slots=True)
class Parts:
    """The parts of an open client. ``replica`` is set when the store is shared by replicas
    (`RedisStore`): it routes callbacks that belong to another replica's jobs."""

    lane: Lane
    poll_lane: PollLane
    creates: CreateLane
    downloader: Downloader
    router: CallbackRouter | None = None
    replica: Any = None


async def open_parts(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    *,
    registry: Registry,
    events: EventBus,
    latency: dict[str, bytes],
    report_limits: Callable[[str], None],
    download: Download,
    is_open: Callable[[], bool],
    handle_webhook: WebhookHandler,
) -> Parts:
    """Build, start and connect the parts; ``latency`` gains what the store held."""
    provider, limits, store = settings.provider, settings.limits, settings.store
    transport = Transport(limits=limits, timeouts=settings.timeouts, session=settings.session)
    await transport.open()
    stack.push_async_callback(transport.close)
    downloader = Downloader(
        limits=limits, timeouts=settings.timeouts, retry=settings.retry, rng=settings.rng
    )
    stack.push_async_callback(downloader.close)
    lane = Lane(
        provider=provider.name,
        limits=limits,
        retry=settings.retry,
        transport=transport,
        report=report_limits,
    )
    tasks = Tasks()
    poll_lane = PollLane(
        provider=provider,
        lane=lane,
        registry=registry,
        policy=settings.poll,
        webhooks=settings.webhooks,
        tasks=tasks,
        rng=settings.rng,
    )
    if store is not None:
        latency.update(await load_latency(store, provider.name))
        stack.push_async_callback(_save_latency, store, poll_lane, provider.name)
    for key, data in latency.items():
        poll_lane.load_latency(key, data)
    poll_lane.start()
    stack.push_async_callback(poll_lane.aclose)
    creates = CreateLane(
        provider=provider,
        lane=lane,
        registry=registry,
        poll_lane=poll_lane,
        events=events,
        tasks=tasks,
        retry=settings.retry,
        rng=settings.rng,
        webhooks=settings.webhooks,
        download=download,
        is_open=is_open,
    )
    creates.store = store
    stack.push_async_callback(tasks.aclose)
    stack.push_async_callback(creates.aclose, settings.timeouts.close_grace)
    parts = Parts(lane, poll_lane, creates, downloader)
    if settings.webhooks is not None:
        parts.router = await _open_webhooks(stack, settings, parts, registry, handle_webhook)
    join = getattr(store, "join", None)
    if join is not None:
        # Replicas sharing the store: re-attach the jobs this replica owned, read its
        # inbox of callbacks other replicas accepted for them.
        parts.replica = await join(provider, creates, parts.router, settings.webhooks)
        stack.push_async_callback(parts.replica.aclose)
    return parts


async def _open_webhooks(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    parts: Parts,
    registry: Registry,
    handle_webhook: WebhookHandler,
) -> CallbackRouter:
    # aiohttp.web is imported only by clients that serve callbacks.
    from ._webhooks import WebhookReceiver

    config = settings.webhooks
    assert config is not None
    router = CallbackRouter(
        provider=settings.provider,
        registry=registry,
        config=config,
        apply=registry.apply,
        verify=parts.poll_lane.verify_soon,
    )
    base = config.public_url
    if config.serve:
        receiver = WebhookReceiver(handle_webhook, config)
        try:
            own_url = await receiver.start()
        except OSError as exc:
            raise ConfigurationError(
                f"the webhook receiver cannot listen on {config.host}:{config.port}: {exc}",
                provider=settings.provider.name,
            ) from exc
        stack.push_async_callback(receiver.aclose)
        base = base or own_url
    parts.creates.callback_base = (base or "").rstrip("/")
    return router


async def _save_latency(store: JobStore, poll_lane: PollLane, provider: str) -> None:
    state = poll_lane.latency_state()
    if state:
        await save_latency(store, state, provider)
