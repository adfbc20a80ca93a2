"""Image-to-image: pass ``image_url`` and the provider picks its image-to-image model.

Runs against the bundled fake provider (no key, no network)::

    python examples/image_to_image.py
"""

from __future__ import annotations

import asyncio

from flux_async import FluxClient, PollPolicy, ShortAPI
from flux_async.testing import FakeProvider

SOURCE = "https://example.com/photos/dog.jpg"


async def main() -> None:
    async with FakeProvider(latency=(0.2, 0.5)) as fake:
        provider = ShortAPI(api_key="fake-key", base_url=fake.url)
        poll = PollPolicy(wait_first=0.3, wait_initial=0.1)
        async with FluxClient(provider, poll=poll) as client:
            job = await client.submit(
                "the same dog, as a watercolour painting", image_url=SOURCE, aspect_ratio="4:3"
            )
            print(f"submitted {job.local_id} as {job.id} ({job.status.value}, ${job.cost})")
            generation = await job.result(timeout=60)
            print(f"model {generation.model}")
            for image in generation.images:
                print("  ", image.url)


if __name__ == "__main__":
    asyncio.run(main())
