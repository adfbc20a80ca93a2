"""Image downloads: streamed to disk (written atomically) or read into memory, size- and
type-checked.

Downloads use a session of their own, with no credentials of any kind (no API key, no
cookies): the API key is sent only to the provider's API, never to an image host. Result
URLs expire (providers.md 1.4, 3.5, 4), so downloads start as soon as a job finishes.
``data:`` URLs are decoded locally, with the same size and type checks.

Each image fetched is logged at DEBUG on ``flux_async.downloads`` (its address without the
query string, which may hold a signature).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import random
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import anyio
import anyio.to_thread

from ._config import Limits, RetryPolicy, Timeouts
from ._errors import ClientStateError, DownloadError, TransportError
from ._http import parse_retry_after
from ._retry import jittered, wait_table
from ._transport import client_timeout, map_aiohttp_errors

if TYPE_CHECKING:  # _models imports this module for Image.read and Generation.save
    from ._models import Generation

__all__ = ["Downloader", "one_shot", "read_url"]

logger = logging.getLogger("flux_async.downloads")

_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/avif": ".avif",
}
_TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_CHUNK = 64 * 1024


class Downloader:
    """Saves generated images into a directory, a bounded number at a time."""

    def __init__(
        self, *, limits: Limits, timeouts: Timeouts, retry: RetryPolicy, rng: random.Random
    ) -> None:
        self._limits = limits
        self._timeouts = timeouts
        self._retry = retry
        self._rng = rng
        self._table = wait_table(retry.wait_initial, retry.wait_exp_base, retry.wait_max)
        self._slots = asyncio.Semaphore(limits.max_downloads)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def close(self) -> None:
        """Close the download session, if one was opened; later downloads are refused."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientStateError("the client is closed: no more downloads")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limits.max_downloads),
                timeout=client_timeout(self._timeouts, read=self._timeouts.read),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def save(
        self, generation: Generation, directory: str | os.PathLike[str], *, prefix: str = ""
    ) -> tuple[Path, ...]:
        """Save every image of ``generation`` into ``directory``; return the paths.

        Files are named ``{prefix}{job id}-{n}{ext}``, the extension from the content type.
        """
        folder = Path(directory)
        await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
        stem = prefix + _SAFE_NAME.sub("_", generation.job_id or generation.local_id)[:100]
        tasks = [
            self._save_one(image.url, folder, f"{stem}-{n}", generation.provider)
            for n, image in enumerate(generation.images)
        ]
        return tuple(await asyncio.gather(*tasks))

    async def read(self, url: str, provider: str | None = None) -> bytes:
        """Return the bytes of the image at ``url`` (checked like `save`; retried)."""
        if url.startswith("data:"):
            _, data = _decode_data_url(url, self._limits.max_download_bytes, provider)
            return data
        fetched = await self._retrying(url, provider, lambda: self._fetch(url, provider, None))
        assert isinstance(fetched, bytes)
        return fetched

    async def _save_one(self, url: str, folder: Path, stem: str, provider: str) -> Path:
        if url.startswith("data:"):
            return await _save_data_url(
                url, folder, stem, self._limits.max_download_bytes, provider
            )
        path = await self._retrying(
            url, provider, lambda: self._fetch(url, provider, (folder, stem))
        )
        assert isinstance(path, Path)
        return path

    async def _retrying(
        self, url: str, provider: str | None, fetch: Callable[[], Awaitable[Path | bytes]]
    ) -> Path | bytes:
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._slots:
                    return await fetch()
            except (TransportError, DownloadError) as error:
                transient = isinstance(error, TransportError) or (
                    error.status in _TRANSIENT_STATUSES
                )
                if not transient or attempt >= self._retry.attempts:
                    if isinstance(error, DownloadError):
                        raise
                    raise DownloadError(
                        f"downloading {_short(url)} failed: {error}", provider=provider, url=url
                    ) from error
                wait = getattr(error, "retry_after", None)
                if wait is None or wait > self._retry.retry_after_max:
                    wait = jittered(self._table, attempt - 1, self._rng)
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug(
                        "download of %s failed (%s); retrying in %.2fs", _for_log(url), error, wait
                    )
                await asyncio.sleep(wait)

    async def _fetch(
        self, url: str, provider: str | None, target: tuple[Path, str] | None
    ) -> Path | bytes:
        """Fetch ``url`` into ``target`` (a folder and a file stem), or into memory."""
        limit = self._limits.max_download_bytes
        with map_aiohttp_errors(
            provider or "image host", "download", subject=f"downloading {_short(url)}"
        ):
            async with self._get_session().get(url, allow_redirects=True) as response:
                if response.status != 200:
                    raise DownloadError(
                        f"downloading {_short(url)}: HTTP {response.status}",
                        provider=provider,
                        url=url,
                        status=response.status,
                        retry_after=parse_retry_after(response.headers.get("Retry-After")),
                    )
                content_type = response.content_type.lower()
                extension = _EXTENSIONS.get(content_type)
                if extension is None:
                    raise DownloadError(
                        f"downloading {_short(url)}: content type {content_type!r} is not an "
                        f"image ({', '.join(sorted(_EXTENSIONS))})",
                        provider=provider,
                        url=url,
                        status=response.status,
                    )
                if (response.content_length or 0) > limit:
                    raise _too_big(url, provider, response.content_length or 0, limit)
                if target is None:
                    buffer = bytearray()
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        buffer += chunk
                        if len(buffer) > limit:
                            raise _too_big(url, provider, len(buffer), limit)
                    _log_fetched(url, len(buffer), None)
                    return bytes(buffer)
                folder, stem = target
                final = folder / f"{stem}{extension}"
                temporary = folder / f".{stem}.{secrets.token_hex(4)}.part"
                size = 0
                try:
                    # Opened here, not in a worker thread: a cancellation that arrived while
                    # a thread opened the file would leave it open. Writes go to a thread, so
                    # the event loop never waits on the disk; close() is synchronous so that
                    # a second cancellation cannot skip it.
                    file = open(temporary, "wb")  # noqa: ASYNC230
                    try:
                        async for chunk in response.content.iter_chunked(_CHUNK):
                            size += len(chunk)
                            if size > limit:
                                raise _too_big(url, provider, size, limit)
                            await anyio.to_thread.run_sync(file.write, chunk)
                    finally:
                        file.close()
                    await anyio.to_thread.run_sync(os.replace, temporary, final)
                except BaseException:
                    await _discard(temporary)
                    raise
                _log_fetched(url, size, final)
                return final


