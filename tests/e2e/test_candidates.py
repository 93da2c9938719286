"""Which payments a range loads: open ones, and only the final ones rule 4 can still choose."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import text

from scanner.testkit.gateway import db_id
from tests.e2e.actions import pay
from tests.e2e.harness import Harness

SHOP = "0x" + "5a" * 20


async def test_newest_final_candidate_takes_funds_on_a_long_used_address(h: Harness) -> None:
    """Three confirmed payments on one address, and a fourth created after the transfer (set
    expired by hand): a new transfer is an overpayment of the newest CANDIDATE, the third one.
    The older two are not even loaded any more; the fourth was created too late to be one."""
    start = h.now() - 1000
    a = await h.create_payment(SHOP, "1", created_at=start)
    b = await h.create_payment(SHOP, "2", created_at=start + 10)
    c = await h.create_payment(SHOP, "3", created_at=start + 20)
    for value in (1_000_000, 2_000_000, 3_000_000):
        pay(h, SHOP, value)
    h.mine(3)
    await h.scan()
    assert [await h.status(p) for p in (a, b, c)] == ["confirmed"] * 3
    later = await h.create_payment(SHOP, "4", created_at=h.now() + 86_400)
    async with h.engine.begin() as conn:
        await conn.execute(
            text("UPDATE payments SET status = 'expired' WHERE id = :id"),
            {"id": db_id(h.engine, later)},
        )

    pay(h, SHOP, 500_000)
    h.mine(3)
    await h.scan()

    assert (await h.payment(c))["amount_received"] == Decimal("3.5")
    assert len(await h.transactions(c)) == 2
    assert (await h.payment(a))["amount_received"] == Decimal("1")
    assert (await h.payment(b))["amount_received"] == Decimal("2")
    assert await h.transactions(later) == []
