"""``scanner demo --chain tron``: the quickstart on TRON. The simulated java-tron JSON-RPC node
(:mod:`scanner.devchain.tron`) mining a block every half second, USDT configured by its base58
address, a simulated gateway writing payments to ``T…`` addresses, and the real daemon (``scanner
run``'s App) on a fresh embedded SQLite database. Each payment goes ``pending → confirming →
confirmed``, confirmed once the solidified block (head − 18) passes it.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import structlog
from sqlalchemy import text

from scanner.config import Settings
from scanner.core.tron_address import to_base58
from scanner.db.engine import make_engine
from scanner.devchain.demo import DEMO_DB, fresh_database, run_beside, settings_from_file
from scanner.devchain.tron import TronNode

log = structlog.get_logger("scanner.demo")
USDT_HEX = "0xa614f803b6fd780986a42c78ec9c7f77e6ded13c"
USDT = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"  # the same contract, as TRON users write it
SENDER = "0x" + "a1" * 20


def tron_demo_settings(rpc_url: str, database: str = DEMO_DB) -> Settings:
    """The settings ``scanner run`` would build from a config file naming this node."""
    body = f"""
[metrics]
port = 0
[[chains]]
name = "tron"
kind = "tron"
chain_id = 728126428
rpc_urls = ["{rpc_url}"]
poll_interval = 0.5
start_block = 0
[[chains.tokens]]
symbol = "USDT"
address = "{USDT}"
decimals = 6
"""
    return settings_from_file(body, database)


async def _create(settings: Settings, address: str, amount: Decimal) -> str:
    """A payment row, written with plain SQL as a gateway would (the address in base58)."""
    payment_id = str(uuid.uuid4())
    expires = (datetime.now(UTC) + timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M:%S")
    engine = make_engine(settings)
    try:
        async with engine.begin() as conn:
            token_id = (
                await conn.execute(
                    text("SELECT id FROM tokens WHERE chain = 'tron' AND address = :a"),
                    {"a": USDT},
                )
            ).scalar_one()
            await conn.execute(
                text(
                    "INSERT INTO payments (id, token_id, chain, address, amount, expires_at) "
                    "VALUES (:id, :token, 'tron', :address, :amount, :expires)"
                ),
                {
                    "id": payment_id,
                    "token": str(token_id),
                    "address": address,
                    "amount": str(amount),
                    "expires": expires,
                },
            )
    finally:
        await engine.dispose()
    return payment_id


async def _gateway(settings: Settings, node: TronNode, count: int) -> None:
    for i in range(count):
        hex20 = "0x" + os.urandom(20).hex()
        amount = Decimal("25.5") + i
        payment_id = await _create(settings, to_base58(hex20), amount)
        log.info("demo_payment_created", payment_id=payment_id, address=to_base58(hex20))
        await asyncio.sleep(1.0)
        tx = node.transfer(USDT_HEX, SENDER, hex20, int(amount * 10**6))
        log.info("demo_payment_sent", payment_id=payment_id, tx_hash=tx)
        await asyncio.sleep(1.0)


async def _confirmed(settings: Settings) -> int:
    engine = make_engine(settings)
    try:
        async with engine.connect() as conn:
            found = await conn.execute(
                text("SELECT count(*) FROM payments WHERE chain='tron' AND status='confirmed'")
            )
            return int(found.scalar_one())
    finally:
        await engine.dispose()


async def _demo(payments: int, seconds: float) -> int:
    from scanner.observe.logging import configure_logging

    fresh_database()
    genesis = int(time.time()) - 60  # its blocks' times (3 s apart) pass the clock at once
    node = TronNode.start(blocks=5, block_seconds=0.5, genesis_time=genesis, ready_timeout=60.0)
    assert isinstance(node, TronNode)
    with node:
        node.token(USDT_HEX, 6)
        settings = tron_demo_settings(node.url)
        configure_logging(settings.logging, secrets=settings.secrets())
        log.info("demo_chain_started", rpc=node.url, token=USDT, database="embedded SQLite")

        async def confirmed() -> bool:
            return await _confirmed(settings) >= payments

        return await run_beside(
            settings, lambda: _gateway(settings, node, payments), confirmed, payments, seconds
        )


def run_tron_demo(*, payments: int = 3, seconds: float = 60.0) -> int:
    return asyncio.run(_demo(payments, seconds))
