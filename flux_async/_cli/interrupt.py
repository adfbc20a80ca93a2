"""Ctrl-C during ``flux-async batch``: `Interrupter` turns SIGINT into a clean stop inside
the event loop. The first Ctrl-C stops feeding new lines, cancels the downloads under way
and closes the client (whose jobs in flight then end ``cancelled``, with their provider
ids); a second one, or a close that takes longer than `CLOSE_GRACE` seconds, cancels the
run outright."""

from __future__ import annotations

import asyncio
import signal

from flux_async import FluxClient

from .batch_records import BatchRun

__all__ = ["CLOSE_GRACE", "Interrupter"]

#: Seconds the first Ctrl-C waits for the client to close before cancelling outright.
CLOSE_GRACE = 5.0


class Interrupter:
    """Turns SIGINT into a clean stop inside the event loop (see the module docstring).

    Once the run is winding down (`finishing`), what is left is quick and bounded: a
    further Ctrl-C only says so, and the one after that is Python's own KeyboardInterrupt.
    """

    def __init__(self, run: BatchRun) -> None:
        self._run = run
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._main = task
        self.client: FluxClient | None = None
        self.signals = 0
        self.closing: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._installed = False
        self._finishing = False

    def install(self) -> None:
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            return  # e.g. a background job of a shell script: Ctrl-C is not meant for us
        try:
            self._loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        except (NotImplementedError, RuntimeError, ValueError):
            # No loop signal handlers here (Windows, or not the main thread): asyncio.run
            # cancels the main task on Ctrl-C instead, and the lines left open are
            # recorded without their job ids.
            return
        self._installed = True

    def uninstall(self) -> None:
        self.finishing()
        if self._installed:
            self._loop.remove_signal_handler(signal.SIGINT)
            self._installed = False

    def finishing(self) -> None:
        """Note that the run is winding down: Ctrl-C no longer cancels anything."""
        self._finishing = True
        if self._watchdog is not None:
            self._watchdog.cancel()

    def _on_sigint(self) -> None:
        self.signals += 1
        run = self._run
        run.interrupted = run.tally.interrupted = True
        run.feed.stop()
        if self._finishing:
            run.display.note("finishing the manifest (Ctrl-C again to abandon it)")
            self.uninstall()
        elif self.signals == 1 and self.client is not None:
            run.display.note(
                f"interrupted: cancelling {run.tally.in_flight} jobs in flight and "
                f"{len(run.feed.pending)} lines in all (press Ctrl-C again to stop at once)"
            )
            self.closing = self._loop.create_task(self._close(self.client))
            self._watchdog = self._loop.call_later(CLOSE_GRACE, self._main.cancel)
        else:
            run.display.note("stopping now")
            self.finishing()
            self._main.cancel()

    async def _close(self, client: FluxClient) -> None:
        # Downloads first: a download still running when the client closes could outlive it.
        await self._run.stop_saving("interrupted")
        await client.aclose()

    async def wait_closed(self) -> None:
        """Wait (a little) for a close started by Ctrl-C, to leave the client closed."""
        if self.closing is not None:
            await asyncio.wait({self.closing}, timeout=CLOSE_GRACE)
            if not self.closing.done():
                self.closing.cancel()
            elif not self.closing.cancelled():
                self.closing.exception()  # retrieved: a failed close is not this run's error
