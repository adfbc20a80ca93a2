"""FluxClient.download: image hosts over loopback (no key sent, type and size checked,
transient failures retried, cancellation leaves no partial file) and ``data:`` URLs (AI/ML
API ``b64_json`` results), saved atomically. (generate_many's download_to: test_batch.py.)"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from pathlib import Path

import pytest
from aiohttp import web
from support import KEY, ServeApp, client_for

from flux_async import ClientStateError, DownloadError, Generation, Image, Limits
from flux_async.testing import FakeProvider

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def _generation(*urls: str) -> Generation:
    return Generation(
        images=tuple(Image(url=url) for url in urls),
        provider="aimlapi",
        model="m",
        job_id="job/../1",
        local_id="l",
    )


def _data_url(data: bytes, content_type: str = "image/png") -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


async def test_data_urls_are_decoded_into_files(fake: FakeProvider, tmp_path: Path) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + b"\1" * 300
    async with client_for("shortapi", fake) as client:
        paths = await client.download(
            _generation(_data_url(PNG), _data_url(jpeg, "image/jpeg")), tmp_path
        )
    assert [p.read_bytes() for p in paths] == [PNG, jpeg]
    assert [p.suffix for p in paths] == [".png", ".jpg"]
    assert all(p.parent == tmp_path for p in paths)  # the job id's "../" stays in the name
    assert not list(tmp_path.glob(".*.part"))
    assert fake.requests.total() == 0  # nothing was fetched


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("data:text/plain;base64," + base64.b64encode(b"hello").decode(), "not a base64 image"),
        ("data:image/png,not-base64-encoded", "not a base64 image"),
        ("data:image/png;base64,@@@not base64@@@", "not valid base64"),
        (_data_url(PNG * 10), "byte limit"),
    ],
)
async def test_bad_data_urls_are_download_errors(
    fake: FakeProvider, tmp_path: Path, url: str, message: str
) -> None:
    async with client_for("shortapi", fake, limits=Limits(max_download_bytes=5000)) as client:
        with pytest.raises(DownloadError, match=message):
            await client.download(_generation(url), tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_aimlapi_b64_results_are_saved_by_a_batch(tmp_path: Path) -> None:
    async with FakeProvider(latency=0.01, seed=11) as fake:
        async with client_for("aimlapi", fake) as client:
            outcomes = [
                o
                async for o in client.generate_many(
                    [f"b64 {i}" for i in range(6)], download_to=tmp_path
                )
            ]
    inline = 0
    for outcome in outcomes:
        assert outcome.ok and outcome.generation is not None
        for image, path in zip(outcome.generation.images, outcome.files, strict=True):
            if image.url.startswith("data:"):
                inline += 1
                expected = base64.b64decode(image.url.partition(",")[2])
            else:
                expected = fake.served_files[image.url.removeprefix(fake.url)]
            assert path.read_bytes() == expected and expected.startswith(b"\x89PNG")
    assert inline >= 1  # the fake answers some AI/ML API jobs with b64_json


# -- image hosts over HTTP ------------------------------------------------------------------


@pytest.fixture
async def image_host(serve_app: ServeApp) -> tuple[str, list[dict[str, str]]]:
    """A separate image host that records request headers and serves odd answers."""
    seen: list[dict[str, str]] = []
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 100

    async def serve(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        kind = request.match_info["kind"]
        if kind == "ok.png":
            return web.Response(body=png, content_type="image/png")
        if kind == "html":
            return web.Response(text="<html>", content_type="text/html")
        if kind == "huge":
            return web.Response(body=b"\0" * 5000, content_type="image/png")
        if kind == "flaky" and len([h for h in seen if h]) < 3:
            return web.Response(status=503, headers={"Retry-After": "0"})
        if kind == "flaky":
            return web.Response(body=png, content_type="image/png")
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/img/{kind}", serve)
    return await serve_app(app), seen


async def test_download_never_sends_the_key_and_checks_type_and_size(
    image_host: tuple[str, list[dict[str, str]]], tmp_path: Path
) -> None:
    base, seen = image_host
    async with FakeProvider(latency=0.01) as fake:
        limits = Limits(max_download_bytes=1000)
        async with client_for("shortapi", fake, limits=limits) as client:
            (path,) = await client.download(_generation(f"{base}/img/ok.png"), tmp_path)
            assert path.read_bytes().startswith(b"\x89PNG") and path.parent == tmp_path
            with pytest.raises(DownloadError, match="not an image"):
                await client.download(_generation(f"{base}/img/html"), tmp_path / "h")
            with pytest.raises(DownloadError, match="limit"):
                await client.download(_generation(f"{base}/img/huge"), tmp_path / "b")
            with pytest.raises(DownloadError, match="404"):
                await client.download(_generation(f"{base}/img/missing"), tmp_path / "m")
            (flaky,) = await client.download(_generation(f"{base}/img/flaky"), tmp_path / "f")
            assert flaky.exists()
    assert seen
    for headers in seen:
        assert "Authorization" not in headers and KEY not in str(headers)
    assert not list(tmp_path.rglob("*.part")) and not list((tmp_path / "b").glob("*"))


async def test_cancelling_a_download_leaves_no_partial_file(
    tmp_path: Path, serve_app: ServeApp
) -> None:
    started = asyncio.Event()

    async def slow_image(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        await response.write(b"\x89PNG" + b"\0" * 70000)
        started.set()
        await asyncio.sleep(30)
        return response

    app = web.Application()
    app.router.add_get("/slow.png", slow_image)
    url = await serve_app(app) + "/slow.png"
    async with FakeProvider(latency=0.01) as fake:
        async with client_for("shortapi", fake) as client:
            task = asyncio.ensure_future(client.download(_generation(url), tmp_path))
            await started.wait()
            await asyncio.sleep(0.1)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert list(tmp_path.iterdir()) == []
        with pytest.raises(ClientStateError, match="closed"):
            await client.download(_generation(url), tmp_path)
