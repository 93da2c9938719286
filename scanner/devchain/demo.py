"""``scanner demo``: the quickstart. A local anvil chain, a demo token, a simulated gateway.

It runs the real daemon (``scanner run``'s App) on the embedded default database (SQLite, a fresh
``./scanner-demo.db`` each run: the chain is fresh too) against a fresh anvil node mining a block
a second, while a small simulated gateway writes payments into the database with plain SQL and
pays them on chain. Watch the log: each payment goes ``pending → confirming → confirmed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import structlog
from sqlalchemy import text

from scanner.config import Settings, load_settings
from scanner.db.engine import make_engine
from scanner.devchain import DevChain

log = structlog.get_logger("scanner.demo")
CONFIRMATIONS = 3


DEMO_DB = "scanner-demo.db"


def demo_settings(rpc_url: str, token: str, database: str = DEMO_DB) -> Settings:
    """The settings ``scanner run`` would build from a dev config file, for this node."""
    body = f"""
[metrics]
port = 0
[[chains]]
name = "anvil"
chain_id = 31337
rpc_urls = ["{rpc_url}"]
confirmations = {CONFIRMATIONS}
poll_interval = 0.5
batch_size = 100
start_block = 0
[[chains.tokens]]
symbol = "USDT"
address = "{token}"
decimals = 6
"""
    return settings_from_file(body, database)


def settings_from_file(body: str, database: str) -> Settings:
    """The settings ``scanner run`` builds from a config file holding ``body``, on the SQLite
    file ``database``."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as handle:
        handle.write(body)
    try:
        return load_settings(handle.name, environ={"DATABASE_URL_DEV": f"sqlite:///{database}"})
    finally:
        os.unlink(handle.name)


async def _gateway(settings: Settings, chain: DevChain, token: str, count: int) -> None:
    """Create payments with plain SQL, as a gateway would, and pay each of them on chain."""
    engine = make_engine(settings)
    customer = chain.accounts[1]
    chain.mint(token, customer, 10**12)
    try:
        for i in range(count):
            payment_id, address = str(uuid.uuid4()), "0x" + os.urandom(20).hex()
            amount = Decimal("25.5") + i
            expires = datetime.now(UTC) + timedelta(minutes=30)
            async with engine.begin() as conn:
                token_id = (
                    await conn.execute(
                        text("SELECT id FROM tokens WHERE chain = 'anvil' AND address = :a"),
                        {"a": token},
                    )
                ).scalar_one()
                await conn.execute(
                    text(
                        "INSERT INTO payments (id, token_id, chain, address, amount, expires_at) "
                        "VALUES (:id, :token, 'anvil', :address, :amount, :expires)"
                    ),
                    {
                        "id": payment_id,
                        "token": str(token_id),
                        "address": address,
                        "amount": str(amount),
                        "expires": expires.strftime("%Y-%m-%d %H:%M:%S"),
                    },
                )
            log.info("demo_payment_created", payment_id=payment_id, amount=str(amount))
            await asyncio.sleep(1.0)
            tx = chain.transfer(token, customer, address, int(amount * 10**6))
            log.info("demo_payment_sent", payment_id=payment_id, tx_hash=tx)
            await asyncio.sleep(2.0)
    finally:
        await engine.dispose()


async def _all_confirmed(settings: Settings, count: int) -> bool:
    engine = make_engine(settings)
    try:
        async with engine.connect() as conn:
            confirmed = (
                await conn.execute(
                    text("SELECT count(*) FROM payments WHERE chain='anvil' AND status='confirmed'")
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    return int(confirmed) >= count


def fresh_database() -> None:
    """The demo's SQLite file removed: a fresh chain needs a fresh database."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(DEMO_DB + suffix)


async def run_beside(
    settings: Settings,
    gateway: Callable[[], Awaitable[None]],
    confirmed: Callable[[], Awaitable[bool]],
    payments: int,
    seconds: float,
) -> int:
    """``scanner run`` while the gateway writes its payments, until they are all confirmed or
    ``seconds`` passed (0: until stopped)."""
    from scanner.app import App

    app = App(settings)
    runner = asyncio.create_task(app.run())
    try:
        await asyncio.sleep(2.0)
        await gateway()
        deadline = asyncio.get_running_loop().time() + (seconds or float("inf"))
        while asyncio.get_running_loop().time() < deadline:
            if seconds and await confirmed():
                log.info("demo_all_confirmed", payments=payments)
                break
            await asyncio.sleep(1.0)
    finally:
        app.stop.set()
        await runner
    return 0


async def _demo(payments: int, seconds: float) -> int:
    from scanner.observe.logging import configure_logging

    fresh_database()
    with DevChain.start() as chain:
        # Deploy while automining (deploying waits for the receipt), then mine a block a second,
        # like a real chain, so confirmations arrive on their own.
        token = chain.deploy_token("Demo Tether", "USDT", 6)
        chain.rpc("evm_setIntervalMining", [1])
        settings = demo_settings(chain.url, token)
        configure_logging(settings.logging, secrets=settings.secrets())
        log.info("demo_chain_started", rpc=chain.url, token=token, database="embedded SQLite")
        return await run_beside(
            settings,
            lambda: _gateway(settings, chain, token, payments),
            lambda: _all_confirmed(settings, payments),
            payments,
            seconds,
        )


def run_demo(*, payments: int = 3, seconds: float = 60.0) -> int:
    return asyncio.run(_demo(payments, seconds))
