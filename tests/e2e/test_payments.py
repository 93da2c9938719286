"""Payment scenarios against a real node, a real ERC-20 and both databases."""

from __future__ import annotations

from decimal import Decimal

from tests.e2e.harness import Harness

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20


async def test_exact_payment_confirms_after_required_confirmations(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "25.5")
    h.chain.transfer(h.token, h.customer, ALICE, 25_500_000)
    await h.scan()
    row = await h.payment(pid)
    assert row["status"] == "confirming"
    assert row["amount_received"] == Decimal("25.5")
    assert row["confirmations"] == 1
    h.mine(1)
    await h.scan()
    assert (await h.payment(pid))["confirmations"] == 2
    assert await h.status(pid) == "confirming"
    h.mine(1)
    await h.scan()
    row = await h.payment(pid)
    assert row["status"] == "confirmed"
    assert row["confirmations"] == 3
    (tx,) = await h.transactions(pid)
    assert tx["status"] == "confirmed" and tx["value"] == 25_500_000 and not tx["late"]
    assert await h.events(pid) == [
        ("transfer_detected", None, None),
        ("status_changed", "pending", "confirming"),
        ("status_changed", "confirming", "confirmed"),
    ]


async def test_partial_transfers_accumulate_and_overpayment_is_visible(h: Harness) -> None:
    partial = await h.create_payment(ALICE, "10")
    over = await h.create_payment(BOB, "1.000000000000000001", token=h.token18)
    h.chain.transfer(h.token, h.customer, ALICE, 4_000_000)
    h.chain.transfer(h.token18, h.customer, BOB, 2 * 10**18)
    await h.scan()
    assert await h.status(partial) == "pending"
    assert (await h.payment(partial))["amount_received"] == Decimal("4")
    h.chain.transfer(h.token, h.customer, ALICE, 6_000_000)
    h.mine(3)
    await h.scan()
    assert await h.status(partial) == "confirmed"
    assert (await h.payment(partial))["amount_received"] == Decimal("10")
    row = await h.payment(over)
    assert row["status"] == "confirmed"
    assert row["amount_received"] == Decimal("2")
    assert row["amount_received"] > row["amount"]
