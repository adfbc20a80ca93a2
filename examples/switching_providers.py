"""The same code against ShortAPI, PiAPI and AI/ML API: only the provider object changes.

Each provider maps the common request (prompt, aspect_ratio, image_url, num_images, ...)
to its own wire format, and rejects what it cannot do with a `ValidationError` before
anything is sent. The bundled fake provider speaks all three formats at once::

    python examples/switching_providers.py

With real keys: ``ShortAPI()``, ``PiAPI()`` and ``AIMLAPI()`` read ``SHORTAPI_KEY``,
``PIAPI_KEY`` and ``AIMLAPI_KEY``.
"""

from __future__ import annotations

import asyncio

from flux_async import AIMLAPI, FluxClient, PiAPI, Provider, ShortAPI, ValidationError
from flux_async.testing import FakeProvider


async def draw(provider: Provider) -> None:
    async with FluxClient(provider) as client:
        generation = await client.generate("a red fox in the snow", aspect_ratio="16:9")
        print(f"{provider.name:9} {generation.model:32} {generation.images[0].url}")
        try:
            await client.generate("a red fox", aspect_ratio="5:4")
        except ValidationError as error:
            print(f"{'':9} rejected before sending: {error}")


async def main() -> None:
    async with FakeProvider(latency=(0.1, 0.3)) as fake:
        for provider in (
            ShortAPI(api_key="fake-key", base_url=fake.url),
            PiAPI(api_key="fake-key", base_url=fake.url),
            AIMLAPI(api_key="fake-key", base_url=fake.url),
        ):
            await draw(provider)


if __name__ == "__main__":
    asyncio.run(main())