@contextlib.asynccontextmanager
async def one_shot(max_bytes: int | None = None) -> AsyncIterator[Downloader]:
    """A `Downloader` with the default policies and its own short-lived session.

    For `Image.read` and `Generation.save`, which hold no client: the session carries no
    credentials and no cookies, and is closed on exit.
    """
    limits = Limits() if max_bytes is None else Limits(max_download_bytes=max_bytes)
    downloader = Downloader(
        limits=limits, timeouts=Timeouts(), retry=RetryPolicy(), rng=random.Random()
    )
    try:
        yield downloader
    finally:
        await downloader.close()


async def read_url(url: str, *, max_bytes: int | None = None, provider: str | None = None) -> bytes:
    """Read one image with a one-shot downloader (see `one_shot`)."""
    if url.startswith("data:"):
        limit = Limits().max_download_bytes if max_bytes is None else max_bytes
        return _decode_data_url(url, limit, provider)[1]
    async with one_shot(max_bytes) as downloader:
        return await downloader.read(url, provider)


def _for_log(url: str) -> str:
    if url.startswith("data:"):
        return url.partition(",")[0] + ",..."
    return _short(url.partition("?")[0].partition("#")[0])


def _log_fetched(url: str, size: int, path: Path | None) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("fetched %s (%d bytes)%s", _for_log(url), size, f" to {path}" if path else "")


async def _discard(path: Path) -> None:
    with anyio.CancelScope(shield=True):
        await anyio.Path(path).unlink(missing_ok=True)


def _decode_data_url(url: str, limit: int, provider: str | None) -> tuple[str, bytes]:
    """Return the extension and the bytes of a base64 image ``data:`` URL."""
    header, _, payload = url.partition(",")
    content_type = header[5:].split(";", 1)[0].lower()
    extension = _EXTENSIONS.get(content_type)
    if extension is None or ";base64" not in header:
        raise DownloadError(
            f"data URL of type {content_type!r} is not a base64 image", provider=provider, url=url
        )
    if len(payload) * 3 // 4 > limit:
        raise _too_big(url, provider, len(payload) * 3 // 4, limit)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DownloadError("data URL is not valid base64", provider=provider, url=url) from exc
    return extension, data


async def _save_data_url(url: str, folder: Path, stem: str, limit: int, provider: str) -> Path:
    extension, data = _decode_data_url(url, limit, provider)
    final = folder / f"{stem}{extension}"
    temporary = folder / f".{stem}.{secrets.token_hex(4)}.part"
    try:
        await anyio.Path(temporary).write_bytes(data)
        await anyio.to_thread.run_sync(os.replace, temporary, final)
    except BaseException:
        await _discard(temporary)
        raise
    _log_fetched(url, len(data), final)
    return final


def _too_big(url: str, provider: str | None, size: int, limit: int) -> DownloadError:
    return DownloadError(
        f"downloading {_short(url)}: image is over the {limit} byte limit "
        f"(Limits.max_download_bytes; got at least {size})",
        provider=provider,
        url=url,
    )


def _short(url: str) -> str:
    return url if len(url) <= 120 else url[:117] + "..."
