"""The bundled receiver under hostile HTTP: raw bytes over loopback, logs captured.

Malformed requests are written on a raw socket (an HTTP client would refuse to send them)
to a client's real receiver with a real job waiting, against FakeProvider.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from flux_async import FluxClient, JobStatus, PollPolicy, ShortAPI, Webhooks, _callbacks
from flux_async._webhooks import WebhookAccessLogger, webhook_server_logger
from flux_async.testing import FakeProvider, Faults

pytestmark = pytest.mark.anyio

POLL = PollPolicy(wait_first=0.05, wait_initial=0.05, wait_max=0.2, timeout=60)


@pytest.fixture(autouse=True)
def fresh_log_limits() -> None:
    """Each test starts with full log-rate allowances (they are per process, per minute)."""
    _callbacks._HOSTILE = _callbacks.RateLimit()
    WebhookAccessLogger._limits.clear()


@dataclass
class Target:
    client: FluxClient
    fake: FakeProvider
    port: int
    path: str  # the job's real callback path, token included
    token: str


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    """A client whose receiver waits for a callback that will not come on its own."""
    async with FakeProvider(latency=60, seed=21, faults=Faults(callback_never=1.0)) as fake:
        webhooks = Webhooks(grace=60, read_timeout=0.2)
        async with FluxClient(
            ShortAPI("test-key", base_url=fake.url), webhooks=webhooks, poll=POLL, seed=0
        ) as client:
            job = await client.submit("target")
            url = fake.jobs[job.id or ""].callback_url or ""
            authority, path = url.split("://", 1)[1].split("/", 1)
            yield Target(
                client, fake, int(authority.rsplit(":", 1)[1]), "/" + path, path.rsplit("/", 1)[1]
            )
            assert not job.done() and job.status is not JobStatus.FAILED


def request(path: str, body: bytes = b"{}", headers: str = "", length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: {size}\r\n\r\n"
    ).encode() + body


async def exchange(
    port: int, data: bytes, *, wait: float = 5.0, close_wait: float = 0.5
) -> tuple[int, bool]:
    """Send raw bytes; return the answer's status and whether the server closed after it
    (within ``close_wait`` seconds)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await asyncio.wait_for(reader.readexactly(length), wait)
        try:
            rest = await asyncio.wait_for(reader.read(1), close_wait)
            closed = rest == b""
        except asyncio.TimeoutError:
            closed = False
        return status, closed
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


async def status_of(port: int, data: bytes) -> int:
    """Send raw bytes; return the answer's status (without waiting to see the connection
    closed or kept)."""
    status, _ = await exchange(port, data, close_wait=0)
    return status


