"""A backfill over blocks above the live cursor, while the live scan has not reached them (it
was stopped, or is catching up after an outage): the blocks between the cursor and the
backfill's first block are nobody's yet, so what a payment received there is unknown to the
backfill. It credits what its range holds and leaves a payment's expiry to the live scan."""

from __future__ import annotations

from tests.e2e.actions import pay
from tests.e2e.harness import Harness, stored_cursor
from tests.ops.test_backfill import backfill, small

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
DEEP = 70  # blocks: more than the reorg window (max_reorg_depth, 64 here)


async def test_a_backfill_above_the_live_cursor_expires_nothing_paid_below_its_range(
    h: Harness,
) -> None:
    paid_below = await h.create_payment(ALICE, "10", expires_in=100)
    paid_inside = await h.create_payment(BOB, "4", expires_in=100)
    unpaid = await h.create_payment("0x" + "c3" * 20, "5", expires_in=100)
    await h.scan()
    live_at = await stored_cursor(h)
    pay(h, ALICE, 10_000_000)  # in time, in a block the live scan has not read
    h.mine(2)
    start = h.chain.head() + 1
    pay(h, BOB, 4_000_000)  # in time, inside the backfill's range
    h.chain.increase_time(200)  # every expiry passes ...
    h.mine(10)  # ... and its first block is final
    end = h.chain.head()
    h.mine(DEEP)  # the range is far below the head: the backfill's own reads are final
    assert live_at < start - 1

    summary = await backfill(small(h), h.sessions, start, end)

    assert summary.status_changes.get("expired") is None
    assert await h.status(paid_below) == "pending"  # not expired on what the backfill saw
    assert await h.status(paid_inside) == "confirmed"
    await h.scan()  # the live scan reads the blocks below the backfill's range
    assert await h.status(paid_below) == "confirmed"
    assert (await h.payment(paid_below))["amount_received"] == 10
    assert await h.status(unpaid) == "expired"
    assert await h.status(paid_inside) == "confirmed"


async def test_a_reorg_below_a_backfill_leaves_the_backfills_credits_on_the_chain_alone(
    h: Harness,
) -> None:
    """The live scan walks back from a reorg at its cursor: what it undoes is the blocks it had
    stored. A backfill's credits above the cursor were read from the chain as it is now; the
    live scan judges them by hash when it gets there, and orphans nothing that stayed."""
    paid = await h.create_payment(ALICE, "10")
    h.mine(3)  # (the reorg below replaces empty blocks only)
    await h.scan()
    live_at = await stored_cursor(h)
    assert live_at == h.chain.head()
    h.chain.reorg(2)  # the live scan's two newest blocks are replaced ...
    h.mine(3)
    start = h.chain.head() + 1
    pay(h, ALICE, 10_000_000)  # ... and a transfer lands above them, where a backfill reads
    h.mine(5)
    await backfill(small(h), h.sessions, start, h.chain.head())
    assert await h.status(paid) == "confirming"

    await h.scan()  # finds the reorg at its cursor, walks back, scans on

    assert await h.status(paid) == "confirmed"
    assert [e[0] for e in await h.events(paid)] == [
        "transfer_detected",
        "status_changed",
        "status_changed",
    ]
    (row,) = await h.transactions(paid)
    assert row["status"] == "confirmed"
