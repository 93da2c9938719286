"""TRON fixtures: a simulated java-tron node (:class:`~scanner.devchain.tron.TronNode`), a
migrated database (SQLite and PostgreSQL) and the real scanner over both, driven in-process
like the anvil scenarios (:class:`~tests.e2e.harness.Harness`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.config import ChainSettings, Settings
from scanner.core.tron_address import to_base58
from scanner.devchain.tron import TronNode
from tests.e2e.harness import Harness

USDT_HEX = "0xa614f803b6fd780986a42c78ec9c7f77e6ded13c"
USDT = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"  # the same contract as users write it
MAINNET_ID = 728126428  # 0x2b6653dc
SENDER = "0x" + "a1" * 20
EXCHANGE = "0x" + "e5" * 20  # a contract that transfers on its users' behalf


def tron_settings(url: str, **overrides: Any) -> ChainSettings:
    """A chain of kind ``tron`` at ``url`` with USDT written in base58 (finality: the
    solidified block, the kind's default)."""
    data: dict[str, Any] = {
        "name": "tron",
        "kind": "tron",
        "chain_id": MAINNET_ID,
        "rpc_urls": [url],
        "poll_interval": 0.2,
        "batch_size": 50,
        "start_block": 0,
        "rpc_max_attempts": 3,
        "tokens": [{"symbol": "USDT", "address": USDT, "decimals": 6}],
    }
    data.update(overrides)
    return ChainSettings.model_validate(data)


def customer(n: int) -> tuple[str, str]:
    """A deposit address: (20-byte hex, base58)."""
    hex20 = "0x" + f"{n:02x}" * 20
    return hex20, to_base58(hex20)


@dataclass
class TronHarness(Harness):
    """The anvil harness over the TRON simulator: chain time and blocks from the node."""

    node: TronNode | None = None

    def now(self) -> int:
        assert self.node is not None
        return int(self.node.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)

    def mine(self, n: int = 1) -> None:
        assert self.node is not None
        self.node.mine(n)

    async def token_id(self, token: str | None) -> str | None:
        if token is None:
            return None
        async with self.engine.connect() as conn:  # the row as the scanner wrote it
            found = await conn.execute(
                text("SELECT id FROM tokens WHERE chain = :c AND address = :a"),
                {"c": self.chain_settings.name, "a": token},
            )
            return str(found.scalar_one())

    def pay(self, to: str, value: int, **more: Any) -> str:
        """A USDT transfer from SENDER to ``to`` (hex), mined in the next block."""
        assert self.node is not None
        tx = self.node.transfer(USDT_HEX, SENDER, to, value, **more)
        self.node.mine(1)
        return tx


@pytest.fixture
def tron_node() -> Iterator[TronNode]:
    node = TronNode.start(blocks=30, ready_timeout=60.0)
    node.token(USDT_HEX, 6)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
async def th(
    tron_node: TronNode,
    settings: Settings,
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
) -> AsyncIterator[TronHarness]:
    harness = TronHarness(
        chain=None,  # type: ignore[arg-type]  # the node is ``node``
        settings=settings,
        engine=engine,
        sessions=session_factory,
        token=USDT,
        token18="",
        chain_settings=tron_settings(tron_node.url),
        node=tron_node,
    )
    try:
        yield harness
    finally:
        await harness.close()
