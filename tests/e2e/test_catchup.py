"""Payments written behind the cursor are caught up (docs/design.md, "Matching", last rules): the
scanner looks back for the payment's address from ``created_at − grace`` to the cursor."""

from __future__ import annotations

from decimal import Decimal

from eth_utils.address import to_checksum_address

from tests.e2e.actions import pay
from tests.e2e.harness import Harness
from tests.support.devchain import send_failing_eth

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
CAROL = "0x" + "c3" * 20
GRACE = 300


def block_time(h: Harness, tx_hash: str) -> int:
    receipt = h.chain.receipt(tx_hash)
    assert receipt is not None
    return int(h.chain.block(int(receipt["blockNumber"], 16))["timestamp"], 16)


async def test_payment_inserted_after_the_scanner_passed_its_transfer_is_caught_up(
    h: Harness,
) -> None:
    await h.scan()
    tx_hash = pay(h, ALICE, 25_000_000)
    paid_at = block_time(h, tx_hash)
    h.mine(3)
    await h.scan()  # nobody pays to ALICE yet: nothing stored
    assert h.scanner is not None and h.scanner.cursor == h.chain.head()
    assert await h.transactions() == []
    pid = await h.create_payment(to_checksum_address(ALICE), "25", created_at=paid_at - 5)
    await h.scan()  # no new block: the catch-up alone finds it
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("25"))
    (tx,) = await h.transactions(pid)
    assert (tx["tx_hash"], tx["value"], tx["late"], tx["status"]) == (
        tx_hash,
        25_000_000,
        False,
        "confirmed",
    )
    assert h.chain.head() - tx["block_number"] + 1 == 4
    assert tx["confirmations"] == row["confirmations"] == 3  # counted up to final, then kept
    assert await h.events(pid) == [
        ("transfer_detected", None, None),
        ("status_changed", "pending", "confirming"),
        ("status_changed", "confirming", "confirmed"),
    ]
    h.mine(1)
    await h.scan()  # looked at once: never credited twice
    assert len(await h.transactions(pid)) == 1
    assert (await h.payment(pid))["amount_received"] == Decimal("25")


async def test_catch_up_respects_the_grace_and_keeps_counting_confirmations(h: Harness) -> None:
    await h.scan()
    skewed_tx = pay(h, ALICE, 5_000_000)
    early_tx = pay(h, BOB, 5_000_000)
    paid_at = block_time(h, early_tx)
    await h.scan()
    # the gateway's clock runs ahead of the chain: within the grace still counts
    skewed = await h.create_payment(ALICE, "5", created_at=block_time(h, skewed_tx) + GRACE)
    too_late = await h.create_payment(BOB, "5", created_at=paid_at + GRACE + 1)
    await h.scan()
    row = await h.payment(skewed)
    assert (row["status"], row["amount_received"]) == ("confirming", Decimal("5"))
    assert await h.transactions(too_late) == []
    assert (await h.payment(too_late))["amount_received"] == 0
    assert row["confirmations"] == 2
    h.mine(1)
    await h.scan()
    row = await h.payment(skewed)
    assert (row["status"], row["confirmations"]) == ("confirmed", 3)


async def test_catch_up_ignores_transfers_older_than_created_at_minus_grace(h: Harness) -> None:
    await h.scan()
    before = pay(h, CAROL, 1_000_000)
    h.chain.increase_time(2 * GRACE)
    h.mine(5)
    start = h.now()
    h.chain.set_next_timestamp(start + 10)
    after = pay(h, CAROL, 2_000_000)
    h.mine(3)
    await h.scan()
    pid = await h.create_payment(CAROL, "3", created_at=start)
    await h.scan()
    assert [t["tx_hash"] for t in await h.transactions(pid)] == [after]
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("pending", Decimal("2"))
    assert before != after


async def test_caught_up_payment_on_a_reused_address_takes_the_transfer_recorded_late(
    h: Harness,
) -> None:
    old = await h.create_payment(ALICE, "10", expires_in=60)
    h.chain.increase_time(120)
    h.mine(3)
    await h.scan()
    assert await h.status(old) == "expired"
    tx_hash = pay(h, ALICE, 10_000_000)  # paying a new payment whose row is not there yet
    await h.scan()
    assert [t["late"] for t in await h.transactions(old)] == [True]  # funds are never dropped
    new = await h.create_payment(ALICE, "10", created_at=block_time(h, tx_hash) - 5)
    h.mine(2)
    await h.scan()
    row = await h.payment(new)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("10"))
    (tx,) = await h.transactions()  # one row per transfer: it moved
    assert (tx["payment_id"], tx["tx_hash"], tx["late"]) == (new, tx_hash, False)
    row = await h.payment(old)
    assert (row["status"], row["amount_received"]) == ("expired", Decimal("0"))
    assert await h.events(old) == [
        ("status_changed", "pending", "expired"),
        ("transfer_detected", None, None),
        ("paid_late", None, None),
        ("transfer_orphaned", None, None),
    ]
    assert await h.events(new) == [
        ("transfer_detected", None, None),
        ("status_changed", "pending", "confirming"),
        ("status_changed", "confirming", "confirmed"),
    ]


async def test_caught_up_transfer_after_the_expiry_is_recorded_late(h: Harness) -> None:
    await h.scan()
    start = h.now()
    h.chain.set_next_timestamp(start + 100)
    tx_hash = pay(h, ALICE, 10_000_000)
    h.mine(3)
    await h.scan()
    pid = await h.create_payment(ALICE, "10", created_at=start, expires_in=60)
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("expired", Decimal("0"))
    (tx,) = await h.transactions(pid)
    assert (tx["tx_hash"], tx["late"]) == (tx_hash, True)
    assert await h.events(pid) == [
        ("transfer_detected", None, None),
        ("paid_late", None, None),
        ("status_changed", "pending", "expired"),
    ]


async def test_native_payment_inserted_behind_the_cursor_is_caught_up(h: Harness) -> None:
    """Native coin too: the blocks since created_at − grace are read again in full; a reverted
    transfer to the same address still pays nothing."""
    await h.scan()
    tx_hash = h.chain.send_eth(h.customer, BOB, 2 * 10**18)
    paid_at = block_time(h, tx_hash)
    send_failing_eth(h.chain, BOB, 10**18)
    h.mine(3)
    await h.scan()
    assert await h.transactions() == []
    pid = await h.create_payment(BOB, "2", token=False, created_at=paid_at - 5)
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("2"))
    (tx,) = await h.transactions(pid)
    assert (tx["tx_hash"], tx["log_index"], tx["value"]) == (tx_hash, -1, 2 * 10**18)
