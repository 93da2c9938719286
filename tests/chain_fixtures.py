"""Pytest fixtures for a real local chain (anvil). Needs `npm ci --prefix devchain`.

Registered for every test by ``pytest_plugins`` in ``tests/conftest.py``: a test names the
fixture it uses, never imports it.

- `anvil`: a fresh node per test (dies with the test process: PR_SET_PDEATHSIG).
- `devchain`: a `DevChain` over that node; tests may reorg, revert, change time freely.
- `module_devchain`: one node shared by a module's tests; do not rewind it.
- `h`: the end-to-end harness: `devchain` with two real tokens, a migrated database (SQLite and
  PostgreSQL), and the scanner over both.
- `anvil2`: a second, independent node (for a second chain beside the one of `h`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.config import Settings
from scanner.devchain import Anvil, DevChain
from scanner.testkit.settings import chain_settings
from tests.e2e.harness import Harness


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    node = Anvil.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def devchain(anvil: Anvil) -> Iterator[DevChain]:
    chain = DevChain(anvil)
    try:
        yield chain
    finally:
        chain.close()


@pytest.fixture(scope="module")
def module_devchain() -> Iterator[DevChain]:
    with DevChain.start() as chain:
        yield chain


@pytest.fixture
async def h(
    devchain: DevChain,
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
