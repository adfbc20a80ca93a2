"""image_url from a local file, bytes or a data: URL, over loopback against FakeProvider.

Errors are raised before anything is sent (``fake.create_attempts == 0``) and name
``image_url``; images go inline where the provider documents an inline form (AI/ML API's
FLUX.2 edit models, PiAPI's kontext) and through the client's uploader elsewhere.
"""

from __future__ import annotations

import base64
import struct
import threading
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from flux_async import (
    AIMLAPI,
    FluxClient,
    GenerationRequest,
    Limits,
    PiAPI,
    PollPolicy,
    Provider,
    ShortAPI,
    ValidationError,
    _images,
)
from flux_async._images import UploadError, image_url_text, sniff_image_type
from flux_async.testing import FakeProvider

pytestmark = pytest.mark.anyio

FAST_POLL = PollPolicy(wait_first=0.02, wait_initial=0.02, wait_max=0.05, timeout=10)


def make_png(width: int = 5, height: int = 3) -> bytes:
    """A real (tiny) RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 50 % 256, y * 80 % 256, 128)) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = make_png()
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 16
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 8
GIF = b"GIF89a" + b"\x00" * 10


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider(latency=(0.01, 0.03), seed=5) as server:
        yield server


@pytest.fixture
def png_file(tmp_path: Path) -> Path:
    path = tmp_path / "input.png"
    path.write_bytes(PNG)
    return path


class BucketServer:
    """The user's bucket: an uploader that stores bytes on a loopback HTTP server."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.calls: list[tuple[int, str]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/b/{name}", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def upload(self, data: bytes, content_type: str) -> str:
        self.calls.append((len(data), content_type))
        name = f"{len(self.files)}.{content_type.rsplit('/', 1)[1]}"
        self.files[name] = (data, content_type)
        return f"{self.url}/b/{name}"

    async def _serve(self, request: web.Request) -> web.Response:
        data, content_type = self.files[request.match_info["name"]]
        return web.Response(body=data, content_type=content_type)


@pytest.fixture
async def bucket() -> AsyncIterator[BucketServer]:
    server = BucketServer()
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()


PROVIDERS: dict[str, Callable[[str], Provider]] = {
    "shortapi": lambda url: ShortAPI("test-key", base_url=url),
    "piapi": lambda url: PiAPI("test-key", base_url=url),
    "aimlapi": lambda url: AIMLAPI("test-key", base_url=url),
}
# The request fields that pick each provider's inline form.
INLINE: dict[str, dict[str, Any]] = {
    "piapi": {"extra": {"task_type": "kontext"}},
    "aimlapi": {"model": "blackforestlabs/flux-2-edit"},
}


def client_for(name: str, fake: FakeProvider, **kwargs: Any) -> FluxClient:
    return FluxClient(PROVIDERS[name](fake.url), poll=FAST_POLL, seed=0, **kwargs)


def only_job(fake: FakeProvider) -> Any:
    (job,) = fake.jobs.values()
    return job


# -- inline, over loopback ----------------------------------------------------------------------


async def test_piapi_kontext_sends_a_local_file_as_bare_base64(
    fake: FakeProvider, png_file: Path
) -> None:
    async with client_for("piapi", fake) as client:
        generation = await client.generate(
            "make it blue", image_url=str(png_file), **INLINE["piapi"]
        )
    assert generation.images
    job = only_job(fake)
    assert job.task_type == "kontext"
    assert job.params["image"] == base64.b64encode(PNG).decode()
    assert base64.b64decode(job.params["image"]) == PNG


async def test_aimlapi_flux2_edit_sends_a_local_file_as_a_data_url(
    fake: FakeProvider, png_file: Path
) -> None:
    async with client_for("aimlapi", fake) as client:
        generation = await client.generate(
            "make it blue", image_url=str(png_file), **INLINE["aimlapi"]
        )
    assert generation.images
    job = only_job(fake)
    assert job.model == "blackforestlabs/flux-2-edit"
    assert job.params["image_urls"] == ["data:image/png;base64," + base64.b64encode(PNG).decode()]


@pytest.mark.parametrize(
    ("image", "content_type"),
    [(JPEG, "image/jpeg"), (WEBP, "image/webp"), (GIF, "image/gif")],
)
async def test_a_data_url_is_resent_with_the_type_its_bytes_have(
    fake: FakeProvider, image: bytes, content_type: str
) -> None:
    # Declared as PNG; the magic bytes decide.
    given = "data:image/png;base64," + base64.b64encode(image).decode()
    async with client_for("aimlapi", fake) as client:
        await client.generate("x", image_url=given, **INLINE["aimlapi"])
    sent = only_job(fake).params["image_urls"][0]
    assert sent == f"data:{content_type};base64," + base64.b64encode(image).decode()


async def test_an_http_url_is_sent_as_it_is_and_the_uploader_is_not_called(
    fake: FakeProvider, bucket: BucketServer
) -> None:
    url = "https://example.com/cat.png"
    async with client_for("shortapi", fake, uploader=bucket.upload) as client:
        await client.generate("x", image_url=url)
    assert only_job(fake).params["image_url"] == url
    assert bucket.calls == []


