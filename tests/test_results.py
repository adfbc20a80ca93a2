"""Results in memory: ``Image.read``/``FluxClient.read`` (bytes, with the download checks),
``Generation.save``, sizes from image headers (``Image.with_size``), and the
JSON-ready ``Generation.to_dict``/``Outcome.to_dict``. Over loopback against the fake."""

from __future__ import annotations

import base64
import json
import struct
from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp import web
from support import KEY, ServeApp, client_for

from flux_async import DownloadError, Image, Limits
from flux_async._imagesize import sniff_image
from flux_async.testing import FakeProvider

pytestmark = pytest.mark.anyio


def _png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0" * 4


def _jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0" + b"\1\1\0\0\1\0\1\0\0"
    # A segment whose payload holds 0xFF bytes: the parser must skip by length.
    com = b"\xff\xfe" + struct.pack(">H", 6) + b"\xff\xc0\xff\xc0"
    dqt = b"\xff\xdb" + struct.pack(">H", 4) + b"\0\0"
    sof2 = b"\xff\xc2" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\1\x11\0"
    return b"\xff\xd8" + app0 + com + dqt + sof2 + b"\xff\xda"


def _webp_vp8x(width: int, height: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0"
    body += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


def _webp_vp8l(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    body = b"VP8L" + struct.pack("<I", 5) + b"\x2f" + struct.pack("<I", bits)
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


def _webp_vp8(width: int, height: int) -> bytes:
    frame = b"\0\0\0" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    body = b"VP8 " + struct.pack("<I", len(frame)) + frame
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_png(1024, 576), ("image/png", 1024, 576)),
        (_jpeg(1920, 1080), ("image/jpeg", 1920, 1080)),
        (_webp_vp8x(3000, 2000), ("image/webp", 3000, 2000)),
        (_webp_vp8l(640, 480), ("image/webp", 640, 480)),
        (_webp_vp8(800, 600), ("image/webp", 800, 600)),
        (b"GIF89a" + struct.pack("<HH", 33, 44) + b"\0", ("image/gif", 33, 44)),
        (_png(10, 10)[:20], None),  # cut before the size
        (_jpeg(10, 10)[:30], None),
        (b"\xff\xd8\xff\xda" + b"\0" * 20, None),  # scan before any frame header
        (b"<html>not an image</html>", None),
        (b"", None),
    ],
)
def test_sniff_image_reads_the_size_from_the_header(
    data: bytes, expected: tuple[str, int, int] | None
) -> None:
    assert sniff_image(data) == expected


def test_with_size_fills_only_what_the_provider_left_out() -> None:
    data = _jpeg(1920, 1080)
    bare = Image(url="https://x/a")
    assert bare.with_size(data) == Image(
        url="https://x/a", width=1920, height=1080, content_type="image/jpeg"
    )
    reported = Image(url="https://x/a", width=1024, height=768, content_type="image/jpeg")
    assert reported.with_size(data) is reported
    typed = Image(url="https://x/a", content_type="image/jpg")
    assert typed.with_size(data).content_type == "image/jpg"  # the provider's word kept
    assert bare.with_size(b"garbage") is bare


async def test_read_returns_the_bytes_and_the_size_comes_from_them(
    fake: FakeProvider,
) -> None:
    async with client_for("shortapi", fake) as client:
        generation = await client.generate("a red fox", aspect_ratio="16:9", num_images=2)
        first, second = generation.images
        via_client = await client.read(first)
    via_image = await second.read()  # no client needed: a short-lived session of its own
    assert via_client == fake.image_bytes(first.url)
    assert via_image == fake.image_bytes(second.url)
    assert via_client != via_image
    sized = first.with_size(via_client)
    # 16:9 at 1024 px on the long side, scaled down by the fake to 256 px.
    assert (sized.width, sized.height, sized.content_type) == (256, 144, "image/png")
    assert sized.url == first.url


async def test_read_of_a_data_url_is_local(fake: FakeProvider) -> None:
    png = _png(7, 9)
    image = Image(url="data:image/png;base64," + base64.b64encode(png).decode())
    assert await image.read() == png
    async with client_for("shortapi", fake) as client:
        assert await client.read(image) == png
    assert fake.requests.total() == 0
    with pytest.raises(DownloadError, match="byte limit"):
        await image.read(max_bytes=10)
    with pytest.raises(DownloadError, match="not a base64 image"):
        await Image(url="data:text/plain;base64,aGVsbG8=").read()


