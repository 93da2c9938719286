"""Native-coin payments (``token_id`` NULL): top-level value transfers with a successful receipt."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import text

from tests.e2e.actions import mined, pay
from tests.e2e.harness import Harness
from tests.support.devchain import send_failing_eth

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
ETHER = 10**18


async def tx_token_ids(h: Harness) -> list[object]:
    async with h.engine.connect() as conn:
        rows = await conn.execute(text("SELECT token_id FROM transactions ORDER BY block_number"))
        return [r[0] for r in rows]


async def test_native_payment_confirms(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "1.5", token=False)
    tx_hash = mined(h, h.chain.send_eth(h.customer, ALICE, 3 * ETHER // 2))
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("confirming", Decimal("1.5"))
    h.mine(2)
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"], row["confirmations"]) == (
        "confirmed",
        Decimal("1.5"),
        3,
    )
    (tx,) = await h.transactions(pid)
    assert (tx["tx_hash"], tx["log_index"], tx["value"]) == (tx_hash, -1, 3 * ETHER // 2)
    assert Decimal(str(tx["amount"])) == Decimal("1.5")
    assert await tx_token_ids(h) == [None]
    assert await h.events(pid) == [
        ("transfer_detected", None, None),
        ("status_changed", "pending", "confirming"),
        ("status_changed", "confirming", "confirmed"),
    ]


async def test_reverted_native_transfer_pays_nothing(h: Harness) -> None:
    pid = await h.create_payment(BOB, "1", token=False)
    failed = send_failing_eth(h.chain, BOB, ETHER, sender=h.customer)
    receipt = h.chain.receipt(failed)
    assert receipt is not None and receipt["status"] == "0x0"
    h.mine(3)
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("pending", Decimal("0"))
    assert await h.transactions() == []
    good = mined(h, h.chain.send_eth(h.customer, BOB, ETHER))
    await h.scan()
    assert await h.status(pid) == "confirming"
    assert [t["tx_hash"] for t in await h.transactions(pid)] == [good]


async def test_native_and_token_payments_on_one_address_take_only_their_own_coin(
    h: Harness,
) -> None:
    native = await h.create_payment(ALICE, "2", token=False)
    token = await h.create_payment(ALICE, "2")
    pay(h, ALICE, 2_000_000)
    await h.scan()
    assert (await h.payment(native))["amount_received"] == 0
    assert (await h.payment(token))["amount_received"] == Decimal("2")
    mined(h, h.chain.send_eth(h.customer, ALICE, 2 * ETHER))
    h.mine(2)
    await h.scan()
    assert (await h.payment(native))["amount_received"] == Decimal("2")
    assert (await h.payment(token))["amount_received"] == Decimal("2")
    assert await h.status(native) == "confirmed"
    assert await h.status(token) == "confirmed"


async def test_native_funds_after_expiry_are_recorded_late(h: Harness) -> None:
    expiring = await h.create_payment(ALICE, "1", token=False, expires_in=60)
    await h.create_payment(BOB, "1", token=False)  # open: the chain's blocks are read
    h.chain.increase_time(120)
    tx_hash = mined(h, h.chain.send_eth(h.customer, ALICE, ETHER))
    h.mine(2)
    await h.scan()
    row = await h.payment(expiring)
    assert (row["status"], row["amount_received"]) == ("expired", Decimal("0"))
    (tx,) = await h.transactions(expiring)
    assert (tx["tx_hash"], tx["log_index"], tx["late"]) == (tx_hash, -1, True)
    assert await h.events(expiring) == [
        ("transfer_detected", None, None),
        ("paid_late", None, None),
        ("status_changed", "pending", "expired"),
    ]
