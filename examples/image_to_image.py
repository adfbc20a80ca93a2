"""Image-to-image: from an image URL, and from a local file.

``image_url`` takes an http(s) URL, a local path, the image's bytes or a ``data:`` URL. A
local image is checked (type and size) before anything is paid for, then sent inline where
the provider documents an inline form (PiAPI ``kontext``: base64; AI/ML API's FLUX.2 edit
models: a ``data:`` URL). Models that take only URLs need ``FluxClient(uploader=...)``, an
async function that stores the bytes somewhere public (your bucket) and returns the URL::

    async def upload(data: bytes, content_type: str) -> str:
        ...  # put the bytes in your bucket
        return "https://my-bucket.example.com/inputs/abc.png"

The result's bytes come back with ``await image.read()`` (no API key sent, size capped) and
each job's life is logged on ``flux_async.jobs`` (here shown on stderr).

Runs against the bundled fake provider (no key, no network)::

    python examples/image_to_image.py
"""

from __future__ import annotations

import asyncio
import logging
import tempfile

from flux_async import FluxClient, PiAPI, ShortAPI
from flux_async.testing import FakeProvider

SOURCE = "https://example.com/photos/dog.jpg"


async def main() -> None:
    # Every job's life (submitted, polled, finished), with no secret in any line.
    logging.basicConfig(format="%(name)s %(message)s")
    logging.getLogger("flux_async.jobs").setLevel(logging.DEBUG)

    async with FakeProvider(latency=(0.2, 0.5)) as fake:
        # 1. From a URL: ShortAPI picks its image-to-image model when image_url is given.
        async with FluxClient(ShortAPI(api_key="fake-key", base_url=fake.url)) as client:
            job = await client.submit(
                "the same dog, as a watercolour painting", image_url=SOURCE, aspect_ratio="4:3"
            )
            print(f"submitted {job.local_id} as {job.id} ({job.status.value}, ${job.cost})")
            generation = await job.result(timeout=60)
            print(f"model {generation.model}")
            for image in generation.images:
                print("  ", image.url)

        # 2. From a local file: PiAPI's kontext task takes the image inline (base64).
        async with FluxClient(PiAPI(api_key="fake-key", base_url=fake.url)) as client:
            with tempfile.TemporaryDirectory() as folder:
                (path,) = await client.download(generation, folder)
                edited = await client.generate(
                    "the same dog, wearing a red scarf",
                    image_url=str(path),
                    extra={"task_type": "kontext"},
                )
            print(f"edited {path.name} with {edited.model}:")
            for image in edited.images:
                data = await image.read()  # the bytes, in memory
                sized = image.with_size(data)  # width and height from the image header
                print(f"   {image.url}: {len(data)} bytes, {sized.width}x{sized.height}")


if __name__ == "__main__":
    asyncio.run(main())