@pytest.fixture
async def cookie_host(serve_app: ServeApp) -> tuple[str, list[dict[str, str]]]:
    """An image host that sets a cookie on every answer and records request headers."""
    seen: list[dict[str, str]] = []
    png = _png(3, 2) + b"\0" * 200

    async def serve(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        kind = request.match_info["kind"]
        if kind == "html":
            response = web.Response(text="<html>", content_type="text/html")
        elif kind == "huge":
            response = web.Response(body=png * 50, content_type="image/png")
        else:
            response = web.Response(body=png, content_type="image/png")
        response.set_cookie("tracker", "abc")
        return response

    app = web.Application()
    app.router.add_get("/img/{kind}", serve)
    return await serve_app(app), seen


async def test_read_sends_no_key_no_cookie_and_checks_type_and_size(
    fake: FakeProvider, cookie_host: tuple[str, list[dict[str, str]]]
) -> None:
    base, seen = cookie_host
    async with client_for("shortapi", fake, limits=Limits(max_download_bytes=5000)) as client:
        for _ in range(2):
            data = await client.read(Image(url=f"{base}/img/ok.png"))
            assert Image(url="u").with_size(data).width == 3
        with pytest.raises(DownloadError, match="not an image") as caught:
            await client.read(Image(url=f"{base}/img/html"))
        assert caught.value.provider == "shortapi"
        with pytest.raises(DownloadError, match="5000 byte limit"):
            await client.read(Image(url=f"{base}/img/huge"))
    assert await Image(url=f"{base}/img/ok.png").read() == data
    with pytest.raises(DownloadError, match="byte limit"):
        await Image(url=f"{base}/img/ok.png").read(max_bytes=100)
    assert len(seen) == 6
    for headers in seen:
        assert "Authorization" not in headers and "X-API-Key" not in headers
        assert KEY not in str(headers)
        assert "Cookie" not in headers  # the host's cookie is never sent back


async def test_generation_save_writes_every_image(fake: FakeProvider, tmp_path: Path) -> None:
    async with client_for("piapi", fake) as client:
        generation = await client.generate("two owls", width=512, height=256)
    paths = await generation.save(tmp_path / "out", prefix="owls-")
    assert len(paths) == len(generation.images) >= 1
    for path, image in zip(paths, generation.images, strict=True):
        assert path.parent == tmp_path / "out" and path.name.startswith("owls-")
        assert path.suffix == ".png"
        assert path.read_bytes() == fake.image_bytes(image.url)
        sized = image.with_size(path.read_bytes())
        assert (sized.width, sized.height) == (256, 128)
    assert not list(tmp_path.rglob("*.part"))
    with pytest.raises(DownloadError, match="byte limit"):
        await generation.save(tmp_path / "small", max_bytes=50)
    assert not list((tmp_path / "small").glob("*"))


async def test_to_dict_survives_a_json_round_trip(fake: FakeProvider, tmp_path: Path) -> None:
    async with client_for("shortapi", fake) as client:
        outcomes = [
            outcome
            async for outcome in client.generate_many(
                ["a pear", {"prompt": "a plum", "colour": "red"}], download_to=tmp_path
            )
        ]
    by_status = {outcome.status: outcome for outcome in outcomes}
    good, bad = by_status["succeeded"], by_status["rejected"]
    assert good.generation is not None

    generation = good.generation.to_dict()
    assert json.loads(json.dumps(generation)) == generation
    assert generation["cost"] == str(good.generation.cost) and generation["cost"] != "None"
    assert Decimal(generation["cost"]) == good.generation.cost
    assert generation["images"][0]["url"] == good.generation.images[0].url
    assert generation["job_id"] == good.generation.job_id

    data = good.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["status"] == "succeeded" and data["ok"] is True and data["error"] is None
    assert data["files"] == [str(path) for path in good.files] and data["files"]
    assert data["job"]["status"] == "succeeded" and data["job"]["id"] == good.generation.job_id
    assert data["generation"] == generation
    assert data["request"] == "a pear"

    rejected = bad.to_dict()
    assert json.loads(json.dumps(rejected)) == rejected
    assert rejected["ok"] is False and rejected["generation"] is None
    assert rejected["error"]["type"] == "ValidationError"
    assert "colour" in rejected["error"]["message"]
    assert rejected["request"] == {"prompt": "a plum", "colour": "red"}
