"""flux_async._transport: how far a failed request got (its `Phase`), the response size cap
and the timeouts, over real loopback HTTP against tiny aiohttp servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from support import ServeApp

from flux_async import Limits, Phase, Timeouts, TransportError
from flux_async._http import HTTPRequest
from flux_async._transport import (
    _TICK_GRID,
    MAX_RESPONSE_BYTES,
    Transport,
    _Watchdog,
    client_timeout,
    map_aiohttp_errors,
    phase_for_exception,
)

pytestmark = pytest.mark.anyio

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def transport() -> AsyncIterator[Transport]:
    transport = Transport(limits=Limits(), timeouts=Timeouts(connect=2, pool=2, read=0.2))
    await transport.open()
    yield transport
    await transport.close()


async def serve(serve_app: ServeApp, handler: Handler) -> str:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return await serve_app(app)


def request(url: str, operation: str = "create") -> HTTPRequest:
    return HTTPRequest(
        "POST",
        url + "/create",
        operation=operation,
        headers={"Authorization": "Bearer sk-secret"},
        body=b"{}",
    )


async def send_failing(transport: Transport, url: str) -> TransportError:
    with pytest.raises(TransportError) as info:
        await transport.send(request(url), provider="fakeprov")
    error = info.value
    assert error.provider == "fakeprov" and error.operation == "create"
    assert "sk-secret" not in str(error)
    return error


# -- phases, over loopback --------------------------------------------------------------------


async def test_nothing_listening_is_not_sent(transport: Transport) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and is closed now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = await send_failing(transport, f"http://127.0.0.1:{port}")
    assert error.phase is Phase.NOT_SENT
    assert str(error).startswith("fakeprov create: could not connect to 127.0.0.1:")
    assert "nothing was sent" in str(error)


async def test_a_disconnect_after_the_request_is_ambiguous(
    transport: Transport, serve_app: ServeApp
) -> None:
    received = asyncio.Event()

    async def hang_up(request: web.Request) -> web.StreamResponse:
        await request.read()
        received.set()
        assert request.transport is not None
        request.transport.close()
        await asyncio.Event().wait()  # ended by the server's cleanup
        raise AssertionError("unreachable")

    error = await send_failing(transport, await serve(serve_app, hang_up))
    assert received.is_set()  # the provider had the whole request: it may have acted on it
    assert error.phase is Phase.AMBIGUOUS
    assert "disconnected after the request was sent" in str(error)


async def test_a_read_timeout_after_the_request_is_ambiguous(
    transport: Transport, serve_app: ServeApp
) -> None:
    async def never_answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    error = await send_failing(transport, await serve(serve_app, never_answer))
    assert error.phase is Phase.AMBIGUOUS
    assert "timed out waiting for the response after the request was sent" in str(error)


async def test_a_truncated_body_is_ambiguous(transport: Transport, serve_app: ServeApp) -> None:
    async def truncated(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b'{"code": 0')
        assert request.transport is not None
        request.transport.close()
        return response

    error = await send_failing(transport, await serve(serve_app, truncated))
    assert error.phase is Phase.AMBIGUOUS
    assert error.status is None


async def test_an_answer_is_returned_whole(transport: Transport, serve_app: ServeApp) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        assert request.headers["Authorization"] == "Bearer sk-secret"
        return web.json_response(
            {"echo": (await request.read()).decode()}, status=201, headers={"Retry-After": "3"}
        )

    response = await transport.send(request(await serve(serve_app, answer)), provider="p")
    assert response.status == 201
    assert response.body == b'{"echo": "{}"}'
    assert response.headers["Retry-After"] == "3"


async def test_redirects_are_not_followed(transport: Transport, serve_app: ServeApp) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        if request.path == "/create":
            raise web.HTTPTemporaryRedirect("/elsewhere")
        raise AssertionError("followed a redirect")

    response = await transport.send(request(await serve(serve_app, redirect)), provider="p")
    assert response.status == 307


# -- queries: one watchdog instead of aiohttp's read timer -------------------------------------


def query(url: str, job_id: str = "job-1") -> HTTPRequest:
    return HTTPRequest(
        "GET",
        f"{url}/query?id={urllib.parse.quote(job_id, safe='')}",
        operation="query",
        headers={"Authorization": "Bearer sk-secret"},
    )


async def test_a_query_that_never_answers_times_out(
    transport: Transport, serve_app: ServeApp
) -> None:
    async def never_answer(request: web.Request) -> web.StreamResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    url = await serve(serve_app, never_answer)
    with pytest.raises(TransportError) as info:
        await transport.send(query(url), provider="fakeprov")
    error = info.value
    assert error.phase is Phase.AMBIGUOUS and error.operation == "query"
    assert str(error) == (
        "fakeprov query: timed out: no whole answer within 0.2s (the query may have been sent)"
    )
    assert "sk-secret" not in str(error)
    assert len(transport._watchdog) == 0
    current = asyncio.current_task()
    cancelling = getattr(current, "cancelling", None)  # Python 3.11+
    assert cancelling is None or cancelling() == 0  # the watchdog's cancel was taken back


async def test_a_query_cancelled_from_outside_stays_cancelled(
    transport: Transport, serve_app: ServeApp
) -> None:
    arrived = asyncio.Event()

    async def never_answer(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    url = await serve(serve_app, never_answer)
    task = asyncio.ensure_future(transport.send(query(url), provider="p"))
    await arrived.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(transport._watchdog) == 0


async def test_a_query_cancelled_while_the_watchdog_ends_it_stays_cancelled(
    transport: Transport, serve_app: ServeApp
) -> None:
    """Both at once (the watchdog's check and a caller's cancel): the caller's wins."""
    arrived = asyncio.Event()

    async def never_answer(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    url = await serve(serve_app, never_answer)
    task = asyncio.ensure_future(transport.send(query(url), provider="p"))
    await arrived.wait()
    watchdog = transport._watchdog
    watchdog._inflight[task] = 0.0  # already late: the next check ends it
    watchdog._check(asyncio.get_running_loop())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_answered_query_leaves_nothing_armed(
    transport: Transport, serve_app: ServeApp
) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        # The id arrives as the adapter quoted it, reserved characters and all.
        return web.json_response({"id": request.query["id"], "raw": request.raw_path})

    url = await serve(serve_app, answer)
    for job_id in ("job-1", "a/b?c d&e=f", "ünï"):
        response = await transport.send(query(url, job_id), provider="p")
        body = json.loads(response.body)
        assert body["id"] == job_id
        assert body["raw"] == "/query?id=" + urllib.parse.quote(job_id, safe="")
    watchdog = transport._watchdog
    assert len(watchdog) == 0
    assert watchdog._handle is not None  # armed while queries were in flight ...
    await asyncio.sleep(0.2 / 8 + 0.05)
    assert watchdog._handle is None  # ... and idle once none is


async def test_a_slow_answer_within_the_limit_is_not_cut(
    transport: Transport, serve_app: ServeApp
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.05)
        return web.json_response({"ok": True})

    url = await serve(serve_app, slow)
    responses = await asyncio.gather(
        *(transport.send(query(url, f"job-{n}"), provider="p") for n in range(20))
    )
    assert all(response.status == 200 for response in responses)


# -- the response cap -------------------------------------------------------------------------


async def test_a_response_over_the_cap_is_refused_before_it_is_read(
    transport: Transport, serve_app: ServeApp
) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_length = MAX_RESPONSE_BYTES + 1
        await response.prepare(request)
        await response.write(b"x" * 1024)  # the rest never comes: it must not be awaited
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    assert MAX_RESPONSE_BYTES == 64 * 1024 * 1024
    error = await send_failing(transport, await serve(serve_app, huge))
    assert error.phase is Phase.AMBIGUOUS  # the create was sent and answered
    assert error.status == 200
    assert f"response of {MAX_RESPONSE_BYTES + 1} bytes is over the" in str(error)


async def test_a_chunked_response_over_the_cap_is_refused_as_it_arrives(
    transport: Transport, serve_app: ServeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Content-Length (chunked): the cap is checked while reading, not skipped."""
    monkeypatch.setattr("flux_async._transport.MAX_RESPONSE_BYTES", 64 * 1024)
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(status=200)
        response.enable_chunked_encoding()
        await response.prepare(request)
        while sent < 10 * 64 * 1024:  # ten times the cap, if nobody stops reading
            await response.write(b"y" * 4096)
            sent += 4096
        await response.write_eof()
        return response

    error = await send_failing(transport, await serve(serve_app, endless))
    assert error.phase is Phase.AMBIGUOUS
    assert "more than 65536 bytes (chunked) is over the 65536 byte limit" in str(error)


async def test_a_chunked_response_under_the_cap_is_read_whole(
    transport: Transport, serve_app: ServeApp
) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b'{"a": ', b"1", b"}"):
            await response.write(part)
        await response.write_eof()
        return response

    response = await transport.send(request(await serve(serve_app, chunked)), provider="p")
    assert response.status == 200 and response.body == b'{"a": 1}'


# -- the mapping table and the timeouts, without a network ------------------------------------


def _conn_key() -> object:
    return type("Key", (), {"host": "127.0.0.1", "port": 1, "ssl": False})()


@pytest.mark.parametrize(
    ("exc", "phase"),
    [
        (aiohttp.ClientConnectorError(_conn_key(), OSError(111, "refused")), Phase.NOT_SENT),  # type: ignore[arg-type]
        (aiohttp.ConnectionTimeoutError("connect"), Phase.NOT_SENT),
        (aiohttp.InvalidURL("nope"), Phase.NOT_SENT),
        (aiohttp.SocketTimeoutError("read"), Phase.AMBIGUOUS),
        (aiohttp.ServerDisconnectedError(), Phase.AMBIGUOUS),
        (aiohttp.ClientOSError(104, "reset by peer"), Phase.AMBIGUOUS),
        (aiohttp.ClientPayloadError("truncated"), Phase.AMBIGUOUS),
        (asyncio.TimeoutError(), Phase.AMBIGUOUS),
    ],
)
def test_exception_phase(exc: BaseException, phase: Phase) -> None:
    assert phase_for_exception(exc) is phase
    with pytest.raises(TransportError) as info, map_aiohttp_errors("p", "query"):
        raise exc
    assert info.value.phase is phase and info.value.__cause__ is exc
    assert str(info.value).startswith("p query: ")


def test_the_subject_replaces_provider_and_operation() -> None:
    with (
        pytest.raises(TransportError, match=r"^download of x\.png: "),
        map_aiohttp_errors("p", "download", subject="download of x.png"),
    ):
        raise aiohttp.ServerDisconnectedError()


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(ValueError, match="a bug"), map_aiohttp_errors("p", "query"):
        raise ValueError("a bug")


def test_client_timeout_has_no_total() -> None:
    timeout = client_timeout(Timeouts(connect=1, pool=2, read=3, read_sync=4), read=5)
    assert timeout.total is None
    assert (timeout.connect, timeout.sock_connect, timeout.sock_read) == (2, 1, 5)


async def test_a_session_passed_in_is_left_open() -> None:
    async with aiohttp.ClientSession() as session:
        transport = Transport(limits=Limits(), timeouts=Timeouts(), session=session)
        await transport.open()
        assert transport.session is session
        await transport.close()
        assert not session.closed


async def test_an_unopened_transport_says_so() -> None:
    transport = Transport(limits=Limits(), timeouts=Timeouts())
    with pytest.raises(RuntimeError, match="not open"):
        transport.session  # noqa: B018


# -- the watchdog's wake-ups ------------------------------------------------------------------


async def test_watchdog_checks_fall_on_the_scheduler_grid() -> None:
    """A check shares the wake-up of the polls due at the same grid time: it is armed at a
    multiple of the grid, a tick or a little more after the query started."""
    loop = asyncio.get_running_loop()
    watchdog = _Watchdog(60.0)  # the default read timeout: a tick of 1 s
    task = asyncio.ensure_future(asyncio.sleep(10))
    try:
        for _ in range(5):
            now = loop.time()
            watchdog.watch(task)
            handle = watchdog._handle
            assert handle is not None
            when = handle.when()
            steps = when / _TICK_GRID
            assert abs(steps - round(steps)) < 1e-6  # on the grid
            assert now + 1.0 <= when < now + 1.0 + _TICK_GRID + 1e-6
            watchdog.done(task)
            watchdog.close()
            await asyncio.sleep(0.013)  # another start, another phase of the grid
    finally:
        watchdog.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
