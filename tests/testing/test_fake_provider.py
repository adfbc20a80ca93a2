"""Check flux_async.testing.FakeProvider over real loopback HTTP against providers.md."""

from __future__ import annotations

import base64
import os
import re
import signal
import struct
import sys
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

import flux_async.testing
from flux_async.testing import FakeProvider, Faults

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
KEY = "test-key"
BEARER = {"Authorization": f"Bearer {KEY}"}
PIAPI_KEY = {"X-API-Key": KEY}
SA_T2I = "shortapi/flux-1.0/text-to-image"
SA_I2I = "shortapi/flux-1.0/image-to-image"
GO_ZERO = "0001-01-01T00:00:00Z"
PIAPI_RUNNING = {"pending", "Pending", "starting", "processing", "Processing", "staged", "retry"}
PIAPI_SUCCESS = {"Completed", "completed", "success"}
PIAPI_FAILED = {"failed", "Failed"}
SA_STATUS = {"queued": 0, "running": 1, "done": 2}  # providers.md §1.4


# -- helpers -------------------------------------------------------------------------


class Receiver:
    """A loopback aiohttp server recording every POST it gets."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.deliveries: list[tuple[dict[str, str], Any, float]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.deliveries.append((dict(request.headers), await request.json(), time.monotonic()))
        return web.Response(status=self.status)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def sa_body(prompt: str = "a red fox", *, model: str = SA_T2I, **args: Any) -> dict[str, Any]:
    args.setdefault("aspect_ratio", "16:9")
    return {"model": model, "args": {"prompt": prompt, **args}}


async def sa_create(
    http: aiohttp.ClientSession, fake: FakeProvider, body: dict[str, Any]
) -> tuple[int, Any]:
    async with http.post(f"{fake.url}/api/v1/job/create", json=body, headers=BEARER) as r:
        return r.status, await r.json()


async def sa_query(http: aiohttp.ClientSession, fake: FakeProvider, job_id: str) -> Any:
    async with http.get(f"{fake.url}/api/v1/job/query", params={"id": job_id}, headers=BEARER) as r:
        assert r.status == 200
        return await r.json()


def pi_body(prompt: str = "a bear", **input_: Any) -> dict[str, Any]:
    model = input_.pop("model", "Qubico/flux1-dev")
    task_type = input_.pop("task_type", "txt2img")
    config = input_.pop("config", None)
    body: dict[str, Any] = {
        "model": model,
        "task_type": task_type,
        "input": {"prompt": prompt, **input_},
    }
    if config is not None:
        body["config"] = config
    return body


async def pi_create(
    http: aiohttp.ClientSession, fake: FakeProvider, body: dict[str, Any]
) -> tuple[int, Any]:
    async with http.post(f"{fake.url}/api/v1/task", json=body, headers=PIAPI_KEY) as r:
        return r.status, await r.json()


async def pi_get(http: aiohttp.ClientSession, fake: FakeProvider, task_id: str) -> Any:
    async with http.get(f"{fake.url}/api/v1/task/{task_id}", headers=PIAPI_KEY) as r:
        assert r.status == 200
        return await r.json()


async def aiml(
    http: aiohttp.ClientSession,
    fake: FakeProvider,
    body: dict[str, Any],
    headers: dict[str, str] = BEARER,
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    async with http.post(f"{fake.url}/v1/images/generations", json=body, headers=headers) as r:
        return r.status, await r.json(), r.headers


async def sleep_until(moment: float | None, slack: float = 0.005) -> None:
    assert moment is not None
    await anyio.sleep(max(0.0, moment - time.monotonic()) + slack)


async def eventually(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await anyio.sleep(0.01)
    pytest.fail("condition not met within 5 s")


def only_job_id(fake: FakeProvider) -> str:
    (job_id,) = fake.jobs
    return job_id


def parse_png(data: bytes) -> tuple[int, int, bytes]:
    """Check a PNG's structure and CRCs; return width, height and the raw scanlines."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        tag = data[position + 4 : position + 8]
        payload = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(tag + payload) & 0xFFFFFFFF
        chunks.append((tag, payload))
        position += 12 + length
    assert chunks[0][0] == b"IHDR" and len(chunks[0][1]) == 13
    assert chunks[-1] == (b"IEND", b"")
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour) == (8, 2)
    raw = zlib.decompress(b"".join(p for tag, p in chunks if tag == b"IDAT"))
    assert len(raw) == height * (1 + 3 * width)
    return width, height, raw


# -- package surface and configuration ---------------------------------------------------


def test_public_surface() -> None:
    assert flux_async.testing.__all__ == [
        "CallbackRecord",
        "FakeJob",
        "FakeProvider",
        "Faults",
        "Latency",
    ]


def test_faults_validate_and_round_retry_after() -> None:
    with pytest.raises(ValueError, match="fail"):
        Faults(fail=1.5)
    with pytest.raises(ValueError, match="retry_after"):
        Faults(retry_after=-1)
    assert Faults(retry_after=1.2).retry_after_header == "2"
    assert Faults(retry_after=0).retry_after_header == "0"


