"""Run the fake provider: one aiohttp server for all three wire formats."""

from __future__ import annotations

import collections
import time
import urllib.parse
from typing import Literal

from aiohttp import web

from ._aimlapi import AIMLAPIRoutes
from ._callbacks import CallbackDispatcher
from ._faults import Faults
from ._latency import LatencyLike
from ._piapi import PiAPIRoutes
from ._png import DEFAULT_MAX_SIDE
from ._shortapi import ShortAPIRoutes
from ._state import CallbackRecord, FakeJob, FakeState
from ._wire import json_response

__all__ = ["FakeProvider"]

# With the closing signal set, held requests end at once; this only bounds handlers
# stuck in an early-callback POST to a receiver that does not answer.
_SHUTDOWN_TIMEOUT = 0.5


class FakeProvider:
    """A real HTTP server on loopback speaking ShortAPI, PiAPI and AI/ML API at once.

    Use it as an async context manager, or call `start` and `aclose`. Give ``url`` to
    the client as every provider's base URL; the providers' paths do not overlap.

    Args:
        latency: Seconds from create until a job is ready: a number, a ``(low, high)``
            range drawn uniformly, a `Latency` (normal, lognormal, shifting after N
            jobs), or a callable drawing from the fake's RNG.
        faults: The fault schedule; None means no faults (prompt markers still apply).
        seed: Seeds all randomness: latency, faults, ids, status spellings and
            response-shape choices.
        host: Interface to listen on.
        port: Port to listen on; 0 picks a free one.
        api_key: If set, only this key is accepted; otherwise any non-empty key is.
        credits: AI/ML API credits (one per image); None means unlimited.
        image_max_side: Served PNGs keep the requested aspect ratio but are scaled down
            to this many pixels on their long side (None: the requested size itself).
    """

    def __init__(
        self,
        *,
        latency: LatencyLike = (0.02, 0.08),
        faults: Faults | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        credits: float | None = None,
        image_max_side: int | None = DEFAULT_MAX_SIDE,
    ) -> None:
        self._state = FakeState(
            latency=latency,
            faults=faults if faults is not None else Faults(),
            seed=seed,
            api_key=api_key,
            credits=credits,
            image_max_side=image_max_side,
        )
        self._host = host
        self._port = port
        self._callbacks = CallbackDispatcher(self._state)
        self._shortapi = ShortAPIRoutes(self._state, self._callbacks)
        self._piapi = PiAPIRoutes(self._state, self._callbacks)
        self._aimlapi = AIMLAPIRoutes(self._state)
        self._callbacks.register("shortapi", self._shortapi.callback_payload)
        self._callbacks.register("piapi", self._piapi.callback_payload)
        self._lifecycle: Literal["new", "open", "closed"] = "new"
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> FakeProvider:
        """Bind the port and start serving.

        Raises:
            RuntimeError: If the fake was already started or closed.
        """
        if self._lifecycle != "new":
            raise RuntimeError(f"FakeProvider cannot be started when {self._lifecycle}")
        self._lifecycle = "open"
        self._callbacks.start()
        app = web.Application()
        app.add_routes(self._shortapi.routes())
        app.add_routes(self._piapi.routes())
        app.add_routes(self._aimlapi.routes())
        app.add_routes(
            [
                web.get("/files/{name:[A-Za-z0-9_-]+}.png", self._serve_file),
                web.get("/_fake/stats", self._serve_stats),
            ]
        )
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
            # A client giving up on a held AI/ML API request ends its handler too.
            handler_cancellation=True,
        )
        self._runner = runner
        try:
            await runner.setup()
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await self.aclose()
            raise
        port = runner.addresses[0][1]
        host = "127.0.0.1" if self._host in ("", "0.0.0.0") else self._host
        if host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        self._url = f"http://{host}:{port}"
        self._state.base_url = self._url
        return self

    async def aclose(self) -> None:
        """Stop serving, end held requests, cancel pending callbacks; idempotent."""
        if self._lifecycle == "closed":
            return
        self._lifecycle = "closed"
        self._state.mark_closing()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._callbacks.aclose()

    async def __aenter__(self) -> FakeProvider:
        """Start the server."""
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the server."""
        await self.aclose()

    # -- what tests read -----------------------------------------------------------

    @property
    def url(self) -> str:
        """Return the base URL, e.g. ``http://127.0.0.1:41234``."""
        if self._url is None:
            raise RuntimeError("FakeProvider is not started")
        return self._url

    @property
    def port(self) -> int:
        """Return the bound port."""
        return urllib.parse.urlsplit(self.url).port or 0

    @property
    def faults(self) -> Faults:
        """Return the fault schedule."""
        return self._state.faults

    @property
    def creates_per_prompt(self) -> collections.Counter[str]:
        """Count, per prompt, the creates that made a job (even if the answer was lost)."""
        return self._state.creates_per_prompt

    @property
    def create_attempts(self) -> int:
        """Count every create request received, including refused ones."""
        return self._state.create_attempts

    @property
    def polls_per_job(self) -> collections.Counter[str]:
        """Count query requests per provider job id."""
        return self._state.polls_per_job

    @property
    def requests(self) -> collections.Counter[str]:
        """Count requests per route name (``"shortapi.create"``, ``"files"``, ...)."""
        return self._state.requests

    @property
    def jobs(self) -> dict[str, FakeJob]:
        """Return every created job by provider job id."""
        return self._state.jobs

    @property
    def served_files(self) -> dict[str, bytes]:
        """Return the PNG bytes served so far, keyed by URL path (``/files/<name>.png``)."""
        return self._state.served_files

    @property
    def callbacks_sent(self) -> list[CallbackRecord]:
        """Return every callback or webhook POST attempted, in order."""
        return self._state.callbacks_sent

    @property
    def lost_responses(self) -> int:
        """Count creates whose job was made but whose response was dropped."""
        return self._state.lost_responses

    @property
    def rejected_429(self) -> int:
        """Count 429 answers: the hidden ``rate_limit`` and the 429 faults together."""
        return self._state.rejected_429

    @property
    def rate_limited(self) -> int:
        """Count requests refused by the hidden ``Faults.rate_limit`` (part of `rejected_429`)."""
        return self._state.rate_limited

    @property
    def held_creates(self) -> int:
        """Count creates whose job exists but whose answer ``create_delay`` still holds."""
        return self._state.held_creates

    @property
    def abandoned_responses(self) -> int:
        """Count held creates whose client gave up before the answer (the job stays)."""
        return self._state.abandoned_responses

    @property
    def cancels(self) -> int:
        """Count tasks ended by a PiAPI cancel request."""
        return self._state.cancels

    @property
    def credits_left(self) -> float | None:
        """Return the AI/ML API credits left (None: unlimited)."""
        return self._state.credits_left

    async def wait_callbacks_idle(self) -> None:
        """Wait until no callback delivery is scheduled or in flight."""
        await self._callbacks.wait_idle()

    def image_bytes(self, url: str) -> bytes:
        """Return the PNG bytes behind a result URL (or ``/files/...`` path), served or not."""
        name = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1].removesuffix(".png")
        return self._state.image(name)

    def stats(self, *, detail: bool = True) -> dict[str, object]:
        """Return the counters as JSON-ready data, as ``GET /_fake/stats`` does."""
        return self._state.stats(detail=detail)

    # -- extra routes ----------------------------------------------------------------

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        state = self._state
        state.requests["files"] += 1
        name = request.match_info["name"]
        job_id, _, index = name.rpartition("-")
        job = state.jobs.get(job_id)
        if (
            job is None
            or not index.isdigit()
            or int(index) >= len(job.image_urls)
            or job.phase(time.monotonic()) != "done"
        ):
            raise web.HTTPNotFound(text="no such image")
        path = f"/files/{name}.png"
        data = state.served_files.get(path)
        if data is None:
            # Encoded when first asked for, so 100,000 unfetched results cost nothing.
            data = state.served_files[path] = state.image(name)
        return web.Response(body=data, content_type="image/png")

    async def _serve_stats(self, request: web.Request) -> web.StreamResponse:
        self._state.requests["stats"] += 1
        detail = request.query.get("detail", "1") not in ("0", "false", "no")
        return json_response(self._state.stats(detail=detail))