def loud_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_undecodable_compressed_bodies_get_400_and_log_nothing_loud(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = gzip.compress(b'{"code": 0, "data": {"status": 1}}')
    bodies = {
        "gzip": b"this is not gzip",
        "deflate": b"\x00\x01 not deflate either",
        "br": b"\x00\x01 nor brotli",
        "x-gzip": b"\x1f\x8b\x08\x00garbage",
        "gzip, gzip": good[:12],
        "identity, gzip": zlib.compress(b"zlib is not gzip")[:-3],
    }
    for encoding, body in bodies.items():
        status, closed = await exchange(
            target.port, request(target.path, body, f"Content-Encoding: {encoding}\r\n")
        )
        assert status == 400, encoding
        assert closed, encoding
    assert loud_records(caplog) == []
    assert target.token not in caplog.text


async def test_truncated_gzip_is_an_unreadable_callback(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = gzip.compress(b'{"code": 0, "data": {"status": 2, "result": {"images": []}}}')
    status = await status_of(
        target.port, request(target.path, body[:-12], "Content-Encoding: gzip\r\n")
    )
    assert status == 400
    assert loud_records(caplog) == []


async def test_body_shorter_than_its_length_gets_408_and_the_connection_closes(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    status, closed = await exchange(target.port, request(target.path, b"{}", length=5000))
    assert (status, closed) == (408, True)
    # A stalled chunked body is cut off the same way.
    chunked = (
        f"POST {target.path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        '\r\n10\r\n{"code": 0, "da'
    ).encode()
    status, closed = await exchange(target.port, chunked)
    assert (status, closed) == (408, True)
    assert loud_records(caplog) == []
    # The receiver still serves honest requests afterwards.
    status = await status_of(target.port, request(target.path, b'{"code": 0, "data": {}}'))
    assert status in (200, 422)


async def test_a_chunked_body_over_the_limit_that_arrives_whole_gets_413() -> None:
    """No Content-Length to refuse early, and the whole body came with the headers (the
    receiver then takes it at once, without a read loop): its size is still checked."""
    async with FakeProvider(latency=60, seed=22, faults=Faults(callback_never=1.0)) as fake:
        webhooks = Webhooks(grace=60, read_timeout=0.5, max_body_bytes=64)
        async with FluxClient(
            ShortAPI("test-key", base_url=fake.url), webhooks=webhooks, poll=POLL, seed=0
        ) as client:
            job = await client.submit("target")
            url = fake.jobs[job.id or ""].callback_url or ""
            authority, path = url.split("://", 1)[1].split("/", 1)
            port = int(authority.rsplit(":", 1)[1])
            head = (
                f"POST /{path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
            big = b'{"code": 0, "data": {"status": 2, "x": "' + b"y" * 80 + b'"}}'
            chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big)
            status = await status_of(port, head + chunked)
            assert status == 413
            small = b'{"code": 0}'
            chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small)
            status = await status_of(port, head + chunked)
            assert status != 413  # the same path under the limit is read, not refused
            assert not job.done()


FORGED = [
    b"GARBAGE\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS hello
    b"POST /x HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /x HTTP/9.9\r\nHost: x\r\n\r\n",
    b"POST /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
    b"POST /x HTTP/1.1\r\nX: " + b"v" * 20000 + b"\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\nabc",
]


async def test_a_flood_of_forged_requests_logs_no_errors_and_little_debug(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = target.path.rsplit("/", 1)[0] + "/" + "A" * len(target.token)
    forged = [
        *FORGED,
        request(wrong, b"{}"),
        request(target.path, b"\x00junk", "Content-Encoding: gzip\r\n"),
        request(target.path, b"{not json"),
    ]
    rounds = 15
    statuses = []
    for start in range(0, rounds * len(forged), 26):
        batch = [forged[i % len(forged)] for i in range(start, start + 26)]
        answers = await asyncio.gather(
            *(status_of(target.port, data) for data in batch),
            return_exceptions=True,
        )
        for answer in answers:
            if isinstance(answer, int):
                statuses.append(answer)
            else:  # the server may hang up on garbage without an answer
                assert isinstance(answer, (ConnectionError, asyncio.IncompleteReadError))
    assert statuses and all(400 <= s < 500 for s in statuses)
    assert loud_records(caplog) == []
    noisy = [r for r in caplog.records if r.name.startswith(("aiohttp", "flux_async.webhooks"))]
    # ~400 hostile requests; each source is capped at 20 lines a minute plus notices.
    assert len(noisy) <= 80, len(noisy)
    assert target.token not in caplog.text


@pytest.mark.parametrize(
    "variant",
    [
        "{path}/x",
        "{path}?x=1",
        "{path}.png",
        "/{token}",
        "//{token}",
        "{path}/{token}",
        "/flux-webhooks/shortapi/{token}/x/y",
        "{path}%2Fx",
    ],
)
async def test_the_token_never_reaches_a_log_line(
    target: Target, caplog: pytest.LogCaptureFixture, variant: str
) -> None:
    caplog.set_level(logging.DEBUG)
    path = variant.format(path=target.path, token=target.token)
    body = b'{"code": 0, "data": {}}'
    status = await status_of(target.port, request(path, body))
    assert 400 <= status < 500
    assert caplog.records  # the request was logged...
    assert target.token not in caplog.text  # ...without its token
    assert "test-key" not in caplog.text


async def test_an_accepted_callback_is_logged_at_info_without_its_token(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = b'{"code": 0, "data": {"status": 1}}'
    status, closed = await exchange(target.port, request(target.path, body), close_wait=0.3)
    assert (status, closed) == (200, False)  # keep-alive for honest senders
    access = [r for r in caplog.records if r.name == "flux_async.webhooks.access"]
    assert [r.levelno for r in access] == [logging.INFO]
    assert "<token>" in access[0].getMessage()
    assert target.token not in caplog.text


async def test_own_app_with_the_exported_loggers_keeps_tokens_and_errors_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The README recipe: mount webhook_app() in your app with the redacting loggers."""
    caplog.set_level(logging.DEBUG)
    async with FakeProvider(latency=60, seed=22, faults=Faults(callback_never=1.0)) as fake:
        app = web.Application()
        runner = web.AppRunner(
            app, access_log_class=WebhookAccessLogger, logger=webhook_server_logger()
        )
        webhooks = Webhooks(public_url="http://127.0.0.1:1/hooks", serve=False, grace=60)
        async with FluxClient(
            ShortAPI("test-key", base_url=fake.url), webhooks=webhooks, poll=POLL
        ) as client:
            app.add_subapp("/hooks", client.webhook_app())
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            try:
                port = runner.addresses[0][1]
                job = await client.submit("mounted")
                token = (fake.jobs[job.id or ""].callback_url or "").rsplit("/", 1)[1]
                path = f"/hooks/shortapi/{job.local_id}/{token}"
                assert await status_of(port, request(path + "/x")) == 404
                answer = await exchange(port, request(path, b"nope", "Content-Encoding: gzip\r\n"))
                assert answer == (400, True)
                assert await status_of(port, b"POST /x HTTP/1.1\r\nBad\r\n\r\n") == 400
            finally:
                await runner.cleanup()
    assert caplog.records and token not in caplog.text
    assert loud_records(caplog) == []


async def test_receiver_lifecycle() -> None:
    from flux_async._webhooks import WebhookReceiver, WebhookResponse

    async def handler(method: str, path: str, headers: object, body: bytes) -> WebhookResponse:
        return WebhookResponse(200, b"ok\n")

    receiver = WebhookReceiver(handler, Webhooks(backlog=16))
    url = await receiver.start()
    port = int(url.split(":")[2].split("/")[0])
    assert url.endswith("/flux-webhooks")
    assert await status_of(port, request("/flux-webhooks/a/b/c")) == 200
    await receiver.aclose()
    await receiver.aclose()  # idempotent
    await receiver.stop()  # the older name
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
