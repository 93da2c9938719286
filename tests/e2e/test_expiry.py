"""Expiry by the chain's time (docs/design.md, "Payment states"): block timestamps set with
``evm_setNextBlockTimestamp`` / ``evm_increaseTime``, never the test's clock. Three confirmations
are required, so the block at ``head − 2`` is the newest final one."""

from __future__ import annotations

from decimal import Decimal

from tests.e2e.actions import pay
from tests.e2e.harness import Harness

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20


def mine_at(h: Harness, timestamp: int) -> None:
    h.chain.set_next_timestamp(timestamp)
    h.mine(1)


async def test_expiry_waits_until_the_first_block_past_expires_at_is_final(h: Harness) -> None:
    await h.scan()
    start = h.now()
    pid = await h.create_payment(ALICE, "10", created_at=start, expires_in=100)
    mine_at(h, start + 100)  # at expires_at: not past it
    mine_at(h, start + 101)  # the first block past expires_at
    past = h.chain.head()
    await h.scan()
    assert await h.status(pid) == "pending"
    h.mine(1)  # the block at expires_at is final now, the one past it is not
    await h.scan()
    assert await h.status(pid) == "pending"
    h.mine(1)
    assert h.chain.head() - past + 1 == 3
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"], row["confirmations"]) == (
        "expired",
        Decimal("0"),
        0,
    )
    assert await h.events(pid) == [("status_changed", "pending", "expired")]


async def test_transfer_at_expires_at_counts_and_one_second_later_is_late(h: Harness) -> None:
    await h.scan()
    start = h.now()
    in_time = await h.create_payment(ALICE, "10", created_at=start, expires_in=100)
    late = await h.create_payment(BOB, "10", created_at=start, expires_in=100)
    h.chain.set_next_timestamp(start + 100)
    pay(h, ALICE, 10_000_000)
    h.chain.set_next_timestamp(start + 101)
    late_tx = pay(h, BOB, 10_000_000)
    await h.scan()
    assert await h.status(in_time) == "confirming"
    row = await h.payment(late)
    assert (row["status"], row["amount_received"]) == ("pending", Decimal("0"))
    (tx,) = await h.transactions(late)
    assert (tx["tx_hash"], tx["value"], tx["late"]) == (late_tx, 10_000_000, True)
    h.mine(2)
    await h.scan()
    assert await h.status(in_time) == "confirmed"
    row = await h.payment(late)
    assert (row["status"], row["amount_received"]) == ("expired", Decimal("0"))
    (tx,) = await h.transactions(late)
    assert tx["late"] and tx["status"] == "confirmed"
    assert await h.events(late) == [
        ("transfer_detected", None, None),
        ("paid_late", None, None),
        ("status_changed", "pending", "expired"),
    ]


async def test_payment_paid_in_time_confirms_after_its_expiry(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "10", expires_in=60)
    pay(h, ALICE, 10_000_000)
    await h.scan()
    assert await h.status(pid) == "confirming"
    h.chain.increase_time(3600)  # every later block is long past expires_at
    h.mine(1)
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["confirmations"]) == ("confirming", 2)
    h.mine(1)
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("10"))
    (tx,) = await h.transactions(pid)
    assert not tx["late"]
    assert await h.events(pid) == [
        ("transfer_detected", None, None),
        ("status_changed", "pending", "confirming"),
        ("status_changed", "confirming", "confirmed"),
    ]


async def test_scanning_after_the_fact_decides_by_block_time_not_by_scan_time(h: Harness) -> None:
    await h.scan()
    paid = await h.create_payment(ALICE, "10", expires_in=60)
    unpaid = await h.create_payment(BOB, "10", expires_in=60)
    pay(h, ALICE, 10_000_000)
    h.chain.increase_time(3600)
    pay(h, BOB, 10_000_000)  # an hour after its expiry
    h.mine(5)
    await h.scan()  # one pass over blocks that are all final, long after both expiries
    assert await h.status(paid) == "confirmed"
    row = await h.payment(unpaid)
    assert (row["status"], row["amount_received"]) == ("expired", Decimal("0"))
    (tx,) = await h.transactions(unpaid)
    assert tx["late"]
    assert ("paid_late", None, None) in await h.events(unpaid)


async def test_funds_to_an_expired_payment_are_recorded_late(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "10", expires_in=60)
    h.chain.increase_time(120)
    h.mine(3)
    await h.scan()
    assert await h.status(pid) == "expired"
    tx_hash = pay(h, ALICE, 10_000_000)
    h.mine(2)
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("expired", Decimal("0"))
    (tx,) = await h.transactions(pid)
    assert (tx["tx_hash"], tx["value"], tx["late"], tx["status"]) == (
        tx_hash,
        10_000_000,
        True,
        "confirmed",
    )
    assert await h.events(pid) == [
        ("status_changed", "pending", "expired"),
        ("transfer_detected", None, None),
        ("paid_late", None, None),
    ]


async def test_after_an_expiry_a_reused_address_pays_the_newer_payment(h: Harness) -> None:
    start = h.now()
    old = await h.create_payment(ALICE, "10", created_at=start - 60, expires_in=100)
    new = await h.create_payment(ALICE, "10", created_at=start + 60, expires_in=3600)
    h.chain.set_next_timestamp(start + 61)  # past old's expires_at; old still reads pending
    pay(h, ALICE, 10_000_000)
    h.mine(2)
    await h.scan()
    assert await h.status(old) == "expired"
    assert await h.transactions(old) == []
    row = await h.payment(new)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("10"))
