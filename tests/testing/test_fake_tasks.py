"""Check what resuming a batch needs from the fake: queries across client restarts, PiAPI
cancel and PiAPI task history."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from flux_async.testing import FakeProvider

pytestmark = pytest.mark.anyio

PIAPI_KEY = {"X-API-Key": "test-key"}
BEARER = {"Authorization": "Bearer test-key"}
HISTORY = "/api/open/tasks/histories"


def pi_body(prompt: str = "a bear", config: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "Qubico/flux1-dev",
        "task_type": "txt2img",
        "input": {"prompt": prompt, "width": 1024, "height": 768},
    }
    if config:
        body["config"] = config
    return body


async def pi_create(http: aiohttp.ClientSession, fake: FakeProvider, body: dict[str, Any]) -> str:
    async with http.post(f"{fake.url}/api/v1/task", json=body, headers=PIAPI_KEY) as r:
        assert r.status == 200
        task_id: str = (await r.json())["data"]["task_id"]
        return task_id


async def pi_get(http: aiohttp.ClientSession, fake: FakeProvider, task_id: str) -> Any:
    async with http.get(f"{fake.url}/api/v1/task/{task_id}", headers=PIAPI_KEY) as r:
        assert r.status == 200
        return (await r.json())["data"]


async def pi_cancel(
    http: aiohttp.ClientSession, fake: FakeProvider, task_id: str, headers: Any = PIAPI_KEY
) -> tuple[int, Any]:
    async with http.delete(f"{fake.url}/api/v1/task/{task_id}", headers=headers) as r:
        return r.status, await r.json()


async def history(
    http: aiohttp.ClientSession, fake: FakeProvider, headers: Any = PIAPI_KEY, **params: Any
) -> tuple[int, Any]:
    async with http.get(f"{fake.url}{HISTORY}", params=params, headers=headers) as r:
        return r.status, await r.json()


# -- queries across client restarts -----------------------------------------------------------


async def test_jobs_outlive_the_client_that_created_them() -> None:
    async with FakeProvider(latency=0.05) as fake:
        async with aiohttp.ClientSession() as first:
            task_id = await pi_create(first, fake, pi_body())
            args = {"prompt": "x", "aspect_ratio": "1:1"}
            body = {"model": "shortapi/flux-1.0/text-to-image", "args": args}
            async with first.post(f"{fake.url}/api/v1/job/create", json=body, headers=BEARER) as r:
                job_id = (await r.json())["data"]["job_id"]
        await anyio.sleep(0.1)
        # A new process would open a new session; the fake keeps every job by id.
        async with aiohttp.ClientSession() as second:
            data = await pi_get(second, fake, task_id)
            assert data["status"] in {"completed", "Completed", "success"}
            assert data["output"]["image_url"].endswith(f"/files/{task_id}-0.png")
            async with second.get(
                f"{fake.url}/api/v1/job/query", params={"id": job_id}, headers=BEARER
            ) as r:
                assert (await r.json())["data"]["status"] == 2
        assert fake.polls_per_job[task_id] == 1 and fake.polls_per_job[job_id] == 1


# -- PiAPI cancel -----------------------------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.Response()

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


async def test_cancel_a_pending_task(http: aiohttp.ClientSession) -> None:
    async with Receiver() as receiver, FakeProvider(latency=30) as fake:
        config: dict[str, Any] = {"webhook_config": {"endpoint": receiver.url, "secret": "s3cret"}}
        task_id = await pi_create(http, fake, pi_body(config=config))
        status, answer = await pi_cancel(http, fake, task_id)
        assert status == 200 and answer["code"] == 200
        data = answer["data"]
        assert data["task_id"] == task_id
        assert data["status"] == "failed"
        assert data["output"] is None
        assert data["error"]["message"] == "task canceled"
        assert data["meta"]["usage"]["consume"] == 0  # nothing charged
        again = await pi_get(http, fake, task_id)
        assert again["status"] == "failed" and again["output"] is None
        job = fake.jobs[task_id]
        assert job.outcome == "cancelled" and job.image_urls == () and fake.cancels == 1
        async with http.get(f"{fake.url}/files/{task_id}-0.png") as r:
            assert r.status == 404  # no image
        # The terminal webhook goes out at the cancel, not 30 s later.
        with anyio.fail_after(5):
            await fake.wait_callbacks_idle()
        assert receiver.bodies[-1]["data"]["status"] == "failed"
        assert receiver.bodies[-1]["data"]["task_id"] == task_id


async def test_cancel_refuses_running_finished_and_unknown_tasks(
    http: aiohttp.ClientSession,
) -> None:
    async with FakeProvider(latency=0.2) as fake:
        task_id = await pi_create(http, fake, pi_body())
        job = fake.jobs[task_id]
        await anyio.sleep(max(0.0, job.started_at - time.monotonic()) + 0.01)
        status, answer = await pi_cancel(http, fake, task_id)
        assert status == 400 and answer["data"] is None
        assert "pending" in answer["message"]
        assert job.outcome == "succeeded"  # a processing task runs on
        await anyio.sleep(max(0.0, (job.ready_at or 0) - time.monotonic()) + 0.01)
        assert (await pi_cancel(http, fake, task_id))[0] == 400
        assert (await pi_get(http, fake, task_id))["output"] is not None
        assert (await pi_cancel(http, fake, "00000000-0000-4000-8000-000000000000"))[0] == 404
        assert (await pi_cancel(http, fake, task_id, headers={}))[0] == 401
        assert fake.cancels == 0
        assert fake.requests["piapi.cancel"] == 4


async def test_shortapi_and_aimlapi_have_no_cancel(http: aiohttp.ClientSession) -> None:
    async with FakeProvider() as fake:
        for path in ("/api/v1/job/query?id=x", "/v1/images/generations", "/api/v1/job/create"):
            async with http.delete(f"{fake.url}{path}", headers=BEARER) as r:
                assert r.status in (404, 405)


# -- PiAPI task history -------------------------------------------------------------------------


async def test_history_lists_tasks_newest_first(http: aiohttp.ClientSession) -> None:
    async with FakeProvider(latency=0) as fake:
        before = int(time.time()) - 1
        ids = [await pi_create(http, fake, pi_body(f"prompt {i}")) for i in range(3)]
        body = {"model": "flux/schnell", "prompt": "aiml"}
        async with http.post(f"{fake.url}/v1/images/generations", json=body, headers=BEARER):
            pass
        status, answer = await history(http, fake)
        assert status == 200 and answer["code"] == 200
        data = answer["data"]
        assert data["total"] == 3 and (data["page"], data["page_size"]) == (1, 10)
        assert [item["task_id"] for item in data["list"]] == ids[::-1]
        newest = data["list"][0]
        assert newest["input"]["prompt"] == "prompt 2"  # enough to recognise a lost create
        assert newest["status"] in {"completed", "Completed", "success"}
        status, answer = await history(http, fake, page=2, page_size=2, model="flux")
        assert [item["task_id"] for item in answer["data"]["list"]] == [ids[0]]
        assert (await history(http, fake, model="mj"))[1]["data"]["total"] == 0
        later = int(time.time()) + 60
        assert (await history(http, fake, start_time=later))[1]["data"]["total"] == 0
        assert (await history(http, fake, start_time=before, end_time=later))[1]["data"][
            "total"
        ] == 3
        assert (await history(http, fake, end_time=before))[1]["data"]["total"] == 0


@pytest.mark.parametrize(
    "params", [{"page_size": 101}, {"page_size": 0}, {"page": 0}, {"start_time": "soon"}]
)
async def test_history_refuses_bad_parameters(
    http: aiohttp.ClientSession, params: dict[str, Any]
) -> None:
    async with FakeProvider() as fake:
        status, answer = await history(http, fake, **params)
        assert status == 400 and answer["data"] is None and answer["message"]


async def test_history_needs_the_key(http: aiohttp.ClientSession) -> None:
    async with FakeProvider() as fake:
        assert (await history(http, fake, headers={}))[0] == 401
        assert fake.requests["piapi.history"] == 1
