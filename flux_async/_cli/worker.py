"""``flux-async worker --redis URL``: generate the inputs of batches queued on Redis.

A thin shell over `flux_async.workers.run_worker`: the provider and client options are the
other commands' (`provider_opener`), the limits shared by every worker of an account are
``--shared-*`` (`SharedLimits`).

Stopping: the first Ctrl-C (or SIGTERM, as an orchestrator sends) stops taking inputs and
finishes the ones in hand; a second Ctrl-C cancels the worker at once, leaving its inputs
pending in the stream, where another worker claims them after ``--min-idle`` (their
accepted jobs re-attached by provider id, never created again).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from flux_async.workers import SharedLimits, WorkerStats, run_worker

from .client import ProviderOpener, provider_opener
from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, PROG, UsageError, one_line
from .redis_link import check_url, open_redis, redis_errors, shown_url

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["shared_limits", "worker_command"]

#: Seconds between the status lines a worker prints while it has work (not with --quiet).
STATUS_INTERVAL = 10.0


def shared_limits(args: argparse.Namespace) -> SharedLimits | None:
    """Return the limits shared through Redis (``--shared-*``), or None when none is given."""
    given = {
        "requests_per_second": args.shared_requests_per_second,
        "creates_per_second": args.shared_creates_per_second,
        "polls_per_second": args.shared_polls_per_second,
        "max_jobs_in_flight": args.shared_jobs_in_flight,
    }
    given = {name: value for name, value in given.items() if value is not None}
    return SharedLimits(**given) if given else None


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _describe(stats: WorkerStats) -> str:
    return (
        f"{stats.finished} inputs finished ({stats.created} created, {stats.reattached} "
        f"re-attached, {stats.unknown} unknown, {stats.claimed} taken over from stopped "
        "workers)"
    )


class _Stopper:
    """Ctrl-C and SIGTERM, in the event loop: stop taking inputs, then stop at once."""

    def __init__(self, stats: WorkerStats, name: str) -> None:
        self.stop = asyncio.Event()
        self.stats = stats
        self.name = name
        self.signal: int | None = None
        self.interrupted = False
        self.abandoned: int | None = None
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._main = task
        self._installed: list[int] = []

    def install(self) -> None:
        for number in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(number) is signal.SIG_IGN:
                continue
            try:
                self._loop.add_signal_handler(number, self._on_signal, number)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # no loop signal handlers here: Python's own KeyboardInterrupt
            self._installed.append(number)

    def uninstall(self) -> None:
        for number in self._installed:
            self._loop.remove_signal_handler(number)
        self._installed.clear()

    def _on_signal(self, number: int) -> None:
        self.interrupted = self.interrupted or number == signal.SIGINT
        if self.signal is None:
            self.signal = number
            self.stop.set()
            _say(
                f"worker {self.name}: stopping: finishing the {self.stats.working} inputs "
                "in hand (Ctrl-C again to stop at once and leave them to other workers)"
            )
        elif number == signal.SIGINT:
            self.abandoned = self.stats.working
            self.uninstall()
            self._main.cancel()


async def _status_lines(stats: WorkerStats, name: str) -> None:
    shown = ""
    while True:
        await asyncio.sleep(STATUS_INTERVAL)
        line = f"{stats.finished} finished, {stats.working} in hand"
        if line != shown:
            shown = line
            _say(f"worker {name}: {line}")


async def _work(
    args: argparse.Namespace,
    open_provider: ProviderOpener,
    client_options: dict[str, object],
    limits: SharedLimits | None,
    download_to: Path | None,
    name: str,
) -> int:
    stats = WorkerStats()
    stopper = _Stopper(stats, name)
    stopper.install()
    url = shown_url(args.redis)
    status: asyncio.Task[None] | None = None
    lost: str | None = None
    try:
        async with open_redis(args.redis) as redis, open_provider() as provider:
            where = "" if args.namespace == "flux" else f" (namespace {args.namespace})"
            _say(
                f"worker {name}: taking inputs from Redis at {url}{where}"
                + (f", images to {download_to}{os.sep}" if download_to is not None else "")
                + "; Ctrl-C stops"
            )
            if not args.quiet:
                status = asyncio.get_running_loop().create_task(_status_lines(stats, name))
            try:
                await run_worker(
                    redis,
                    provider,
                    namespace=args.namespace,
                    name=name,
                    concurrency=args.concurrency,
                    download_to=download_to,
                    shared_limits=limits,
                    min_idle=args.min_idle,
                    exit_when_idle=args.exit_when_idle,
                    stop=stopper.stop,
                    client_options=client_options,
                    stats=stats,
                )
            except redis_errors() as exc:
                lost = one_line(exc) or type(exc).__name__
    except asyncio.CancelledError:
        if stopper.abandoned is None:
            raise
    finally:
        stopper.uninstall()
        if status is not None:
            status.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await status
    if lost is not None:
        _say(f"worker {name}: lost Redis at {url}: {lost}; {_describe(stats)}")
        return EXIT_FAILED
    if stopper.abandoned is not None:
        _say(
            f"worker {name}: stopped at once: {_describe(stats)}; {stopper.abandoned} inputs "
            f"in hand left to other workers (taken over after {args.min_idle:g} s idle)"
        )
        return EXIT_INTERRUPTED
    why = "stopped" if stopper.signal is not None else "nothing left to do"
    _say(f"worker {name}: {why}: {_describe(stats)}")
    return EXIT_INTERRUPTED if stopper.interrupted else EXIT_OK


def worker_command(args: argparse.Namespace, console: Console | None) -> int:
    """Run ``flux-async worker``; return the exit status.

    Raises:
        UsageError: the options, the provider's key or Redis cannot work (nothing was taken
            from the queue).
    """
    check_url(args.redis)
    open_provider, client_options = provider_opener(args)
    limits = shared_limits(args)
    download_to = None if args.no_download else Path(args.out)
    if download_to is not None:
        try:
            download_to.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot write {download_to}: {exc.strerror or exc}") from exc
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    return asyncio.run(_work(args, open_provider, client_options, limits, download_to, name))
