"""Webhooks: callbacks resolve jobs exactly once, safely (loopback, against FakeProvider)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flux_async import (
    AIMLAPI,
    ConfigurationError,
    Event,
    FluxClient,
    JobStatus,
    JobUnknownError,
    Limits,
    PiAPI,
    PollPolicy,
    Provider,
    RetryPolicy,
    ShortAPI,
    Webhooks,
)
from flux_async.testing import FakeProvider, Faults

pytestmark = pytest.mark.anyio

PROVIDERS: dict[str, Callable[[str], Provider]] = {
    "shortapi": lambda url: ShortAPI("test-key", base_url=url),
    "piapi": lambda url: PiAPI("test-key", base_url=url),
}
POLL = PollPolicy(wait_first=0.05, wait_initial=0.05, wait_max=0.2, timeout=20)
RETRY = RetryPolicy(wait_initial=0.01, wait_max=0.05)


@pytest.fixture(params=sorted(PROVIDERS))
def provider_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client_for(
    name: str, fake: FakeProvider, webhooks: Webhooks | None = None, **kwargs: Any
) -> FluxClient:
    return FluxClient(
        PROVIDERS[name](fake.url),
        webhooks=webhooks or Webhooks(grace=10),
        poll=kwargs.pop("poll", POLL),
        retry=RETRY,
        seed=0,
        **kwargs,
    )


def queries(fake: FakeProvider) -> int:
    return sum(fake.polls_per_job.values())


async def test_batch_resolves_through_callbacks_with_one_query_each(
    provider_name: str,
) -> None:
    async with FakeProvider(latency=(0.02, 0.1), seed=1) as fake:
        async with client_for(provider_name, fake) as client:
            outcomes = [o async for o in client.generate_many(f"w{i}" for i in range(60))]
            await fake.wait_callbacks_idle()
    assert all(o.ok for o in outcomes) and len(outcomes) == 60
    assert max(fake.creates_per_prompt.values()) == 1
    assert set(fake.polls_per_job.values()) == {1}  # one verifying query, no polls
    for outcome in outcomes:
        assert outcome.generation is not None
        assert all(i.url.startswith(fake.url) for i in outcome.generation.images)


async def test_piapi_trusted_payload_needs_no_query() -> None:
    async with FakeProvider(latency=0.02, seed=2) as fake:
        async with client_for("piapi", fake, Webhooks(grace=10, trust_payload=True)) as client:
            generations = await asyncio.gather(*(client.generate(f"t{i}") for i in range(10)))
    assert len(generations) == 10 and queries(fake) == 0


async def test_shortapi_trusted_payload_needs_no_query() -> None:
    async with FakeProvider(latency=0.02, seed=2) as fake:
        webhooks = Webhooks(grace=10, trust_payload=True)
        async with client_for("shortapi", fake, webhooks) as client:
            generations = await asyncio.gather(*(client.generate(f"t{i}") for i in range(10)))
            await fake.wait_callbacks_idle()
    assert len(generations) == 10 and all(g.images for g in generations)
    assert fake.requests["shortapi.create"] == 10
    assert fake.requests["shortapi.query"] == 0 and queries(fake) == 0  # one request a job


async def test_trusted_payload_with_an_attacker_host_is_not_applied() -> None:
    """A callback with the right token but a foreign image host is verified, not applied."""
    async with FakeProvider(latency=0.3, seed=15, faults=Faults(callback_never=1.0)) as fake:
        webhooks = Webhooks(grace=30, trust_payload=True, result_hosts=("127.0.0.1",))
        async with client_for("shortapi", fake, webhooks) as client:
            job = await client.submit("real job")
            url = _callback_url(fake, job.id)
            body = _terminal_body("shortapi", job.id or "", "https://evil.example/x.png")
            status, _ = await _post(url, body)
            assert status == 200
            generation = await job.result(timeout=5)
    assert fake.requests["shortapi.query"] >= 1  # verified with the provider instead
    assert generation.images and all(i.url.startswith(fake.url) for i in generation.images)
    assert "evil" not in str(generation)


async def test_missing_callbacks_fall_back_to_slow_polling(provider_name: str) -> None:
    async with FakeProvider(latency=0.02, seed=3) as fake:
        async with client_for(provider_name, fake, Webhooks(grace=0.1)) as client:
            generation = await client.generate("[fault:no-callback] silent")
    assert generation.images
    assert queries(fake) >= 1 and not [c for c in fake.callbacks_sent if c.kind == "terminal"]


async def test_early_callback_before_the_create_response(provider_name: str) -> None:
    async with FakeProvider(latency=0.02, seed=4) as fake:
        async with client_for(provider_name, fake) as client:
            generation = await client.generate("[fault:early-callback] eager")
    assert generation.images and fake.creates_per_prompt["[fault:early-callback] eager"] == 1


async def test_orphaned_create_is_adopted_when_it_calls_home(provider_name: str) -> None:
    async with FakeProvider(latency=0.05, seed=5) as fake:
        async with client_for(provider_name, fake) as client:
            job = await client.submit("[fault:drop] lost answer")
            generation = await job
    assert fake.lost_responses == 1
    assert fake.creates_per_prompt["[fault:drop] lost answer"] == 1
    assert fake.create_attempts == 1
    assert generation.job_id in fake.jobs


async def test_orphan_that_never_calls_home_ends_unknown(provider_name: str) -> None:
    faults = Faults(callback_never=1.0)
    async with FakeProvider(latency=0.02, faults=faults, seed=6) as fake:
        webhooks = Webhooks(grace=10, orphan_window=0.1)
        async with client_for(provider_name, fake, webhooks) as client:
            with pytest.raises(JobUnknownError, match="no callback came"):
                await client.submit("[fault:drop] gone")
    assert fake.create_attempts == 1


async def test_duplicate_late_and_out_of_order_callbacks(provider_name: str) -> None:
    faults = Faults(
        callback_duplicate=0.5,
        callback_out_of_order=0.5,
        callback_late=0.3,
        callback_late_delay=0.1,
    )
    events: list[Event] = []
    async with FakeProvider(latency=(0.01, 0.05), faults=faults, seed=7) as fake:
        async with client_for(provider_name, fake) as client:
            client.subscribe(events.append)
            outcomes = [o async for o in client.generate_many(f"d{i}" for i in range(40))]
            await fake.wait_callbacks_idle()
    assert all(o.ok for o in outcomes)
    finished = Counter(e.local_id for e in events if e.kind == "finished")
    assert len(finished) == 40 and set(finished.values()) == {1}
    assert all(c.http_status == 200 for c in fake.callbacks_sent)  # dupes and late: 200
    assert set(fake.polls_per_job.values()) == {1}


async def test_exactly_once_when_polling_and_callbacks_race(provider_name: str) -> None:
    events: list[Event] = []
    poll = PollPolicy(wait_first=0.01, wait_initial=0.01, wait_max=0.02, timeout=20)
    async with FakeProvider(
        latency=(0.01, 0.08), seed=8, faults=Faults(callback_duplicate=0.5)
    ) as fake:
        webhooks = Webhooks(grace=0.01)
        async with client_for(
            provider_name, fake, webhooks, poll=poll, limits=Limits(polls_per_second=5000)
        ) as client:
            client.subscribe(events.append)
            outcomes = [o async for o in client.generate_many(f"r{i}" for i in range(80))]
            await fake.wait_callbacks_idle()
    assert all(o.ok for o in outcomes)
    finished = Counter(e.local_id for e in events if e.kind == "finished")
    assert len(finished) == 80 and set(finished.values()) == {1}
    history: dict[str, list[JobStatus]] = {}
    for event in events:
        assert event.status is not None and event.local_id is not None
        history.setdefault(event.local_id, []).append(event.status)
    for statuses in history.values():
        assert [s.rank for s in statuses] == sorted(s.rank for s in statuses)


# -- forged and hostile callbacks, through the bundled receiver ------------------------------------


@pytest.fixture
async def slow_job(provider_name: str) -> AsyncIterator[tuple[FluxClient, FakeProvider, Any]]:
    """A client with one job that will not finish on its own for a while."""
    async with FakeProvider(latency=0.02, seed=9, faults=Faults(callback_never=1.0)) as fake:
        async with client_for(provider_name, fake, Webhooks(grace=30)) as client:
            job = await client.submit("[fault:never-finish] target")
            yield client, fake, job


def _callback_url(fake: FakeProvider, job_id: str | None) -> str:
    job = fake.jobs[job_id or ""]
    url = job.callback_url
    assert url is not None
    return url


async def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=body, headers=headers or {}) as response:
            return response.status, await response.text()


def _terminal_body(provider: str, job_id: str, image: str) -> bytes:
    if provider == "shortapi":
        return json.dumps(
            {
                "code": 0,
                "data": {"job_id": job_id, "status": 2, "result": {"images": [{"url": image}]}},
            }
        ).encode()
    return json.dumps(
        {
            "timestamp": 1,
            "data": {"task_id": job_id, "status": "completed", "output": {"image_url": image}},
        }
    ).encode()


async def test_forged_tokens_get_a_uniform_404_and_change_nothing(
    slow_job: tuple[FluxClient, FakeProvider, Any], provider_name: str
) -> None:
    client, fake, job = slow_job
    url = _callback_url(fake, job.id)
    base, token = url.rsplit("/", 1)
    body = _terminal_body(provider_name, job.id, "https://evil.example/x.png")
    answers = set()
    for forged in (
        base + "/" + "A" * len(token),
        base + "/x",
        base.rsplit("/", 1)[0] + "/0000000000000000/" + token,
        url.replace(f"/{provider_name}/", "/other/"),
    ):
        status, text = await _post(forged, body)
        answers.add((status, text))
    assert answers == {(404, "not found\n")}
    assert job.status in (JobStatus.SUBMITTED, JobStatus.QUEUED, JobStatus.RUNNING)
    assert client.outstanding == 1


async def test_valid_token_wrong_job_is_refused(
    slow_job: tuple[FluxClient, FakeProvider, Any], provider_name: str
) -> None:
    _client, fake, job = slow_job
    url = _callback_url(fake, job.id)
    headers = {}
    if provider_name == "piapi":
        headers["x-webhook-secret"] = fake.jobs[job.id].callback_secret or ""
    body = _terminal_body(provider_name, "someone-elses-job", "https://evil.example/x.png")
    status, _ = await _post(url, body, headers)
    assert status == 409
    assert not job.done()


async def test_attacker_image_url_is_never_used(provider_name: str) -> None:
    async with FakeProvider(latency=0.3, seed=10, faults=Faults(callback_never=1.0)) as fake:
        async with client_for(provider_name, fake, Webhooks(grace=30)) as client:
            job = await client.submit("real job")
            url = _callback_url(fake, job.id)
            headers = {}
            if provider_name == "piapi":
                headers["x-webhook-secret"] = fake.jobs[job.id].callback_secret or ""
            status, _ = await _post(
                url,
                _terminal_body(provider_name, job.id, "https://evil.example/x.png"),
                headers,
            )
            assert status == 200
            generation = await job.result(timeout=5)
    assert all(i.url.startswith(fake.url) for i in generation.images)
    assert "evil" not in str(generation)


@pytest.mark.parametrize("provider_name", ["piapi"])  # only PiAPI sends a per-job secret
async def test_piapi_secret_is_checked(
    slow_job: tuple[FluxClient, FakeProvider, Any], provider_name: str
) -> None:
    _client, fake, job = slow_job
    url = _callback_url(fake, job.id)
    body = _terminal_body("piapi", job.id, "https://evil.example/x.png")
    for headers in ({}, {"x-webhook-secret": "wrong"}, {"x-webhook-secret": "ünïcödé"}):
        status, _ = await _post(url, body, headers)
        assert status == 401
    assert not job.done()


async def test_hostile_bodies_get_4xx(
    slow_job: tuple[FluxClient, FakeProvider, Any], provider_name: str
) -> None:
    _client, fake, job = slow_job
    url = _callback_url(fake, job.id)
    headers = {}
    if provider_name == "piapi":
        headers["x-webhook-secret"] = fake.jobs[job.id].callback_secret or ""
    for body in (
        b"",
        b"{not json",
        b"[1,2]",
        b'{"data": 5}',
        b'{"data": {"status": []}}',
        b'{"data": {"status": 2, "result": {"images": "x"}}}',
        b'{"code": 0, "data": {"status": 1e999999}}',
        b'{"data":' * 3000,
        b"\xff\xfe\x00",
    ):
        status, _ = await _post(url, body, headers)
        assert 400 <= status < 500, body[:30]
    status, _ = await _post(url, b"x" * (300 * 1024), headers)
    assert status == 413
    assert not job.done()


async def test_non_terminal_piapi_delivery_updates_status_only() -> None:
    async with FakeProvider(latency=5, seed=11, faults=Faults(callback_never=1.0)) as fake:
        async with client_for("piapi", fake, Webhooks(grace=30)) as client:
            job = await client.submit("progress")
            url = _callback_url(fake, job.id)
            body = json.dumps(
                {"timestamp": 1, "data": {"task_id": job.id, "status": "processing"}}
            ).encode()
            status, _ = await _post(
                url, body, {"x-webhook-secret": fake.jobs[job.id].callback_secret or ""}
            )
            assert status == 200
            assert job.status is JobStatus.RUNNING and not job.done()
    assert queries(fake) == 0


async def test_access_log_hides_tokens_and_secrets(
    caplog: pytest.LogCaptureFixture, provider_name: str
) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeProvider(latency=0.02, seed=12) as fake:
        async with client_for(provider_name, fake) as client:
            await client.generate("logged")
            await fake.wait_callbacks_idle()
            job = next(iter(fake.jobs.values()))
    text = caplog.text
    assert "flux_async.webhooks.access" in {r.name for r in caplog.records}
    token = (job.callback_url or "").rsplit("/", 1)[1]
    assert token and token not in text
    if job.callback_secret:
        assert job.callback_secret not in text
    assert "test-key" not in text


# -- mounting ------------------------------------------------------------------------------


async def test_mount_inside_an_existing_aiohttp_app(provider_name: str) -> None:
    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    async with FakeProvider(latency=0.02, seed=13) as fake:
        # The public URL is known before the routes exist: bind first, then mount.
        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        webhooks = Webhooks(public_url=f"http://127.0.0.1:{port}/hooks", serve=False, grace=10)
        async with client_for(provider_name, fake, webhooks) as client:
            app.add_subapp("/hooks", client.webhook_app())
            await runner.setup()
            site = web.SockSite(runner, sock)
            await site.start()
            try:
                generations = await asyncio.gather(*(client.generate(f"m{i}") for i in range(5)))
                await fake.wait_callbacks_idle()
            finally:
                await runner.cleanup()
    assert len(generations) == 5
    assert all(c.http_status == 200 for c in fake.callbacks_sent)
    assert set(fake.polls_per_job.values()) == {1}


async def test_routes_added_to_an_existing_app_under_their_own_prefix() -> None:
    """`webhook_routes(prefix)`: the callbacks served from the caller's own router."""
    import socket

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with FakeProvider(latency=0.02, seed=16) as fake:
        webhooks = Webhooks(public_url=f"http://127.0.0.1:{port}/custom", serve=False, grace=10)
        async with client_for("shortapi", fake, webhooks) as client:
            routes = client.webhook_routes("/custom")
            assert all(route.path.startswith("/custom/") for route in routes)
            app = web.Application()
            app.router.add_get("/health", health)
            app.add_routes(routes)
            runner = web.AppRunner(app, shutdown_timeout=0.1)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            try:
                generations = await asyncio.gather(*(client.generate(f"r{i}") for i in range(3)))
                await fake.wait_callbacks_idle()
                async with aiohttp.ClientSession() as session:  # the app's own routes still work
                    async with session.get(f"http://127.0.0.1:{port}/health") as response:
                        assert await response.text() == "ok"
            finally:
                await runner.cleanup()
    assert len(generations) == 3
    assert [c.http_status for c in fake.callbacks_sent] == [200, 200, 200]
    assert all(
        c.url.startswith(f"http://127.0.0.1:{port}/custom/shortapi/") for c in fake.callbacks_sent
    )
    assert set(fake.polls_per_job.values()) == {1}  # one verifying query each, no polls


