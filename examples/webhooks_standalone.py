"""Webhooks with the bundled receiver: jobs resolve by callback, not by polling.

The client starts an aiohttp receiver next to itself and gives each job its own callback
address with a random token. A callback is a hint: one authenticated query confirms it.
In production set ``Webhooks(public_url="https://your.host/flux-webhooks", host="0.0.0.0",
port=8080)`` so the provider can reach you. Against the bundled fake provider::

    python examples/webhooks_standalone.py
"""

from __future__ import annotations

import asyncio

from flux_async import FluxClient, PiAPI, Webhooks
from flux_async.testing import FakeProvider


async def main() -> None:
    async with FakeProvider(latency=(0.2, 0.6)) as fake:
        provider = PiAPI(api_key="fake-key", base_url=fake.url)
        webhooks = Webhooks(host="127.0.0.1", port=0)  # the fake calls back on loopback
        async with FluxClient(provider, webhooks=webhooks) as client:
            generations = await asyncio.gather(
                *(client.generate(f"a paper boat, take {i}") for i in range(5))
            )
            await fake.wait_callbacks_idle()
        for generation in generations:
            print(generation.job_id, generation.images[0].url)
        print(
            f"{len(fake.callbacks_sent)} callbacks received, "
            f"{sum(fake.polls_per_job.values())} verifying queries, "
            f"{sum(fake.creates_per_prompt.values())} creates"
        )


if __name__ == "__main__":
    asyncio.run(main())
