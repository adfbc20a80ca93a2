"""Webhooks in FastAPI or Starlette, through the framework-neutral ``handle_webhook``.

flux_async does not depend on FastAPI; this shows the few lines that connect them. With
``pip install fastapi uvicorn``::

    from fastapi import FastAPI, Request, Response
    from flux_async import FluxClient, ShortAPI, Webhooks

    client = FluxClient(
        ShortAPI(),
        webhooks=Webhooks(public_url="https://your.host/flux-webhooks", serve=False),
    )
    app = FastAPI(lifespan=lambda app: client)   # opened and closed with the app

    @app.post("/flux-webhooks/{provider}/{local_id}/{token}")
    async def flux_webhook(request: Request) -> Response:
        body = await request.body()              # put a body-size limit in front of this
        status, text = await client.handle_webhook(
            request.method, request.url.path, request.headers, body
        )
        return Response(content=text, status_code=status, media_type="text/plain")

Run as a script, it calls ``handle_webhook`` the same way a framework would, with no
framework installed, against the bundled fake provider::

    python examples/webhooks_fastapi.py
"""

from __future__ import annotations

import asyncio
import urllib.parse

from aiohttp import web

from flux_async import FluxClient, ShortAPI, Webhooks
from flux_async.testing import FakeProvider


async def main() -> None:
    # A stand-in for "any other framework": a bare aiohttp handler that only forwards
    # method, path, headers and body, exactly what the FastAPI route above does.
    client: FluxClient | None = None

    async def forward(request: web.Request) -> web.Response:
        assert client is not None
        status, text = await client.handle_webhook(
            request.method, request.path, request.headers, await request.read()
        )
        return web.Response(status=status, body=text, content_type="text/plain")

    app = web.Application()
    app.router.add_post("/flux-webhooks/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with FakeProvider(latency=(0.2, 0.5)) as fake:
            public = f"http://127.0.0.1:{port}/flux-webhooks"
            webhooks = Webhooks(public_url=public, serve=False)
            async with FluxClient(ShortAPI("fake-key", base_url=fake.url), webhooks=webhooks) as c:
                client = c
                generation = await c.generate("a kite over the dunes")
                print("image:", generation.images[0].url)
                print("callback went to", urllib.parse.urlsplit(public).path + "/...")
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