def test_routes_need_webhooks() -> None:
    with pytest.raises(ConfigurationError, match="no webhooks"):
        FluxClient(ShortAPI("k")).webhook_routes()


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="synchronously"):
        FluxClient(AIMLAPI("k"), webhooks=Webhooks())
    FluxClient(ShortAPI("k"), webhooks=Webhooks(trust_payload=True))  # the URL token
    with pytest.raises(ConfigurationError, match="public_url"):
        FluxClient(ShortAPI("k"), webhooks=Webhooks(serve=False))
    with pytest.raises(ConfigurationError):
        Webhooks(public_url="ftp://x")


# -- handle_webhook with arbitrary input --------------------------------------------------

_text = st.text(max_size=40)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=20,
)


@pytest.mark.parametrize("provider_name", ["shortapi", "piapi"])
async def test_handle_webhook_survives_anything(provider_name: str) -> None:
    async with FakeProvider(latency=60, seed=14, faults=Faults(callback_never=1.0)) as fake:
        async with client_for(provider_name, fake, Webhooks(grace=30)) as client:
            job = await client.submit("fuzzed")
            url = _callback_url(fake, job.id)
            path = url.split("://", 1)[1].split("/", 1)[1]
            path = "/" + path
            secret = fake.jobs[job.id or ""].callback_secret or ""
            results: list[tuple[str, str, dict[str, str], bytes]] = []

            @settings(
                max_examples=150,
                deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture],
            )
            @given(
                method=st.sampled_from(["POST", "GET", "post", "", "DELETE"]),
                use_path=st.sampled_from(["good", "junk", "prefix"]),
                junk=st.text(max_size=60),
                headers=st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=4),
                with_secret=st.booleans(),
                body=st.one_of(
                    st.binary(max_size=200),
                    _json_values.map(lambda v: json.dumps(v).encode()),
                    st.builds(
                        lambda s, i: json.dumps(
                            {"data": {"task_id": s, "job_id": s, "status": i}}
                        ).encode(),
                        _text,
                        st.integers() | _text,
                    ),
                ),
            )
            def check(
                method: str,
                use_path: str,
                junk: str,
                headers: dict[str, str],
                with_secret: bool,
                body: bytes,
            ) -> None:
                chosen = {"good": path, "junk": junk, "prefix": path + "/" + junk}[use_path]
                if with_secret:
                    headers = {**headers, "X-Webhook-Secret": secret}
                results.append((method, chosen, headers, body))

            # Hypothesis draws synchronously; the drawn requests are then replayed against
            # the running client, each one checked.
            check()
            statuses = []
            for method, chosen, headers, body in results:
                answer = await client.handle_webhook(method, chosen, headers, body)
                assert 200 <= answer.status < 500
                assert isinstance(answer.body, bytes)
                statuses.append(answer.status)
            assert {404, 405} <= set(statuses)
            # Fuzzed bodies may advance progress, never end the job: a terminal status
            # from an unverified payload only triggers a query, and the fake's job is
            # still running.
            assert not job.done() and not job.status.is_terminal
