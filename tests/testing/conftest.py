"""Fixtures shared by the fake provider's tests (``anyio_backend`` is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session: the fake is checked over real loopback HTTP."""
    async with aiohttp.ClientSession() as session:
        yield session
