"""A batch of thousands of prompts with a live progress line, using generate_many.

The prompts come from a generator and are read lazily; each finished job yields an
`Outcome`, failures included. Progress comes from `client.subscribe`. Against the bundled
fake provider, with a few faults switched on so failures show up too::

    python examples/batch_progress.py [COUNT]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal

from flux_async import Event, FluxClient, ShortAPI
from flux_async.testing import FakeProvider, Faults


def prompts(count: int) -> Iterator[str]:
    subjects = ["fox", "owl", "whale", "tram", "castle", "teapot", "robot", "forest"]
    for i in range(count):
        yield f"a {subjects[i % len(subjects)]}, study #{i}"


async def main(count: int) -> None:
    faults = Faults(create_429=0.01, query_5xx=0.02, fail=0.01, retry_after=0)
    async with FakeProvider(latency=(0.1, 0.6), faults=faults, seed=1) as fake:
        provider = ShortAPI(api_key="fake-key", base_url=fake.url)
        # No limits or polling settings: the client discovers how much the provider takes
        # (growing while it answers, backing off on 429s) and learns how long jobs take.
        async with FluxClient(provider) as client:
            rate_limited = 0

            def on_event(event: Event) -> None:
                nonlocal rate_limited
                if event.kind == "rate_limited":
                    rate_limited += 1

            client.subscribe(on_event)
            statuses: Counter[str] = Counter()
            cost = Decimal(0)
            started = last = time.monotonic()
            async for outcome in client.generate_many(prompts(count), concurrency=300):
                statuses[outcome.status] += 1
                cost += outcome.cost or 0
                now = time.monotonic()
                if now - last > 0.5:
                    last = now
                    done = sum(statuses.values())
                    print(
                        f"\r{done}/{count} done, {client.outstanding} in flight, "
                        f"{done / (now - started):.0f}/s, ${cost}, {rate_limited} x 429",
                        end="",
                        flush=True,
                    )
            elapsed = time.monotonic() - started
    print(f"\r{count} prompts in {elapsed:.1f}s: {dict(statuses)}; cost ${cost}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
