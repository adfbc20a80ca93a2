"""Run the one create/query pipeline every wire format of the fake shares.

A protocol module subclasses `ProtocolRoutes` and fills in its hooks (how the key,
prompt and job id are found, validation, the bodies); the order of the steps, the
fault schedule, the hidden rate limit and the counters live here once::

    create: count -> arrival number -> read body -> prompt_of -> admit (reset, auth,
            rate limit, refusals) -> validate -> admit_job -> job fate -> add job ->
            early or scheduled callbacks -> hold (create_delay) -> answer
    query:  count -> job id -> admit (reset, auth, rate limit, 5xx) -> find -> query_response
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import web

from ._callbacks import CallbackDispatcher, Payload
from ._faults import JobFate, prompt_triggers
from ._state import FakeJob, FakeState, Phase, Provider, retry_after_header
from ._wire import Refuse, decode_json, reset_connection

__all__ = ["JobSpec", "ProtocolRoutes", "admit_keyed", "refuse_429"]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a valid create asks for, as `ProtocolRoutes.validate` reads it from the body."""

    model: str
    prompt: str
    params: dict[str, Any]
    num_images: int = 1
    image_size: tuple[int, int] = (1024, 1024)
    callback_url: str | None = None
    callback_secret: str | None = None
    task_type: str | None = None
    service_mode: str = ""
    extra: Any = field(default=None, compare=False)


def refuse_429(state: FakeState, response: web.Response, retry_after: str) -> web.Response:
    """Count a 429 and give it its ``Retry-After``."""
    state.rejected_429 += 1
    response.headers["Retry-After"] = retry_after
    return response


