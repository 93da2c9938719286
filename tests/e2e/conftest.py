"""End-to-end fixtures: a fresh anvil node with two real tokens, a migrated database (SQLite
and PostgreSQL), and the scanner over both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.config import Settings
from scanner.devchain import DevChain
from scanner.testkit.settings import chain_settings
from tests.chain_fixtures import anvil, devchain  # noqa: F401
from tests.e2e.harness import Harness


@pytest.fixture
async def h(
    devchain: DevChain,  # noqa: F811
    settings: Settings,
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
) -> AsyncIterator[Harness]:
    token = devchain.deploy_token("Tether USD", "USDT", 6)
    token18 = devchain.deploy_token("Dai", "DAI", 18)
    customer = devchain.accounts[1]
    devchain.mint(token, customer, 10**15)
    devchain.mint(token18, customer, 10**30)
    harness = Harness(
        chain=devchain,
        settings=settings,
        engine=engine,
        sessions=session_factory,
        token=token,
        token18=token18,
        chain_settings=chain_settings(devchain.url, [("USDT", token, 6), ("DAI", token18, 18)]),
        customer=customer,
    )
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
def anvil2() -> Iterator[DevChain]:
    """A second, independent node (for a second chain beside the one of ``h``)."""
    with DevChain.start() as chain:
        yield chain