async def test_lifecycle_without_context_manager() -> None:
    fake = FakeProvider()
    with pytest.raises(RuntimeError):
        _ = fake.url
    assert await fake.start() is fake
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", fake.url)
    with pytest.raises(RuntimeError):
        await fake.start()
    await fake.aclose()
    await fake.aclose()  # idempotent


async def test_same_seed_same_ids(http: aiohttp.ClientSession) -> None:
    ids = []
    for seed in (7, 7, 8):
        async with FakeProvider(seed=seed) as fake:
            _, body = await sa_create(http, fake, sa_body())
            ids.append(body["data"]["job_id"])
    assert ids[0] == ids[1] != ids[2]


# -- ShortAPI (providers.md section 1) -------------------------------------------------


async def test_shortapi_create_query_download(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(latency=0.2) as fake:
        status, body = await sa_create(http, fake, sa_body(num_images="2", performance="schnell"))
        assert status == 200
        assert body["code"] == 0
        assert body["data"]["amount"] == "0.002"
        job_id = body["data"]["job_id"]
        assert re.fullmatch(r"[0-9a-f]{24}", job_id)
        job = fake.jobs[job_id]
        assert (job.provider, job.prompt, job.model, job.outcome) == (
            "shortapi",
            "a red fox",
            SA_T2I,
            "succeeded",
        )

        sent = time.monotonic()
        queued = await sa_query(http, fake, job_id)
        phases = {job.phase(sent), job.phase(time.monotonic())}  # {"queued"} unless CI stalls
        assert queued["code"] == 0
        assert queued["data"] == {
            "id": job_id,
            "status": queued["data"]["status"],
            "result": None,
            "refunded": False,
            "error": None,
        }
        assert queued["data"]["status"] in {SA_STATUS[phase] for phase in phases}
        await sleep_until(job.started_at)
        sent = time.monotonic()
        status = (await sa_query(http, fake, job_id))["data"]["status"]
        assert status in {SA_STATUS[job.phase(sent)], SA_STATUS[job.phase(time.monotonic())]}
        await sleep_until(job.ready_at)
        done = (await sa_query(http, fake, job_id))["data"]
        assert done["status"] == 2 and done["refunded"] is False
        urls = [image["url"] for image in done["result"]["images"]]
        assert len(urls) == 2 and list(job.image_urls) == urls

        downloads = []
        for url in urls:
            assert url.startswith(f"{fake.url}/files/") and url.endswith(".png")
            async with http.get(url) as r:
                assert r.status == 200
                assert r.content_type == "image/png"
                data = await r.read()
            assert parse_png(data)[:2] == (256, 144)  # 16:9, scaled to 256 px on the long side
            assert fake.served_files[url.removeprefix(fake.url)] == data
            assert fake.image_bytes(url) == data
            downloads.append(data)
        assert downloads[0] != downloads[1]

        assert fake.creates_per_prompt == {"a red fox": 1}
        assert fake.create_attempts == 1
        assert fake.polls_per_job[job_id] == 3
        assert fake.requests["shortapi.create"] == 1
        assert fake.requests["shortapi.query"] == 3
        assert fake.requests["files"] == 2

        _, dev = await sa_create(http, fake, sa_body("dev"))
        assert dev["data"]["amount"] == "0.02"


async def test_shortapi_image_not_served_before_ready(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(latency=5) as fake:
        await sa_create(http, fake, sa_body())
        async with http.get(f"{fake.url}/files/{only_job_id(fake)}-0.png") as r:
            assert r.status == 404
        async with http.get(f"{fake.url}/files/nope-0.png") as r:
            assert r.status == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": "shortapi/flux-9", "args": {"prompt": "x"}}, "invalid model: shortapi/flux-9"),
        ({"model": SA_T2I, "args": {"prompt": "x"}}, "aspect_ratio"),
        (sa_body(aspect_ratio="5:4"), "aspect_ratio"),
        (sa_body(num_images=3), "num_images"),
        (sa_body(num_images=True), "num_images"),
        (sa_body(performance="turbo"), "performance"),
        (sa_body(model=SA_I2I), "image_url"),
        (sa_body(""), "prompt"),
        ({"model": SA_T2I}, "args"),
        ({**sa_body(), "callback_url": "not a url"}, "callback_url"),
    ],
)
async def test_shortapi_validation_errors(
    http: aiohttp.ClientSession, body: dict[str, Any], needle: str
) -> None:
    async with FakeProvider() as fake:
        status, answer = await sa_create(http, fake, body)
        assert status == 200  # §1.5: errors come as HTTP 200 with a non-zero code
        assert answer["code"] != 0
        assert needle in answer["info"] and answer["message"] == answer["info"]
        assert fake.jobs == {} and fake.create_attempts == 1


