"""The database goes back under a running scanner (a failover to a standby that lacked the newest
commits): the credits, events and cursor it wrote are gone, and what it holds in memory is ahead
of what the database shows. The scanner goes on from what the database shows, never from its
memory: every payment ends as the chain says, and the facts written again carry their keys."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.e2e.actions import pay
from tests.e2e.harness import Harness
from tests.ops.support import ensure_tokens
from tests.support import lost

AMOUNT = 1_000_000  # 1 USDT


async def _keys(h: Harness, payment_id: str) -> list[str]:
    async with h.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT event_key FROM payment_events WHERE payment_id = :id ORDER BY id"),
            {"id": payment_id},
        )
        return [str(r[0]) for r in rows]


@pytest.mark.parametrize("standby_had", ["the cursor", "no cursor"])
async def test_a_scanner_whose_database_went_back_scans_again_from_what_it_shows(
    h: Harness, standby_had: str
) -> None:
    """``no cursor``: the standby never got the scanner's first commit (a scanner started in the
    lag window): the cursor's row itself is gone, and is made again as a first start makes it."""
    await ensure_tokens(h.sessions, h.chain_settings)
    h.scanner = scanner = h.make_scanner()  # the gateway's rows first, no scan yet
    a = await h.create_payment("0x" + "a1" * 20, "1")
    b = await h.create_payment("0x" + "b2" * 20, "1")
    if standby_had == "the cursor":
        await scanner.prepare()
        await scanner.scan_until_head()
    standby = await lost.taken(h.engine)
    try:
        if standby_had == "no cursor":
            await scanner.prepare()
        pay(h, "0x" + "a1" * 20, AMOUNT)
        h.mine(4)
        await scanner.scan_until_head()
        assert await h.status(a) == "confirmed"
        keys = await _keys(h, a)
        await standby.restore()  # the standby never got any of that
        assert await h.status(a) == "pending"
        pay(h, "0x" + "b2" * 20, AMOUNT)
        h.mine(4)
        await scanner.scan_until_head(max_ticks=30)
    finally:
        await standby.drop()
    for payment in (a, b):
        assert await h.status(payment) == "confirmed"
        assert [t["value"] for t in await h.transactions(payment)] == [AMOUNT]
    assert await _keys(h, a) == keys  # the same facts, written again under the keys they had
