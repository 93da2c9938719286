"""A real HTTP receiver per test (aiohttp on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.deliver.support import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    try:
        yield server
    finally:
        await server.stop()