# -- through the uploader ---------------------------------------------------------------------


async def test_shortapi_uploads_a_local_file_and_sends_its_url(
    fake: FakeProvider, bucket: BucketServer, png_file: Path
) -> None:
    async with client_for("shortapi", fake, uploader=bucket.upload) as client:
        generation = await client.generate("make it blue", image_url=str(png_file))
    assert generation.images
    assert bucket.calls == [(len(PNG), "image/png")]
    job = only_job(fake)
    assert job.model == "shortapi/flux-1.0/image-to-image"
    sent = job.params["image_url"]
    assert sent.startswith(bucket.url)
    # The URL the provider got serves the very bytes of the file.
    async with aiohttp.ClientSession() as session, session.get(sent) as response:
        assert response.content_type == "image/png"
        assert await response.read() == PNG


@pytest.mark.parametrize("name", ["shortapi", "piapi", "aimlapi"])
async def test_a_data_url_goes_through_the_uploader_where_no_inline_form_exists(
    name: str, fake: FakeProvider, bucket: BucketServer
) -> None:
    given = "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()
    async with client_for(name, fake, uploader=bucket.upload) as client:
        await client.generate("x", image_url=given)
    assert bucket.calls == [(len(JPEG), "image/jpeg")]
    params = only_job(fake).params
    assert (params.get("image_url") or params.get("image")) == f"{bucket.url}/b/0.jpeg"


async def test_the_file_is_read_off_the_event_loop(
    fake: FakeProvider, png_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    real_stat = _images.os.stat

    def spying_stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path) == str(png_file):
            threads.append(threading.get_ident())
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(_images.os, "stat", spying_stat)
    async with client_for("piapi", fake) as client:
        await client.submit("x", image_url=str(png_file), **INLINE["piapi"])
    assert threads and threading.get_ident() not in threads


# -- errors: named, and nothing sent -----------------------------------------------------------


async def failing_upload(data: bytes, content_type: str) -> str:
    raise OSError("bucket is down")


async def non_url_upload(data: bytes, content_type: str) -> str:
    return "s3://bucket/key.png"


def error_cases(tmp_path: Path) -> dict[str, tuple[str, Any, dict[str, Any], str]]:
    """name -> (provider, image_url, client/submit options, words the message must hold)."""
    text = tmp_path / "notes.png"
    text.write_bytes(b"hello, not an image")
    big = tmp_path / "big.png"
    big.write_bytes(PNG + b"\x00" * 200)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    small = Limits(max_upload_bytes=100)
    return {
        "missing file": ("piapi", str(tmp_path / "nope.png"), INLINE["piapi"], "no file exists"),
        "directory": ("piapi", str(tmp_path), INLINE["piapi"], "directory"),
        "not an image": ("aimlapi", str(text), INLINE["aimlapi"], "not a PNG, JPEG, WebP or GIF"),
        "empty file": ("aimlapi", str(empty), INLINE["aimlapi"], "not a PNG, JPEG, WebP or GIF"),
        "file too big": (
            "piapi",
            str(big),
            {**INLINE["piapi"], "limits": small},
            "max_upload_bytes",
        ),
        "data URL too big": (
            "aimlapi",
            "data:image/png;base64," + base64.b64encode(PNG + b"\x00" * 200).decode(),
            {**INLINE["aimlapi"], "limits": small},
            "max_upload_bytes",
        ),
        "data URL not base64": (
            "aimlapi",
            "data:image/png;base64,@@@@",
            INLINE["aimlapi"],
            "valid base64",
        ),
        "data URL not an image": (
            "aimlapi",
            "data:image/png;base64," + base64.b64encode(b"<svg/>").decode(),
            INLINE["aimlapi"],
            "not a PNG",
        ),
        "other scheme": ("piapi", "ftp://example.com/a.png", INLINE["piapi"], "ftp: URLs are not"),
        "no uploader": ("shortapi", str(text), {}, "uploader="),
        "uploader fails": (
            "shortapi",
            "data:image/png;base64," + base64.b64encode(PNG).decode(),
            {"uploader": failing_upload},
            "bucket is down",
        ),
        "uploader returns no URL": (
            "shortapi",
            "data:image/png;base64," + base64.b64encode(PNG).decode(),
            {"uploader": non_url_upload},
            "s3://bucket/key.png",
        ),
        "model takes no image": ("aimlapi", str(text), {"model": "schnell"}, "no image for"),
    }


CASES = [
    "missing file",
    "directory",
    "not an image",
    "empty file",
    "file too big",
    "data URL too big",
    "data URL not base64",
    "data URL not an image",
    "other scheme",
    "no uploader",
    "uploader fails",
    "uploader returns no URL",
    "model takes no image",
]


