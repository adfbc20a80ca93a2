"""Webhooks mounted inside your own aiohttp application, next to your other routes.

``client.webhook_app()`` is an aiohttp sub-application; mount it under the prefix that
``Webhooks.public_url`` ends with, and tell the client not to run its own receiver
(``serve=False``). Against the bundled fake provider::

    python examples/webhooks_in_aiohttp_app.py
"""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from flux_async import FluxClient, ShortAPI, Webhooks
from flux_async.testing import FakeProvider


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def main() -> None:
    # Your app's address (in production: your public hostname behind TLS).
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    async with FakeProvider(latency=(0.2, 0.5)) as fake:
        webhooks = Webhooks(public_url=f"http://127.0.0.1:{port}/hooks", serve=False)
        async with FluxClient(ShortAPI("fake-key", base_url=fake.url), webhooks=webhooks) as client:
            app = web.Application()
            app.router.add_get("/health", health)
            app.add_subapp("/hooks", client.webhook_app())
            runner = web.AppRunner(app)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            try:
                generation = await client.generate("a lantern in the fog")
                print("image:", generation.images[0].url)
            finally:
                await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
