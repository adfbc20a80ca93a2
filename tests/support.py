"""Plain helpers shared by the tests (the fixtures are in ``conftest.py``).

Import them as ``from support import ...``: pytest puts ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import flux_async
import flux_async.testing
from flux_async import (
    AIMLAPI,
    FluxClient,
    PiAPI,
    PollPolicy,
    Provider,
    RetryPolicy,
    ShortAPI,
)
from flux_async.testing import FakeProvider

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "FAST_POLL",
    "FAST_RETRY",
    "KEY",
    "PROVIDERS",
    "ServeApp",
    "client_for",
    "tasks_from",
    "wait_until",
]

KEY = "test-key"

#: The ``serve_app`` fixture: serve an aiohttp app on loopback, return its base URL.
ServeApp = Callable[["web.Application"], Awaitable[str]]

#: One factory per provider, each pointed at a base URL (the fake's).
PROVIDERS: dict[str, Callable[[str], Provider]] = {
    "shortapi": lambda url: ShortAPI(KEY, base_url=url),
    "piapi": lambda url: PiAPI(KEY, base_url=url),
    "aimlapi": lambda url: AIMLAPI(KEY, base_url=url),
}

#: A fixed poll schedule fast enough for loopback jobs of tens of milliseconds.
FAST_POLL = PollPolicy(wait_first=0.05, wait_initial=0.02, wait_max=0.1, timeout=10)
#: Short backoff, enough attempts for a 429 storm.
FAST_RETRY = RetryPolicy(attempts=40, wait_initial=0.01, wait_max=0.05)


def client_for(provider_name: str, fake: FakeProvider, **kwargs: Any) -> FluxClient:
    """A client of ``provider_name`` pointed at ``fake``, with the fast policies by default."""
    kwargs.setdefault("poll", FAST_POLL)
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("seed", 0)
    return FluxClient(PROVIDERS[provider_name](fake.url), **kwargs)


def _code_file(task: asyncio.Task[Any]) -> Path | None:
    code = getattr(task.get_coro(), "cr_code", None)
    return None if code is None else Path(code.co_filename).resolve()


def tasks_from(
    package: ModuleType = flux_async,
    *,
    besides: Collection[asyncio.Task[Any]] = (),
    prefix: str = "",
) -> list[asyncio.Task[Any]]:
    """The running tasks, other than ``besides`` and the current one, whose coroutine is
    defined in ``package``'s directory (in modules whose name starts with ``prefix``).

    For ``flux_async`` (the default), the fake provider's own tasks (``flux_async.testing``)
    are left out: they belong to the server side of the test. Compares paths, not strings
    with ``/`` in them, so it works with any path separator.
    """
    root = Path(package.__file__ or "").resolve().parent
    fake = Path(flux_async.testing.__file__ or "").resolve().parent
    current = asyncio.current_task()
    found = []
    for task in asyncio.all_tasks():
        if task is current or task in besides:
            continue
        path = _code_file(task)
        if path is None or not path.is_relative_to(root) or not path.name.startswith(prefix):
            continue
        if package is flux_async and path.is_relative_to(fake):
            continue
        found.append(task)
    return found


async def wait_until(condition: Callable[[], bool], *, step: float = 0.01) -> None:
    """Wait until ``condition()`` holds (a counter of the fake, say), checking every ``step``
    seconds. Nothing is asserted about how long that takes; pytest-timeout bounds it."""
    while not condition():  # noqa: ASYNC110 - a counter of another component, not an event
        await asyncio.sleep(step)