async def test_shortapi_accepts_i2i_and_int_num_images(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(latency=0) as fake:
        body = sa_body(model=SA_I2I, image_url="https://example.com/in.png", num_images=4)
        status, answer = await sa_create(http, fake, body)
        assert status == 200 and answer["code"] == 0
        done = await sa_query(http, fake, answer["data"]["job_id"])
        assert len(done["data"]["result"]["images"]) == 4


async def test_shortapi_unknown_job_and_auth(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(api_key=KEY) as fake:
        assert (await sa_query(http, fake, "0" * 24)) == {
            "code": 1,
            "info": "job not found",
            "message": "job not found",
        }
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            url = f"{fake.url}/api/v1/job/create"
            async with http.post(url, json=sa_body(), headers=headers) as r:
                assert r.status == 401
                assert (await r.json())["code"] != 0
        assert fake.jobs == {} and fake.create_attempts == 3
    async with FakeProvider() as fake:  # no api_key: any non-empty key works
        async with http.post(
            f"{fake.url}/api/v1/job/create",
            json=sa_body(),
            headers={"Authorization": "bearer anything"},
        ) as r:
            assert (await r.json())["code"] == 0


async def test_rate_limit_first_creates_with_retry_after(http: aiohttp.ClientSession) -> None:
    faults = Faults(rate_limit_first_creates=2, retry_after=1.5)
    async with FakeProvider(faults=faults) as fake:
        async with http.post(f"{fake.url}/api/v1/job/create", json=sa_body(), headers=BEARER) as r:
            assert r.status == 429 and r.headers["Retry-After"] == "2"
        async with http.post(f"{fake.url}/api/v1/task", json=pi_body(), headers=PIAPI_KEY) as r:
            assert r.status == 429 and r.headers["Retry-After"] == "2"
            assert (await r.json())["code"] == 429
        status, body = await sa_create(http, fake, sa_body())
        assert status == 200 and body["code"] == 0
        assert fake.create_attempts == 3 and len(fake.jobs) == 1


async def test_create_429_probability(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(faults=Faults(create_429=1.0, retry_after=0)) as fake:
        status, body, headers = await aiml(http, fake, {"model": "flux/dev", "prompt": "x"})
        assert status == 429 and headers["Retry-After"] == "0"
        assert body["message"] == "Too Many Requests" and body["statusCode"] == "429"
        assert fake.jobs == {}


async def test_prompt_429_marker_refuses_once(http: aiohttp.ClientSession) -> None:
    async with FakeProvider() as fake:
        prompt = "[fault:429] a fox"
        async with http.post(
            f"{fake.url}/api/v1/job/create", json=sa_body(prompt), headers=BEARER
        ) as r:
            assert r.status == 429 and "Retry-After" in r.headers
        status, body = await sa_create(http, fake, sa_body(prompt))
        assert (status, body["code"]) == (200, 0)
        assert fake.creates_per_prompt[prompt] == 1 and fake.create_attempts == 2


async def test_5xx_and_reset_markers_create_nothing(http: aiohttp.ClientSession) -> None:
    async with FakeProvider() as fake:
        for _ in range(2):
            async with http.post(
                f"{fake.url}/api/v1/job/create", json=sa_body("[fault:5xx] x"), headers=BEARER
            ) as r:
                assert r.status == 503
        with pytest.raises(aiohttp.ClientConnectionError):
            await sa_create(http, fake, sa_body("[fault:reset] x"))
        with pytest.raises(aiohttp.ClientConnectionError):
            await pi_create(http, fake, pi_body("[fault:reset] x"))
        assert fake.jobs == {} and fake.create_attempts == 4
        assert sum(fake.creates_per_prompt.values()) == 0


async def test_create_5xx_probability(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(faults=Faults(create_5xx=1.0)) as fake:
        statuses = set()
        for _ in range(8):
            async with http.post(f"{fake.url}/api/v1/task", json=pi_body(), headers=PIAPI_KEY) as r:
                statuses.add(r.status)
        assert statuses == {500, 503}
        assert fake.jobs == {}


@pytest.mark.parametrize(
    ("prompt", "faults"),
    [("[fault:drop] fox", None), ("fox", Faults(drop_after_accept=1.0))],
)
async def test_drop_after_accept(
    http: aiohttp.ClientSession, prompt: str, faults: Faults | None
) -> None:
    async with FakeProvider(latency=0.01, faults=faults) as fake:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await sa_create(http, fake, sa_body(prompt))
        assert fake.creates_per_prompt[prompt] == 1
        assert fake.lost_responses == 1
        job_id = only_job_id(fake)
        await sleep_until(fake.jobs[job_id].ready_at)
        assert (await sa_query(http, fake, job_id))["data"]["status"] == 2


async def test_never_finish(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(latency=0.02) as fake:
        _, body = await sa_create(http, fake, sa_body("[fault:never-finish] fox"))
        job = fake.jobs[body["data"]["job_id"]]
        assert job.ready_at is None and job.outcome == "never"
        await anyio.sleep(0.06)
        data = (await sa_query(http, fake, job.id))["data"]
        assert data["status"] == 1 and data["result"] is None


async def test_fail_and_unknown_status(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(latency=0.01) as fake:
        _, failed = await sa_create(http, fake, sa_body("[fault:fail] fox"))
        _, odd = await sa_create(http, fake, sa_body("[fault:unknown-status] fox"))
        await anyio.sleep(0.03)
        data = (await sa_query(http, fake, failed["data"]["job_id"]))["data"]
        assert data["status"] in (3, 4) and data["refunded"] is True
        assert isinstance(data["error"], str) and data["error"]
        assert data["result"] is None
        data = (await sa_query(http, fake, odd["data"]["job_id"]))["data"]
        assert data["status"] not in (0, 1, 2, 3, 4)
        assert {job.outcome for job in fake.jobs.values()} == {"failed", "unknown_status"}


async def test_query_faults(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(faults=Faults(query_5xx=1.0)) as fake:
        _, body = await sa_create(http, fake, sa_body())
        job_id = body["data"]["job_id"]
        async with http.get(
            f"{fake.url}/api/v1/job/query", params={"id": job_id}, headers=BEARER
        ) as r:
            assert r.status in (500, 503)
    async with FakeProvider(faults=Faults(query_reset=1.0)) as fake:
        _, body = await pi_create(http, fake, pi_body())
        with pytest.raises(aiohttp.ClientConnectionError):
            await pi_get(http, fake, body["data"]["task_id"])
        assert fake.polls_per_job[body["data"]["task_id"]] >= 1


async def test_shortapi_callback(http: aiohttp.ClientSession) -> None:
    async with Receiver() as receiver, FakeProvider(latency=0.02) as fake:
        _, body = await sa_create(http, fake, {**sa_body(), "callback_url": receiver.url})
        job_id = body["data"]["job_id"]
        await fake.wait_callbacks_idle()
        ((headers, payload, received_at),) = receiver.deliveries
        assert payload["code"] == 0
        assert payload["data"]["job_id"] == payload["data"]["id"] == job_id
        assert payload["data"]["status"] == 2
        assert [i["url"] for i in payload["data"]["result"]["images"]] == list(
            fake.jobs[job_id].image_urls
        )
        assert headers["Content-Type"] == "application/json"
        ready_at = fake.jobs[job_id].ready_at
        assert ready_at is not None and received_at >= ready_at
        (record,) = fake.callbacks_sent
        assert (record.job_id, record.kind, record.status, record.http_status) == (
            job_id,
            "terminal",
            2,
            200,
        )
        assert fake.jobs[job_id].callback_url == receiver.url


@pytest.mark.parametrize(
    ("prompt", "faults", "statuses"),
    [
        ("[fault:dup-callback] x", None, [2, 2]),
        ("[fault:no-callback] x", None, []),
        ("[fault:fail] x", None, ["failed"]),
        ("x", Faults(callback_out_of_order=1.0), [2, 1]),
        ("x", Faults(callback_never=1.0), []),
    ],
)
async def test_shortapi_callback_faults(
    http: aiohttp.ClientSession, prompt: str, faults: Faults | None, statuses: list[Any]
) -> None:
    async with Receiver() as receiver, FakeProvider(latency=0.01, faults=faults) as fake:
        await sa_create(http, fake, {**sa_body(prompt), "callback_url": receiver.url})
        await fake.wait_callbacks_idle()
        sent = [payload["data"]["status"] for _, payload, _ in receiver.deliveries]
        if statuses == ["failed"]:
            assert len(sent) == 1 and sent[0] in (3, 4)
        else:
            assert sent == statuses
        assert len(fake.callbacks_sent) == len(sent)


async def test_late_callback(http: aiohttp.ClientSession) -> None:
    faults = Faults(callback_late=1.0, callback_late_delay=0.1)
    async with Receiver() as receiver, FakeProvider(latency=0.01, faults=faults) as fake:
        _, body = await sa_create(http, fake, {**sa_body(), "callback_url": receiver.url})
        await fake.wait_callbacks_idle()
        ready_at = fake.jobs[body["data"]["job_id"]].ready_at
        assert ready_at is not None
        ((_, _, received_at),) = receiver.deliveries
        assert received_at >= ready_at + 0.1


async def test_early_callback_beats_create_response(http: aiohttp.ClientSession) -> None:
    async with Receiver() as receiver, FakeProvider(latency=1) as fake:
        body = {**sa_body("[fault:early-callback] x"), "callback_url": receiver.url}
        _, answer = await sa_create(http, fake, body)
        # The callback was delivered before the create response came back.
        ((_, payload, _),) = receiver.deliveries
        assert payload["data"]["job_id"] == answer["data"]["job_id"]
        assert payload["data"]["status"] == 2
        assert (await sa_query(http, fake, answer["data"]["job_id"]))["data"]["status"] == 2
        await fake.wait_callbacks_idle()
        assert len(receiver.deliveries) == 1


async def test_callback_failures_are_recorded(http: aiohttp.ClientSession) -> None:
    async with Receiver(status=500) as receiver, FakeProvider(latency=0) as fake:
        await sa_create(http, fake, {**sa_body(), "callback_url": receiver.url})
        await sa_create(http, fake, {**sa_body(), "callback_url": "http://127.0.0.1:9/x"})
        await fake.wait_callbacks_idle()
        by_url = {record.url: record for record in fake.callbacks_sent}
        assert by_url[receiver.url].http_status == 500
        refused = by_url["http://127.0.0.1:9/x"]
        assert refused.http_status is None and refused.error


# -- PiAPI (providers.md section 3) ----------------------------------------------------


async def test_piapi_create_envelope(http: aiohttp.ClientSession) -> None:
    webhook = {"endpoint": "http://127.0.0.1:9/hook", "secret": "s3cret"}
    config = {"webhook_config": webhook, "service_mode": "public"}
    async with FakeProvider(latency=1) as fake:
        status, body = await pi_create(http, fake, pi_body(width=1024, height=768, config=config))
        assert status == 200
        assert body["code"] == 200 and body["message"] == "success"
        data = body["data"]
        assert set(data) == {
            "task_id",
            "model",
            "task_type",
            "status",
            "config",
            "input",
            "output",
            "meta",
            "detail",
            "logs",
            "error",
        }
        assert str(uuid.UUID(data["task_id"])) == data["task_id"]
        assert (data["model"], data["task_type"], data["status"]) == (
            "Qubico/flux1-dev",
            "txt2img",
            "pending",
        )
        assert data["config"] == {"service_mode": "public", "webhook_config": webhook}
        assert data["input"] == {
            "prompt": "a bear",
            "negative_prompt": "",
            "width": 1024,
            "height": 768,
            "steps": 0,
        }
        assert data["output"] is None and data["detail"] is None and data["logs"] == []
        assert data["error"] == {"code": 0, "raw_message": "", "message": "", "detail": None}
        meta = data["meta"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", meta["created_at"])
        assert meta["started_at"] == meta["ended_at"] == GO_ZERO
        assert meta["usage"]["type"] == "quota" and meta["usage"]["frozen"] == 0
        assert isinstance(meta["usage"]["consume"], int)
        assert meta["is_using_private_pool"] is False
        job = fake.jobs[data["task_id"]]
        assert (job.callback_url, job.callback_secret, job.task_type) == (
            webhook["endpoint"],
            "s3cret",
            "txt2img",
        )


async def test_piapi_get_to_success(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(latency=0.2) as fake:
        _, body = await pi_create(http, fake, pi_body(model="Qubico/flux1-schnell", batch_size=2))
        task_id = body["data"]["task_id"]
        job = fake.jobs[task_id]
        await sleep_until(job.started_at)
        running = (await pi_get(http, fake, task_id))["data"]
        assert running["meta"]["started_at"] != GO_ZERO
        if job.phase(time.monotonic()) == "running":  # always, unless the machine stalled
            assert running["status"] in PIAPI_RUNNING
            assert running["meta"]["ended_at"] == GO_ZERO
        await sleep_until(job.ready_at)
        done = (await pi_get(http, fake, task_id))["data"]
        assert done["status"] in PIAPI_SUCCESS
        assert done["meta"]["ended_at"] != GO_ZERO
        assert done["output"]["image_urls"] == list(job.image_urls)
        assert len(job.image_urls) == 2 and done["output"]["image_base64"] == ""
        assert done["meta"]["usage"]["consume"] == 2 * body["data"]["meta"]["usage"]["consume"] // 2
        async with http.get(job.image_urls[1]) as r:
            assert parse_png(await r.read())[:2] == (256, 256)  # 1024x1024 by default

        _, single = await pi_create(http, fake, pi_body())
        await sleep_until(fake.jobs[single["data"]["task_id"]].ready_at)
        output = (await pi_get(http, fake, single["data"]["task_id"]))["data"]["output"]
        assert output["image_url"] == fake.jobs[single["data"]["task_id"]].image_urls[0]


async def test_piapi_status_spellings_vary(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(latency=0) as fake:
        _, never = await pi_create(http, fake, pi_body("[fault:never-finish] x"))
        _, done = await pi_create(http, fake, pi_body())
        _, failed = await pi_create(http, fake, pi_body("[fault:fail] x"))
        _, odd = await pi_create(http, fake, pi_body("[fault:unknown-status] x"))
        seen: dict[str, set[str]] = {"never": set(), "done": set(), "failed": set()}
        for _ in range(30):
            for name, body in (("never", never), ("done", done), ("failed", failed)):
                data = (await pi_get(http, fake, body["data"]["task_id"]))["data"]
                seen[name].add(data["status"])
        assert len(seen["never"]) >= 2 and seen["never"] <= PIAPI_RUNNING
        assert seen["done"] == PIAPI_SUCCESS
        assert seen["failed"] == PIAPI_FAILED
        failure = (await pi_get(http, fake, failed["data"]["task_id"]))["data"]["error"]
        assert failure["message"] and failure["raw_message"]
        status = (await pi_get(http, fake, odd["data"]["task_id"]))["data"]["status"]
        assert status.lower() not in {s.lower() for s in PIAPI_RUNNING | PIAPI_SUCCESS} | {"failed"}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (pi_body(model="Qubico/flux2"), "model"),
        (pi_body(task_type="txt2vid"), "task_type"),
        (pi_body(task_type="txt2img-lora", lora_settings=[{"lora_type": "anime"}]), "advanced"),
        (pi_body(width=2048, height=1024), "width * input.height"),
        (pi_body(guidance_scale=6), "guidance_scale"),
        (pi_body(task_type="img2img", denoise=0), "denoise"),
        (pi_body(task_type="img2img"), "input.image"),
        (pi_body(batch_size=2), "batch_size"),
        (pi_body(model="Qubico/flux1-schnell", batch_size=5), "batch_size"),
        (pi_body(""), "prompt"),
        (
            pi_body(model="Qubico/flux1-dev-advanced", task_type="txt2img-lora"),
            "lora_settings",
        ),
        (
            pi_body(model="Qubico/flux1-dev-advanced", task_type="kontext", image="u", steps=41),
            "steps",
        ),
        (pi_body(config={"webhook_config": {"endpoint": "ftp://x"}}), "endpoint"),
    ],
)
async def test_piapi_validation_errors(
    http: aiohttp.ClientSession, body: dict[str, Any], needle: str
) -> None:
    async with FakeProvider() as fake:
        status, answer = await pi_create(http, fake, body)
        assert status == 400
        assert answer["code"] == 400 and answer["data"] is None
        assert needle in answer["message"]
        assert fake.jobs == {}


async def test_piapi_accepts_advanced_task_types(http: aiohttp.ClientSession) -> None:
    advanced = "Qubico/flux1-dev-advanced"
    bodies = [
        pi_body(model=advanced, task_type="txt2img-lora", lora_settings=[{"lora_type": "mjv6"}]),
        pi_body(model=advanced, task_type="fill-inpaint", image="https://x/y.png"),
        pi_body(model=advanced, task_type="kontext", image="https://x/y.png", steps=28),
        pi_body(
            model=advanced,
            task_type="controlnet-lora",
            control_net_settings=[{"control_type": "canny", "control_image": "https://x"}],
        ),
        pi_body(model="Qubico/flux1-schnell", task_type="img2img", image="https://x/y.png"),
    ]
    async with FakeProvider() as fake:
        for body in bodies:
            status, answer = await pi_create(http, fake, body)
            assert (status, answer["code"]) == (200, 200), answer


async def test_piapi_auth_and_unknown_task(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(api_key=KEY) as fake:
        async with http.post(
            f"{fake.url}/api/v1/task", json=pi_body(), headers={"x-api-key": KEY}
        ) as r:
            assert r.status == 200
        for headers in ({}, BEARER, {"X-API-Key": "wrong"}):
            async with http.post(f"{fake.url}/api/v1/task", json=pi_body(), headers=headers) as r:
                assert r.status == 401
                assert (await r.json())["code"] == 401
        async with http.get(f"{fake.url}/api/v1/task/{uuid.uuid4()}", headers=PIAPI_KEY) as r:
            assert r.status == 404


async def test_piapi_webhook(http: aiohttp.ClientSession) -> None:
    async with Receiver() as receiver, FakeProvider(latency=0.02) as fake:
        config = {"webhook_config": {"endpoint": receiver.url, "secret": "s3cret"}}
        _, with_secret = await pi_create(http, fake, pi_body(config=config))
        no_secret_config = {"webhook_config": {"endpoint": receiver.url, "secret": ""}}
        _, without_secret = await pi_create(http, fake, pi_body("b", config=no_secret_config))
        await fake.wait_callbacks_idle()
        by_task: dict[str, list[tuple[dict[str, str], Any]]] = {}
        for headers, payload, _ in receiver.deliveries:
            assert set(payload) == {"timestamp", "data"}
            assert isinstance(payload["timestamp"], int)
            assert abs(payload["timestamp"] - time.time()) < 5
            by_task.setdefault(payload["data"]["task_id"], []).append((headers, payload))

        first, last = by_task[with_secret["data"]["task_id"]]
        assert first[1]["data"]["status"] in PIAPI_RUNNING  # non-terminal delivery first
        assert last[1]["data"]["status"] in PIAPI_SUCCESS
        assert last[1]["data"]["output"]["image_url"].startswith(f"{fake.url}/files/")
        assert last[1]["data"]["config"]["webhook_config"]["secret"] == "s3cret"
        assert first[0]["x-webhook-secret"] == last[0]["x-webhook-secret"] == "s3cret"
        assert all(
            "x-webhook-secret" not in {k.lower() for k in headers}
            for headers, _ in by_task[without_secret["data"]["task_id"]]
        )
        assert [r.kind for r in fake.callbacks_sent].count("terminal") == 2


async def test_piapi_out_of_order_webhook(http: aiohttp.ClientSession) -> None:
    faults = Faults(callback_out_of_order=1.0)
    async with Receiver() as receiver, FakeProvider(latency=0.01, faults=faults) as fake:
        config = {"webhook_config": {"endpoint": receiver.url, "secret": "s"}}
        await pi_create(http, fake, pi_body(config=config))
        await fake.wait_callbacks_idle()
        statuses = [payload["data"]["status"] for _, payload, _ in receiver.deliveries]
        assert len(statuses) == 2
        assert statuses[0] in PIAPI_SUCCESS and statuses[1] in PIAPI_RUNNING
        assert [r.kind for r in fake.callbacks_sent] == ["terminal", "stale"]


# -- AI/ML API (providers.md section 2) ------------------------------------------------


async def test_aimlapi_success_shapes(http: aiohttp.ClientSession) -> None:
    body = {"model": "flux/dev", "prompt": "a cat", "num_images": 2, "image_size": "square_hd"}
    async with FakeProvider(latency=0.02) as fake:
        statuses, shapes = set(), set()
        for _ in range(12):
            started = time.monotonic()
            status, answer, _ = await aiml(http, fake, body)
            assert time.monotonic() - started >= 0.02  # synchronous: answers after latency
            statuses.add(status)
            if "images" in answer:
                shapes.add("images")
                assert len(answer["images"]) == 2
                for image in answer["images"]:
                    assert (image["width"], image["height"]) == (1024, 1024)
                    assert image["content_type"] == "image/png"
                    async with http.get(image["url"]) as r:
                        assert parse_png(await r.read())[:2] == (256, 256)
                assert isinstance(answer["seed"], int)
                assert answer["has_nsfw_concepts"] == [False, False]
                assert answer["prompt"] == "a cat"
                assert isinstance(answer["timings"]["inference"], float)
            else:
                assert len(answer["data"]) == 2
                assert answer["meta"]["usage"]["credits_used"] == 2
                for item in answer["data"]:
                    if item["url"] is not None:
                        shapes.add("data_url")
                        assert item["b64_json"] is None
                        async with http.get(item["url"]) as r:
                            assert r.status == 200
                    else:
                        shapes.add("data_b64")
                        parse_png(base64.b64decode(item["b64_json"]))
        assert statuses == {200, 201}
        assert shapes == {"images", "data_url", "data_b64"}
        assert fake.creates_per_prompt["a cat"] == 12
        assert fake.requests["aimlapi.generate"] == 12


async def test_aimlapi_b64_matches_job_image(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(latency=0, seed=1) as fake:
        for _ in range(10):
            _, answer, _ = await aiml(http, fake, {"model": "flux/schnell", "prompt": "p"})
            job = list(fake.jobs.values())[-1]
            items = answer.get("data") or []
            if items and items[0]["b64_json"]:
                data = base64.b64decode(items[0]["b64_json"])
                assert data == fake.image_bytes(job.image_urls[0])
                return
    pytest.fail("no b64_json answer drawn")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": "flux/dev-x", "prompt": "p"}, "Invalid enum value"),
        ({"model": "flux/dev"}, "prompt"),
        ({"model": "flux/dev", "prompt": "p", "num_images": 5}, "num_images"),
        ({"model": "flux/dev", "prompt": "p", "seed": 0}, "seed"),
        ({"model": "flux/dev", "prompt": "p", "image_size": "huge"}, "image_size"),
        (
            {"model": "flux/dev", "prompt": "p", "image_size": {"width": 1000, "height": 768}},
            "multiple of 32",
        ),
        ({"model": "flux/dev", "prompt": "p", "guidance_scale": 25}, "guidance_scale"),
        ({"model": "flux/dev/image-to-image", "prompt": "p"}, "image_url"),
        ({"model": "flux-pro", "prompt": "p", "safety_tolerance": 2}, "safety_tolerance"),
        ({"model": "flux-pro/v1.1-ultra", "prompt": "p", "aspect_ratio": "5:4"}, "aspect_ratio"),
        ({"model": "flux-realism", "prompt": "x" * 4001}, "prompt"),
    ],
)
async def test_aimlapi_validation_errors(
    http: aiohttp.ClientSession, body: dict[str, Any], needle: str
) -> None:
    async with FakeProvider() as fake:
        status, answer, _ = await aiml(http, fake, body)
        assert status == 400
        assert answer["message"].startswith("Body validation error!\n")
        assert needle in answer["message"]
        assert answer["path"] == "/v1/images/generations"
        assert answer["statusCode"] == "400"
        assert str(uuid.UUID(answer["requestId"])) == answer["requestId"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", answer["timestamp"])
        assert fake.jobs == {}


@pytest.mark.parametrize(
    "body",
    [
        {"model": "flux/schnell", "prompt": "p", "image_size": {"width": 64, "height": 1536}},
        {"model": "flux-pro/v1.1-ultra", "prompt": "p", "aspect_ratio": "9:21", "raw": False},
        {"model": "flux/kontext-pro/image-to-image", "prompt": "p", "image_url": ["a", "b"]},
        {"model": "flux-pro", "prompt": "p", "safety_tolerance": "6", "output_format": "png"},
        {"model": "blackforestlabs/flux-2-edit", "prompt": "p", "image_urls": ["a"]},
    ],
)
async def test_aimlapi_accepts_documented_params(
    http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    async with FakeProvider(latency=0) as fake:
        status, answer, _ = await aiml(http, fake, body)
        assert status in (200, 201), answer


async def test_aimlapi_auth_credits_and_failure(http: aiohttp.ClientSession) -> None:
    body = {"model": "flux/schnell", "prompt": "p"}
    async with FakeProvider(latency=0, credits=2) as fake:
        status, answer, _ = await aiml(http, fake, body, headers={})
        assert status == 401 and answer["statusCode"] == "401"
        assert answer["message"].startswith("This request requires a valid API key")
        for _ in range(2):
            assert (await aiml(http, fake, body))[0] in (200, 201)
        status, answer, _ = await aiml(http, fake, body)
        assert status == 403 and answer["statusCode"] == "403"
        assert answer["message"].startswith("You've run out of credits")
        assert len(fake.jobs) == 2 and fake.credits_left == 0
    async with FakeProvider(latency=0) as fake:
        status, answer, _ = await aiml(http, fake, {**body, "prompt": "[fault:fail] p"})
        assert status == 500 and answer["statusCode"] == "500"
        assert fake.creates_per_prompt["[fault:fail] p"] == 1  # created, then failed


async def test_aimlapi_drop_after_accept(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(latency=0.01) as fake:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await aiml(http, fake, {"model": "flux/dev", "prompt": "[fault:drop] p"})
        assert fake.lost_responses == 1 and len(fake.jobs) == 1


async def test_close_with_held_aimlapi_requests_does_not_hang(
    http: aiohttp.ClientSession,
) -> None:
    errors: list[BaseException] = []

    async def generate(prompt: str) -> None:
        try:
            await aiml(http, fake, {"model": "flux/dev", "prompt": prompt})
        except aiohttp.ClientConnectionError as exc:
            errors.append(exc)

    fake = FakeProvider(latency=30)
    await fake.start()
    async with anyio.create_task_group() as tg:
        tg.start_soon(generate, "[fault:never-finish] p")
        tg.start_soon(generate, "slow")
        await eventually(lambda: len(fake.jobs) == 2)
        started = time.monotonic()
        with anyio.fail_after(5):
            await fake.aclose()
        assert time.monotonic() - started < 2
    assert len(errors) == 2


# -- stats and the standalone server -----------------------------------------------------


async def test_stats_endpoint(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(latency=0.01) as fake:
        _, body = await sa_create(http, fake, sa_body())
        job_id = body["data"]["job_id"]
        await sa_query(http, fake, job_id)
        async with http.get(f"{fake.url}/_fake/stats") as r:
            stats = await r.json()
        assert stats["url"] == fake.url
        assert stats["create_attempts"] == 1 and stats["jobs_created"] == 1
        assert stats["creates_per_prompt"] == {"a red fox": 1}
        assert stats["polls_per_job"] == {job_id: 1}
        assert stats["requests"]["shortapi.create"] == 1
        assert stats["lost_responses"] == 0
        job = stats["jobs"][job_id]
        assert job["ready_at"] == fake.jobs[job_id].ready_at
        assert job["outcome"] == "succeeded" and job["provider"] == "shortapi"
        # CLOCK_MONOTONIC is system-wide: the values compare with this process's clock.
        assert job["created_at"] <= stats["monotonic_now"] <= time.monotonic()
        async with http.get(f"{fake.url}/_fake/stats", params={"detail": "0"}) as r:
            brief = await r.json()
        assert "jobs" not in brief and brief["create_attempts"] == 1


@pytest.mark.slow
@pytest.mark.timeout(30)
async def test_standalone_server_process(http: aiohttp.ClientSession) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable,
        "-m",
        "flux_async.testing",
        "--seed",
        "3",
        "--latency",
        "0.01,0.02",
        "--fault",
        "fail=0",
    ]
    async with await anyio.open_process(command, env=env) as process:
        assert process.stdout is not None
        with anyio.fail_after(20):
            first_line = b""
            async for chunk in process.stdout:
                first_line += chunk
                if b"\n" in first_line:
                    break
        url = first_line.decode().splitlines()[0]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        async with http.get(f"{url}/_fake/stats") as r:
            assert (await r.json())["create_attempts"] == 0
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            assert await process.wait() == 0
