"""Quickstart: generate images through FluxClient against the bundled fake provider.

Runs with no API key and no network: `flux_async.testing.FakeProvider` is a real HTTP
server on 127.0.0.1 that speaks ShortAPI's wire format. To use the real ShortAPI, drop the
fake and write ``FluxClient(ShortAPI())`` with ``SHORTAPI_KEY`` set.

    python examples/quickstart.py
"""

from __future__ import annotations

import asyncio

from flux_async import FluxClient, ShortAPI
from flux_async.testing import FakeProvider


async def main() -> None:
    async with FakeProvider(latency=(0.2, 0.6)) as fake:
        # No polling settings: the client learns how long jobs take and polls accordingly
        # (sub-second here, every few seconds against the real API).
        async with FluxClient(ShortAPI(api_key="fake-key", base_url=fake.url)) as client:
            # One call: submit, then wait for the result.
            generation = await client.generate("a red fox in the snow", aspect_ratio="16:9")
            print(f"job {generation.job_id} cost ${generation.cost}:")
            for image in generation.images:
                print("  ", image.url)

            # Many at once: submit returns as soon as the provider accepted each job.
            prompts = ["a lighthouse at dusk", "a bowl of ramen", "a paper crane"]
            jobs = await asyncio.gather(
                *(client.submit(prompt, num_images=2, model="schnell") for prompt in prompts)
            )
            for prompt, job in zip(prompts, jobs, strict=True):
                generation = await job
                print(f"{prompt!r}: {', '.join(image.url for image in generation.images)}")


if __name__ == "__main__":
    asyncio.run(main())