@pytest.mark.parametrize("case", CASES)
async def test_errors_name_image_url_and_send_nothing(
    case: str, fake: FakeProvider, tmp_path: Path
) -> None:
    provider, image_url, options, words = error_cases(tmp_path)[case]
    options = dict(options)
    client_options = {key: options.pop(key) for key in ("limits", "uploader") if key in options}
    async with client_for(provider, fake, **client_options) as client:
        with pytest.raises(ValidationError) as caught:
            await client.submit("x", image_url=image_url, **options)
    error = caught.value
    assert error.field == "image_url"
    assert error.provider == provider
    assert words in str(error)
    assert "image.invalid" not in str(error)  # the stand-in URL never shows
    assert error.allowed
    assert fake.create_attempts == 0
    assert not fake.jobs


async def test_uploader_errors_are_upload_errors_with_the_cause(
    fake: FakeProvider, png_file: Path
) -> None:
    async with client_for("shortapi", fake, uploader=failing_upload) as client:
        with pytest.raises(UploadError) as caught:
            await client.submit("x", image_url=str(png_file))
    assert isinstance(caught.value.__cause__, OSError)
    assert fake.create_attempts == 0


async def test_no_uploader_error_says_how_to_fix_it(fake: FakeProvider, png_file: Path) -> None:
    async with client_for("aimlapi", fake) as client:
        with pytest.raises(ValidationError) as caught:
            await client.submit("x", image_url=str(png_file))
    message = str(caught.value)
    assert "uploader=" in message and "async def upload(data: bytes, content_type: str)" in message
    assert "flux-2-edit" in message  # where AI/ML API does take it inline
    assert fake.create_attempts == 0


async def test_a_big_file_is_refused_without_being_read(
    fake: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "huge.png"
    with big.open("wb") as file:
        file.write(PNG)
        file.truncate(50 * 1024 * 1024)  # sparse: 50 MB on paper
    opened: list[str] = []
    real_open = open

    def spying_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(_images, "open", spying_open, raising=False)
    async with client_for("piapi", fake) as client:
        with pytest.raises(ValidationError, match="52428800 bytes"):
            await client.submit("x", image_url=str(big), **INLINE["piapi"])
    assert str(big) not in opened
    assert fake.create_attempts == 0


# -- batches, bytes and paths -----------------------------------------------------------------


async def test_generate_many_rejects_a_bad_image_and_runs_the_rest(
    fake: FakeProvider, tmp_path: Path, png_file: Path
) -> None:
    inputs = [
        {"prompt": "good", "image_url": str(png_file), **INLINE["piapi"]},
        {"prompt": "missing", "image_url": str(tmp_path / "nope.png"), **INLINE["piapi"]},
        # A GenerationRequest may carry bytes or a Path at runtime (its type says str).
        GenerationRequest(prompt="bytes", image_url=PNG, **INLINE["piapi"]),  # type: ignore[arg-type]
        GenerationRequest(prompt="path", image_url=png_file, **INLINE["piapi"]),  # type: ignore[arg-type]
    ]
    async with client_for("piapi", fake) as client:
        outcomes = {o.index: o async for o in client.generate_many(inputs)}
    assert outcomes[1].status == "rejected"
    assert isinstance(outcomes[1].error, ValidationError)
    assert outcomes[1].error.field == "image_url"
    assert [outcomes[i].ok for i in (0, 2, 3)] == [True, True, True]
    assert fake.create_attempts == 3
    sent = {job.prompt: job.params["image"] for job in fake.jobs.values()}
    assert set(sent.values()) == {base64.b64encode(PNG).decode()}


async def test_generate_many_uses_the_clients_uploader(
    fake: FakeProvider, bucket: BucketServer, png_file: Path
) -> None:
    async with client_for("shortapi", fake, uploader=bucket.upload) as client:
        batch = client.generate_many([{"prompt": "a", "image_url": str(png_file)}])
        outcomes = [outcome async for outcome in batch]
    assert outcomes[0].ok
    assert bucket.calls == [(len(PNG), "image/png")]


def test_image_url_text_turns_bytes_and_paths_into_strings(png_file: Path) -> None:
    assert image_url_text("p", None) is None
    assert image_url_text("p", "x.png") == "x.png"
    assert image_url_text("p", png_file) == str(png_file)
    assert image_url_text("p", bytearray(PNG)) == (
        "data:image/png;base64," + base64.b64encode(PNG).decode()
    )
    with pytest.raises(ValidationError) as caught:
        image_url_text("p", b"GIF00 no")
    assert caught.value.field == "image_url"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (WEBP, "image/webp"),
        (GIF, "image/gif"),
        (b"RIFF\x00\x00\x00\x00WAVE", None),
        (b"\x89PNG", None),
        (b"", None),
    ],
)
def test_sniff_image_type(data: bytes, expected: str | None) -> None:
    assert sniff_image_type(data) == expected


def test_limits_max_upload_bytes_is_validated() -> None:
    from flux_async import ConfigurationError

    for bad in (0, -1, True, "10"):
        with pytest.raises(ConfigurationError, match="max_upload_bytes"):
            Limits(max_upload_bytes=bad)  # type: ignore[arg-type]
    assert Limits().max_upload_bytes == 10 * 1024 * 1024


def test_uploader_must_be_callable() -> None:
    from flux_async import ConfigurationError

    with pytest.raises(ConfigurationError, match="uploader"):
        FluxClient(ShortAPI("k"), uploader="s3://bucket")  # type: ignore[arg-type]
