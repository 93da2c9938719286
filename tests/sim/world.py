"""Everything one schedule runs on: an anvil node with two tokens, a database, the fault proxy
in front of the node, the ``scanner`` processes and the gateway; and reading the end state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scanner.devchain import DevChain
from scanner.testkit.gateway import token_row_id
from scanner.testkit.settings import CHAIN
from tests.sim.chain import SimChain
from tests.sim.gateway import Asset, Gateway
from tests.sim.processes import Fleet
from tests.support.proxy import ThreadedProxy
from tests.support.wait import until

CONFIRMATIONS = 4
MAX_REORG_DEPTH = 12
CUSTOMERS = 4  # dev accounts 1..4 hold tokens; the last dev account holds none
MINTED = 10**40
REVERTING = 6  # addresses whose code reverts: native payments to them always fail
CHAIN_SETTINGS = f"max_reorg_depth = {MAX_REORG_DEPTH}\nconcurrency = 2"


@dataclass
class World:
    dev: DevChain
    chain: SimChain
    proxy: ThreadedProxy
    engine: AsyncEngine
    fleet: Fleet
    gateway: Gateway
    customers: list[str]
    poor: str  # holds ETH for gas, no token
    tokens: dict[str, str] = field(default_factory=dict)  # symbol -> address

    def close(self) -> None:
        self.fleet.kill_all()
        self.proxy.stop()
        self.dev.close()


def start_chain() -> tuple[DevChain, dict[str, str], list[str]]:
    """A node with USDT (6 decimals) and DAI (18) minted to the customers; automine still on."""
    dev = DevChain.start()
    tokens = {
        "USDT": dev.deploy_token("Tether USD", "USDT", 6),
        "DAI": dev.deploy_token("Dai", "DAI", 18),
    }
    customers = dev.accounts[1 : 1 + CUSTOMERS]
    for address in tokens.values():
        for customer in customers:
            dev.mint(address, customer, MINTED)
    return dev, tokens, customers


async def build(
    workdir: Path, db_url: str, engine: AsyncEngine, *, streamed: bool, unscanned: bool = False
) -> World:
    """The world of one schedule; ``streamed``: its processes store each range's events as the
    plan makes them (:mod:`tests.sim.streamed`). ``unscanned``: no ``scanner run`` has ever run
    on the database; a backfill of the chain so far inserts the tokens' rows instead (the
    schedule starts the first live scan later)."""
    dev, tokens, customers = start_chain()
    reverting = ["0x" + f"{0xE0 + n:02x}" * 20 for n in range(REVERTING)]
    chain = SimChain(dev, keep_snapshots=MAX_REORG_DEPTH + 2, confirmations=CONFIRMATIONS)
    chain.make_reverting(reverting)
    chain.start()
    proxy = ThreadedProxy(dev.url)
    proxy.start()
    decimals = {"USDT": 6, "DAI": 18}
    fleet = Fleet.make(
        workdir,
        db_url,
        proxy.url,
        [(s, a, decimals[s]) for s, a in tokens.items()],
        CHAIN_SETTINGS,
        streamed=streamed,
    )
    if unscanned:
        fleet.backfill(1, chain.head(), dry_run=False)
    else:
        fleet.run()
    assets = await _assets(engine, tokens, decimals, fleet)
    gateway = Gateway(engine, assets, reverting)
    await gateway.keep_native_open(chain.timestamp)
    return World(dev, chain, proxy, engine, fleet, gateway, customers, dev.accounts[-1], tokens)


async def _assets(
    engine: AsyncEngine, tokens: dict[str, str], decimals: dict[str, int], fleet: Fleet
) -> list[Asset]:
    """The tokens' rows, once the first scanner has inserted them."""

    async def inserted() -> dict[str, Any] | None:
        async with engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM tokens"))).scalar_one()
            if count < len(tokens):
                return None
            return {s: await token_row_id(conn, CHAIN, a) for s, a in tokens.items()}

    ids = await until(inserted, 30, "the tokens rows", 0.1, detail=fleet.procs[0].tail)
    assets = [Asset(s, a, decimals[s], ids[s]) for s, a in tokens.items()]
    return [*assets, Asset("ETH", None, 18, None)]


async def cursor(engine: AsyncEngine) -> int | None:
    return await _chain_state(engine, "last_scanned_block")


async def swept(engine: AsyncEngine) -> int | None:
    """The newest block the scanner's sweep has read a second time (None: not begun)."""
    return await _chain_state(engine, "swept_block")


async def _chain_state(engine: AsyncEngine, column: str) -> int | None:
    async with engine.connect() as conn:
        value = (
            await conn.execute(
                text(f"SELECT {column} FROM chain_states WHERE chain = :c"), {"c": CHAIN}
            )
        ).scalar_one_or_none()
    return None if value is None else int(value)


async def cursor_at_head(world: World, bound: float) -> float:
    """Seconds until the stored cursor is at the node's head (which stays put); fails after
    ``bound``."""
    started = time.monotonic()
    head = world.chain.head()

    async def at_head() -> bool:
        return await cursor(world.engine) == head

    async def where() -> str:
        tails = "\n".join(p.tail() for p in world.fleet.runners())
        return f"cursor {await cursor(world.engine)}, head {head}\n{tails}"

    await until(at_head, bound, "the cursor back at the head", 0.1, detail=where)
    return time.monotonic() - started
