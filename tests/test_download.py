"""FluxClient.download of ``data:`` URLs (AI/ML API ``b64_json`` results): saved atomically
from the URL itself, checked like any download. (HTTP downloads: test_batch.py.)"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from support import client_for

from flux_async import DownloadError, Generation, Image, Limits
from flux_async.testing import FakeProvider

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def _generation(*urls: str) -> Generation:
    return Generation(images=tuple(Image(url=url) for url in urls), provider="aimlapi",
                      model="m", job_id="job/../1", local_id="l")


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
            outcomes = [o async for o in client.generate_many(
                [f"b64 {i}" for i in range(6)], download_to=tmp_path)]
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
