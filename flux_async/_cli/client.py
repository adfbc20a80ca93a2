"""The client a command runs with: provider, limits, polling, webhooks; the fake included.

The command reads no environment variable itself: a provider built without ``--api-key``
reads its own (``SHORTAPI_KEY``...) and raises `ConfigurationError` when it is not set,
which becomes the one-line usage error below.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from flux_async import (
    AIMLAPI,
    ConfigurationError,
    FluxClient,
    PiAPI,
    PollPolicy,
    Provider,
    ShortAPI,
    Webhooks,
)
from flux_async.testing import FakeProvider, Faults

from .common import UsageError
from .parser import FAKE

__all__ = [
    "FAKE_KEY",
    "PROVIDERS",
    "ClientOpener",
    "ProviderOpener",
    "client_kwargs",
    "client_opener",
    "provider_opener",
]

PROVIDERS: dict[str, type[Provider]] = {"shortapi": ShortAPI, "piapi": PiAPI, "aimlapi": AIMLAPI}
#: Create-to-ready latency of ``--provider fake``, in seconds (``--fake-latency``).
FAKE_LATENCY = (0.2, 1.0)
#: The key the adapters send to the fake (which takes any).
FAKE_KEY = "fake"

ClientOpener = Callable[[], AbstractAsyncContextManager[FluxClient]]
ProviderOpener = Callable[[], AbstractAsyncContextManager[Provider]]


def _webhooks(args: argparse.Namespace) -> Webhooks | None:
    """Return the webhook settings for the client, or None when none were asked for."""
    given = {
        name: value
        for name, value in (
            ("public_url", getattr(args, "webhook_public_url", None)),
            ("host", getattr(args, "webhook_host", None)),
            ("port", getattr(args, "webhook_port", None)),
            ("orphan_window", getattr(args, "orphan_window", None)),
        )
        if value is not None
    }
    return Webhooks(**given) if given else None


def poll_policy(args: argparse.Namespace) -> PollPolicy:
    """Return the `PollPolicy` of a command line (``--timeout``, ``--first-poll``...)."""
    # The library's learned default for every provider, the fake included: it scouts while
    # cold, so a fake job ready in a fraction of a second is noticed within one.
    poll = PollPolicy()
    changes: dict[str, Any] = {}
    if args.timeout is not None:
        changes["timeout"] = args.timeout
    if args.first_poll is not None:
        changes["wait_first"] = args.first_poll
    if args.poll_interval is not None:
        changes["wait_initial"] = changes["wait_max"] = args.poll_interval
    return dataclasses.replace(poll, **changes)


def client_kwargs(args: argparse.Namespace, provider: type[Provider]) -> dict[str, Any]:
    """Return `FluxClient`'s keyword arguments (all but the provider) for a command line.

    Raises:
        UsageError: webhook options for a provider that sends no callbacks.
        ConfigurationError: a setting the client refuses (e.g. a bad webhook URL).
    """
    limits = provider.default_limits
    if args.provider == FAKE:
        # Loopback answers in microseconds: the real APIs' pacing would only slow it down.
        limits = dataclasses.replace(limits, max_connections=64, polls_per_second=500.0)
    concurrency = getattr(args, "concurrency", None)
    ceiling = limits.max_jobs_in_flight
    if concurrency is not None and ceiling is not None and concurrency > ceiling:
        limits = dataclasses.replace(limits, max_jobs_in_flight=concurrency)
    kwargs: dict[str, Any] = {"limits": limits, "poll": poll_policy(args)}
    webhooks = _webhooks(args)
    if webhooks is not None:
        if not provider.supports_callbacks:
            raise UsageError(
                f"{provider.name} sends no callbacks: drop the --webhook-* and "
                "--orphan-window options"
            )
        kwargs["webhooks"] = webhooks
    return kwargs


def _provider(args: argparse.Namespace) -> Provider:
    provider_class = PROVIDERS[args.provider]
    if args.api_key is None:
        try:
            provider_class()  # reads its own environment variable
        except ConfigurationError:
            raise UsageError(
                f"{provider_class.env_var} is not set; pass --api-key or use --provider fake"
            ) from None
    return provider_class(args.api_key, base_url=args.base_url)


def client_opener(args: argparse.Namespace) -> tuple[ClientOpener, str]:
    """Check the provider options; return what opens the client, and the provider's name.

    Nothing is sent and no server is started until the opener is entered.

    Raises:
        UsageError: options that cannot work together, or no API key.
        ConfigurationError: the provider or the client refused a setting.
    """
    if args.provider == FAKE:
        if args.api_key is not None or args.base_url is not None:
            raise UsageError("--api-key and --base-url do not apply to --provider fake")
        return _fake_opener(args), FAKE
    _check_no_fake_options(args)
    provider = _provider(args)
    client = FluxClient(provider, **client_kwargs(args, type(provider)))
    return (lambda: client), provider.name


def provider_opener(args: argparse.Namespace) -> tuple[ProviderOpener, dict[str, Any]]:
    """Check the provider options; return what opens the provider (starting the fake for
    ``--provider fake``) and `FluxClient`'s other keyword arguments (for a worker).

    Raises:
        UsageError: options that cannot work together, or no API key.
        ConfigurationError: the provider or the client refused a setting.
    """
    if args.provider == FAKE:
        if args.api_key is not None or args.base_url is not None:
            raise UsageError("--api-key and --base-url do not apply to --provider fake")
        provider_class = PROVIDERS[args.fake_as or "shortapi"]
        kwargs = client_kwargs(args, provider_class)
        # Settings the client refuses are reported before the fake starts.
        FluxClient(provider_class(FAKE_KEY, base_url="http://127.0.0.1"), **kwargs)

        @contextlib.asynccontextmanager
        async def open_fake() -> AsyncIterator[Provider]:
            async with _fake_server(args) as fake:
                yield provider_class(FAKE_KEY, base_url=fake.url)

        return open_fake, kwargs
    _check_no_fake_options(args)
    provider = _provider(args)
    kwargs = client_kwargs(args, type(provider))
    FluxClient(provider, **kwargs)

    @contextlib.asynccontextmanager
    async def given() -> AsyncIterator[Provider]:
        yield provider

    return given, kwargs


def _check_no_fake_options(args: argparse.Namespace) -> None:
    for option in ("fake_as", "fake_latency", "fake_faults"):
        if getattr(args, option) is not None:
            raise UsageError(f"--{option.replace('_', '-')} needs --provider fake")


def _fake_server(args: argparse.Namespace) -> FakeProvider:
    rate = args.fake_faults or 0.0
    # Transient faults a client survives, plus a few jobs that fail outright.
    faults = Faults(
        create_429=rate,
        query_5xx=rate,
        query_reset=rate / 2,
        create_5xx=rate / 4,  # half of these are 500s: the job ends unknown
        create_reset=rate / 4,  # ends unknown too: the client cannot tell it was not sent
        fail=rate / 4,
        retry_after=1.0,
    )
    latency = args.fake_latency or FAKE_LATENCY
    return FakeProvider(latency=latency, faults=faults, seed=args.fake_seed)


def _fake_opener(args: argparse.Namespace) -> ClientOpener:
    provider_class = PROVIDERS[args.fake_as or "shortapi"]
    kwargs = client_kwargs(args, provider_class)
    # Settings the client refuses are reported before the fake starts.
    FluxClient(provider_class(FAKE_KEY, base_url="http://127.0.0.1"), **kwargs)

    @contextlib.asynccontextmanager
    async def open_fake() -> AsyncIterator[FluxClient]:
        async with _fake_server(args) as fake:
            # The fake speaks every provider's wire format at once: any adapter can use it.
            provider = provider_class(FAKE_KEY, base_url=fake.url)
            async with FluxClient(provider, **kwargs) as client:
                yield client

    return open_fake
