from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    # aiohttp is asyncio-only; the anyio plugin runs every async test on asyncio.
    return "asyncio"
