"""Fixtures of the ``flux-async`` command's tests.

`main` runs its own event loop with `asyncio.run`, so the command's tests are synchronous.
A test that counts what reached a provider runs its own `FakeProvider` in a thread (its own
event loop) and points the command at it with ``--provider shortapi --base-url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flux_async._cli import main
from flux_async.testing import FakeProvider, Faults

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run the command in-process; return its exit status, stdout and stderr."""

    def run(*argv: str) -> tuple[int, str, str]:
        status = main(list(argv))
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


@pytest.fixture(autouse=True)
def _no_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("SHORTAPI_KEY", "PIAPI_KEY", "AIMLAPI_KEY"):
        monkeypatch.delenv(variable, raising=False)


@contextlib.contextmanager
def serve_fake(**options: Any) -> Iterator[FakeProvider]:
    """A FakeProvider served from a thread of its own (its own event loop), so that a
    command run in this process or another reaches it over loopback."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            box["fake"] = loop.run_until_complete(FakeProvider(**options).start())
        except BaseException as exc:  # reported by the test below
            box["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(box["fake"].aclose())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10), "the fake did not start"
    if "error" in box:
        raise box["error"]
    try:
        yield box["fake"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    """A FakeProvider served from a thread of its own; read its counters once a run ended.

    Its 429s ask for no wait (``Retry-After: 0``): the command's tests are not about pacing.
    """
    with serve_fake(latency=(0.01, 0.05), faults=Faults(retry_after=0)) as provider:
        yield provider
