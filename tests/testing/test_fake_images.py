"""Check the fake's PNGs: the requested size or aspect ratio, and a pattern, not a flat square."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import aiohttp
import anyio
import pytest

from flux_async.testing import FakeProvider

pytestmark = pytest.mark.anyio

BEARER = {"Authorization": "Bearer test-key"}
PIAPI_KEY = {"X-API-Key": "test-key"}


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Read the IHDR size and un-filter the RGB rows (filter types None and Sub)."""
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
    assert chunks[0][0] == b"IHDR"
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour) == (8, 2)
    raw = zlib.decompress(b"".join(p for tag, p in chunks if tag == b"IDAT"))
    stride = 1 + 3 * width
    assert len(raw) == height * stride
    rows = []
    for y in range(height):
        kind, line = raw[y * stride], bytearray(raw[y * stride + 1 : (y + 1) * stride])
        assert kind in (0, 1)
        if kind == 1:
            for i in range(3, len(line)):
                line[i] = (line[i] + line[i - 3]) & 0xFF
        rows.append(bytes(line))
    return width, height, rows


def colours(rows: list[bytes]) -> set[bytes]:
    return {row[i : i + 3] for row in rows for i in range(0, len(row), 3)}


async def fetch(http: aiohttp.ClientSession, url: str) -> bytes:
    async with http.get(url) as r:
        assert r.status == 200 and r.content_type == "image/png"
        return await r.read()


@pytest.mark.parametrize(
    ("aspect_ratio", "size"),
    [
        ("1:1", (256, 256)),
        ("16:9", (256, 144)),
        ("9:16", (144, 256)),
        ("4:3", (256, 192)),
        ("3:4", (192, 256)),
        ("3:2", (256, 171)),
        ("2:3", (171, 256)),
        ("21:9", (256, 110)),
    ],
)
async def test_shortapi_images_have_the_aspect_ratio(
    http: aiohttp.ClientSession, aspect_ratio: str, size: tuple[int, int]
) -> None:
    body = {
        "model": "shortapi/flux-1.0/text-to-image",
        "args": {"prompt": "a fox", "aspect_ratio": aspect_ratio, "num_images": 2},
    }
    async with FakeProvider(latency=0) as fake:
        async with http.post(f"{fake.url}/api/v1/job/create", json=body, headers=BEARER) as r:
            job_id = (await r.json())["data"]["job_id"]
        first, second = [await fetch(http, url) for url in fake.jobs[job_id].image_urls]
        width, height, rows = decode_png(first)
        assert (width, height) == size
        assert len(colours(rows)) > 100  # a pattern, not one colour
        other = decode_png(second)[2]
        assert rows != other  # distinct per image, not only by the tEXt chunk


@pytest.mark.parametrize(
    ("task_input", "max_side", "size"),
    [
        ({}, 256, (256, 256)),  # 1024x1024 when width and height are absent
        ({"width": 1024, "height": 768}, 256, (256, 192)),
        ({"width": 768, "height": 1344}, 256, (146, 256)),
        ({"width": 200, "height": 120}, 256, (200, 120)),  # small enough: the true size
        ({"width": 1024, "height": 768}, None, (1024, 768)),  # no cap
    ],
)
async def test_piapi_images_have_the_requested_size(
    http: aiohttp.ClientSession,
    task_input: dict[str, Any],
    max_side: int | None,
    size: tuple[int, int],
) -> None:
    body = {
        "model": "Qubico/flux1-dev",
        "task_type": "txt2img",
        "input": {"prompt": "a bear", **task_input},
    }
    async with FakeProvider(latency=0, image_max_side=max_side) as fake:
        async with http.post(f"{fake.url}/api/v1/task", json=body, headers=PIAPI_KEY) as r:
            task_id = (await r.json())["data"]["task_id"]
        async with http.get(f"{fake.url}/api/v1/task/{task_id}", headers=PIAPI_KEY) as r:
            url = (await r.json())["data"]["output"]["image_url"]
        data = await fetch(http, url)
        assert decode_png(data)[:2] == size
        assert fake.image_bytes(url) == data == fake.served_files[f"/files/{task_id}-0.png"]


@pytest.mark.parametrize(
    ("extra", "nominal", "size"),
    [
        ({"model": "flux/dev"}, (1024, 768), (256, 192)),  # default landscape_4_3
        ({"model": "flux/dev", "image_size": "portrait_16_9"}, (576, 1024), (144, 256)),
        (
            {"model": "flux/schnell", "image_size": {"width": 160, "height": 96}},
            (160, 96),
            (160, 96),
        ),
        ({"model": "flux-pro/v1.1-ultra"}, (2752, 1536), (256, 143)),
    ],
)
async def test_aimlapi_images_have_the_requested_size(
    http: aiohttp.ClientSession,
    extra: dict[str, Any],
    nominal: tuple[int, int],
    size: tuple[int, int],
) -> None:
    body = {"prompt": "a cat", **extra}
    async with FakeProvider(latency=0, seed=2) as fake:
        seen: set[str] = set()
        for _ in range(20):
            if seen >= {"images", "data"}:
                break
            async with http.post(
                f"{fake.url}/v1/images/generations", json=body, headers=BEARER
            ) as r:
                answer = await r.json()
            if "images" in answer:
                seen.add("images")
                (image,) = answer["images"]
                # The wire reports the size asked for; the PNG is that shape, scaled down.
                assert (image["width"], image["height"]) == nominal
                data = await fetch(http, image["url"])
            else:
                seen.add("data")
                (item,) = answer["data"]
                if item["url"] is not None:
                    data = await fetch(http, item["url"])
                else:
                    data = base64.b64decode(item["b64_json"])
            assert decode_png(data)[:2] == size
        assert seen == {"images", "data"}


async def test_kontext_aspect_ratio_shapes_the_image(http: aiohttp.ClientSession) -> None:
    body = {"model": "flux/kontext-pro/text-to-image", "prompt": "x", "aspect_ratio": "9:21"}
    async with FakeProvider(latency=0) as fake:
        async with http.post(f"{fake.url}/v1/images/generations", json=body, headers=BEARER):
            pass
        (job,) = fake.jobs.values()
        width, height = job.image_size
        assert width < height and abs(width / height - 9 / 21) < 0.05
        assert decode_png(fake.image_bytes(job.image_urls[0]))[1] == 256


async def test_images_are_cheap(http: aiohttp.ClientSession) -> None:
    body = {"model": "Qubico/flux1-dev", "task_type": "txt2img", "input": {"prompt": "x"}}
    async with FakeProvider(latency=0) as fake:
        async with http.post(f"{fake.url}/api/v1/task", json=body, headers=PIAPI_KEY) as r:
            task_id = (await r.json())["data"]["task_id"]
        await anyio.sleep(0.01)
        data = await fetch(http, f"{fake.url}/files/{task_id}-0.png")
        # The fake keeps every served PNG in memory; 10,000 of them must stay small.
        assert len(data) < 4096
