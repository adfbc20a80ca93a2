"""Save images to disk as soon as each job finishes.

``generate_many(..., download_to=DIR)`` downloads every image of a finished job right away
(result URLs expire): streamed to a temporary file and renamed into place, content type and
size checked, retried on transient errors, and never sent your API key.
``client.download(generation, DIR)`` does the same for one generation. Against the bundled
fake provider::

    python examples/downloads.py [DIR]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from flux_async import FluxClient, ShortAPI
from flux_async.testing import FakeProvider


async def main(directory: Path) -> None:
    async with FakeProvider(latency=(0.1, 0.4)) as fake:
        provider = ShortAPI(api_key="fake-key", base_url=fake.url)
        async with FluxClient(provider) as client:
            generation = await client.generate("a single pear on a plate")
            for path in await client.download(generation, directory / "single"):
                print("saved", path)

            requests = [{"prompt": f"a teacup, pattern {i}", "num_images": 2} for i in range(4)]
            async for outcome in client.generate_many(requests, download_to=directory / "batch"):
                print(outcome.index, outcome.status, [str(path) for path in outcome.files])


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out/examples")))