class ProtocolRoutes:
    """Serve one provider's routes through the shared pipeline; subclasses fill the hooks.

    Class attributes:
        provider: The provider name jobs carry.
        create_counter, query_counter: The route names counted in ``requests``.
        has_status: False for a synchronous API, where an "unknown status" fault has
            nothing to garble and the job just succeeds.
    """

    provider: ClassVar[Provider]
    create_counter: ClassVar[str]
    query_counter: ClassVar[str] = ""
    has_status: ClassVar[bool] = True

    def __init__(self, state: FakeState, callbacks: CallbackDispatcher | None = None) -> None:
        self._state = state
        self._callbacks = callbacks

    # -- hooks -----------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        """Return the aiohttp route table."""
        raise NotImplementedError

    def key_of(self, request: web.Request) -> str | None:
        """Return the presented API key, if any."""
        raise NotImplementedError

    def prompt_of(self, body: Any) -> str | None:
        """Find the prompt in a decoded create body (for fault markers), if there is one."""
        raise NotImplementedError

    def refuse(self, status: int) -> web.Response:
        """Build this provider's error response for 401, 429, 500 or 503."""
        raise NotImplementedError

    def new_id(self, rng: random.Random) -> str:
        """Draw a job id in this provider's format."""
        raise NotImplementedError

    def validate(self, body: Any) -> JobSpec | web.Response:
        """Check a create body; return the job it asks for or the error response."""
        raise NotImplementedError

    def admit_job(self, spec: JobSpec) -> web.Response | None:
        """Refuse a valid create for account reasons (credits); None to go on."""
        return None

    def accepted_response(self, job: FakeJob, spec: JobSpec) -> web.StreamResponse:
        """Build the answer to an accepted create."""
        raise NotImplementedError

    def job_id_of(self, request: web.Request) -> str:
        """Return the job id a query asks about ("" when missing)."""
        raise NotImplementedError

    def not_found(self, job_id: str) -> web.Response:
        """Answer a query for a missing or unknown job id."""
        raise NotImplementedError

    def query_response(self, job: FakeJob, phase: Phase) -> web.StreamResponse:
        """Answer a query for a known job in a phase."""
        raise NotImplementedError

    def callback_payload(self, job: FakeJob, kind: str) -> Payload | None:
        """Build one callback delivery; None when the provider sends no such delivery."""
        return None

    async def answer(
        self, request: web.Request, job: FakeJob, spec: JobSpec, fate: JobFate
    ) -> web.StreamResponse:
        """Answer an accepted create: drop the connection if the fate says so, else respond.

        AI/ML API overrides this to answer only when the job is ready.
        """
        if fate.drop_response:
            self._state.lost_responses += 1
            return reset_connection(request, hard=False)
        return self.accepted_response(job, spec)

    # -- the pipeline ------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        """Run a create request through the shared pipeline."""
        state = self._state
        state.requests[self.create_counter] += 1
        state.create_attempts += 1
        attempt = state.create_attempts  # taken before any await, so arrival order counts
        body = decode_json(await request.read())
        prompt = self.prompt_of(body)
        refused, triggers = self._admit_create(request, attempt=attempt, prompt=prompt)
        if refused is not None:
            return refused
        checked = self.validate(body)
        if isinstance(checked, web.StreamResponse):
            return checked
        spec = checked
        refused = self.admit_job(spec)
        if refused is not None:
            return refused
        fate = state.dice.job_fate(triggers, has_callback=spec.callback_url is not None)
        if not self.has_status and fate.outcome == "unknown_status":
            fate = dataclasses.replace(fate, outcome="succeeded")
        delay = state.draw_create_delay()
        job = state.add_job(
            job_id=state.new_job_id(self.new_id),
            provider=self.provider,
            prompt=spec.prompt,
            model=spec.model,
            params=spec.params,
            fate=fate,
            num_images=spec.num_images,
            image_size=spec.image_size,
            callback_url=spec.callback_url,
            callback_secret=spec.callback_secret,
            task_type=spec.task_type,
            service_mode=spec.service_mode,
        )
        if self._callbacks is not None:
            if "early" in job.callback_faults:
                await self._callbacks.deliver_now(job)
            else:
                self._callbacks.schedule(job)
        if delay > 0 and not await self._hold(job.created_at + delay):
            return reset_connection(request)  # the fake is closing
        return await self.answer(request, job, spec, fate)

    async def query(self, request: web.Request) -> web.StreamResponse:
        """Run a query request through the shared pipeline."""
        state = self._state
        state.requests[self.query_counter] += 1
        job_id = self.job_id_of(request)
        if job_id:
            state.polls_per_job[job_id] += 1
        refused = self._admit_query(request)
        if refused is not None:
            return refused
        job = state.jobs.get(job_id) if job_id else None
        if job is None or job.provider != self.provider:
            return self.not_found(job_id)
        return self.query_response(job, job.phase(time.monotonic()))

    async def _hold(self, deadline: float) -> bool:
        state = self._state
        state.held_creates += 1
        try:
            return await state.wait_until(deadline)
        except asyncio.CancelledError:
            # The client gave up (aiohttp cancels the handler): the job stays made.
            state.abandoned_responses += 1
            raise
        finally:
            state.held_creates -= 1

    def _admit_create(
        self, request: web.Request, *, attempt: int, prompt: str | None
    ) -> tuple[web.Response | None, frozenset[str]]:
        """Apply the network, auth, rate-limit and refusal faults, in a real server's order.

        A connection reset happens before anything reads the request, authentication
        before rate limiting, and rate limiting and overload before any validation.
        """
        state = self._state
        triggers = prompt_triggers(prompt)
        if state.dice.create_reset(triggers):
            return reset_connection(request), triggers
        refused = admit_keyed(state, self.key_of(request), self.refuse)
        if refused is not None:
            return refused, triggers
        refusal = state.dice.create_refusal(triggers, attempt, prompt or "")
        if refusal is not None:
            response = self.refuse(refusal)
            if refusal == 429:
                return refuse_429(state, response, state.faults.retry_after_header), triggers
            if refusal == 503:
                response.headers["Retry-After"] = state.faults.retry_after_header
            return response, triggers
        return None, triggers

    def _admit_query(self, request: web.Request) -> web.Response | None:
        """Apply the reset, auth, rate-limit and 5xx faults of a query."""
        state = self._state
        fault = state.dice.query_fault()
        if fault == "reset":
            return reset_connection(request)
        refused = admit_keyed(state, self.key_of(request), self.refuse)
        if refused is not None:
            return refused
        if fault is not None:
            response = self.refuse(fault)
            if fault == 503:
                response.headers["Retry-After"] = state.faults.retry_after_header
            return response
        return None


def admit_keyed(state: FakeState, key: str | None, refuse: Refuse) -> web.Response | None:
    """Check the API key, then take a token of the key's hidden rate limit.

    Returns:
        The 401 or 429 response that ends the request, or None to go on.
    """
    if key is None or not state.key_accepted(key):
        return refuse(401)
    wait = state.rate_limit_wait(key)
    if wait is not None:
        return refuse_429(state, refuse(429), retry_after_header(wait))
    return None
