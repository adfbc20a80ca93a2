"""Fixtures shared by the tests: the event loop backend, a fake provider, a provider per
parametrised run and a loopback server for a test's own aiohttp app.

Plain constants and helpers (``FAST_POLL``, ``FAST_RETRY``, ``PROVIDERS``, ``client_for``,
``tasks_from``) live in ``support.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from support import PROVIDERS, ServeApp

from flux_async.testing import FakeProvider


@pytest.fixture
def anyio_backend() -> str:
    # aiohttp is asyncio-only; the anyio plugin runs every async test on asyncio.
    return "asyncio"


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    """A FakeProvider on loopback with short, seeded latencies and no faults."""
    async with FakeProvider(latency=(0.02, 0.06), seed=11) as server:
        yield server


@pytest.fixture(params=sorted(PROVIDERS))
def provider_name(request: pytest.FixtureRequest) -> str:
    """Each of ``"aimlapi"``, ``"piapi"`` and ``"shortapi"`` in turn."""
    return str(request.param)


@pytest.fixture
async def serve_app() -> AsyncIterator[ServeApp]:
    """Serve an aiohttp app on a free loopback port; return its base URL.

    Every app served is cleaned up when the test ends (handlers still running are
    cancelled after 0.1 s).
    """
    runners: list[web.AppRunner] = []

    async def serve(app: web.Application) -> str:
        runner = web.AppRunner(app, shutdown_timeout=0.1, handle_signals=False, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield serve
    for runner in reversed(runners):
        await runner.cleanup()
