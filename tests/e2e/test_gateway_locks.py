"""A gateway transaction that holds a payment's row lock (PostgreSQL): the scanner waits for it
loudly, never silently: ``payment_locked`` names the payment, a metric counts the retries,
``/readyz`` turns not ready once the chain has done no work for its bound, and ``/healthz`` stays
about the process being alive (no watchdog restart loop)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import text
from structlog.testing import capture_logs

from scanner.app import App
from scanner.errors import PaymentLocked
from scanner.testkit.settings import CHAIN, chain_settings
from tests.e2e.actions import pay
from tests.e2e.harness import Harness
from tests.support.metrics import sample
from tests.support.wait import until

ALICE = "0x" + "a1" * 20


async def _ok() -> str | None:
    return None


def _chain(app: App) -> dict[str, Any]:
    chains: dict[str, dict[str, Any]] = app.health.healthy()[1]["chains"]
    return chains.get(CHAIN, {})


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
async def test_a_row_the_gateway_holds_locked_is_waited_for_loudly(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "5")
    chain = chain_settings(h.chain.url, [("USDT", h.token, 6)], poll_interval=0.05)
    settings = h.settings.model_copy(
        update={
            "chains": [chain],
            "metrics": h.settings.metrics.model_copy(update={"enabled": False}),
        }
    )
    app = App(settings, environ={})
    app.metrics = h.metrics
    task = asyncio.create_task(app.run())
    gateway = await h.engine.connect()
    try:
        await until(lambda: _chain(app).get("ticks", 0) > 0)
        held = await gateway.begin()
        await gateway.execute(
            text("SELECT id FROM payments WHERE id = CAST(:id AS uuid) FOR UPDATE"), {"id": pid}
        )
        with capture_logs() as logs:
            pay(h, ALICE, 5_000_000)
            started = time.monotonic()
            await _until_not_ready(app)
            assert time.monotonic() - started > 9  # not before the bound
            assert app.health.healthy()[0]  # alive all along: a restart would not help
            await held.rollback()  # the gateway's transaction ends
            h.mine(3)
            await h.until_status(pid, "confirmed", 30, 0.05)
        locked = [e for e in logs if e["event"] == "payment_locked"]
        assert locked and all(e["payment_ids"] == [pid] for e in locked)
        assert sample(h.metrics, "scanner_payment_locked_total", chain=CHAIN) >= 1
        await _until_ready(app)  # the tick that committed marks its chain healthy as it returns
    finally:
        await gateway.close()
        app.stop.set()
        assert await asyncio.wait_for(task, 20) == 0


async def _until_not_ready(app: App) -> None:
    async def not_ready() -> dict[str, Any] | None:
        ready, body = await app.health.ready(_ok)
        return None if ready else body

    body = await until(not_ready, 20, "not ready", 0.05)
    assert any("PaymentLocked" in reason for reason in body["reasons"]), body


async def _until_ready(app: App) -> None:
    async def ready() -> bool:
        return (await app.health.ready(_ok))[0]

    await until(ready, 5, "ready again", 0.05, detail=lambda: app.health.ready(_ok))


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
async def test_the_look_at_a_new_row_the_gateway_holds_locked_names_it(h: Harness) -> None:
    """The look at a payment created behind the cursor marks it seen: a row the gateway holds
    is named as the credit path names it, never a bare lock timeout that says no payment."""
    await h.scan()
    pid = await h.create_payment(ALICE, "5")
    gateway = await h.engine.connect()
    try:
        held = await gateway.begin()
        await gateway.execute(
            text("SELECT id FROM payments WHERE id = CAST(:id AS uuid) FOR UPDATE"), {"id": pid}
        )
        with capture_logs() as logs, pytest.raises(PaymentLocked):
            await h.scan()
        assert [e["payment_ids"] for e in logs if e["event"] == "payment_locked"] == [[pid]]
        await held.rollback()
    finally:
        await gateway.close()
    await h.scan()  # the gateway's transaction ended: the look goes through
    async with h.engine.connect() as conn:
        seen = await conn.execute(
            text("SELECT seen_at_block FROM payments WHERE id = CAST(:id AS uuid)"), {"id": pid}
        )
        assert seen.scalar_one() is not None
